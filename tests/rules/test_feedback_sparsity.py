"""Feedback sparsity across rules: fixed feedback keeps a 1/sqrt(1 − p) mask, feedback
that learns gets a 0/1 mask (its initial draw rescaled instead), so sparsity never
changes how fast a learned matrix moves."""

import math

import pytest
import torch

from fa_explore import RULES, RunConfig, train

from direct_checks import hidden_outputs, output_error
from feedback_checks import batch, tiny

P = 0.6
LR = 0.1


def mask_of(rule, name):
    return rule.get_buffer(f"{name}_mask")


def sgd_step(rule, model, x, y):
    opt = torch.optim.SGD([*model.parameters(), *rule.parameters()], lr=LR)
    opt.zero_grad(set_to_none=True)
    rule.compute_grads(model, x, y)
    opt.step()


def kp_case(model, rule, x, y):
    """KP: grad B = grad W; the unmasked update of B is −lr·grad W."""
    sgd_step(rule, model, x, y)
    return {f"B{l}": (rule.effective_feedback(model, l), -LR * model.layers[l].weight.grad)
            for l in range(1, model.n_layers)}


def pfa_case(model, rule, x, y):
    """PFA: without a mask on R, grad R = P_mᵀ grad W (P_m the masked P in use)."""
    sgd_step(rule, model, x, y)
    out = {}
    for l in range(1, model.n_layers):
        p_used, r_used = rule.product_factors(l)
        out[f"R{l}"] = (r_used.detach(), -LR * p_used.t() @ model.layers[l].weight.grad)
    return out


def wm_case(model, rule, x, y):
    """WM: one mirror phase on a known draw; unmasked, B gains η/n·rᵀξ − λ·B."""
    gen = torch.Generator().manual_seed(7)
    noise = torch.randn(64, model.layers[1].weight.shape[1], generator=gen,
                        dtype=torch.float64)
    weight = model.layers[1].weight.detach()
    unmasked = (rule.eta_b / len(noise) * (noise @ weight.T).T @ noise
                - rule.lambda_b * rule.B1)
    rule.mirror_layer(model, 1, noise)
    return {"B1": (rule.effective_feedback(model, 1), unmasked)}


def dkp_case(model, rule, x, y):
    """DKP: grad D_l = eᵀ h_l; the unmasked update is −lr·eᵀ h_l."""
    with torch.no_grad():
        error = output_error(model(x), y)
    readout = [error.T @ h.flatten(1) for h in hidden_outputs(model, x)[1:]]
    sgd_step(rule, model, x, y)
    return {f"D{l}": (rule.direct_feedback(l), -LR * g) for l, g in enumerate(readout, 1)}


def fdfa_case(model, rule, x, y):
    """FDFA (running average): unmasked, D_l gains α (D̂_l − D_l)."""
    state = rule.generator.get_state()
    _, _, probes = rule.jacobian_probes(model, x)
    rule.generator.set_state(state)  # compute_grads draws the same perturbations
    old = [rule.stored_direct_feedback(l).clone() for l in range(1, model.n_layers)]
    rule.compute_grads(model, x, y)
    return {f"D{l}": (rule.direct_feedback(l), rule.alpha * (estimate - d))
            for l, (estimate, d) in enumerate(zip(rule.estimates(probes), old, strict=True), 1)}


CASES = {"kp": kp_case, "pfa": pfa_case, "wm": wm_case, "dkp": dkp_case, "fdfa": fdfa_case}


@pytest.mark.parametrize("scaling", ["rescaled", "unscaled"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_learned_feedback_moves_by_its_unmasked_update_restricted_to_the_mask(name, scaling):
    # The effective matrix m ⊙ X changes by exactly m ⊙ (the update X would get without
    # a mask): no 1/sqrt(1 − p) (KP, WM, DKP) or 1/(1 − p) (PFA, whose gradient passes
    # through the mask) factor.
    model, rule = tiny(name, hidden=(30, 20), feedback_sparsity=P,
                       feedback_sparsity_scaling=scaling)
    x, y = batch(model)
    if name in ("dkp", "fdfa"):  # start D away from zero
        with torch.no_grad():
            for n, d in rule.state_dict(keep_vars=True).items():
                if not n.endswith("_mask"):
                    d.normal_(0, 0.3, generator=torch.Generator().manual_seed(2))
    names = [n for n in dict(rule.named_parameters()) | dict(rule.named_buffers())
             if f"{n}_mask" in dict(rule.named_buffers()) and n[0] in "BRD"]
    before = {}
    for n in names:
        stored = rule.get_parameter(n) if n in dict(rule.named_parameters()) else rule.get_buffer(n)
        before[n] = (stored * mask_of(rule, n)).detach().clone()
    for n, (after, unmasked) in CASES[name](model, rule, x, y).items():
        mask = (mask_of(rule, n) != 0).to(unmasked.dtype)
        assert (unmasked.view_as(mask)[mask == 0] != 0).any()  # the mask hides part of it
        torch.testing.assert_close(after - before[n], mask * unmasked.view_as(mask),
                                   rtol=1e-9, atol=1e-12)
        assert set(mask_of(rule, n).unique().tolist()) == {0.0, 1.0}
    assert RULES[name].adaptive_feedback


def test_fixed_feedback_keeps_its_norm_and_learned_feedback_its_initial_norm():
    # Under "rescaled", a fixed B's mask is 1/sqrt(1 − p); a learned B's mask is 0/1 and
    # its draw is 1/sqrt(1 − p) larger: both start at the unmasked norm. "unscaled"
    # keeps every mask 0/1 and every draw as it is: sqrt(1 − p) of the norm.
    for name in ("fa", "kp", "wm"):
        norms = {}
        for scaling in ("rescaled", "unscaled"):
            model, rule = tiny(name, hidden=(300, 200), feedback_sparsity=P,
                               feedback_sparsity_scaling=scaling)
            feedback = rule.effective_feedback(model, 1)
            unmasked = math.sqrt(feedback.numel()) * math.sqrt(2 / sum(feedback.shape))
            norms[scaling] = feedback.norm().item() / unmasked
        assert norms["rescaled"] == pytest.approx(1.0, rel=0.02), name
        assert norms["unscaled"] == pytest.approx(math.sqrt(1 - P), rel=0.02), name


@pytest.mark.parametrize("seed", [1, 2])
def test_very_sparse_pfa_trains_where_it_diverged(seed):
    # p = 0.99 made the mask 10 on R's kept entries, so R's gradient and its use were
    # 10x each: R's effective learning rate 100x. With these settings the old masks
    # ended both seeds as diverged (steps 40 and 65); FA, DFA and sign feedback train.
    run = train(RunConfig(rule="pfa", feedback_sparsity=0.99, hidden=(128, 128),
                          optimizer="sgd", lr=0.01, momentum=0.9, epochs=2, eval_every=5,
                          seed=seed, device="cpu"))
    assert run.status == "finished", run.message
    history = run.history
    assert history["train_loss"].iloc[-1] < history["train_loss"].iloc[0]
    assert history["norm_ratio/2"].max() < 2  # the old path grew to 6-11 times ‖W‖
