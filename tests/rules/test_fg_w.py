"""FG-W (Baydin et al. 2022): d = ∇L·v by forward-mode AD, grad p = d·v_p, v ~ N(0, I)
over all parameters; unbiased with relative variance P + 1 for P parameters."""

import pytest
import torch
import torch.nn.functional as F

from fa_explore import RULES

from feedback_checks import assert_all_equal, batch, bp_grads, rule_grads, tiny
from forward_gradient_checks import (  # noqa: F401
    Z_LIMIT,
    draw_grads,
    mean_tan2_of_chunk_means,
    one_thread,
    projection_z,
    relative_variance,
)


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def all_grads(rule, model, x, y, n_draws):
    """``n_draws`` FG-W estimates of the whole parameter vector, shape (n_draws, P)."""
    return torch.cat(draw_grads(rule, model, x, y, n_draws, model.parameters()), dim=1)


def test_declares_a_forward_gradient_rule():
    cls = RULES["fg_w"]
    assert cls.feedback_kind == "none" and set(cls.models) == {"mlp", "cnn"}
    model, rule = tiny("fg_w")
    assert all(rule.effective_feedback(model, l) is None for l in range(model.n_layers))
    assert list(rule.parameters()) == [] and rule.state_dict() == {}


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_one_draw_is_the_exact_directional_derivative_times_v(kind):
    model, rule = tiny("fg_w", kind)
    x, y = batch(model)
    state = rule.generator.get_state()
    loss, derivative, tangents = rule.forward_gradient(model, x, y)
    names = [name for name, _ in model.named_parameters()]
    assert list(tangents) == names
    # d = ∇L·v with ∇L from reverse-mode autograd (float64).
    exact = bp_grads(model, x, y)
    expected = sum((g * tangents[name]).sum() for name, g in zip(names, exact, strict=True))
    torch.testing.assert_close(derivative, expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(loss, F.cross_entropy(model(x), y), rtol=1e-12, atol=0)
    # compute_grads makes the same draw (same generator state) and sets d·v_p exactly.
    rule.generator.set_state(state)
    found = rule_grads(rule, model, x, y)
    assert_all_equal(found, [derivative * tangents[name] for name in names], rtol=0, atol=0)


def test_one_direction_over_all_parameters():
    # v is one N(0, I) draw of length P, split over the parameters in order.
    model, rule = tiny("fg_w")
    x, y = batch(model)
    state = rule.generator.get_state()
    _, _, tangents = rule.forward_gradient(model, x, y)
    rule.generator.set_state(state)
    flat = rule.randn(n_params(model), like=model.layers[0].weight)
    torch.testing.assert_close(torch.cat([v.flatten() for v in tangents.values()]), flat,
                               rtol=0, atol=0)
    # Every step draws a fresh direction.
    first, second = rule_grads(rule, model, x, y), rule_grads(rule, model, x, y)
    assert not torch.equal(first[0], second[0])


def test_average_of_draws_is_the_true_gradient():
    model, rule = tiny("fg_w", hidden=(4,))  # 5-4-4: P = 44
    x, y = batch(model)
    truth = torch.cat([g.flatten() for g in bp_grads(model, x, y)])
    samples = all_grads(rule, model, x, y, 3000)
    # Scale along the true gradient: 1 within 5 standard errors ...
    assert abs(projection_z(samples, truth)) < Z_LIMIT
    # ... which a mis-scaled estimator cannot pass (the test has the power to see it).
    for wrong in (0.8, 1.25):
        assert abs(projection_z(wrong * samples, truth)) > Z_LIMIT
    # Direction: tan² of the angle between the mean of n draws and the true gradient
    # shrinks like (P − 1)/n (the angle like 1/sqrt(n)).
    p = truth.numel()
    tan2_50 = mean_tan2_of_chunk_means(samples, truth, 50)
    tan2_500 = mean_tan2_of_chunk_means(samples, truth, 500)
    assert 0.7 < tan2_50 * 50 / (p - 1) < 1.4
    assert 0.7 < tan2_500 * 500 / (p - 1) < 1.4
    assert 6 < tan2_50 / tan2_500 < 16


def test_variance_grows_with_the_parameter_count():
    # E‖ĝ − g‖² / ‖g‖² = P + 1 for v ~ N(0, I) (FDFA seed, Prop. 5): a wider net, more
    # parameters, a noisier estimate of the same kind of gradient.
    found = {}
    for width in (4, 16):
        model, rule = tiny("fg_w", hidden=(width,))
        x, y = batch(model)
        truth = torch.cat([g.flatten() for g in bp_grads(model, x, y)])
        variance = relative_variance(all_grads(rule, model, x, y, 600), truth)
        p = n_params(model)
        assert 0.7 < variance / (p + 1) < 1.4, (width, variance, p)
        found[width] = variance
    assert found[16] > 2.5 * found[4]


def test_probe_grads_restores_the_generator():
    model, rule = tiny("fg_w")
    x, y = batch(model)
    first = rule.probe_grads(model, x, y)
    second = rule.probe_grads(model, x, y)
    assert_all_equal(first, second, rtol=0, atol=0)
    assert all(p.grad is None for p in model.parameters())
    # Training is unaffected: the next step draws what it would have drawn unprobed
    # (the probe saw that very draw).
    twin_model, twin_rule = tiny("fg_w")
    step = rule_grads(rule, model, x, y)
    assert_all_equal(step, rule_grads(twin_rule, twin_model, x, y), rtol=0, atol=0)
    assert_all_equal(step[0::2], first, rtol=0, atol=0)
