"""uSF (sign symmetry, Liao 2016): B_l = s·sign(W_l), s the Xavier std of W_l."""

import pytest
import torch

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


def scaled_signs(weight):
    fan_out = weight.shape[0] * weight[0, 0].numel()
    fan_in = weight.shape[1] * weight[0, 0].numel()
    return (2.0 / (fan_in + fan_out)) ** 0.5 * torch.sign(weight.detach())


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_feedback_is_scaled_sign_of_the_current_weights_at_every_step(kind):
    model, rule = tiny("usf", kind)
    x, y = batch(model)
    before = [layer.weight.detach().clone() for layer in model.layers]
    for _ in range(4):
        sgd_steps(rule, model, x, y, steps=2, lr=0.5)
        assert rule.effective_feedback(model, 0) is None
        for l in range(1, model.n_layers):
            torch.testing.assert_close(rule.effective_feedback(model, l),
                                       scaled_signs(model.layers[l].weight), rtol=0, atol=0)
    assert any(not torch.equal(b, layer.weight)
               for b, layer in zip(before, model.layers, strict=True))
    # Recomputed, not cached: flipping W flips B.
    with torch.no_grad():
        model.layers[1].weight.neg_()
    torch.testing.assert_close(rule.effective_feedback(model, 1),
                               scaled_signs(model.layers[1].weight), rtol=0, atol=0)


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_equals_bp_when_weights_are_scaled_signs(kind):
    # B = W exactly when every entry of W_l (l >= 1) is ±s.
    model, rule = tiny("usf", kind)
    with torch.no_grad():
        for layer in model.layers[1:]:
            layer.weight.copy_(xavier_std(layer.weight) * torch.sign(layer.weight))
    x, y = batch(model)
    assert_all_equal(rule_grads(rule, model, x, y), bp_grads(model, x, y))


@pytest.mark.parametrize("sparsity", [0.0, 0.5])
def test_backward_uses_the_effective_feedback(sparsity):
    model, rule = tiny("usf", feedback_sparsity=sparsity)
    x, y = batch(model)
    sgd_steps(rule, model, x, y, steps=3)
    feedbacks = [rule.effective_feedback(model, l) for l in range(model.n_layers)]
    assert_all_equal(rule_grads(rule, model, x, y), manual_grads(model, feedbacks, x, y))
    assert not torch.allclose(rule_grads(rule, model, x, y)[0], bp_grads(model, x, y)[0])


def test_feedback_sparsity_masks_the_feedback():
    p = 0.4
    model, rule = tiny("usf", hidden=(200, 200), feedback_sparsity=p)
    x, y = batch(model)
    first = rule.effective_feedback(model, 1)
    assert_sparse_feedback(first, scaled_signs(model.layers[1].weight), p)
    # The mask is fixed: the same entries stay zero after learning.
    sgd_steps(rule, model, x, y, steps=3)
    assert torch.equal(rule.effective_feedback(model, 1) == 0, first == 0)


@pytest.mark.parametrize("sparsity", [0.0, 0.3])
def test_conservation_law_with_l1_potential(sparsity):
    # Δ½‖w_i‖² = s·Δ‖v_i‖₁ under the uSF flow (masked entries excluded).
    for ratio in conservation_ratios("usf", feedback_sparsity=sparsity):
        assert ratio == pytest.approx(1.0, abs=2e-3)
