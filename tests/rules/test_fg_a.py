"""FG-A (Ren et al. 2023): per hidden layer u_l ~ N(0, I) on the pre-activation,
d_l[n] = (∂L/∂a_l[n])·u_l[n] by forward-mode AD, δ_l = d_l u_l, grad W_l = δ_lᵀ h_{l-1};
the output layer learns from the exact error e."""

import pytest
import torch
from torch import nn

from fa_explore import RULES, RunConfig, build

from direct_checks import hidden_outputs
from feedback_checks import assert_all_equal, batch, bp_grads, rule_grads, tiny
from forward_gradient_checks import (  # noqa: F401
    Z_LIMIT,
    draw_grads,
    mean_tan2_of_chunk_means,
    one_thread,
    per_example_dot,
    pre_activation_grads,
    projection_z,
    relative_variance,
)


def local_update(layer, h, delta):
    """``grad W = δᵀ h``, ``grad b = Σ δ`` by autograd through the layer alone."""
    h = h.flatten(1) if isinstance(layer, nn.Linear) else h
    out = layer(h)
    return [g.detach() for g in torch.autograd.grad(out, [layer.weight, layer.bias], delta)]


def test_declares_a_forward_gradient_rule():
    cls = RULES["fg_a"]
    assert cls.feedback_kind == "none" and set(cls.models) == {"mlp", "cnn"}
    model, rule = tiny("fg_a")
    assert all(rule.effective_feedback(model, l) is None for l in range(model.n_layers))
    assert list(rule.parameters()) == [] and rule.state_dict() == {}


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_one_draw_is_exact_per_layer_and_example(kind):
    model, rule = tiny("fg_a", kind)
    x, y = batch(model)
    state = rule.generator.get_state()
    result = rule.forward_gradient(model, x, y)
    exact, pre = pre_activation_grads(model, x, y)
    n_hidden = model.n_layers - 1
    assert len(result.perturbations) == len(result.derivatives) == n_hidden
    for l in range(n_hidden):
        u = result.perturbations[l]
        assert u.shape == pre[l].shape
        torch.testing.assert_close(result.outputs[l], pre[l], rtol=1e-12, atol=1e-14)
        # The derivative of THIS layer only: no other layer's perturbation leaks in.
        torch.testing.assert_close(result.derivatives[l], per_example_dot(exact[l], u),
                                   rtol=1e-10, atol=1e-14)
    # The update: δ_l = d_l u_l through the local update; the output layer exactly BP's.
    rule.generator.set_state(state)
    found = rule_grads(rule, model, x, y)
    inputs = hidden_outputs(model, x)
    expected = []
    for l in range(n_hidden):
        d, u = result.derivatives[l], result.perturbations[l]
        delta = d.view(-1, *[1] * (u.dim() - 1)) * u
        expected += local_update(model.layers[l], inputs[l], delta)
    expected += bp_grads(model, x, y)[-2:]
    assert_all_equal(found, expected, rtol=1e-10, atol=1e-14)


def test_output_layer_update_is_bp():
    model, rule = tiny("fg_a", hidden=(7, 6, 5))
    x, y = batch(model)
    found, exact = rule_grads(rule, model, x, y), bp_grads(model, x, y)
    assert_all_equal(found[-2:], exact[-2:], rtol=1e-12, atol=1e-15)
    assert not torch.allclose(found[0], exact[0], atol=1e-3)  # hidden layers: estimates


def test_average_of_draws_is_the_true_gradient():
    model, rule = tiny("fg_a")  # 5-7-6-4
    x, y = batch(model)
    truths = bp_grads(model, x, y)[0::2]
    samples = draw_grads(rule, model, x, y, 1500)
    for l in range(model.n_layers - 1):
        # Scale along the true gradient 1 within 5 standard errors; mis-scaled fails.
        assert abs(projection_z(samples[l], truths[l])) < Z_LIMIT
        for wrong in (0.8, 1.25):
            assert abs(projection_z(wrong * samples[l], truths[l])) > Z_LIMIT
        # tan² of the angle to the true gradient falls like 1/n (10x from 20 to 200).
        ratio = (mean_tan2_of_chunk_means(samples[l], truths[l], 20)
                 / mean_tan2_of_chunk_means(samples[l], truths[l], 200))
        assert 6 < ratio < 16, (l, ratio)


def first_layer_relative_variance(width: int, n_inputs: int, n_draws: int = 1000) -> float:
    """FG-A's relative variance for the weights of a ``width``-neuron tanh layer (every
    neuron active) on one example."""
    cfg = RunConfig(rule="fg_a", hidden=(width,), activation="tanh")
    model, rule = build(cfg, input_shape=(n_inputs,), n_classes=4, device="cpu")
    model, rule = model.double(), rule.double()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, n_inputs, generator=gen, dtype=torch.float64)
    y = torch.tensor([2])
    truth = bp_grads(model, x, y)[0]
    return relative_variance(draw_grads(rule, model, x, y, n_draws)[0], truth)


def test_variance_grows_with_the_neuron_count_not_the_parameter_count():
    # One example: E‖ĝ_W − g_W‖² / ‖g_W‖² = N_l + 1 for a layer of N_l neurons,
    # whatever its fan-in (FDFA seed, Prop. 6), unlike FG-W's P + 1. The estimate is
    # heavy-tailed (standard error about 8% with 1000 draws), hence the wide bounds.
    narrow = first_layer_relative_variance(width=4, n_inputs=5)
    wide = first_layer_relative_variance(width=16, n_inputs=5)
    many_inputs = first_layer_relative_variance(width=4, n_inputs=40)
    assert 0.6 < narrow / 5 < 1.6
    assert 0.6 < wide / 17 < 1.6
    assert 0.6 < many_inputs / 5 < 1.6  # 8x the weights, same variance
    assert wide > 2 * max(narrow, many_inputs)


def test_probe_grads_restores_the_generator():
    model, rule = tiny("fg_a")
    x, y = batch(model)
    first = rule.probe_grads(model, x, y)
    second = rule.probe_grads(model, x, y)
    assert_all_equal(first, second, rtol=0, atol=0)
    assert all(p.grad is None for p in model.parameters())
    twin_model, twin_rule = tiny("fg_a")
    step = rule_grads(rule, model, x, y)
    assert_all_equal(step, rule_grads(twin_rule, twin_model, x, y), rtol=0, atol=0)
    assert_all_equal(step[0::2], first, rtol=0, atol=0)
