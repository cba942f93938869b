"""Metrics against closed forms (docs/math.md#metrics).

The conservation law (implicit_regularization seed, Thm 5.2): for a hidden ReLU
neuron i with incoming weights-and-bias w_i, outgoing weights v_i and fixed
feedback column b_i, FA's gradient flow keeps ½‖w_i‖² − ⟨b_i, v_i⟩ constant.
In discrete time one SGD step changes ½‖w_i‖² by ⟨w_i, Δw_i⟩ + ½‖Δw_i‖²; the
first term equals Δ⟨b_i, v_i⟩ exactly (homogeneity, σ'(a)·a = σ(a)), so the logged
ratio differs from 1 only by Σ½‖Δw‖² / ΣΔ⟨b, v⟩ = O(lr).
"""

import functools
import math

import pytest
import torch

from fa_explore import RULES, Dataset, RunConfig, build, train
from fa_explore.metrics import (
    ConservationTracker,
    angle_between,
    gradient_angles,
    incoming_half_norms,
    layer_metrics,
    norm_ratio,
    output_jacobian,
    true_grads,
    weight_angle,
)

# The reference's setting: a 20-50-5 MLP, full-batch plain SGD, lr 1e-3.
N_EXAMPLES, N_IN, N_HIDDEN, N_CLASSES = 200, 20, 50, 5


def full_batch(dtype=torch.float64):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(N_EXAMPLES, N_IN, generator=generator, dtype=dtype)
    y = torch.randint(0, N_CLASSES, (N_EXAMPLES,), generator=generator)
    return x, y


def build_double(rule, **fields):
    cfg = RunConfig(rule=rule, hidden=fields.pop("hidden", (N_HIDDEN,)), **fields)
    model, rule_module = build(cfg, input_shape=(N_IN,), n_classes=N_CLASSES, device="cpu")
    return model.double(), rule_module.double()


def has_conservation_law(name):
    return RULES[name].conservation_law


@functools.cache
def sgd_conservation(rule_name, lr=1e-3, steps=300, momentum=0.0, weight_decay=0.0,
                     activation="relu", feedback_sparsity=0.0):
    """Full-batch SGD in float64; returns (logged ratio of layer 1, the same ratio
    with the exact discrete-time term Σ½‖Δw‖² taken off its numerator)."""
    model, rule = build_double(rule_name, activation=activation,
                               feedback_sparsity=feedback_sparsity)
    x, y = full_batch()
    params = [*model.parameters(), *rule.parameters()]
    optimizer = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    tracker = ConservationTracker(model, rule)
    first = model.layers[0]
    second_order = 0.0
    for _ in range(steps):
        before = [first.weight.detach().clone(), first.bias.detach().clone()]
        optimizer.zero_grad(set_to_none=True)
        rule.compute_grads(model, x, y)
        optimizer.step()
        second_order += 0.5 * sum((p.detach() - q).pow(2).sum().item()
                                  for p, q in zip((first.weight, first.bias), before, strict=True))
    ratio = tracker.ratios(model, rule)[0]
    if not tracker.start:
        return ratio, math.nan
    norms0, potential0 = tracker.start[0]
    left = (incoming_half_norms(model, 0) - norms0).sum().item()
    right = (rule.conservation_potential(model, 0).double() - potential0).sum().item()
    return ratio, (left - second_order) / right


# ------------------------------------------------------------------- angles
def test_angle_between_closed_forms():
    e1, e2 = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0])
    assert angle_between(e1, e2) == pytest.approx(90.0, abs=1e-9)
    assert angle_between(e1, -e1) == pytest.approx(180.0, abs=1e-6)
    assert angle_between(e1, 7.5 * e1) == pytest.approx(0.0, abs=1e-6)
    assert angle_between(e1, e1 + e2) == pytest.approx(45.0, abs=1e-9)
    assert angle_between(e1, e1 + math.sqrt(3) * e2) == pytest.approx(60.0, abs=1e-6)
    assert math.isnan(angle_between(e1, torch.zeros(3)))


def test_angles_treat_matrices_as_flat_vectors():
    w = torch.randn(6, 4, dtype=torch.float64)
    other = torch.randn(6, 4, dtype=torch.float64)
    # Remove w's component from `other`: orthogonal as vectors, not row by row.
    other = other - (other * w).sum() / (w * w).sum() * w
    assert weight_angle(w, other) == pytest.approx(90.0, abs=1e-9)
    assert weight_angle(w, -2 * w) == pytest.approx(180.0, abs=1e-6)
    assert weight_angle(w, 3 * w) == pytest.approx(0.0, abs=1e-6)
    assert math.isnan(weight_angle(w, None))


def test_norm_ratio_closed_forms():
    w = torch.randn(5, 3)
    assert norm_ratio(w, 2.5 * w) == pytest.approx(2.5, rel=1e-6)
    assert norm_ratio(w, -w) == pytest.approx(1.0, rel=1e-6)
    q, _ = torch.linalg.qr(torch.randn(5, 5, dtype=torch.float64))
    assert norm_ratio(w.double(), q @ w.double()) == pytest.approx(1.0, rel=1e-12)
    assert math.isnan(norm_ratio(w, None))
    assert math.isnan(norm_ratio(torch.zeros(5, 3), w))


# ---------------------------------------------------------- per-layer metrics
def metrics_row(name, **fields):
    model, rule = build_double(name, hidden=(16, 12), **fields)
    x, y = full_batch()
    return layer_metrics(model, rule, x[:64], y[:64], ConservationTracker(model, rule))


def test_fa_gradient_is_exact_only_at_the_output_layer():
    row = metrics_row("fa")
    assert row["grad_angle/3"] == pytest.approx(0.0, abs=1e-4)
    # Random feedback: hidden layers' updates are far from the gradient at init.
    assert row["grad_angle/1"] > 10 and row["grad_angle/2"] > 10
    assert 60 < row["weight_angle/2"] < 120 and 60 < row["weight_angle/3"] < 120


def test_fa_aligned_at_zero_degrees_is_bp():
    """init_angle=0 (adaFA) makes B = W at init, so every update is the gradient."""
    row = metrics_row("fa", init_angle=0.0)
    for layer in (1, 2, 3):
        assert row[f"grad_angle/{layer}"] == pytest.approx(0.0, abs=1e-3)
    for layer in (2, 3):
        assert row[f"weight_angle/{layer}"] == pytest.approx(0.0, abs=1e-3)
        assert row[f"norm_ratio/{layer}"] == pytest.approx(1.0, rel=1e-6)


@pytest.mark.parametrize("angle", [30.0, 90.0, 150.0])
def test_fa_initial_angle_is_the_logged_weight_angle(angle):
    row = metrics_row("fa", init_angle=angle)
    for layer in (2, 3):
        assert row[f"weight_angle/{layer}"] == pytest.approx(angle, abs=1e-3)
        assert row[f"norm_ratio/{layer}"] == pytest.approx(1.0, rel=1e-6)


def set_fa_feedback(rule, model, signs):
    """FA's B_l = sign_l · W_l for l = 1, 2 (0-based layers; layer 0 has no feedback)."""
    with torch.no_grad():
        for l, sign in signs.items():
            rule.get_buffer(f"B{l}").copy_(sign * model.layers[l].weight)


@pytest.mark.parametrize("signs, expected", [
    ({1: 1.0, 2: 1.0}, [0.0, 0.0, 0.0]),  # B = W: FA is BP
    # B = −W into the output-adjacent layer only: its δ and every δ below flip sign.
    ({1: 1.0, 2: -1.0}, [180.0, 180.0, 0.0]),
    # B = −W everywhere: one flip per feedback matrix, so the signs alternate.
    ({1: -1.0, 2: -1.0}, [0.0, 180.0, 0.0]),
])
def test_fa_gradient_angles_with_feedback_plus_or_minus_the_weights(signs, expected):
    model, rule = build_double("fa", hidden=(16, 12))
    set_fa_feedback(rule, model, signs)
    x, y = full_batch()
    angles = gradient_angles(model, rule, x[:32], y[:32])
    assert angles == pytest.approx(expected, abs=1e-4)
    row = layer_metrics(model, rule, x[:32], y[:32], None)
    assert [row[f"grad_angle/{n}"] for n in (1, 2, 3)] == pytest.approx(expected, abs=1e-4)
    assert [row[f"weight_angle/{n}"] for n in (2, 3)] == pytest.approx(
        [0.0 if signs[l] > 0 else 180.0 for l in (1, 2)], abs=1e-4)


def test_true_grads_match_central_finite_differences():
    """An independent oracle for the reference gradient: (L(w + ε) − L(w − ε)) / 2ε per
    weight entry, in float64, through the plain forward."""
    model, _ = build_double("bp", hidden=(6, 5))
    x, y = full_batch()
    x, y = x[:24], y[:24]
    exact = true_grads(model, x, y)
    eps = 1e-6
    with torch.no_grad():
        for layer, grad in zip(model.layers, exact, strict=True):
            assert grad.shape == layer.weight.shape
            flat = layer.weight.view(-1)
            numeric = torch.empty_like(flat)
            for i in range(flat.numel()):
                saved = flat[i].item()
                flat[i] = saved + eps
                up = torch.nn.functional.cross_entropy(model(x), y).item()
                flat[i] = saved - eps
                down = torch.nn.functional.cross_entropy(model(x), y).item()
                flat[i] = saved
                numeric[i] = (up - down) / (2 * eps)
            torch.testing.assert_close(grad.flatten(), numeric, rtol=1e-6, atol=1e-9)


# Rules whose output layer learns from the exact output error e (its update is BP's).
EXACT_OUTPUT_LAYER = {"dfa", "dkp", "fdfa", "fg_a", "lg_fg_a"}


@pytest.mark.parametrize("name", [n for n, c in RULES.items() if c.feedback_kind != "layer"])
def test_rules_without_layer_feedback_log_no_weight_angle(name):
    row = metrics_row(name)
    direct = RULES[name].feedback_kind == "direct"
    for layer in (1, 2, 3):
        # Direct feedback is measured against the output-to-layer Jacobian (below);
        # A learned D that starts at zero (DKP, FDFA) has no angle yet, and no layer
        # sends an error to the input.
        no_angle = not direct or layer == 1 or not RULES[name].uses_feedback_init
        assert math.isnan(row[f"weight_angle/{layer}"]) == no_angle, layer
        assert math.isnan(row[f"norm_ratio/{layer}"]) == (not direct or layer == 1), layer
    if name in EXACT_OUTPUT_LAYER:
        assert row["grad_angle/3"] == pytest.approx(0.0, abs=1e-4)
    else:  # an estimate, not the gradient
        assert row["grad_angle/3"] > 1
    for layer in (1, 2):
        angle = row[f"grad_angle/{layer}"]
        if name == "dkp":  # D starts at zero: no hidden update at all, so no angle
            assert math.isnan(angle)
        else:  # hidden layers get a random-feedback or random-direction estimate
            assert 1 < angle < 179


def test_fg_w_gradient_angle_is_the_closed_form_of_its_draw():
    """FG-W's update is ĝ = (g·v) v: per layer ⟨ĝ_l, g_l⟩ = (g·v)⟨v_l, g_l⟩, so the logged
    angle is that of v_l to g_l, mirrored (180° − it) when the draw points uphill."""
    model, rule = build_double("fg_w", hidden=(16, 12))
    x, y = full_batch()
    x, y = x[:64], y[:64]
    state = rule.generator.get_state()
    row = layer_metrics(model, rule, x, y, None)
    assert torch.equal(rule.generator.get_state(), state)  # the probe drew, then restored
    _, _, tangents = rule.forward_gradient(model, x, y)  # the very draw the probe used
    loss = torch.nn.functional.cross_entropy(model(x), y)
    names = [name for name, _ in model.named_parameters()]
    grads = dict(zip(names, torch.autograd.grad(loss, list(model.parameters())), strict=True))
    slope = sum((grads[n] * tangents[n]).sum() for n in names).item()  # g·v
    for index in range(model.n_layers):
        key = f"layers.{index}.weight"
        v, g = tangents[key].flatten(), grads[key].flatten()
        cos = math.copysign(1.0, slope) * (v @ g).item() / (v.norm() * g.norm()).item()
        assert row[f"grad_angle/{index + 1}"] == pytest.approx(math.degrees(math.acos(cos)),
                                                               abs=1e-6)


# --------------------------------------------------------- the conservation law
def test_fa_conservation_is_exact_but_for_the_discrete_step():
    ratio, corrected = sgd_conservation("fa")
    assert corrected == pytest.approx(1.0, abs=1e-9)
    # What is logged: 1 up to O(lr); about 3e-4 for this net and data at lr 1e-3.
    assert ratio == pytest.approx(1.0, abs=5e-4)


def test_fa_conservation_error_is_first_order_in_the_learning_rate():
    """Same continuous time (lr x steps), half the step: half the deviation."""
    ratio, _ = sgd_conservation("fa", lr=1e-3, steps=300)
    half, corrected = sgd_conservation("fa", lr=5e-4, steps=600)
    assert corrected == pytest.approx(1.0, abs=1e-9)
    assert (half - 1) / (ratio - 1) == pytest.approx(0.5, abs=0.05)


def test_bp_balancedness_holds_to_1e_4():
    """Du et al. 2018: Δ½‖w_i‖² = Δ½‖v_i‖²; both sides carry a second-order term,
    which nearly cancel, so BP meets the reference's 1.0000 ± 1e-4."""
    ratio, _ = sgd_conservation("bp")
    assert ratio == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("name", [n for n in RULES if n not in ("bp", "fa")
                                  and has_conservation_law(n)])
def test_every_declared_conservation_law_holds(name):
    ratio, _ = sgd_conservation(name)
    assert ratio == pytest.approx(1.0, abs=1e-3)


def test_conservation_holds_with_leaky_relu_and_sparse_feedback():
    assert sgd_conservation("fa", activation="leaky_relu")[0] == pytest.approx(1.0, abs=1e-3)
    assert sgd_conservation("fa", feedback_sparsity=0.5)[0] == pytest.approx(1.0, abs=1e-3)


def test_conservation_is_nan_for_tanh():
    """tanh is not homogeneous: no law, nothing logged."""
    ratio, _ = sgd_conservation("fa", activation="tanh", steps=5)
    assert math.isnan(ratio)


def test_momentum_and_weight_decay_break_the_law():
    plain, _ = sgd_conservation("fa")
    with_momentum, _ = sgd_conservation("fa", momentum=0.9)
    assert abs(with_momentum - 1) > 10 * abs(plain - 1)
    with_decay, _ = sgd_conservation("fa", weight_decay=1e-2, steps=100)
    assert abs(with_decay - 1) > 0.1


def test_training_logs_the_conservation_law():
    """The same law through train(): custom full-batch data, plain SGD."""
    x, y = full_batch(torch.float32)
    data = Dataset("gaussian", x, y, x, y, (N_IN,), N_CLASSES)
    cfg = RunConfig(rule="fa", hidden=(N_HIDDEN,), optimizer="sgd", lr=1e-3, momentum=0.0,
                    weight_decay=0.0, batch_size=N_EXAMPLES, epochs=300, eval_every=300,
                    eval_size=N_EXAMPLES)
    history = train(cfg, data=data).history
    assert history["step"].tolist() == [0, 300]
    assert math.isnan(history["conservation/1"].iloc[0])  # nothing has moved yet
    assert history["conservation/1"].iloc[-1] == pytest.approx(1.0, abs=5e-4)
    assert history["conservation/2"].isna().all()  # the output layer has no law
    tanh = train(cfg.replace(activation="tanh", epochs=3, eval_every=1), data=data).history
    assert tanh["conservation/1"].isna().all()


# ---------------------------------------------- which rules declare a law
LAW_RULES = {"bp", "fa", "usf", "frsf"}


def test_exactly_the_rules_with_a_law_declare_it():
    assert {n for n, c in RULES.items() if c.conservation_law} == LAW_RULES


@pytest.mark.parametrize("name", sorted(RULES))
def test_the_declaration_and_the_potential_agree(name):
    model, rule = build_double(name, hidden=(4,))
    assert (rule.conservation_potential(model, 0) is not None) == RULES[name].conservation_law
    ratios = ConservationTracker(model, rule).ratios(model, rule)
    assert len(ratios) == model.n_layers
    if not RULES[name].conservation_law:
        assert all(math.isnan(r) for r in ratios)


@pytest.mark.parametrize("parent", sorted(LAW_RULES))
def test_a_subclass_that_does_not_declare_the_law_gets_nan(parent):
    """A law is never inherited silently: a new rule built on FA (or any rule with
    a law) logs NaN until it declares ``conservation_law = True`` itself."""
    subclass = type(f"Undeclared{parent.title()}", (RULES[parent],), {"__doc__": "test"})
    assert subclass.conservation_law is False
    declared = type(f"Declared{parent.title()}", (RULES[parent],),
                    {"__doc__": "test", "conservation_law": True})
    assert declared.conservation_law is True
    cfg = RunConfig(rule=parent, hidden=(N_HIDDEN,))
    x, y = full_batch()
    ratios = {}
    for cls in (subclass, declared):
        model, _ = build_double(parent)
        rule = cls(model, cfg.resolve()).double()
        assert (rule.conservation_potential(model, 0) is None) == (cls is subclass)
        tracker = ConservationTracker(model, rule)
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
        for _ in range(3):
            optimizer.zero_grad(set_to_none=True)
            rule.compute_grads(model, x, y)
            optimizer.step()
        ratios[cls] = tracker.ratios(model, rule)[0]
    assert math.isnan(ratios[subclass])
    assert ratios[declared] == pytest.approx(1.0, abs=1e-2)


def test_a_rule_defining_a_potential_must_declare_it():
    from fa_explore.rules.base import Rule

    with pytest.raises(TypeError, match="conservation_law = True"):
        type("Sloppy", (Rule,), {"name": "sloppy", "__doc__": "test",
                                  "conservation_potential": lambda self, model, layer: None})


# ------------------------------------------------------ direct feedback alignment
def linear(model):
    """The same network with the identity between layers: a linear map."""
    model.activation = torch.nn.Identity()
    return model


def later_weights_product(model, layer):
    """``W_L ⋯ W_{l+1}``: ∂y/∂h_l of a linear network (h_l the input of layers[l])."""
    product = model.layers[-1].weight.detach()
    for module in reversed(model.layers[layer:-1]):
        product = product @ module.weight.detach()
    return product


def test_output_jacobian_of_a_linear_network_is_the_product_of_the_later_weights():
    model, _ = build_double("bp", hidden=(9, 7, 6))
    linear(model)
    x, _ = full_batch()
    for layer in (1, 2, 3):
        torch.testing.assert_close(output_jacobian(model, layer, x[:32]),
                                   later_weights_product(model, layer), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(output_jacobian(model, 3, x[:32]), model.layers[3].weight.detach())
    with pytest.raises(ValueError, match="hidden layer"):
        output_jacobian(model, 0, x)


def test_output_jacobian_averages_the_examples_jacobians():
    model, _ = build_double("bp", hidden=(8, 6))
    x, _ = full_batch()
    x = x[:16]
    # ReLU: each example has its own Jacobian; the average of one-example Jacobians.
    each = torch.stack([output_jacobian(model, 1, x[k:k + 1]) for k in range(len(x))])
    torch.testing.assert_close(output_jacobian(model, 1, x), each.mean(0))


@pytest.mark.parametrize("name", [n for n, c in RULES.items() if c.feedback_kind == "direct"])
def test_direct_rules_log_the_angle_between_d_and_the_jacobian(name):
    model, rule = build_double(name, hidden=(9, 7))
    linear(model)
    if not RULES[name].uses_feedback_init:  # D starts at zero: give it a direction
        with torch.no_grad():
            for l in (1, 2):
                getattr(rule, f"D{l}").normal_(generator=torch.Generator().manual_seed(l))
    x, y = full_batch()
    row = layer_metrics(model, rule, x[:64], y[:64], None)
    assert math.isnan(row["weight_angle/1"])
    for layer in (1, 2):
        feedback, target = rule.alignment_target(model, layer, x[:64])
        torch.testing.assert_close(target, later_weights_product(model, layer))
        expected = angle_between(rule.direct_feedback(layer), later_weights_product(model, layer))
        assert row[f"weight_angle/{layer + 1}"] == pytest.approx(expected, abs=1e-9)
        assert 45 < row[f"weight_angle/{layer + 1}"] < 135  # random D: far from aligned


def test_direct_feedback_alignment_on_a_cnn_has_the_feature_map_shape():
    cfg = RunConfig(rule="dfa", model="cnn", dataset="mnist1d", channels=(4,), hidden=(12,))
    model, rule = build(cfg, device="cpu")
    x = torch.randn(8, *model.input_shape, generator=torch.Generator().manual_seed(0))
    for layer in range(1, model.n_layers):
        feedback, target = rule.alignment_target(model, layer, x)
        assert feedback.shape == target.shape == rule.direct_feedback(layer).shape
