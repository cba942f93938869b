"""DKP (Webster et al. 2021): DFA whose D_l start at zero and learn with grad D_l = eᵀ h_l."""

import math
from itertools import pairwise

import pytest
import torch

from fa_explore import RunConfig, build, train
from fa_explore.metrics import angle_between
from fa_explore.training import make_optimizers, train_iter

from direct_checks import hidden_outputs, manual_dfa_any, manual_dfa_mlp, output_error
from feedback_checks import assert_all_equal, batch, rule_grads, tiny


def feedbacks_of(rule, model):
    return [None] + [rule.direct_feedback(l) for l in range(1, model.n_layers)]


def randomise_feedback(rule, seed=5):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in rule.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=gen, dtype=p.dtype))


def test_feedback_starts_at_zero_and_is_learned():
    model, rule = tiny("dkp")
    names = dict(rule.named_parameters())
    assert set(names) == {"D1", "D2"}
    assert all(torch.equal(p, torch.zeros_like(p)) for p in names.values())
    # Zero feedback: no hidden layer learns at the first step, the output layer does.
    x, y = batch(model)
    grads = rule_grads(rule, model, x, y)
    assert all(g.abs().max() == 0 for g in grads[:-2])
    assert grads[-2].abs().max() > 0


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_feedback_gradient_is_error_times_hidden_output(kind):
    model, rule = tiny("dkp", kind)
    randomise_feedback(rule)
    x, y = batch(model)
    found = rule_grads(rule, model, x, y)
    # The weights learn by DFA with the current D ...
    manual = manual_dfa_mlp if kind == "mlp" else manual_dfa_any
    assert_all_equal(found, manual(model, feedbacks_of(rule, model), x, y),
                     rtol=1e-12, atol=1e-14)
    # ... and each D_l by the readout gradient eᵀ h_l (batch-summed, e of the mean loss).
    with torch.no_grad():
        error = output_error(model(x), y)
    for l, h in enumerate(hidden_outputs(model, x)[1:], start=1):
        torch.testing.assert_close(getattr(rule, f"D{l}").grad, error.T @ h.flatten(1),
                                   rtol=1e-12, atol=1e-14)


def test_last_feedback_gets_exactly_the_output_weights_update():
    # Kolen–Pollack symmetry: D_{L-1} and W_L see the same gradient, so under the
    # same Adam step (no decay) W_L − D_{L-1} stays W_L(0) whatever the steps: without
    # decay D only tracks W_L − W_L(0).
    cfg = RunConfig(rule="dkp", hidden=(7, 6), optimizer="adam", lr=0.01, weight_decay=0.0,
                    rule_options={"feedback_optimizer": "adam", "feedback_lr": 0.01,
                                  "feedback_weight_decay": 0.0})
    model, rule = build(cfg, input_shape=(5,), n_classes=4, device="cpu")
    model, rule = model.double(), rule.double()
    optimizers = make_optimizers(cfg.resolve(), model, rule)
    w0 = model.layers[-1].weight.detach().clone()
    x, y = batch(model)
    for _ in range(20):
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        rule.compute_grads(model, x, y)
        torch.testing.assert_close(rule.D2.grad, model.layers[-1].weight.grad,
                                   rtol=1e-12, atol=1e-15)
        for opt in optimizers:
            opt.step()
    torch.testing.assert_close(model.layers[-1].weight.detach() - rule.D2.detach(), w0,
                               rtol=1e-10, atol=1e-12)
    assert rule.D2.abs().max() > 0.05  # it did move


def test_defaults_share_the_forward_weights_optimizer_and_decay():
    cfg = RunConfig(rule="dkp").resolve()
    assert (cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay) == ("sgd", 0.05, 0.9, 1e-2)
    assert cfg.rule_option("feedback_optimizer") == "shared"
    model, rule = build(cfg, input_shape=(5,), n_classes=4, device="cpu")
    (optimizer,) = make_optimizers(cfg, model, rule)
    (group,) = optimizer.param_groups
    assert isinstance(optimizer, torch.optim.SGD) and group["weight_decay"] == 1e-2
    assert {id(p) for p in group["params"]} == {
        id(p) for p in [*model.parameters(), *rule.parameters()]}


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_shared_decay_drives_the_last_feedback_to_the_output_weights(momentum):
    # grad D_{L-1} = grad W_L, one SGD group with decay λ: G = W_L − D_{L-1} only feels
    # the decay, G_t = d_t G_0 with b_t = μ b_{t-1} + λ d_t, d_{t+1} = d_t − lr b_t.
    lr, decay = 0.1, 0.05
    cfg = RunConfig(rule="dkp", hidden=(7, 6), lr=lr, momentum=momentum,
                    weight_decay=decay).resolve()
    model, rule = build(cfg, input_shape=(5,), n_classes=4, device="cpu")
    model, rule = model.double(), rule.double()
    (optimizer,) = make_optimizers(cfg, model, rule)
    x, y = batch(model)
    gap0 = model.layers[-1].weight.detach() - rule.D2.detach()
    d, buffer = 1.0, 0.0
    for step in range(30):
        optimizer.zero_grad(set_to_none=True)
        rule.compute_grads(model, x, y)
        optimizer.step()
        buffer = momentum * buffer + decay * d if step else decay * d
        d -= lr * buffer
    assert d < 0.9
    torch.testing.assert_close(model.layers[-1].weight.detach() - rule.D2.detach(), d * gap0,
                               rtol=1e-9, atol=1e-12)


def test_feedback_has_its_own_adam_group_from_the_options():
    cfg = RunConfig(rule="dkp", optimizer="sgd", lr=0.05,
                    rule_options={"feedback_optimizer": "adam"}).resolve()
    model, rule = build(cfg, input_shape=(5,), n_classes=4, device="cpu")
    assert cfg.rule_options == {"feedback_optimizer": "adam", "feedback_lr": 1e-4,
                                "feedback_weight_decay": 1e-6}
    optimizers = {type(o).__name__: o for o in make_optimizers(cfg, model, rule)}
    assert set(optimizers) == {"SGD", "Adam"}
    (sgd_group,) = optimizers["SGD"].param_groups
    (adam_group,) = optimizers["Adam"].param_groups
    assert sgd_group["lr"] == 0.05 and len(sgd_group["params"]) == 6
    assert adam_group["lr"] == 1e-4 and adam_group["weight_decay"] == 1e-6
    assert {id(p) for p in adam_group["params"]} == {id(p) for p in rule.parameters()}
    cfg = RunConfig(rule="dkp", rule_options={"feedback_optimizer": "adam",
                                              "feedback_lr": 3e-3}).resolve()
    (group,) = [g for g in rule.__class__(model, cfg).param_groups(model)
                if g.get("optimizer") == "adam"]
    assert group["lr"] == 3e-3


def test_feedback_sparsity_masks_the_feedback_in_use():
    model, rule = tiny("dkp", hidden=(40, 30), feedback_sparsity=0.5)
    randomise_feedback(rule)
    for l in (1, 2):
        mask = getattr(rule, f"D{l}_mask")
        # D learns: a plain 0/1 mask (a 1/sqrt(1 - p) one would speed its learning up).
        assert set(mask.unique().tolist()) == {0.0, 1.0}
        assert 0.3 < (mask == 0).double().mean() < 0.7
        torch.testing.assert_close(rule.direct_feedback(l), getattr(rule, f"D{l}") * mask)
    x, y = batch(model)
    assert_all_equal(rule_grads(rule, model, x, y),
                     manual_dfa_mlp(model, feedbacks_of(rule, model), x, y),
                     rtol=1e-12, atol=1e-14)


def last_feedback_angles(cfg):
    """Per evaluation: the angle between D_{L-1} and W_L, and the history."""
    angles, run = [], None
    for snapshot in train_iter(cfg):
        run = snapshot.run
        if snapshot.row is not None:
            angles.append(angle_between(run.rule.D2, run.model.layers[-1].weight))
    return angles, run.history


def test_with_the_defaults_the_last_feedback_becomes_the_output_weights():
    # Digits, 128-128, 3 epochs (135 steps), evaluated every epoch. Measured (seeds
    # 0-1): D_2 at 39°, 35°, 29° from W_3 after each epoch; the last hidden layer's
    # gradient angle 25-26° against DFA's 71-72° (and 0.4° after 20 epochs). The
    # paper's own Adam for D (no decay on W) stays at 71° and 73°.
    cfg = RunConfig(rule="dkp", epochs=3, eval_every=45, device="cpu")
    angles, history = last_feedback_angles(cfg)
    assert math.isnan(angles[0])  # D starts at zero
    assert all(b < a for a, b in pairwise(angles[1:])) and angles[-1] < 35
    dfa = train(cfg.replace(rule="dfa")).history
    # The logged weight angle of the output layer is this one: D_2 against ∂y/∂h_2 = W_3.
    assert history["weight_angle/3"].tolist()[1:] == pytest.approx(angles[1:], abs=1e-6)
    last_hidden = history["grad_angle/2"].iloc[-1]
    assert last_hidden < 35 and last_hidden < dfa["grad_angle/2"].iloc[-1] - 30
    assert history["grad_angle/1"].iloc[-1] < dfa["grad_angle/1"].iloc[-1] - 20
    assert history["test_acc"].iloc[-1] > 0.9
    paper, _ = last_feedback_angles(cfg.replace(
        optimizer="adam", lr=1e-3, weight_decay=0.0,
        rule_options={"feedback_optimizer": "adam"}))
    assert paper[-1] > 60  # D tracks W_3 − W_3(0): the reason for the defaults
