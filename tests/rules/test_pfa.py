"""Product feedback alignment (Li & Benna 2024): ē = δ_l P_l, δ_{l-1} = (ē R_l) ⊙ σ'(a_{l-1}),
grad R_l = ēᵀ h_{l-1} = P_lᵀ grad W_l, weight decay on W and R drives R → Pᵀ W."""

import math

import pytest
import torch

from fa_explore import RunConfig, build
from fa_explore.metrics import norm_ratio, weight_angle
from fa_explore.models import init_std
from fa_explore.rules import pfa as pfa_module
from fa_explore.rules.base import feedback_call
from fa_explore.training import make_optimizers

from feedback_checks import assert_all_equal, batch, bp_grads, rule_grads, sgd_steps
from product_checks import align_paths, bp_deltas, float64_pair, local_r_grad, set_r


@pytest.fixture(params=["population", "product"])
def route(request, monkeypatch):
    """Run a linear layer's backward through the extra population (ē = δ P) or through
    the product P R; the rule picks the cheaper, and both must give the same numbers."""
    monkeypatch.setattr(pfa_module, "through_population_is_cheaper",
                        lambda *shape: request.param == "population")
    return request.param


def test_route_choice_follows_the_multiply_adds():
    # 784-512-512-10 with batch 128, k = 10: the wide hidden layer goes through the
    # population (forming P R would cost 2.7 GMAC, the population 1.0), the 10-way output
    # layer through the product.
    assert pfa_module.through_population_is_cheaper(128, 512, 5120, 512)
    assert not pfa_module.through_population_is_cheaper(128, 10, 100, 512)
    # A 5x5 convolution on a 14x14 map: batch × positions rows make the product cheaper.
    assert not pfa_module.through_population_is_cheaper(64 * 196, 32, 320, 16 * 25)


def test_shapes_defaults_and_no_feedback_for_the_first_layer():
    model, rule = float64_pair("pfa", "cnn")
    assert rule.cfg.expansion_ratio == 10 and rule.cfg.optimizer == "sgd"
    assert rule.effective_feedback(model, 0) is None
    assert {n for n, _ in rule.named_parameters()} == {f"R{l}" for l in range(1, model.n_layers)}
    assert {n for n, _ in rule.named_buffers()} == {f"P{l}" for l in range(1, model.n_layers)}
    for l in range(1, model.n_layers):
        weight = model.layers[l].weight
        n_extra = 10 * weight.shape[0]
        assert rule.get_buffer(f"P{l}").shape == (weight.shape[0], n_extra)
        assert rule.get_parameter(f"R{l}").shape == (n_extra, *weight.shape[1:])
        assert rule.effective_feedback(model, l).shape == weight.shape
    # R{l} of the first conv is a kernel over the extra population's 40 channels.
    assert rule.R1.shape == (40, 3, 5, 5)
    _, small = float64_pair("pfa", expansion_ratio=3)
    assert small.P1.shape == (6, 18) and small.R1.shape == (18, 7)


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_equals_bp_when_the_path_equals_the_weights(kind, route):
    model, rule = float64_pair("pfa", kind)
    align_paths(model, rule)
    for l in range(1, model.n_layers):
        torch.testing.assert_close(rule.effective_feedback(model, l), model.layers[l].weight,
                                   rtol=0, atol=1e-13)
    x, y = batch(model)
    assert_all_equal(rule_grads(rule, model, x, y), bp_grads(model, x, y), rtol=1e-10,
                     atol=1e-13)


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_r_learns_the_local_rule_which_is_p_transposed_times_grad_w(kind, route):
    model, rule = float64_pair("pfa", kind)
    align_paths(model, rule)  # then the rule's δ_l are BP's, which autograd gives us
    x, y = batch(model)
    inputs, deltas = bp_deltas(model, x, y)
    rule_grads(rule, model, x, y)
    for l in range(1, model.n_layers):
        p, r = rule.get_buffer(f"P{l}"), rule.get_parameter(f"R{l}")
        grad_w = model.layers[l].weight.grad
        torch.testing.assert_close(r.grad, local_r_grad(model.layers[l], inputs[l], deltas[l],
                                                        p, r), rtol=1e-10, atol=1e-13)
        torch.testing.assert_close(r.grad.flatten(1), p.t() @ grad_w.flatten(1), rtol=1e-10,
                                   atol=1e-13)


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
@pytest.mark.parametrize("sparsity", [0.0, 0.5])
def test_backward_uses_the_effective_feedback(kind, sparsity, route):
    # The gradients equal those of a plain feedback-matrix backward through P R (masked),
    # with R unrelated to W (its random start, moved by a few steps).
    model, rule = float64_pair("pfa", kind, feedback_sparsity=sparsity)
    x, y = batch(model)
    sgd_steps(rule, model, x, y, steps=3)
    feedbacks = [rule.effective_feedback(model, l) for l in range(model.n_layers)]
    for l in range(1, model.n_layers):
        assert weight_angle(model.layers[l].weight, feedbacks[l]) > 45
    found = rule_grads(rule, model, x, y)
    for p in model.parameters():
        p.grad = None
    torch.nn.functional.cross_entropy(model(x, feedback_call(feedbacks)), y).backward()
    assert_all_equal(found, [p.grad for p in model.parameters()], rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
@pytest.mark.parametrize("scaling", ["rescaled", "unscaled"])
def test_sparsity_masks_p_and_r(kind, scaling, route):
    p_sparse = 0.5
    model, rule = float64_pair("pfa", kind, feedback_sparsity=p_sparse,
                               feedback_sparsity_scaling=scaling)
    x, y = batch(model)
    # P is fixed: its mask keeps the norm under "rescaled". R learns: always 0/1.
    p_kept = 1 / math.sqrt(1 - p_sparse) if scaling == "rescaled" else 1.0
    for l in range(1, model.n_layers):
        p_mask, r_mask = rule.get_buffer(f"P{l}_mask"), rule.get_buffer(f"R{l}_mask")
        assert set(p_mask.unique().tolist()) == {0.0, p_kept}
        assert set(r_mask.unique().tolist()) == {0.0, 1.0}
        p, r = rule.product_factors(l)
        torch.testing.assert_close(p, rule.get_buffer(f"P{l}") * p_mask, rtol=0, atol=0)
        torch.testing.assert_close(r, rule.get_parameter(f"R{l}") * r_mask, rtol=0, atol=0)
    found = rule_grads(rule, model, x, y)
    # Entries of R under the mask get no update and change nothing when altered.
    for l in range(1, model.n_layers):
        r_mask = rule.get_buffer(f"R{l}_mask")
        assert torch.all(rule.get_parameter(f"R{l}").grad[r_mask == 0] == 0)
        with torch.no_grad():
            rule.get_parameter(f"R{l}")[r_mask == 0] = 1e3
    assert_all_equal(rule_grads(rule, model, x, y), found, rtol=0, atol=0)


@pytest.mark.parametrize("scaling", ["rescaled", "unscaled"])
def test_sparse_p_keeps_unit_expected_gram_matrix(scaling):
    # Kept entries of P have variance 1/(N̄·density); E[P Pᵀ] = I still holds, under
    # either convention (the authors': P drawn with that variance under a 0/1 mask).
    cfg = RunConfig(rule="pfa", hidden=(200, 100), feedback_sparsity=0.75,
                    feedback_sparsity_scaling=scaling)
    model, rule = build(cfg, input_shape=(50,), n_classes=3, device="cpu")
    p, _ = rule.product_factors(1)
    n_extra = p.shape[1]
    kept = p[p != 0].double()
    assert abs(kept.numel() / p.numel() - 0.25) < 0.01
    assert abs(kept.var().item() * n_extra * 0.25 - 1) < 0.02
    gram = (p.double() @ p.double().t()).diagonal()
    assert abs(gram.mean().item() - 1) < 0.02
    stored = rule.P1.double()
    assert stored.var().item() * n_extra == pytest.approx(1 if scaling == "rescaled" else 4,
                                                          rel=0.02)


def geometry(k, n_out=200, n_in=100):
    """W random, R = Pᵀ W: angle and norm ratio of the path P Pᵀ W to W, and the
    eigenvalues of P Pᵀ, for the rule's own P (a layer of shape (n_out, n_in))."""
    cfg = RunConfig(rule="pfa", hidden=(n_in, n_out), expansion_ratio=k)
    model, rule = build(cfg, input_shape=(3,), n_classes=2, device="cpu")
    model, rule = model.double(), rule.double()
    weight, p = model.layers[1].weight, rule.P1
    set_r(rule, 1, p.t() @ weight.detach())
    path = rule.effective_feedback(model, 1)
    return (weight_angle(weight, path), norm_ratio(weight, path),
            torch.linalg.eigvalsh(p @ p.t()))


@pytest.mark.parametrize("k, angle, tolerance", [(1, 45.0, 2.5), (10, 17.5, 1.0),
                                                 (100, 5.7, 0.5)])
def test_path_angle_and_norm_follow_the_expansion_ratio(k, angle, tolerance):
    found_angle, ratio, _ = geometry(k)
    assert math.degrees(math.acos(1 / math.sqrt(1 + 1 / k))) == pytest.approx(angle, abs=0.1)
    assert found_angle == pytest.approx(angle, abs=tolerance)
    assert ratio == pytest.approx(math.sqrt(1 + 1 / k), abs=0.03)


@pytest.mark.parametrize("scaling", ["rescaled", "unscaled"])
def test_sparse_path_norm_ratio_closed_forms(scaling):
    # Density d = 0.3, k = 10, a 200 x 100 layer (N̄ = 2000). P_m, R_m: P and R as used
    # (masked). E[P_m²] = 1/N̄ entrywise under both conventions.
    d, k = 0.3, 10
    cfg = RunConfig(rule="pfa", hidden=(100, 200), expansion_ratio=k, feedback_sparsity=1 - d,
                    feedback_sparsity_scaling=scaling)
    model, rule = build(cfg, input_shape=(3,), n_classes=2, device="cpu")
    model, rule = model.double(), rule.double()
    weight = model.layers[1].weight.detach()
    n_out, n_in = weight.shape
    n_extra = k * n_out
    # At init: E‖P_m R_m‖² = n_out·n_in·N̄·(1/N̄)·E[R_m²], E[R_m²] = d·Var R, and Var R is
    # σ_R²/d ("rescaled": the learned R's draw is 1/sqrt(d) larger) or σ_R² ("unscaled").
    sigma_r = init_std((n_extra, n_in))
    initial = math.sqrt(n_out * n_in) * sigma_r / weight.norm().item()
    if scaling == "unscaled":
        initial *= math.sqrt(d)
    assert norm_ratio(weight, rule.effective_feedback(model, 1)) == pytest.approx(initial,
                                                                                  rel=0.03)
    # sqrt((n_out + n_in)/(N̄ + n_in)) = 0.378 as without sparsity; sqrt(d) of it unscaled.
    assert initial == pytest.approx((0.378 if scaling == "rescaled" else 0.207), abs=0.005)
    # At the decay's fixed point R_m = m ⊙ P_mᵀ W: the path's (i, k) entry is
    # W_ik Σ_j m_jk P_ij² (mean d W_ik, variance (κ − d²)/N̄ · W_ik², κ = 9/5 for
    # uniform entries) plus Σ_j m_jk P_ij Σ_{a≠i} P_aj W_ak (variance d/N̄ Σ_{a≠i} W_ak²):
    # E‖path‖²/‖W‖² = d² + (d (n_out − 1) + κ − d²)/N̄ ≈ d² + d/k, ⟨path, W⟩ ≈ d‖W‖².
    p_used, _ = rule.product_factors(1)
    set_r(rule, 1, rule.R1_mask * (p_used.t() @ weight))
    path = rule.effective_feedback(model, 1)
    kappa = 9 / 5
    fixed = math.sqrt(d ** 2 + (d * (n_out - 1) + kappa - d ** 2) / n_extra)
    assert fixed == pytest.approx(math.sqrt(d ** 2 + d / k), abs=0.003)
    assert fixed == pytest.approx(0.348, abs=0.001)  # the authors' 0.35, either way
    assert norm_ratio(weight, path) == pytest.approx(fixed, rel=0.02)
    assert weight_angle(weight, path) == pytest.approx(math.degrees(math.acos(d / fixed)),
                                                       abs=0.7)
    # A 1/sqrt(d) mask on the learned R (the old convention) converged to R_m = m ⊙ P_mᵀ W / d:
    # the ratio 1/d times larger, ≈ 1.16 (the 1.17), at the same angle.
    assert fixed / d == pytest.approx(math.sqrt(1 + 1 / (k * d)), abs=0.01)


def test_gram_eigenvalues_follow_marchenko_pastur():
    _, _, eigenvalues = geometry(10)
    low, high = (1 - 1 / math.sqrt(10)) ** 2, (1 + 1 / math.sqrt(10)) ** 2
    assert (low, high) == pytest.approx((0.47, 1.73), abs=0.01)
    # The spectrum fills the bulk [0.47, 1.73], edges blurred by finite size only.
    assert low - 0.08 < eigenvalues.min() < low + 0.1
    assert high - 0.1 < eigenvalues.max() < high + 0.08
    assert eigenvalues.mean().item() == pytest.approx(1.0, abs=0.02)
    assert (eigenvalues ** 2).mean().item() == pytest.approx(1.1, abs=0.03)


def test_weight_decay_schedule_switches_after_the_first_epoch():
    cfg = RunConfig(rule="pfa", hidden=(7, 6)).resolve()
    model, rule = build(cfg, input_shape=(5,), n_classes=4, device="cpu")
    optimizers = make_optimizers(cfg, model, rule)
    decays = []
    for epoch in range(3):
        rule.on_epoch_start(epoch, optimizers)
        decays.append({g["weight_decay"] for o in optimizers for g in o.param_groups})
    assert decays == [{0.03}, {0.01}, {0.01}]
    # Every weight and every R is in the decayed groups.
    decayed = {id(p) for o in optimizers for g in o.param_groups for p in g["params"]}
    assert decayed == {id(p) for p in [*model.parameters(), *rule.parameters()]}
    # Both values are settings.
    cfg = RunConfig(rule="pfa", hidden=(7, 6), weight_decay=1e-4,
                    rule_options={"first_epoch_weight_decay": 0.05}).resolve()
    model, rule = build(cfg, input_shape=(5,), n_classes=4, device="cpu")
    optimizers = make_optimizers(cfg, model, rule)
    rule.on_epoch_start(0, optimizers)
    assert optimizers[0].param_groups[0]["weight_decay"] == 0.05
    rule.on_epoch_start(1, optimizers)
    assert optimizers[0].param_groups[0]["weight_decay"] == 1e-4


@pytest.mark.parametrize("kind, sparsity, scaling", [
    ("mlp", 0.0, "rescaled"), ("cnn", 0.0, "rescaled"), ("mlp", 0.5, "rescaled"),
    ("mlp", 0.5, "unscaled"), ("cnn", 0.5, "rescaled")])
def test_weight_decay_drives_r_to_p_transposed_w(kind, sparsity, scaling):
    # grad R = m ⊙ P_mᵀ grad W (m: R's 0/1 mask, P_m: the masked P in use; m = 1 and
    # P_m = P without sparsity), so D = R − m ⊙ P_mᵀ W only feels the decay: with SGD
    # momentum μ, D_t = d_t D_0 where b_t = μ b_{t-1} + λ d_t, d_{t+1} = d_t − lr b_t.
    model, rule = float64_pair("pfa", kind, feedback_sparsity=sparsity,
                               feedback_sparsity_scaling=scaling)
    cfg = rule.cfg
    optimizers = make_optimizers(cfg, model, rule)
    rule.on_epoch_start(0, optimizers)
    lr, momentum, decay = cfg.lr, cfg.momentum, cfg.rule_option("first_epoch_weight_decay")
    x, y = batch(model)

    def gaps():
        out = []
        for l in range(1, model.n_layers):
            p_used, _ = rule.product_factors(l)
            mask = rule.get_buffer(f"R{l}_mask")
            target = p_used.t() @ model.layers[l].weight.detach().flatten(1)
            if mask is not None:
                target = mask.flatten(1) * target
            out.append(rule.get_parameter(f"R{l}").detach().flatten(1) - target)
        return out

    start, d, buffer = gaps(), 1.0, 0.0
    for step in range(15):
        for o in optimizers:
            o.zero_grad(set_to_none=True)
        rule.compute_grads(model, x, y)
        for o in optimizers:
            o.step()
        buffer = momentum * buffer + decay * d if step else decay * d
        d -= lr * buffer
    assert d < 0.95
    for gap, gap0 in zip(gaps(), start, strict=True):
        torch.testing.assert_close(gap, d * gap0, rtol=1e-9, atol=1e-12)
