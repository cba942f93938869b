"""Backpropagation: the reference (B_l = W_l)."""

import math

import pytest
import torch

from fa_explore.metrics import layer_metrics

from feedback_checks import (
    assert_all_equal,
    batch,
    bp_grads,
    conservation_ratios,
    manual_grads,
    rule_grads,
    tiny,
)


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_effective_feedback_is_the_weight_and_angles_are_zero(kind):
    model, rule = tiny("bp", kind)
    x, y = batch(model)
    assert rule.effective_feedback(model, 0) is None
    for l in range(1, model.n_layers):
        assert torch.equal(rule.effective_feedback(model, l), model.layers[l].weight)
    row = layer_metrics(model, rule, x, y, None)
    assert math.isnan(row["weight_angle/1"]) and math.isnan(row["norm_ratio/1"])
    for n in range(1, model.n_layers + 1):
        if n > 1:
            assert row[f"weight_angle/{n}"] == pytest.approx(0.0, abs=1e-5)
            assert row[f"norm_ratio/{n}"] == pytest.approx(1.0, rel=1e-12)
        assert row[f"grad_angle/{n}"] == pytest.approx(0.0, abs=1e-5)


def test_gradient_is_the_hand_written_backward():
    model, rule = tiny("bp")
    x, y = batch(model)
    weights = [None] + [layer.weight.detach() for layer in model.layers[1:]]
    grads = rule_grads(rule, model, x, y)
    assert_all_equal(grads, manual_grads(model, weights, x, y))
    assert_all_equal(grads, bp_grads(model, x, y))


def test_balancedness_conservation_law():
    # Δ½‖w_i‖² = Δ½‖v_i‖² (Du et al. 2018).
    for ratio in conservation_ratios("bp"):
        assert ratio == pytest.approx(1.0, abs=1e-3)
