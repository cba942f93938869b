"""The faster ways some rules compute their step give the same numbers as the plain ones.

- Layer-to-layer feedback (fa, usf, frsf, brsf, kp, wm) on the built-in MLP and CNN
  runs the layers' own autograd with ``B_l`` saved in place of ``W_l``
  (``feedback_forward``), instead of a Python autograd Function per layer.
- frSF keeps ``m ⊙ |M_l|`` while ``M_l`` and the mask are unchanged.
- The MAC formulas of benchmarks/macs.py count what the rules compute: checked
  against torch's FLOP counter on one step of each rule.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from benchmarks import macs
from fa_explore import RunConfig, build
from fa_explore.rules import base
from fa_explore.rules.base import feedback_call, feedback_forward

LAYER_RULES = ("fa", "usf", "frsf", "brsf", "kp", "wm")


def tiny(rule, kind="mlp", **fields):
    if kind == "mlp":
        cfg, shape = RunConfig(rule=rule, **{"hidden": (7, 6), **fields}), (5,)
    else:
        cfg, shape = RunConfig(rule=rule, model="cnn", channels=(3, 4),
                               **{"hidden": (6,), **fields}), (1, 8, 8)
    model, learner = build(cfg, input_shape=shape, n_classes=4, device="cpu")
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(9, *shape, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 4, (9,), generator=gen)
    return model.double(), learner.double(), x, y


def grads_through(model, forward, x, y):
    for p in model.parameters():
        p.grad = None
    F.cross_entropy(forward(), y).backward()
    return [p.grad.clone() for p in model.parameters()]


@pytest.fixture
def swaps(monkeypatch):
    """Whether each feedback_forward call used the swap (True) or fell back (False)."""
    seen = []
    real = base._SavedWeightSwap.complete

    def complete(self):
        seen.append(real(self))
        return seen[-1]

    monkeypatch.setattr(base._SavedWeightSwap, "complete", complete)
    return seen


@pytest.mark.parametrize("sparsity", [0.0, 0.5])
@pytest.mark.parametrize("kind", ["mlp", "cnn"])
@pytest.mark.parametrize("name", LAYER_RULES)
def test_saved_weight_swap_gives_the_feedback_layer_gradients(name, kind, sparsity, swaps):
    model, rule, x, y = tiny(name, kind, feedback_sparsity=sparsity)
    feedbacks = [None] + [rule.feedback_matrix(model, l) for l in range(1, model.n_layers)]
    expected = grads_through(model, lambda: model(x, feedback_call(feedbacks)), x, y)
    found = grads_through(model, lambda: feedback_forward(model, x, feedbacks), x, y)
    assert swaps == [True]
    for a, b in zip(found, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-15)
    # And the rule's own step takes that path (its grads are the same again).
    swaps.clear()
    for p in [*model.parameters(), *rule.parameters()]:
        p.grad = None
    rule.compute_grads(model, x, y)
    assert swaps == [True]
    for p, b in zip(model.parameters(), expected, strict=True):
        torch.testing.assert_close(p.grad, b, rtol=1e-12, atol=1e-15)


def test_the_linear_swap_is_bit_exact():
    model, rule, x, y = tiny("fa", hidden=(64, 32))
    model, rule = model.float(), rule.float()
    x = x.float()
    feedbacks = [None] + [rule.feedback_matrix(model, l) for l in range(1, model.n_layers)]
    expected = grads_through(model, lambda: model(x, feedback_call(feedbacks)), x, y)
    found = grads_through(model, lambda: feedback_forward(model, x, feedbacks), x, y)
    assert all(torch.equal(a, b) for a, b in zip(found, expected, strict=True))


def test_a_layer_whose_input_needs_no_gradient_falls_back(swaps):
    # Frozen first layer: layer 1's input needs no gradient, autograd saves no W_1,
    # so the swap is incomplete and the Function path runs (grads of layers >= 1).
    model, rule, x, y = tiny("fa")
    for p in model.layers[0].parameters():
        p.requires_grad_(False)
    feedbacks = [None] + [rule.feedback_matrix(model, l) for l in range(1, model.n_layers)]
    out = feedback_forward(model, x, feedbacks)
    assert swaps == [False]
    F.cross_entropy(out, y).backward()
    found = [p.grad.clone() for p in model.layers[1:].parameters()]
    for p in model.parameters():
        p.grad = None
    F.cross_entropy(model(x, feedback_call(feedbacks)), y).backward()
    for a, p in zip(found, model.layers[1:].parameters(), strict=True):
        torch.testing.assert_close(a, p.grad, rtol=0, atol=0)


def test_other_models_and_callable_feedback_take_the_function_path(swaps):
    model, rule, x, y = tiny("fa")
    feedbacks = [None, lambda g: g @ rule.B1, rule.B2]
    feedback_forward(model, x, feedbacks)
    assert swaps == []  # never tried: one feedback is a callable


def test_observe_sees_every_layer_input():
    model, rule, x, y = tiny("wm", "cnn")
    seen = {}
    feedbacks = [None] + [rule.feedback_matrix(model, l) for l in range(1, model.n_layers)]
    feedback_forward(model, x, feedbacks, lambda i, layer, h: seen.setdefault(i, h.shape))
    assert sorted(seen) == list(range(model.n_layers))


# ----------------------------------------------------------- frSF's cache
def test_frsf_magnitudes_follow_every_change_of_m():
    model, rule, x, y = tiny("frsf", feedback_sparsity=0.3)
    first = rule.feedback_matrix(model, 1)
    assert rule.magnitudes(1) is rule.magnitudes(1)  # cached
    with torch.no_grad():
        rule.M1.mul_(2)  # in place: a new version
    torch.testing.assert_close(rule.feedback_matrix(model, 1), 2 * first, rtol=0, atol=0)
    state = {k: v.clone() for k, v in rule.state_dict().items()}
    state["M1"] = state["M1"] / 2
    rule.load_state_dict(state)
    torch.testing.assert_close(rule.feedback_matrix(model, 1), first, rtol=0, atol=0)
    rule.float()
    model.float()
    assert rule.feedback_matrix(model, 1).dtype == torch.float32  # new tensors: recomputed
    expected = rule.M1.abs() * torch.sign(model.layers[1].weight.detach()) * rule.B1_mask
    assert torch.equal(rule.feedback_matrix(model, 1), expected)


# ------------------------------------------------------------- MAC formulas
def counted_macs(name, kind):
    """MACs of one step of ``name`` counted by torch's FLOP counter, and the formula's."""
    shape = (784,) if kind == "mlp" else (1, 28, 28)
    cfg = RunConfig(rule=name, model=kind, hidden=(64, 32), channels=(4, 6),
                    optimizer="sgd").resolve()
    model, rule = build(cfg, shape, 10, device="cpu")
    x, y = torch.randn(16, *shape), torch.randint(0, 10, (16,))
    rule.compute_grads(model, x, y)
    for p in [*model.parameters(), *rule.parameters()]:
        p.grad = None
    with FlopCounterMode(display=False) as counter:
        rule.compute_grads(model, x, y)
    return counter.get_total_flops() / 2, macs.MAC_FORMULAS[name](macs.layer_shapes(model, shape),
                                                                   16)


# The FLOP counter does not count in-place addmm_ (FDFA's running average, WM's
# mirror update of linear layers, FG-W's input tangent of the linear layers above
# the first); everything else it sees is what the formulas say.
IN_PLACE_ADDMM = {
    "fdfa": lambda s, b: b * s[-1].hidden_size * sum(l.hidden_size for l in s[:-1]),
    "wm": lambda s, b: 32 * sum(l.macs for l in s[1:] if l.is_linear),
    "fg_w": lambda s, b: b * sum(l.macs for l in s[1:] if l.is_linear),
}


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
@pytest.mark.parametrize("name", sorted(macs.MAC_FORMULAS))
def test_mac_formulas_count_what_the_rules_compute(name, kind):
    counted, formula = counted_macs(name, kind)
    shape = (784,) if kind == "mlp" else (1, 28, 28)
    if name in IN_PLACE_ADDMM:
        cfg = RunConfig(rule="bp", model=kind, hidden=(64, 32), channels=(4, 6))
        net, _ = build(cfg, shape, 10, device="cpu")
        counted += IN_PLACE_ADDMM[name](macs.layer_shapes(net, shape), 16)
    assert counted == formula
