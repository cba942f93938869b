"""Random feedback draws follow ``weight_init`` and ``feedback_init_gain``: B (fa, kp, wm,
and the init_angle construction), M (frsf, brsf), D (dfa) and PFA's R; PFA's P keeps
E[P Pᵀ] = I. Rules whose feedback is zero or derived do not take the gain."""

import math

import pytest
import torch

from fa_explore import RULES, RunConfig, build
from fa_explore.metrics import angle_between
from fa_explore.models import init_std

# A 300 x 200 hidden layer (layer 1, 60,000 entries) and 100 classes (DFA's D_2 is
# 100 x 300): stds within ~1%.
HIDDEN = (200, 300)
GAINS = [1.0, 2.5, 0.3]
KINDS = ["xavier_uniform", "normal"]
# Per rule: the stored random feedback of layer 1 (hidden 200 -> 300).
DRAWS = {"fa": "B1", "kp": "B1", "wm": "B1", "frsf": "M1", "brsf": "M1", "dfa": "D2",
         "pfa": "R1", "pfa_o": "R1"}


def built(rule, **fields):
    cfg = RunConfig(rule=rule, hidden=HIDDEN, **fields)
    model, learner = build(cfg, input_shape=(20,), n_classes=100, device="cpu")
    return model, learner


def stored(rule, name):
    return dict(rule.named_parameters()).get(name, dict(rule.named_buffers()).get(name))


def kurtosis(t):
    t = t.double().flatten()
    t = t - t.mean()
    return ((t ** 4).mean() / (t ** 2).mean() ** 2).item()


def test_exactly_the_rules_with_random_feedback_take_the_gain():
    takes = {n for n, c in RULES.items() if c.uses_feedback_init}
    assert takes == set(DRAWS)
    # Zero (dkp, fdfa), derived (usf: s·sign W; bp: W) or no feedback (forward gradients).
    for name in ("dkp", "fdfa"):
        _, rule = built(name)
        assert all(torch.count_nonzero(d) == 0 for n, d in rule.named_parameters())
        assert all(torch.count_nonzero(d) == 0 for n, d in rule.named_buffers()
                   if n.startswith("D") and not n.endswith("_mask"))
    for name in ("usf", "bp", "fg_w", "fg_a"):
        _, rule = built(name)
        assert not list(rule.buffers()) and not list(rule.parameters())


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("gain", GAINS)
@pytest.mark.parametrize("name", sorted(DRAWS))
def test_feedback_draw_has_the_init_std(name, kind, gain):
    model, rule = built(name, weight_init=kind, feedback_init_gain=gain)
    draw = stored(rule, DRAWS[name])
    assert draw.std().item() == pytest.approx(init_std(draw.shape, kind, gain), rel=0.02)
    assert abs(draw.mean().item()) < 4 * draw.std().item() / math.sqrt(draw.numel())
    # The family too: uniform (kurtosis 9/5) or Gaussian (3).
    assert kurtosis(draw) == pytest.approx(1.8 if kind == "xavier_uniform" else 3.0, abs=0.1)
    if name == "brsf":  # every redraw as well
        x, y = torch.randn(8, 20), torch.randint(0, 100, (8,))
        before = draw.clone()
        rule.compute_grads(model, x, y)
        assert not torch.equal(before, draw)
        assert draw.std().item() == pytest.approx(init_std(draw.shape, kind, gain), rel=0.02)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", ["fa", "frsf", "dfa", "pfa"])
def test_gain_multiplies_the_draw_and_nothing_else(name, kind):
    # Same seed, same random numbers: the draw is exactly gain times larger; masks
    # and PFA's P (E[P Pᵀ] = I) do not move.
    _, one = built(name, weight_init=kind, feedback_sparsity=0.3)
    _, three = built(name, weight_init=kind, feedback_sparsity=0.3, feedback_init_gain=3.0)
    scaled = {n for n in one.state_dict() if n[0] in "BMDR" and not n.endswith("_mask")}
    assert scaled
    for n, value in one.state_dict().items():
        factor = 3.0 if n in scaled else 1.0
        torch.testing.assert_close(three.state_dict()[n], factor * value, rtol=1e-6, atol=0)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("gain", [1.0, 3.0])
def test_pfa_p_keeps_unit_expected_gram_matrix(kind, gain):
    _, rule = built("pfa", weight_init=kind, feedback_init_gain=gain)
    p = rule.P1.double()
    n_extra = p.shape[1]
    assert p.var().item() * n_extra == pytest.approx(1.0, rel=0.02)
    assert kurtosis(p) == pytest.approx(1.8 if kind == "xavier_uniform" else 3.0, abs=0.1)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("gain", GAINS)
@pytest.mark.parametrize("name", ["fa", "kp", "wm"])
@pytest.mark.parametrize("angle", [0.0, 37.0, 90.0, 150.0])
def test_init_angle_feedback_has_gain_times_the_norm_and_the_exact_angle(name, gain, kind,
                                                                          angle):
    model, rule = built(name, weight_init=kind, feedback_init_gain=gain, init_angle=angle)
    for l in range(1, model.n_layers):
        weight, feedback = model.layers[l].weight, stored(rule, f"B{l}")
        assert angle_between(weight, feedback) == pytest.approx(angle, abs=1e-3)
        assert feedback.norm().item() == pytest.approx(gain * weight.norm().item(), rel=1e-5)
