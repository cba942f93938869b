"""Gradient-estimate statistics over fresh draws, against closed forms."""

from __future__ import annotations

import torch

from fa_explore import RunConfig, build
from fa_explore.analysis.variance import (
    draw_statistics,
    estimator_statistics,
    fg_w_relative_variance,
    gradient_draws,
)


def _net(rule: str, hidden=(6, 5), **changes):
    torch.manual_seed(0)
    x, y = torch.randn(24, 1, 8, 8), torch.randint(0, 10, (24,))
    model, rule_obj = build(RunConfig(rule=rule, hidden=hidden, **changes), (1, 8, 8), 10)
    return model, rule_obj, x, y


def test_backprop_is_exact_and_deterministic():
    stats = estimator_statistics(*_net("bp"), draws=4)
    assert (stats[["bias", "variance", "mse", "mean_angle"]].to_numpy() == 0).all()


def test_draw_statistics_on_known_estimates():
    g = torch.tensor([3.0, 4.0])  # ‖g‖² = 25
    draws = [g + torch.tensor([1.0, 0.0]), g - torch.tensor([1.0, 0.0])]
    s = draw_statistics(draws, g)
    assert s["variance"] == 2 / 25  # two draws 2 apart: Σ‖ĝ − mean‖² / (n − 1) = 2
    assert s["bias"] == 0 and s["mse"] == 1 / 25
    shifted = draw_statistics([g + 1, g + 1], g)  # a fixed offset is pure bias
    assert shifted["variance"] == 0 and shifted["bias"] == 2 / 25


def test_noisy_backprop_has_the_variance_it_was_given():
    for rv in (0.25, 4.0):
        stats = estimator_statistics(*_net("bp_noise", rule_options={"relative_variance": rv}),
                                     draws=400)
        # Per layer the noise is Gaussian with E‖ε‖² = rv ‖g‖²: the estimate of the
        # variance has a relative std of sqrt(2 / (n·dims)), far below 10 %.
        for value in stats["variance"]:
            assert abs(value / rv - 1) < 0.1, (rv, value)
        assert (stats["bias"] < 0.05 * rv).all()


def test_fg_w_variance_matches_its_closed_form():
    model, rule, x, y = _net("fg_w", hidden=(4,))
    stats = estimator_statistics(model, rule, x, y, draws=3000)
    expected = fg_w_relative_variance(model, x, y)
    for measured, theory in zip(stats["variance"], expected, strict=True):
        assert abs(measured / theory - 1) < 0.2, (measured, theory)
    # Unbiased: the bias left after removing variance/n is small next to the variance.
    assert (stats["bias"] < 0.05 * stats["variance"]).all()


def test_draws_are_fresh_and_leave_the_rule_as_it_was():
    for name in ("fg_w", "fdfa", "fg_a"):
        model, rule, x, y = _net(name)
        state = {k: v.clone() for k, v in rule.state_dict().items()}
        rng = rule.generator.get_state()
        draws = gradient_draws(model, rule, x, y, draws=3)
        assert not torch.equal(draws[0][0], draws[1][0]), name  # fresh, not repeated
        assert torch.equal(rule.generator.get_state(), rng), name
        for key, value in rule.state_dict().items():
            assert torch.equal(value, state[key]), (name, key)
        assert all(p.grad is None for p in model.parameters())
        # Seeded: the same call gives the same draws.
        again = gradient_draws(model, rule, x, y, draws=3)
        assert all(torch.equal(a, b) for d1, d2 in zip(draws, again, strict=True)
                   for a, b in zip(d1, d2, strict=True))


def test_direct_feedback_is_biased_but_not_noisy():
    stats = estimator_statistics(*_net("dfa"), draws=3)
    hidden = stats[stats["layer"] < stats["layer"].max()]
    assert (hidden["variance"] == 0).all() and (hidden["bias"] > 0.1).all()
    assert stats["bias"].iloc[-1] == 0  # the output layer's error is exact
