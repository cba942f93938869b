"""Shared checks for rules with layer-to-layer feedback (tests/rules/test_*.py).

Tiny float64 nets, the exact BP gradient through the plain forward, and a
hand-written backward ``δ_{l-1} = (δ_l B_l) ⊙ σ'(a_{l-1})`` (the reference's
notation) to compare a rule's gradients with.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fa_explore import RunConfig, build

MLP_SHAPE, CNN_SHAPE, N_CLASSES = (5,), (1, 8, 8), 4


def tiny_config(rule: str, model: str = "mlp", **fields):
    """``(cfg, input_shape)`` of the tiny test nets: MLP 5-7-6-4 or
    CNN 1x8x8 -> conv3 -> conv4 -> 6 -> 4."""
    if model == "mlp":
        return RunConfig(rule=rule, hidden=fields.pop("hidden", (7, 6)), **fields), MLP_SHAPE
    return RunConfig(rule=rule, model="cnn", channels=(3, 4),
                     hidden=fields.pop("hidden", (6,)), **fields), CNN_SHAPE


def tiny(rule: str, model: str = "mlp", **fields):
    """A float64 (model, rule) pair of :func:`tiny_config`'s nets."""
    cfg, shape = tiny_config(rule, model, **fields)
    net, learner = build(cfg, input_shape=shape, n_classes=N_CLASSES, device="cpu")
    return net.double(), learner.double()


def batch(model, n: int = 9, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *model.input_shape, generator=gen, dtype=torch.float64)
    y = torch.randint(0, N_CLASSES, (n,), generator=gen)
    return x, y


def model_grads(model) -> list[torch.Tensor]:
    return [p.grad.clone() for p in model.parameters()]


def rule_grads(rule, model, x, y) -> list[torch.Tensor]:
    """Weight and bias gradients the rule computes (fresh ``.grad``)."""
    for p in [*model.parameters(), *rule.parameters()]:
        p.grad = None
    rule.compute_grads(model, x, y)
    return model_grads(model)


def bp_grads(model, x, y) -> list[torch.Tensor]:
    """The true gradient of the mean cross-entropy through the plain forward."""
    return [g.detach() for g in torch.autograd.grad(F.cross_entropy(model(x), y),
                                                    list(model.parameters()))]


def manual_grads(model, feedbacks, x, y) -> list[torch.Tensor]:
    """Hand-written backward of a ReLU MLP: ``δ_L = e``, ``δ_{l-1} = (δ_l B_l) ⊙ σ'(a_{l-1})``
    with ``B_l = feedbacks[l]``; ``grad W_l = δ_lᵀ h_{l-1}``, ``grad b_l = Σ δ_l``."""
    with torch.no_grad():
        inputs, pre = [x.flatten(1)], []
        for layer in model.layers:
            pre.append(inputs[-1] @ layer.weight.T + layer.bias)
            inputs.append(torch.relu(pre[-1]))
        delta = (torch.softmax(pre[-1], 1) - F.one_hot(y, N_CLASSES)) / len(y)
        grads = []
        for l in reversed(range(model.n_layers)):
            grads = [delta.T @ inputs[l], delta.sum(0)] + grads
            if l > 0:
                delta = (delta @ feedbacks[l]) * (pre[l - 1] > 0)
    return grads


def assert_all_equal(found, expected, **tol):
    assert len(found) == len(expected)
    for a, b in zip(found, expected, strict=True):
        torch.testing.assert_close(a, b, **tol)


def sgd_steps(rule, model, x, y, steps: int, lr: float = 0.1):
    """Plain SGD on one batch through the rule (model and learned feedback)."""
    opt = torch.optim.SGD([*model.parameters(), *rule.parameters()], lr=lr)
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        rule.compute_grads(model, x, y)
        opt.step()


def conservation_ratios(rule_name: str, steps: int = 300, **fields) -> list[float]:
    """The logged conservation ratio per hidden layer of a 20-50-5 ReLU net after
    full-batch SGD with lr 1e-3 (1 in continuous time; the reference quotes 1 ± 1e-4)."""
    from fa_explore.metrics import ConservationTracker

    cfg = RunConfig(rule=rule_name, hidden=(50,), **fields)
    model, rule = build(cfg, input_shape=(20,), n_classes=5, device="cpu")
    model, rule = model.double(), rule.double()
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(64, 20, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 5, (64,), generator=gen)
    tracker = ConservationTracker(model, rule)
    opt = torch.optim.SGD([*model.parameters(), *rule.parameters()], lr=1e-3)
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        rule.compute_grads(model, x, y)
        opt.step()
    return tracker.ratios(model, rule)[:-1]


def assert_sparse_feedback(feedback, unmasked, p: float, rescaled: bool = True):
    """``feedback`` is ``unmasked`` under a Bernoulli(1 − p) mask: a fraction ≈ p of
    zeros, the kept entries rescaled by 1/sqrt(1 − p) (fixed feedback under the
    "rescaled" convention: the norm kept in expectation) or left as they are (a
    0/1 mask: adaptive feedback, or the "unscaled" convention; the norm then
    shrinks by sqrt(1 − p))."""
    kept = feedback != 0
    assert abs(1 - kept.double().mean().item() - p) < 0.02
    scale = 1 / (1 - p) ** 0.5 if rescaled else 1.0
    torch.testing.assert_close(feedback[kept], unmasked[kept] * scale)
    ratio = feedback.double().norm().item() / unmasked.double().norm().item()
    assert abs(ratio - scale * (1 - p) ** 0.5) < 0.03
