"""frSF (Liao 2016): B_l = |M_l| ⊙ sign(W_l) with M_l fixed random (Xavier)."""

import math

import pytest
import torch

from fa_explore.metrics import angle_between, layer_metrics
from fa_explore.models import xavier_std

from feedback_checks import (
    assert_all_equal,
    assert_sparse_feedback,
    batch,
    bp_grads,
    conservation_ratios,
    manual_grads,
    rule_grads,
    sgd_steps,
    tiny,
)


def expected_feedback(rule, model, l):
    return getattr(rule, f"M{l}").abs() * torch.sign(model.layers[l].weight.detach())


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_feedback_is_fixed_magnitudes_times_current_signs(kind):
    model, rule = tiny("frsf", kind)
    x, y = batch(model)
    magnitudes = [getattr(rule, f"M{l}").clone() for l in range(1, model.n_layers)]
    for _ in range(4):
        sgd_steps(rule, model, x, y, steps=2, lr=0.5)
        assert rule.effective_feedback(model, 0) is None
        for l in range(1, model.n_layers):
            assert torch.equal(getattr(rule, f"M{l}"), magnitudes[l - 1])
            assert torch.equal(rule.effective_feedback(model, l),
                               expected_feedback(rule, model, l))
    with torch.no_grad():
        model.layers[1].weight.neg_()
    assert torch.equal(rule.effective_feedback(model, 1), expected_feedback(rule, model, 1))


def test_magnitudes_are_drawn_like_the_forward_weights():
    model, rule = tiny("frsf", hidden=(300, 200))
    m = rule.M2
    bound = 3 ** 0.5 * xavier_std(m)  # Xavier-uniform on [-bound, bound]
    assert m.abs().max() <= bound
    assert m.std().item() == pytest.approx(xavier_std(m), rel=0.03)
    assert m.mean().abs().item() < 0.03 * xavier_std(m)


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_equals_bp_when_magnitudes_match_the_weights(kind):
    # |M| ⊙ sign(W) = W when M = W.
    model, rule = tiny("frsf", kind)
    with torch.no_grad():
        for l in range(1, model.n_layers):
            getattr(rule, f"M{l}").copy_(model.layers[l].weight)
    x, y = batch(model)
    assert_all_equal(rule_grads(rule, model, x, y), bp_grads(model, x, y))


@pytest.mark.parametrize("sparsity", [0.0, 0.5])
def test_backward_uses_the_effective_feedback(sparsity):
    model, rule = tiny("frsf", feedback_sparsity=sparsity)
    x, y = batch(model)
    sgd_steps(rule, model, x, y, steps=3)
    feedbacks = [rule.effective_feedback(model, l) for l in range(model.n_layers)]
    assert_all_equal(rule_grads(rule, model, x, y), manual_grads(model, feedbacks, x, y))


def test_metrics_measure_the_effective_feedback_not_the_magnitudes():
    model, rule = tiny("frsf", hidden=(40, 30))
    x, y = batch(model)
    row = layer_metrics(model, rule, x, y, None)
    for l in range(1, model.n_layers):
        weight, magnitudes = model.layers[l].weight.detach(), getattr(rule, f"M{l}")
        # Closed form: ⟨W, |M| ⊙ sign W⟩ = Σ|W||M| and ‖|M| ⊙ sign W‖ = ‖M‖ (no zero in W).
        cos = (weight.abs() * magnitudes.abs()).sum() / (weight.norm() * magnitudes.norm())
        expected = math.degrees(math.acos(cos.item()))
        assert row[f"weight_angle/{l + 1}"] == pytest.approx(expected, abs=1e-6)
        # Sign-concordant, so far below the ~90° of |M| itself (BioTorch's number).
        assert row[f"weight_angle/{l + 1}"] < 60
        assert angle_between(weight, magnitudes.abs()) > 80


def test_feedback_sparsity_masks_the_feedback():
    p = 0.3
    model, rule = tiny("frsf", hidden=(200, 200), feedback_sparsity=p)
    x, y = batch(model)
    first = rule.effective_feedback(model, 1)
    assert_sparse_feedback(first, rule.M1.abs() * torch.sign(model.layers[1].weight), p)
    sgd_steps(rule, model, x, y, steps=3)
    assert torch.equal(rule.effective_feedback(model, 1) == 0, first == 0)


def test_conservation_law():
    # Δ½‖w_i‖² = Δ Σ_j |M_ij| |v_ij| under the frSF flow.
    for ratio in conservation_ratios("frsf"):
        assert ratio == pytest.approx(1.0, abs=2e-3)
