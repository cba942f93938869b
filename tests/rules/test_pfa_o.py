"""PFA-o (Li & Benna 2024): product feedback alignment with k = 1 and P orthogonal, so the
path P R reaches W itself when R = Pᵀ W."""

import pytest
import torch

from fa_explore import RunConfig, build
from fa_explore.metrics import norm_ratio, weight_angle

from feedback_checks import assert_all_equal, batch, bp_grads, rule_grads
from product_checks import bp_deltas, float64_pair, local_r_grad, set_r


def test_expansion_ratio_is_one_and_nothing_else():
    assert RunConfig(rule="pfa_o").resolve().expansion_ratio == 1
    assert RunConfig(rule="pfa_o", expansion_ratio=1).expansion_ratio == 1
    for ratio in (2, 10):
        with pytest.raises(ValueError, match="expansion_ratio.*one of 1.*pfa_o"):
            RunConfig(rule="pfa_o", expansion_ratio=ratio)


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_p_is_orthogonal_and_square(kind):
    model, rule = float64_pair("pfa_o", kind)
    for l in range(1, model.n_layers):
        n_out = model.layers[l].weight.shape[0]
        p = rule.get_buffer(f"P{l}")
        assert p.shape == (n_out, n_out)
        eye = torch.eye(n_out, dtype=torch.float64)
        torch.testing.assert_close(p @ p.t(), eye, rtol=0, atol=1e-13)
        torch.testing.assert_close(p.t() @ p, eye, rtol=0, atol=1e-13)
        assert rule.get_parameter(f"R{l}").shape == model.layers[l].weight.shape
    # A random rotation, not a (signed) permutation: most entries are nonzero.
    assert (rule.P1.abs() > 1e-3).double().mean() > 0.7


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_equals_bp_when_r_is_p_transposed_w(kind):
    model, rule = float64_pair("pfa_o", kind)
    for l in range(1, model.n_layers):
        weight = model.layers[l].weight.detach()
        set_r(rule, l, rule.get_buffer(f"P{l}").t() @ weight.flatten(1))
        torch.testing.assert_close(rule.effective_feedback(model, l), weight, rtol=0,
                                   atol=1e-13)
    x, y = batch(model)
    inputs, deltas = bp_deltas(model, x, y)
    assert_all_equal(rule_grads(rule, model, x, y), bp_grads(model, x, y), rtol=1e-10,
                     atol=1e-13)
    for l in range(1, model.n_layers):
        p, r = rule.get_buffer(f"P{l}"), rule.get_parameter(f"R{l}")
        torch.testing.assert_close(r.grad, local_r_grad(model.layers[l], inputs[l], deltas[l],
                                                        p, r), rtol=1e-10, atol=1e-13)
        torch.testing.assert_close(r.grad.flatten(1),
                                   p.t() @ model.layers[l].weight.grad.flatten(1),
                                   rtol=1e-10, atol=1e-13)


def test_path_matches_w_exactly_where_pfa_with_k_1_is_45_degrees_off():
    # At k = 1 a Gaussian-like P gives cos = 1/sqrt(2) (45°); the orthogonal one gives 0°,
    # while R = Pᵀ W itself stays unaligned with W (no explicit weight symmetry).
    results = {}
    for name in ("pfa_o", "pfa"):
        cfg = RunConfig(rule=name, hidden=(100, 200), expansion_ratio=1)
        model, rule = build(cfg, input_shape=(3,), n_classes=2, device="cpu")
        model, rule = model.double(), rule.double()
        weight = model.layers[1].weight
        set_r(rule, 1, rule.P1.t() @ weight.detach())
        path = rule.effective_feedback(model, 1)
        results[name] = (weight_angle(weight, path), norm_ratio(weight, path),
                         weight_angle(weight, rule.R1))
    angle, ratio, r_angle = results["pfa_o"]
    assert angle == pytest.approx(0.0, abs=1e-3) and ratio == pytest.approx(1.0, abs=1e-6)
    assert r_angle == pytest.approx(90.0, abs=12)
    angle, ratio, _ = results["pfa"]
    assert angle == pytest.approx(45.0, abs=2.5) and ratio == pytest.approx(2 ** 0.5, abs=0.05)
