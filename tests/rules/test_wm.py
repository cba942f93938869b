"""Weight mirror (Akrout 2019): B_l ← B_l + η_B·mean(rᵀξ) − λ_B·B_l with r = ξ W_lᵀ."""

import pytest
import torch

from fa_explore import RunConfig, build
from fa_explore.metrics import angle_between
from fa_explore.models import xavier_std

from feedback_checks import (
    assert_all_equal,
    assert_sparse_feedback,
    batch,
    bp_grads,
    manual_grads,
    rule_grads,
    sgd_steps,
    tiny,
)


def test_mirror_update_is_the_formula_on_a_fixed_draw():
    options = {"sigma": 0.7, "eta_b": 0.3, "lambda_b": 0.1}
    model, rule = tiny("wm", rule_options=options)
    gen = torch.Generator().manual_seed(4)
    for l in (1, 2):
        weight, before = model.layers[l].weight.detach(), rule.get_buffer(f"B{l}").clone()
        noise = 0.7 * torch.randn(11, weight.shape[1], generator=gen, dtype=torch.float64)
        rule.mirror_layer(model, l, noise)
        response = noise @ weight.T
        expected = before + 0.3 * response.T @ noise / 11 - 0.1 * before
        torch.testing.assert_close(rule.get_buffer(f"B{l}"), expected, rtol=1e-12, atol=1e-14)


def test_compute_grads_mirrors_with_noise_from_the_rule_generator():
    options = {"sigma": 0.5, "eta_b": 0.2, "lambda_b": 0.05, "mirror_batch": 13}
    model, rule = tiny("wm", rule_options=options)
    x, y = batch(model)
    replay = torch.Generator().set_state(rule.generator.get_state())
    before = [rule.get_buffer(f"B{l}").clone() for l in (1, 2)]
    rule_grads(rule, model, x, y)
    for l, b in zip((1, 2), before, strict=True):
        weight = model.layers[l].weight.detach()
        noise = 0.5 * torch.randn(13, weight.shape[1], generator=replay, dtype=torch.float64)
        expected = 0.95 * b + 0.2 * (noise @ weight.T).T @ noise / 13
        torch.testing.assert_close(rule.get_buffer(f"B{l}"), expected, rtol=1e-12, atol=1e-14)


def test_mirror_every_k_steps():
    model, rule = tiny("wm", rule_options={"mirror_every": 3})
    x, y = batch(model)
    changed = []
    for _ in range(7):
        before = rule.B1.clone()
        rule_grads(rule, model, x, y)
        changed.append(not torch.equal(rule.B1, before))
    assert changed == [True, False, False, True, False, False, True]
    assert int(rule.mirror_clock) == 7


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_feedback_converges_to_the_weights_direction_with_weights_fixed(kind):
    # E[rᵀξ]/batch = σ² W, so B → (η_B σ² / λ_B) W (here 2 W) up to noise whose
    # variance shrinks with λ_B / mirror_batch.
    options = {"sigma": 0.5, "eta_b": 0.16, "lambda_b": 0.02, "mirror_batch": 128}
    model, rule = tiny("wm", kind, rule_options=options)
    x, y = batch(model)
    assert angle_between(model.layers[1].weight, rule.B1) > 45
    weights = [layer.weight.detach().clone() for layer in model.layers]
    for _ in range(400):
        rule_grads(rule, model, x, y)  # no optimizer step: W stays fixed
    assert all(torch.equal(w, layer.weight) for w, layer in zip(weights, model.layers, strict=True))
    for l in range(1, model.n_layers):
        weight, feedback = model.layers[l].weight, rule.get_buffer(f"B{l}")
        assert angle_between(weight, feedback) < 4.0
        assert feedback.norm().item() / weight.norm().item() == pytest.approx(2.0, rel=0.04)


def test_conv_mirror_estimate_is_unbiased_at_padded_borders():
    # Each kernel tap meets fewer input positions near the padded border; dividing by
    # that count keeps E[estimate] = σ² W (otherwise the taps would be reweighted).
    options = {"sigma": 1.0, "eta_b": 1.0, "lambda_b": 1.0 - 1e-12}
    model, rule = tiny("wm", "cnn", rule_options=options)
    weight = model.layers[1].weight.detach()  # conv 3 -> 4 channels on 4x4 inputs
    gen = torch.Generator().manual_seed(0)
    estimates = []
    for _ in range(20):
        noise = torch.randn(500, 3, 4, 4, generator=gen, dtype=torch.float64)
        rule.mirror_layer(model, 1, noise)  # λ_B ≈ 1: B becomes this draw's estimate
        estimates.append(rule.B1.clone())
    mean = torch.stack(estimates).mean(0)
    assert angle_between(mean, weight) < 2.0
    assert mean.norm().item() / weight.norm().item() == pytest.approx(1.0, rel=0.02)


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_equals_bp_when_feedback_equals_weights(kind):
    model, rule = tiny("wm", kind)
    with torch.no_grad():
        for l in range(1, model.n_layers):
            rule.get_buffer(f"B{l}").copy_(model.layers[l].weight)
    x, y = batch(model)
    assert_all_equal(rule_grads(rule, model, x, y), bp_grads(model, x, y))


@pytest.mark.parametrize("sparsity", [0.0, 0.5])
def test_backward_uses_the_effective_feedback(sparsity):
    model, rule = tiny("wm", feedback_sparsity=sparsity)
    x, y = batch(model)
    sgd_steps(rule, model, x, y, steps=3)
    # The step uses B as it is now, and mirrors afterwards (in place: keep copies).
    feedbacks = [None] + [rule.effective_feedback(model, l).clone()
                          for l in range(1, model.n_layers)]
    grads = rule_grads(rule, model, x, y)
    assert_all_equal(grads, manual_grads(model, feedbacks, x, y))
    assert not torch.equal(rule.effective_feedback(model, 1), feedbacks[1])


def test_probe_grads_restores_feedback_and_clock():
    model, rule = tiny("wm")
    x, y = batch(model)
    state = {k: v.clone() for k, v in rule.state_dict().items()}
    rule.probe_grads(model, x, y)
    for key, value in rule.state_dict().items():
        assert torch.equal(value, state[key]), key


@pytest.mark.parametrize("angle", [0.0, 90.0])
def test_init_angle_sets_the_initial_feedback(angle):
    model, rule = tiny("wm", init_angle=angle)
    for l in range(1, model.n_layers):
        weight, feedback = model.layers[l].weight, rule.get_buffer(f"B{l}")
        assert angle_between(weight, feedback) == pytest.approx(angle, abs=0.05)
        assert feedback.norm().item() == pytest.approx(weight.norm().item(), rel=1e-6)


def test_feedback_sparsity_masks_the_feedback():
    p = 0.3
    model, rule = tiny("wm", hidden=(200, 200), feedback_sparsity=p)
    x, y = batch(model)
    # B learns: a 0/1 mask, and an initial draw 1/sqrt(1 - p) larger instead.
    assert_sparse_feedback(rule.effective_feedback(model, 1), rule.B1, p, rescaled=False)
    assert rule.B1.std().item() == pytest.approx(xavier_std(rule.B1) / (1 - p) ** 0.5, rel=0.03)
    sgd_steps(rule, model, x, y, steps=2)
    assert_sparse_feedback(rule.effective_feedback(model, 1), rule.B1, p, rescaled=False)


@pytest.mark.parametrize("option, value", [("sigma", 0.0), ("lambda_b", 1.0),
                                           ("mirror_every", 0), ("mirror_batch", 2.5),
                                           ("eta_b", -1.0)])
def test_invalid_options_raise(option, value):
    with pytest.raises(ValueError, match=option):
        build(RunConfig(rule="wm", rule_options={option: value}), input_shape=(5,),
              n_classes=4, device="cpu")
