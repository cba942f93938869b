"""FDFA (Bacho & Chu 2024): D_l tracks ∂y/∂h_l by forward-mode perturbations,
D_l ← (1 − α) D_l + α mean_batch(ẏ ⊗ u_l), then DFA with D_l."""

import pytest
import torch

from fa_explore import RunConfig, train
from fa_explore.rules.base import angle_between

from direct_checks import batch_jvp, hidden_outputs, manual_dfa_any, manual_dfa_mlp, mean_jacobians
from feedback_checks import assert_all_equal, batch, rule_grads, tiny


def feedbacks_of(rule, model):
    return [None] + [rule.direct_feedback(l) for l in range(1, model.n_layers)]


def test_feedback_is_a_zero_buffer_not_a_parameter():
    model, rule = tiny("fdfa")
    assert list(rule.parameters()) == []
    for name in ("D1", "D2"):
        assert name in rule.state_dict()
        assert torch.equal(rule.state_dict()[name], torch.zeros(4, 7 if name == "D1" else 6,
                                                                dtype=torch.float64))


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_forward_mode_output_is_the_sum_of_jacobian_products(kind):
    model, rule = tiny("fdfa", kind, hidden=(7, 6) if kind == "mlp" else (6,),
                       activation="tanh" if kind == "mlp" else "relu")
    x, _ = batch(model)
    logits, hidden, logits_dot, perturbations = rule.perturbed_forward(model, x)
    with torch.no_grad():
        torch.testing.assert_close(logits, model(x), rtol=0, atol=0)
    for h, plain, u in zip(hidden, hidden_outputs(model, x)[1:], perturbations, strict=True):
        torch.testing.assert_close(h.detach().flatten(1), plain.flatten(1), rtol=0, atol=0)
        assert u.shape == (len(x), plain[0].numel())
    # ẏ = Σ_l J_l u_l with the Jacobians from reverse mode (torch.func.jacrev).
    torch.testing.assert_close(logits_dot, batch_jvp(model, x, perturbations),
                               rtol=1e-10, atol=1e-12)


def test_feedback_update_is_an_exponential_average_then_dfa():
    alpha = 0.3
    model, rule = tiny("fdfa", hidden=(7, 6, 5), rule_options={"alpha": alpha})
    gen = torch.Generator().manual_seed(4)
    for name, value in list(rule.named_buffers()):
        if not name.endswith("_mask"):
            value.copy_(torch.randn(value.shape, generator=gen, dtype=value.dtype))
    x, y = batch(model)
    before = [rule.direct_feedback(l).clone() for l in (1, 2, 3)]
    state = rule.generator.get_state()
    _, _, logits_dot, perturbations = rule.perturbed_forward(model, x)
    rule.generator.set_state(state)  # compute_grads draws the same u_l
    found = rule_grads(rule, model, x, y)
    for l, old, u in zip((1, 2, 3), before, perturbations, strict=True):
        estimate = logits_dot.T @ u / len(x)  # mean_batch(ẏ ⊗ u_l)
        torch.testing.assert_close(rule.direct_feedback(l), (1 - alpha) * old + alpha * estimate,
                                   rtol=1e-12, atol=1e-14)
    # The weights learn by DFA with the updated D.
    assert_all_equal(found, manual_dfa_mlp(model, feedbacks_of(rule, model), x, y),
                     rtol=1e-12, atol=1e-14)


def converge(rule, model, x, y, checkpoints, targets):
    """Angles between each D_l and its target after each checkpoint's steps (the
    model does not change: compute_grads only moves D)."""
    angles, step = [], 0
    for until in checkpoints:
        for _ in range(until - step):
            rule.compute_grads(model, x, y)
        step = until
        angles.append([angle_between(rule.direct_feedback(l), target)
                       for l, target in enumerate(targets, start=1)])
    return angles


def test_feedback_converges_to_the_output_weights_with_one_hidden_layer():
    # ∂y/∂h_1 = W_2 for every example: the estimate is unbiased for W_2 itself.
    alpha = 0.01
    model, rule = tiny("fdfa", hidden=(9,), rule_options={"alpha": alpha})
    x, y = batch(model, n=64)
    target = model.layers[1].weight.detach()
    (early,), (late,) = converge(rule, model, x, y, [20, 400], [target])
    assert late < early and late < 4
    # E[D_t] = (1 − (1 − α)^t) W_2: the norm grows toward ‖W_2‖.
    ratio = rule.D1.norm() / target.norm()
    assert abs(ratio - (1 - (1 - alpha) ** 400)) < 0.05


def test_deeper_feedback_converges_to_the_batch_mean_jacobian():
    model, rule = tiny("fdfa", hidden=(7, 6, 5), rule_options={"alpha": 0.01})
    x, y = batch(model, n=64)
    jacobians = mean_jacobians(model, x)  # vmap(jacrev): mean over examples of ∂y/∂h_l
    torch.testing.assert_close(jacobians[-1], model.layers[-1].weight.detach(),
                               rtol=1e-12, atol=1e-14)
    early, late = converge(rule, model, x, y, [20, 400], jacobians)
    for a, b in zip(early, late, strict=True):
        assert b < a and b < 6


def test_feedback_sparsity_masks_the_feedback_in_use():
    model, rule = tiny("fdfa", hidden=(40, 30), feedback_sparsity=0.5,
                       rule_options={"alpha": 1.0})
    x, y = batch(model)
    found = rule_grads(rule, model, x, y)
    for l in (1, 2):
        mask = getattr(rule, f"D{l}_mask")
        assert (mask == 0).any()
        torch.testing.assert_close(rule.direct_feedback(l), getattr(rule, f"D{l}") * mask)
    assert_all_equal(found, manual_dfa_any(model, feedbacks_of(rule, model), x, y),
                     rtol=1e-12, atol=1e-14)


def test_alpha_is_validated():
    with pytest.raises(ValueError, match="alpha"):
        tiny("fdfa", rule_options={"alpha": 0.0})
    with pytest.raises(ValueError, match="alpha"):
        tiny("fdfa", rule_options={"alpha": 1.5})


def test_gradients_align_far_better_than_dfa():
    # FDFA seed, Fig. 7: FDFA's gradient angle is well below DFA's (here ~45° and ~15°
    # against ~90°, after 20 steps of a 64-32-32-10 net).
    angles = {}
    for name in ("dfa", "fdfa"):
        run = train(RunConfig(rule=name, hidden=(32, 32), train_size=640, epochs=1,
                              eval_every=20, eval_size=200, device="cpu"))
        history = run.history
        assert history["step"].tolist() == [0, 20]
        assert history["weight_angle/1"].isna().all()
        assert history[[f"grad_angle/{n}" for n in (1, 2, 3)]].notna().all().all()
        angles[name] = history.iloc[-1]
    for n in (1, 2):
        assert angles["fdfa"][f"grad_angle/{n}"] < angles["dfa"][f"grad_angle/{n}"] - 20
