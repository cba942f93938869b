"""Feedback alignment (Lillicrap 2016) and soft initial alignment (IFA / adaFA)."""

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


@pytest.fixture
def float64_build():
    """Build nets (and so B, via aligned_like) directly in float64."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_equals_bp_when_feedback_equals_weights(kind):
    model, rule = tiny("fa", kind)
    with torch.no_grad():
        for l in range(1, model.n_layers):
            rule.get_buffer(f"B{l}").copy_(model.layers[l].weight)
    x, y = batch(model)
    assert_all_equal(rule_grads(rule, model, x, y), bp_grads(model, x, y))


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
@pytest.mark.parametrize("angle", [0.0, 45.0, 90.0, 180.0])
def test_init_angle_is_exact_with_equal_norm(float64_build, kind, angle):
    model, rule = tiny("fa", kind, init_angle=angle)
    assert rule.B1.dtype == torch.float64
    for l in range(1, model.n_layers):
        weight, feedback = model.layers[l].weight, rule.get_buffer(f"B{l}")
        assert angle_between(weight, feedback) == pytest.approx(angle, abs=1e-6)
        assert feedback.norm().item() == pytest.approx(weight.norm().item(), rel=1e-12)
    if angle == 0.0:
        x, y = batch(model)
        assert_all_equal(rule_grads(rule, model, x, y), bp_grads(model, x, y))


@pytest.mark.parametrize("p", [0.5, 0.8])
def test_zero_init_angle_is_the_angle_before_the_mask(p):
    # θ = 0 makes B = W; the feedback in use is c·m ⊙ W (c = 1/sqrt(1 − p) or 1: the
    # angle does not see c), and the metrics report that matrix. With d = 1 − p:
    #   cos = ⟨W, c m⊙W⟩ / (‖W‖ ‖c m⊙W‖) = sqrt(X),  X = Σ m W² / Σ W²,
    # exactly. Given W, E[X] = d and Var X = d(1 − d) Σ W⁴/(Σ W²)² = d(1 − d) κ/n
    # (κ = n Σ W⁴/(Σ W²)², 9/5 for uniform entries, n entries), so to second order
    #   E[cos] = sqrt(d) (1 − (1 − d) κ / (8 d n)),
    # sqrt(d) for a large layer (45° at p = 0.5), a little less on a small one.
    d = 1 - p
    found, expected = [], []
    for seed in range(60):
        model, rule = tiny("fa", hidden=(7, 6), init_angle=0.0, feedback_sparsity=p,
                           seed=seed)
        weight = model.layers[1].weight.detach()
        in_use = rule.effective_feedback(model, 1)
        metrics = layer_metrics(model, rule, *batch(model), None)
        kept = in_use != 0
        cos = math.sqrt(weight[kept].pow(2).sum() / weight.pow(2).sum())
        assert metrics["weight_angle/2"] == pytest.approx(math.degrees(math.acos(cos)),
                                                          abs=1e-6)
        n = weight.numel()
        kappa = n * weight.pow(4).sum().item() / weight.pow(2).sum().item() ** 2
        found.append(cos)
        expected.append(math.sqrt(d) * (1 - (1 - d) * kappa / (8 * d * n)))
    found, expected = torch.tensor(found), torch.tensor(expected)
    standard_error = found.std().item() / math.sqrt(len(found))
    assert abs(found.mean().item() - expected.mean().item()) < 3 * standard_error
    assert expected.mean().item() < math.sqrt(d) - 0.001  # the small layer's correction
    # A large layer: sqrt(d) itself (45.0° at p = 0.5), and cos ≈ sqrt(d)·cos θ for any θ.
    for angle in (0.0, 60.0):
        model, rule = tiny("fa", hidden=(200, 300), init_angle=angle, feedback_sparsity=p)
        weight = model.layers[1].weight
        assert angle_between(weight, rule.B1) == pytest.approx(angle, abs=1e-3)
        measured = angle_between(weight, rule.effective_feedback(model, 1))
        assert math.cos(math.radians(measured)) == pytest.approx(
            math.sqrt(d) * math.cos(math.radians(angle)), abs=0.01)


def test_default_feedback_is_drawn_like_the_weights():
    model, rule = tiny("fa", hidden=(300, 200))
    b = rule.B1
    assert b.std().item() == pytest.approx(xavier_std(b), rel=0.03)
    assert b.abs().max() <= math.sqrt(3) * xavier_std(b)
    assert 80 < angle_between(model.layers[1].weight, b) < 100  # independent draws


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_feedback_stays_fixed_while_weights_learn(kind):
    model, rule = tiny("fa", kind)
    x, y = batch(model)
    before = [rule.effective_feedback(model, l).clone() for l in range(1, model.n_layers)]
    weights = [layer.weight.detach().clone() for layer in model.layers]
    sgd_steps(rule, model, x, y, steps=5, lr=0.5)
    for l in range(1, model.n_layers):
        assert torch.equal(rule.effective_feedback(model, l), before[l - 1])
        assert not torch.equal(model.layers[l].weight, weights[l])
    assert rule.effective_feedback(model, 0) is None


@pytest.mark.parametrize("sparsity", [0.0, 0.5])
def test_backward_uses_the_effective_feedback(sparsity):
    model, rule = tiny("fa", feedback_sparsity=sparsity)
    x, y = batch(model)
    sgd_steps(rule, model, x, y, steps=3)
    feedbacks = [rule.effective_feedback(model, l) for l in range(model.n_layers)]
    assert_all_equal(rule_grads(rule, model, x, y), manual_grads(model, feedbacks, x, y))


def test_feedback_sparsity_masks_the_feedback():
    p = 0.5
    model, rule = tiny("fa", hidden=(200, 200), feedback_sparsity=p)
    x, y = batch(model)
    first = rule.effective_feedback(model, 1)
    assert_sparse_feedback(first, rule.B1, p)
    sgd_steps(rule, model, x, y, steps=3)
    assert torch.equal(rule.effective_feedback(model, 1), first)


def test_conservation_law():
    # Δ½‖w_i‖² = Δ⟨b_i, v_i⟩ (implicit regularization seed, Thm 5.2).
    for ratio in conservation_ratios("fa"):
        assert ratio == pytest.approx(1.0, abs=2e-3)
