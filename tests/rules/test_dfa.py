"""DFA (Nøkland 2016): δ_l = (e D_l) ⊙ σ'(a_l) for hidden layers, δ_L = e, D_l fixed."""

import math

import pytest
import torch

from fa_explore import RunConfig, build, train
from fa_explore.metrics import gradient_angles

from direct_checks import hidden_outputs, manual_dfa_any, manual_dfa_mlp
from feedback_checks import (
    assert_all_equal,
    assert_sparse_feedback,
    batch,
    bp_grads,
    rule_grads,
    tiny,
)


def feedbacks_of(rule, model):
    return [None] + [rule.direct_feedback(l) for l in range(1, model.n_layers)]


@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "tanh"])
def test_hidden_deltas_are_the_output_error_through_direct_feedback(activation):
    model, rule = tiny("dfa", hidden=(7, 6, 5), activation=activation)
    x, y = batch(model)
    found = rule_grads(rule, model, x, y)
    assert_all_equal(found, manual_dfa_mlp(model, feedbacks_of(rule, model), x, y),
                     rtol=1e-12, atol=1e-14)
    # The output layer's update is BP's; the hidden ones are not (random D).
    exact = bp_grads(model, x, y)
    assert_all_equal(found[-2:], exact[-2:], rtol=1e-12, atol=1e-14)
    assert not torch.allclose(found[0], exact[0], atol=1e-3)


def test_feedback_equal_to_the_output_weights_gives_bp_with_one_hidden_layer():
    # With one hidden layer ∂y/∂h_1 = W_2 exactly, so e D_1 with D_1 = W_2 is BP's error.
    model, rule = tiny("dfa", hidden=(9,))
    rule.D1.copy_(model.layers[1].weight.detach())
    x, y = batch(model)
    assert_all_equal(rule_grads(rule, model, x, y), bp_grads(model, x, y),
                     rtol=1e-12, atol=1e-14)
    assert all(angle < 1e-5 for angle in gradient_angles(model, rule, x, y))


def test_cnn_feedback_reaches_pooled_maps_and_equals_bp_with_exact_feedback():
    model, rule = tiny("dfa", "cnn")
    x, y = batch(model)
    hs = hidden_outputs(model, x)[1:]
    for l, h in enumerate(hs, start=1):
        assert rule.direct_feedback(l).shape == (4, h[0].numel())
    # (e D_l) reshaped onto the pooled map, back through max-pool routing and σ'.
    assert_all_equal(rule_grads(rule, model, x, y),
                     manual_dfa_any(model, feedbacks_of(rule, model), x, y),
                     rtol=1e-12, atol=1e-14)
    # One conv block straight into the output layer: D_1 = W_out is exact BP.
    model, rule = build(RunConfig(rule="dfa", model="cnn", channels=(3,), hidden=()),
                        input_shape=model.input_shape, n_classes=4, device="cpu")
    model, rule = model.double(), rule.double()
    model.layers[0].bias.data.uniform_(-0.1, 0.1)  # avoid exact max-pool ties at zero
    rule.D1.copy_(model.layers[-1].weight.detach())
    assert_all_equal(rule_grads(rule, model, x, y), bp_grads(model, x, y),
                     rtol=1e-12, atol=1e-14)


def test_feedback_is_fixed_xavier_and_seeded():
    model, rule = tiny("dfa", hidden=(40, 30))
    assert list(rule.parameters()) == []
    for l, width in [(1, 40), (2, 30)]:
        matrix = rule.D1 if l == 1 else rule.D2
        assert matrix.shape == (4, width)
        bound = math.sqrt(6 / (4 + width))
        assert matrix.abs().max() <= bound and matrix.std() > 0.4 * bound
    x, y = batch(model)
    before = rule.D1.clone()
    rule_grads(rule, model, x, y)
    assert torch.equal(rule.D1, before)  # fixed
    _, again = tiny("dfa", hidden=(40, 30))
    assert torch.equal(again.D1, rule.D1)
    _, other = tiny("dfa", hidden=(40, 30), seed=1)
    assert not torch.equal(other.D1, rule.D1)


def test_no_direct_rule_has_layer_feedback_and_nothing_reaches_the_input():
    model, rule = tiny("dfa")
    assert rule.feedback_kind == "direct" and not rule.uses_init_angle
    assert all(rule.effective_feedback(model, l) is None for l in range(model.n_layers))
    x, y = batch(model)
    x.requires_grad_()
    rule.compute_grads(model, x, y)
    assert x.grad is None  # no input gradient is computed at all


def test_feedback_sparsity_masks_every_direct_matrix():
    p = 0.5
    model, rule = tiny("dfa", hidden=(2500, 2000), feedback_sparsity=p)
    for l in (1, 2):
        stored = getattr(rule, f"D{l}")
        assert_sparse_feedback(rule.direct_feedback(l), stored, p)
    x, y = batch(model)
    assert_all_equal(rule_grads(rule, model, x, y),
                     manual_dfa_mlp(model, feedbacks_of(rule, model), x, y),
                     rtol=1e-12, atol=1e-14)


def test_history_logs_gradient_angles_and_direct_feedback_angles():
    # Plumbing on a tiny budget (10 steps of a 64-32-32-10 net); learning itself is
    # tests/test_learning.py's check.
    run = train(RunConfig(rule="dfa", hidden=(32, 32), train_size=320, epochs=1, eval_every=5,
                          eval_size=200, device="cpu"))
    history = run.history
    assert history["step"].tolist() == [0, 5, 10]
    for n in (1, 2, 3):
        assert history[f"grad_angle/{n}"].notna().all()
        # D_l against the output-to-layer Jacobian; nothing for the input layer.
        assert history[f"weight_angle/{n}"].isna().all() == (n == 1)
    assert (history["grad_angle/3"] < 1e-3).all()  # output layer: exact BP update
    assert history["grad_angle/1"].iloc[0] > 80  # random feedback: nearly orthogonal at start
