"""Kolen–Pollack (Akrout 2019): grad B_l = grad W_l, both with weight decay, so B → W."""

import pytest
import torch

from fa_explore import RunConfig, build
from fa_explore.metrics import angle_between
from fa_explore.models import xavier_std
from fa_explore.training import make_optimizers

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


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_feedback_gradient_is_the_weight_gradient(kind):
    model, rule = tiny("kp", kind)
    x, y = batch(model)
    assert {name for name, _ in rule.named_parameters()} == {
        f"B{l}" for l in range(1, model.n_layers)}
    sgd_steps(rule, model, x, y, steps=2)
    rule_grads(rule, model, x, y)
    for l in range(1, model.n_layers):
        assert torch.equal(rule.get_parameter(f"B{l}").grad, model.layers[l].weight.grad)
        assert rule.get_parameter(f"B{l}").grad is not model.layers[l].weight.grad


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_equals_bp_when_feedback_equals_weights(kind):
    model, rule = tiny("kp", kind)
    with torch.no_grad():
        for l in range(1, model.n_layers):
            rule.get_parameter(f"B{l}").copy_(model.layers[l].weight)
    x, y = batch(model)
    assert_all_equal(rule_grads(rule, model, x, y), bp_grads(model, x, y))
    # And it stays so under SGD without weight decay: W and B get the same update.
    sgd_steps(rule, model, x, y, steps=3)
    assert_all_equal(rule_grads(rule, model, x, y), bp_grads(model, x, y))


@pytest.mark.parametrize("sparsity", [0.0, 0.5])
def test_backward_uses_the_effective_feedback(sparsity):
    model, rule = tiny("kp", feedback_sparsity=sparsity)
    x, y = batch(model)
    sgd_steps(rule, model, x, y, steps=3)
    feedbacks = [rule.effective_feedback(model, l) for l in range(model.n_layers)]
    mask = rule.get_buffer("B1_mask")
    expected = rule.B1.detach() if mask is None else rule.B1.detach() * mask
    assert torch.equal(feedbacks[1], expected)
    assert_all_equal(rule_grads(rule, model, x, y), manual_grads(model, feedbacks, x, y))


def test_difference_decays_geometrically_under_sgd_with_weight_decay():
    # W' = W − lr(g + λW), B' = B − lr(g + λB): W − B shrinks by (1 − lr·λ) per step.
    lr, decay, steps = 0.1, 0.05, 25
    cfg = RunConfig(rule="kp", hidden=(7, 6), optimizer="sgd", lr=lr, momentum=0.0,
                    weight_decay=decay)
    model, rule = build(cfg, input_shape=(5,), n_classes=4, device="cpu")
    model, rule = model.double(), rule.double()
    (optimizer,) = make_optimizers(cfg.resolve(), model, rule)
    x, y = batch(model)
    start = [model.layers[l].weight.detach() - rule.get_parameter(f"B{l}").detach()
             for l in range(1, model.n_layers)]
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        rule.compute_grads(model, x, y)
        optimizer.step()
    for l, diff0 in enumerate(start, 1):
        diff = model.layers[l].weight.detach() - rule.get_parameter(f"B{l}").detach()
        torch.testing.assert_close(diff, (1 - lr * decay) ** steps * diff0,
                                   rtol=1e-10, atol=1e-14)
        assert not torch.equal(model.layers[l].weight.detach(), start[l - 1])


def test_angle_shrinks_toward_zero_with_weight_decay():
    cfg = RunConfig(rule="kp", hidden=(30, 20), init_angle=90.0, optimizer="sgd", lr=0.2,
                    momentum=0.0, weight_decay=0.05)
    model, rule = build(cfg, input_shape=(5,), n_classes=4, device="cpu")
    (optimizer,) = make_optimizers(cfg.resolve(), model, rule)
    x, y = batch(model, n=64)
    x, model, rule = x.float(), model.float(), rule.float()
    angles = []
    for step in range(400):
        if step % 100 == 0:
            angles.append([angle_between(model.layers[l].weight, rule.get_parameter(f"B{l}"))
                           for l in (1, 2)])
        optimizer.zero_grad(set_to_none=True)
        rule.compute_grads(model, x, y)
        optimizer.step()
    angles.append([angle_between(model.layers[l].weight, rule.get_parameter(f"B{l}"))
                   for l in (1, 2)])
    assert angles[0] == pytest.approx([90.0, 90.0], abs=1e-3)
    for layer_angles in zip(*angles, strict=True):
        assert all(b < a for a, b in zip(layer_angles, layer_angles[1:], strict=False))
        assert layer_angles[-1] < 5.0


@pytest.mark.parametrize("angle", [0.0, 60.0, 180.0])
def test_init_angle_sets_the_initial_feedback(angle):
    model, rule = tiny("kp", init_angle=angle)
    for l in range(1, model.n_layers):
        weight, feedback = model.layers[l].weight, rule.get_parameter(f"B{l}")
        assert angle_between(weight, feedback) == pytest.approx(angle, abs=0.05)
        assert feedback.norm().item() == pytest.approx(weight.norm().item(), rel=1e-6)


def test_feedback_sparsity_masks_the_feedback():
    p = 0.4
    model, rule = tiny("kp", hidden=(200, 200), feedback_sparsity=p)
    x, y = batch(model)
    first = rule.effective_feedback(model, 1)
    # B learns: a 0/1 mask, and an initial draw 1/sqrt(1 - p) larger instead, so the
    # feedback in use starts with the norm of an unmasked draw.
    assert_sparse_feedback(first, rule.B1.detach(), p, rescaled=False)
    assert rule.B1.std().item() == pytest.approx(xavier_std(rule.B1) / (1 - p) ** 0.5, rel=0.03)
    assert first.norm().item() == pytest.approx(xavier_std(first) * first.numel() ** 0.5,
                                                rel=0.03)
    sgd_steps(rule, model, x, y, steps=3)
    assert torch.equal(rule.effective_feedback(model, 1) == 0, first == 0)


def test_defaults_decay_both_weights():
    cfg = RunConfig(rule="kp").resolve()
    assert cfg.optimizer == "sgd" and cfg.weight_decay > 0
