"""bp_noise: the exact gradient plus Gaussian noise of a set relative variance."""

from __future__ import annotations

import torch

from fa_explore import RunConfig, build
from fa_explore.metrics import true_grads


def _setup(rv: float):
    torch.manual_seed(0)
    x, y = torch.randn(16, 1, 8, 8, dtype=torch.float64), torch.randint(0, 10, (16,))
    model, rule = build(RunConfig(rule="bp_noise", hidden=(7,),
                                  rule_options={"relative_variance": rv}), (1, 8, 8), 10)
    return model.double(), rule.double(), x, y


def test_zero_noise_is_backprop_exactly():
    model, rule, x, y = _setup(0.0)
    rule.compute_grads(model, x, y)
    for layer, g in zip(model.layers, true_grads(model, x, y), strict=True):
        torch.testing.assert_close(layer.weight.grad, g, rtol=0, atol=0)


def test_noise_is_unbiased_with_the_given_relative_variance():
    rv, n = 2.0, 600
    model, rule, x, y = _setup(rv)
    exact = true_grads(model, x, y)
    sums = [torch.zeros_like(g) for g in exact]
    energy = [0.0 for _ in exact]
    for _ in range(n):
        for p in model.parameters():
            p.grad = None
        rule.compute_grads(model, x, y)
        for i, layer in enumerate(model.layers):
            noise = layer.weight.grad - exact[i]
            sums[i] += noise
            energy[i] += float(noise.pow(2).sum() / exact[i].pow(2).sum())
    for i, g in enumerate(exact):
        assert abs(energy[i] / n / rv - 1) < 0.05  # E‖ε‖²/‖g‖² = rv
        # The mean noise per entry is N(0, σ²/n): a z-test on its norm.
        sigma2 = rv * float(g.pow(2).sum()) / g.numel()
        mean_sq = float((sums[i] / n).pow(2).sum())
        assert mean_sq < 2 * g.numel() * sigma2 / n
