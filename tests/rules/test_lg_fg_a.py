"""LG-FG-A (Ren et al. 2023): FG-A where every hidden block learns from its own local
linear classifier's loss only; the heads learn exactly, the output layer from the
global loss exactly."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fa_explore import RULES
from fa_explore.models import CNN

from direct_checks import hidden_outputs
from feedback_checks import N_CLASSES, assert_all_equal, batch, bp_grads, rule_grads, tiny
from forward_gradient_checks import Z_LIMIT, draw_grads, one_thread, per_example_dot, projection_z  # noqa: F401


def block_references(model, rule, x, y):
    """Per hidden block ``l``, by reverse-mode autograd on the block alone (its input
    a constant): the local loss ``L_l`` = cross-entropy of ``heads[l]`` on the block's
    output, and its exact gradients w.r.t. ``a_l``, ``W_l``, ``b_l`` and the head."""
    inputs = hidden_outputs(model, x)
    refs = []
    for l, head in enumerate(rule.heads):
        layer = model.layers[l]
        pre = layer(inputs[l].flatten(1) if isinstance(layer, nn.Linear) else inputs[l])
        pre_leaf = pre.detach().requires_grad_()
        out = model.activation(pre_leaf)
        if isinstance(model, CNN) and l < model.n_conv:
            out = model.pool(out)
        loss = F.cross_entropy(head(out.flatten(1)), y)
        g_pre, g_head_w, g_head_b = torch.autograd.grad(loss, [pre_leaf, head.weight, head.bias])
        g_w, g_b = torch.autograd.grad(pre, [layer.weight, layer.bias], g_pre)
        refs.append({"loss": loss.detach(), "pre": g_pre, "layer": [g_w, g_b],
                     "head": [g_head_w, g_head_b], "output": out.detach()})
    return refs


def head_grads(rule):
    return [g.clone() for head in rule.heads for g in (head.weight.grad, head.bias.grad)]


def test_declares_a_forward_gradient_rule_with_local_heads():
    cls = RULES["lg_fg_a"]
    assert cls.feedback_kind == "none" and set(cls.models) == {"mlp", "cnn"}
    for kind in ("mlp", "cnn"):
        model, rule = tiny("lg_fg_a", kind)
        assert len(rule.heads) == model.n_layers - 1
        for head, out in zip(rule.heads, hidden_outputs(model, batch(model)[0])[1:], strict=True):
            assert head.weight.shape == (N_CLASSES, out[0].numel())
        names = {name for name, _ in rule.named_parameters()}
        assert names == {f"heads.{l}.{p}" for l in range(model.n_layers - 1)
                         for p in ("weight", "bias")}
        assert set(rule.state_dict()) == names
        assert all(rule.effective_feedback(model, l) is None for l in range(model.n_layers))


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_one_draw_is_exact_for_each_local_loss(kind):
    model, rule = tiny("lg_fg_a", kind)
    x, y = batch(model)
    refs = block_references(model, rule, x, y)
    state = rule.generator.get_state()
    result = rule.forward_gradient(model, x, y)
    for l, ref in enumerate(refs):
        u = result.perturbations[l]
        # d_l = (∂L_l/∂a_l)·u_l per example: the LOCAL loss's derivative.
        torch.testing.assert_close(result.derivatives[l], per_example_dot(ref["pre"], u),
                                   rtol=1e-10, atol=1e-14)
    rule.generator.set_state(state)
    found = rule_grads(rule, model, x, y)
    inputs = hidden_outputs(model, x)
    for l in range(len(refs)):
        layer, d, u = model.layers[l], result.derivatives[l], result.perturbations[l]
        delta = d.view(-1, *[1] * (u.dim() - 1)) * u
        h = inputs[l].flatten(1) if isinstance(layer, nn.Linear) else inputs[l]
        expected = torch.autograd.grad(layer(h), [layer.weight, layer.bias], delta)
        assert_all_equal(found[2 * l:2 * l + 2], expected, rtol=1e-10, atol=1e-14)
    # The output layer learns from the global loss exactly.
    assert_all_equal(found[-2:], bp_grads(model, x, y)[-2:], rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_heads_learn_their_exact_local_gradient(kind):
    model, rule = tiny("lg_fg_a", kind)
    x, y = batch(model)
    refs = block_references(model, rule, x, y)
    loss = rule.compute_grads(model, x, y)
    assert_all_equal(head_grads(rule), [g for ref in refs for g in ref["head"]],
                     rtol=1e-10, atol=1e-14)
    # The loss it reports is the global one.
    torch.testing.assert_close(loss, F.cross_entropy(model(x), y), rtol=1e-12, atol=0)


def test_no_global_signal_reaches_the_hidden_blocks():
    model, rule = tiny("lg_fg_a", hidden=(7, 6, 5))
    x, y = batch(model)
    state = rule.generator.get_state()
    before = rule_grads(rule, model, x, y)
    heads_before = head_grads(rule)
    # A different output layer changes the global loss, not a single hidden update.
    with torch.no_grad():
        model.layers[-1].weight.mul_(-3.0).add_(0.5)
        model.layers[-1].bias.add_(1.0)
    rule.generator.set_state(state)
    after = rule_grads(rule, model, x, y)
    assert_all_equal(after[:-2], before[:-2], rtol=0, atol=0)
    assert_all_equal(head_grads(rule), heads_before, rtol=0, atol=0)
    assert not torch.allclose(after[-2], before[-2])
    # Each block learns from its own head only: changing head 1 moves block 1's
    # update and no other (block 0 sits below it, block 2 has its own head).
    with torch.no_grad():
        rule.heads[1].weight.mul_(-2.0)
    rule.generator.set_state(state)
    moved = rule_grads(rule, model, x, y)
    assert not torch.allclose(moved[2], after[2])
    assert_all_equal(moved[:2] + moved[4:], after[:2] + after[4:], rtol=0, atol=0)


def test_average_of_draws_is_the_local_gradient():
    model, rule = tiny("lg_fg_a")
    x, y = batch(model)
    refs = block_references(model, rule, x, y)
    samples = draw_grads(rule, model, x, y, 1500)
    for l, ref in enumerate(refs):
        truth = ref["layer"][0]
        assert abs(projection_z(samples[l], truth)) < Z_LIMIT
        for wrong in (0.8, 1.25):
            assert abs(projection_z(wrong * samples[l], truth)) > Z_LIMIT


def test_probe_grads_restores_the_generator_and_the_heads():
    model, rule = tiny("lg_fg_a")
    x, y = batch(model)
    heads = {k: v.clone() for k, v in rule.state_dict().items()}
    first = rule.probe_grads(model, x, y)
    second = rule.probe_grads(model, x, y)
    assert_all_equal(first, second, rtol=0, atol=0)
    assert all(p.grad is None for p in [*model.parameters(), *rule.parameters()])
    assert_all_equal(list(rule.state_dict().values()), list(heads.values()), rtol=0, atol=0)
    twin_model, twin_rule = tiny("lg_fg_a")
    step = rule_grads(rule, model, x, y)
    assert_all_equal(step, rule_grads(twin_rule, twin_model, x, y), rtol=0, atol=0)
    assert_all_equal(step[0::2], first, rtol=0, atol=0)
