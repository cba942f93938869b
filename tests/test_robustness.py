"""fa_explore.analysis.robustness: FGSM against its closed form on a linear
softmax model, PGD against FGSM and its norm ball, noise, the tidy curve, and
independence from the training rule."""

import numpy as np
import pytest
import torch

import fa_explore
from fa_explore import RunConfig
from fa_explore.analysis import (
    adversarial_examples,
    attack_accuracy,
    noise_accuracy,
    robustness_curve,
)
from fa_explore.metrics import evaluate

EPS = (0.05, 0.1, 0.2, 0.3)


@pytest.fixture(scope="module")
def trained():
    """A small BP net that learned the digits (test accuracy ~0.87)."""
    run = fa_explore.train(RunConfig(rule="bp", hidden=(16,), epochs=5, train_size=400,
                                     lr=0.01, eval_size=64))
    return run, run.data.x_test[:200], run.data.y_test[:200]


@pytest.fixture(scope="module")
def fa_and_bp(fa_run_and_bp_copy):
    run, bp_model = fa_run_and_bp_copy
    return run, bp_model, run.data.x_test[:100], run.data.y_test[:100]


def linear_model():
    run = fa_explore.train(RunConfig(rule="bp", hidden=(), epochs=1, train_size=200,
                                     eval_size=64))
    return run.model.double(), run.data.x_test[:80].double(), run.data.y_test[:80]


def closed_form_input_gradient(model, x, y):
    """For logits ``W x + b``, each example's cross-entropy has ∇ₓL = (softmax − onehot) W."""
    layer = model.layers[0]
    logits = x.flatten(1) @ layer.weight.T + layer.bias
    residual = torch.softmax(logits, 1) - torch.nn.functional.one_hot(y, logits.shape[1])
    return (residual @ layer.weight).detach().view_as(x)


def test_fgsm_on_a_linear_softmax_model_is_the_closed_form():
    model, x, y = linear_model()
    g = closed_form_input_gradient(model, x, y)
    eps = 0.2
    expected = x + eps * g.sign()
    accuracy, adv = attack_accuracy(model, x, y, eps, return_examples=True)
    torch.testing.assert_close(adv, expected, rtol=0, atol=1e-12)
    with torch.no_grad():
        assert accuracy == (model(expected).argmax(1) == y).double().mean().item()
    # L2: ε along the normalised gradient, per example.
    expected_l2 = x + eps * g / g.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    torch.testing.assert_close(adversarial_examples(model, x, y, eps, norm="l2"), expected_l2,
                               rtol=1e-10, atol=1e-12)


def test_eps_zero_is_the_clean_accuracy(trained):
    run, x, y = trained
    _, clean = evaluate(run.model, x, y)
    for method in ("fgsm", "pgd"):
        for norm in ("linf", "l2"):
            assert attack_accuracy(run.model, x, y, 0.0, method=method, norm=norm) == clean
    assert noise_accuracy(run.model, x, y, 0.0) == clean


def test_pgd_is_at_least_as_strong_as_fgsm_and_stays_in_the_ball(trained):
    run, x, y = trained
    _, clean = evaluate(run.model, x, y)
    for norm, scale in (("linf", 1.0), ("l2", 8.0)):
        previous = clean
        for eps in EPS:
            eps = eps * scale
            fgsm = attack_accuracy(run.model, x, y, eps, norm=norm)
            pgd, adv = attack_accuracy(run.model, x, y, eps, method="pgd", norm=norm,
                                       return_examples=True)
            assert pgd <= fgsm <= clean
            assert pgd <= previous  # a larger ball is no weaker
            previous = pgd
            delta = (adv - x).flatten(1).double()
            # x + δ is stored in float32: allow its rounding, a few ulps of |x|.
            slack = 4 * torch.finfo(torch.float32).eps * float(x.abs().max())
            size = delta.abs().max(1).values if norm == "linf" else delta.norm(dim=1)
            assert float(size.max()) <= eps + slack * (1 if norm == "linf" else 8)
            assert float(size.max()) >= 0.5 * eps  # it does move out to the ball
    assert attack_accuracy(run.model, x, y, 0.3, method="pgd") < 0.5 * clean


def test_pgd_options_and_clipping(trained):
    run, x, y = trained
    strong = attack_accuracy(run.model, x, y, 0.2, method="pgd", steps=20)
    assert strong <= attack_accuracy(run.model, x, y, 0.2)
    no_start = adversarial_examples(run.model, x, y, 0.2, method="pgd", random_start=False)
    assert not torch.equal(no_start, adversarial_examples(run.model, x, y, 0.2, method="pgd"))
    assert torch.equal(adversarial_examples(run.model, x, y, 0.2, method="pgd", seed=3),
                       adversarial_examples(run.model, x, y, 0.2, method="pgd", seed=3))
    lo, hi = float(x.min()), float(x.max())
    clipped = adversarial_examples(run.model, x, y, 0.5, method="pgd", clip=(lo, hi))
    assert float(clipped.min()) >= lo and float(clipped.max()) <= hi
    for bad in (dict(method="cw"), dict(norm="l1"), dict(steps=0), dict(clip=(1, 0))):
        with pytest.raises(ValueError):
            attack_accuracy(run.model, x, y, 0.1, **bad)
    with pytest.raises(ValueError, match="eps"):
        attack_accuracy(run.model, x, y, -0.1)


def test_noise_accuracy_is_seeded_and_degrades(trained):
    run, x, y = trained
    a = noise_accuracy(run.model, x, y, 1.0, seed=4)
    assert a == noise_accuracy(run.model, x, y, 1.0, seed=4)
    assert noise_accuracy(run.model, x, y, 5.0, seed=4, repeats=3) < evaluate(run.model, x, y)[1]


def test_robustness_curve_is_a_tidy_frame_of_the_direct_numbers(trained, fa_and_bp):
    run, x, y = trained
    fa_run = fa_and_bp[0]
    frame = robustness_curve([run, fa_run], x, y, [0.0, 0.1], method="fgsm")
    assert list(frame.columns) == ["run", "eps", "accuracy", "method", "norm"]
    assert list(frame["run"]) == ["bp", "bp", "fa", "fa"]
    assert frame.loc[3, "accuracy"] == attack_accuracy(fa_run.model, x, y, 0.1)
    frame = robustness_curve({"A": run.model, "B": run}, x, y, np.array([0.5]),
                             method="pgd", norm="l2", steps=3)
    assert list(frame["run"]) == ["A", "B"]
    assert frame["accuracy"].nunique() == 1  # one model, one seed: one number
    assert set(frame["norm"]) == {"l2"}
    frame = robustness_curve([run.model, run.model], x, y, [1.0], method="noise", seed=2)
    assert list(frame["run"]) == ["model 1", "model 2"]
    assert set(frame["norm"]) == {"gaussian"}
    assert frame.loc[0, "accuracy"] == noise_accuracy(run.model, x, y, 1.0, seed=2)
    with pytest.raises(ValueError, match="method"):
        robustness_curve([run], x, y, [0.1], method="deepfool")


def test_fa_trained_and_bp_loaded_models_are_attacked_alike(fa_and_bp):
    run, bp_model, x, y = fa_and_bp
    for kwargs in (dict(), dict(method="pgd"), dict(method="pgd", norm="l2", steps=4)):
        fa_acc, fa_adv = attack_accuracy(run.model, x, y, 0.3, return_examples=True, **kwargs)
        bp_acc, bp_adv = attack_accuracy(bp_model, x, y, 0.3, return_examples=True, **kwargs)
        assert fa_acc == bp_acc
        assert torch.equal(fa_adv, bp_adv)
    assert noise_accuracy(run.model, x, y, 0.7) == noise_accuracy(bp_model, x, y, 0.7)


def test_attacks_leave_the_model_alone(trained):
    run, x, y = trained
    model = run.model
    model.train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    grads = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
    attack_accuracy(model, x, y, 0.1, method="pgd", steps=3)
    adversarial_examples(model, x, y, 0.1, norm="l2")
    noise_accuracy(model, x, y, 0.5)
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    for p, g in zip(model.parameters(), grads, strict=True):
        assert (p.grad is None and g is None) or torch.equal(p.grad, g)
    assert model.training
