"""fa_explore.analysis.landscape, the slices around one model: filter-normalised
random directions, 1-D and 2-D loss slices (checked against direct evaluations
and against the Hessian), interpolation between two models and sharpness."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.nn.utils import vector_to_parameters

import fa_explore
from fa_explore import CNN, MLP, RunConfig
from fa_explore.analysis import (
    LossSlice,
    LossSurface,
    hessian_eigenvalues,
    hessian_trace,
    hessian_vector_product,
    interpolate,
    loss_slice_1d,
    loss_slice_2d,
    random_directions,
    sharpness,
    sharpness_over_training,
)
from fa_explore.metrics import evaluate


def tiny_mlp(seed=1):
    model = MLP((4,), (6,), 3, generator=torch.Generator().manual_seed(seed)).double()
    with torch.no_grad():  # non-zero biases, so the bias handling shows
        for layer in model.layers:
            layer.bias.normal_(0, 0.3, generator=torch.Generator().manual_seed(seed + 10))
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(50, 4, dtype=torch.float64, generator=gen)
    y = torch.randint(0, 3, (50,), generator=gen)
    return model, x, y


def flat(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def at_vector(model, vector, x, y):
    """Loss and accuracy of a copy of ``model`` holding the parameters ``vector``."""
    clone = copy.deepcopy(model)
    vector_to_parameters(torch.as_tensor(vector, dtype=torch.float64), clone.parameters())
    return evaluate(clone, x, y)


def pieces(model, vector):
    out, offset = {}, 0
    for name, p in model.named_parameters():
        out[name] = vector[offset:offset + p.numel()].reshape(p.shape)
        offset += p.numel()
    return out


def state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_same_state(model, before):
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


# ------------------------------------------------------------- directions
def test_filter_normalised_directions_match_the_weights_filter_norms():
    model = CNN((1, 8, 8), (3,), (5,), 4, generator=torch.Generator().manual_seed(0)).double()
    with torch.no_grad():
        model.layers[0].bias.fill_(0.5)
    directions = random_directions(model, seed=3)
    assert directions.shape == (2, sum(p.numel() for p in model.parameters()))
    for d in directions:
        for name, p in model.named_parameters():
            part = pieces(model, d)[name]
            w = p.detach().numpy()
            if p.dim() == 1:
                assert not part.any(), name  # biases are left out (bias="zero")
            else:  # one norm per filter: a row of a linear weight, a conv output channel
                np.testing.assert_allclose(np.linalg.norm(part.reshape(len(part), -1), axis=1),
                                           np.linalg.norm(w.reshape(len(w), -1), axis=1),
                                           rtol=1e-8)
    assert not np.allclose(directions[0], directions[1])
    np.testing.assert_array_equal(directions, random_directions(model, seed=3))
    assert not np.allclose(directions, random_directions(model, seed=4))
    with_bias = random_directions(model, seed=3, bias="weights")
    np.testing.assert_array_equal(pieces(model, with_bias[0])["layers.0.bias"],
                                  model.layers[0].bias.detach().numpy())
    raw = random_directions(model, seed=3, filter_normalize=False)
    assert pieces(model, raw[0])["layers.0.bias"].any()
    with pytest.raises(ValueError, match="bias"):
        random_directions(model, bias="keep")


# ----------------------------------------------------------------- slices
def test_1d_slice_is_the_loss_along_the_line_and_its_curvature_is_dHd():
    model, x, y = tiny_mlp()
    before = state(model)
    loss, acc = evaluate(model, x, y)
    line = loss_slice_1d(model, x, y, span=0.8, steps=9, seed=2)
    assert line.kind == "random"
    np.testing.assert_allclose(line.alphas, np.linspace(-0.8, 0.8, 9))
    assert line.loss[4] == pytest.approx(loss, rel=1e-12)
    assert line.accuracy[4] == acc
    theta = flat(model).numpy()
    for k in (0, 7):
        expected = at_vector(model, theta + line.alphas[k] * line.direction, x, y)
        assert line.loss[k] == pytest.approx(expected[0], rel=1e-12)
        assert line.accuracy[k] == expected[1]
    # Quadratic check: the slice's second difference at 0 is dᵀHd.
    d = torch.as_tensor(line.direction)
    h = 1e-3
    close = loss_slice_1d(model, x, y, direction=d, span=h, steps=3)
    assert close.kind == "given"
    curvature = (close.loss[0] - 2 * close.loss[1] + close.loss[2]) / h ** 2
    dHd = float(d @ hessian_vector_product(model, x, y, d))
    assert curvature == pytest.approx(dHd, rel=1e-4)
    # Along the top eigenvector the curvature is the top eigenvalue.
    top = loss_slice_1d(model, x, y, direction="hessian", span=h, steps=3)
    assert top.kind == "hessian"
    top_curvature = (top.loss[0] - 2 * top.loss[1] + top.loss[2]) / h ** 2
    assert top_curvature == pytest.approx(hessian_eigenvalues(model, x, y)[0], rel=1e-4)
    assert_same_state(model, before)


def test_2d_slice_matches_direct_evaluation_and_takes_any_directions():
    model, x, y = tiny_mlp(2)
    before = state(model)
    plane = loss_slice_2d(model, x, y, span=0.5, steps=5, seed=1)
    assert isinstance(plane, LossSlice) and isinstance(plane, LossSurface)
    assert plane.kind == "random" and plane.loss.shape == (5, 5)
    np.testing.assert_allclose(plane.xs, np.linspace(-0.5, 0.5, 5))
    np.testing.assert_allclose(plane.ys, plane.xs)
    np.testing.assert_array_equal(plane.directions, random_directions(model, seed=1))
    assert plane.loss[2, 2] == pytest.approx(evaluate(model, x, y)[0], rel=1e-12)
    theta = flat(model).numpy()
    d1, d2 = plane.directions
    for i, j in ((0, 4), (3, 1)):  # loss[i, j] is at (xs[j], ys[i])
        expected = at_vector(model, theta + plane.xs[j] * d1 + plane.ys[i] * d2, x, y)[0]
        assert plane.loss[i, j] == pytest.approx(expected, rel=1e-10)
    # Given as dicts by parameter name: the same plane.
    given = loss_slice_2d(model, x, y, directions=[pieces(model, torch.as_tensor(d))
                                                   for d in (d1, d2)], span=0.5, steps=5)
    assert given.kind == "given"
    np.testing.assert_allclose(given.loss, plane.loss, rtol=1e-12)
    hess = loss_slice_2d(model, x, y, directions="hessian", span=0.5, steps=3)
    _, vectors = hessian_eigenvalues(model, x, y, k=2, return_eigenvectors=True)
    np.testing.assert_allclose(np.abs(hess.directions @ vectors.T), np.eye(2), atol=1e-6)
    with pytest.raises(ValueError, match="2 direction"):
        loss_slice_2d(model, x, y, directions=[d1])
    with pytest.raises(ValueError, match="span"):
        loss_slice_2d(model, x, y, span=0)
    assert_same_state(model, before)


# ---------------------------------------------------------- interpolation
def test_interpolation_endpoints_are_each_models_loss():
    model_a, x, y = tiny_mlp(1)
    model_b, _, _ = tiny_mlp(5)
    before_a, before_b = state(model_a), state(model_b)
    path = interpolate(model_a, model_b, x, y, alphas=[0.0, 0.25, 1.0, 1.5])
    for k, model in ((0, model_a), (2, model_b)):
        loss, acc = evaluate(model, x, y)
        assert path.loss[k] == pytest.approx(loss, rel=1e-12)
        assert path.accuracy[k] == acc
    mix = 0.75 * flat(model_a) + 0.25 * flat(model_b)
    assert path.loss[1] == pytest.approx(at_vector(model_a, mix, x, y)[0], rel=1e-12)
    assert len(interpolate(model_a, model_b, x, y).alphas) == 21
    assert_same_state(model_a, before_a)
    assert_same_state(model_b, before_b)
    other = MLP((4,), (7,), 3).double()
    with pytest.raises(ValueError, match="same parameters"):
        interpolate(model_a, other, x, y)


def test_interpolation_between_an_fa_and_a_bp_solution_from_one_init():
    cfg = dict(hidden=(16,), epochs=1, train_size=200, eval_size=64)
    fa_run = fa_explore.train(RunConfig(rule="fa", **cfg))
    bp_run = fa_explore.train(RunConfig(rule="bp", **cfg))
    x, y = bp_run.data.x_test[:128], bp_run.data.y_test[:128]
    path = interpolate(bp_run.model, fa_run.model, x, y, alphas=[0.0, 0.5, 1.0])
    assert path.loss[0] == pytest.approx(evaluate(bp_run.model, x, y)[0], rel=1e-5)
    assert path.loss[2] == pytest.approx(evaluate(fa_run.model, x, y)[0], rel=1e-5)


# -------------------------------------------------------------- sharpness
def test_sharpness_is_the_top_eigenvalue_and_the_hutchinson_trace():
    model, x, y = tiny_mlp(3)
    before = state(model)
    result = sharpness(model, x, y, trace_samples=20, seed=4)
    assert result.top_eigenvalue == pytest.approx(hessian_eigenvalues(model, x, y, seed=4)[0],
                                                  rel=1e-8)
    trace = hessian_trace(model, x, y, samples=20, seed=4)
    assert (result.trace, result.trace_stderr) == (trace.mean, trace.stderr)
    assert result.loss == pytest.approx(evaluate(model, x, y)[0], rel=1e-12)
    assert set(result.as_dict()) == {"top_eigenvalue", "trace", "trace_stderr", "loss"}
    # Over a "trajectory": the same numbers at each point.
    other, _, _ = tiny_mlp(4)
    points = torch.stack([flat(model), flat(other)])
    frame = sharpness_over_training(model, points, x, y, steps=[0, 30], trace_samples=20,
                                    seed=4)
    assert list(frame["step"]) == [0, 30]
    assert frame.loc[0, "top_eigenvalue"] == pytest.approx(result.top_eigenvalue, rel=1e-8)
    assert frame.loc[1, "trace"] == pytest.approx(
        hessian_trace(other, x, y, samples=20, seed=4).mean, rel=1e-10)
    assert_same_state(model, before)


def test_sharpness_of_fa_and_bp_models_with_the_same_weights_is_equal(fa_run_and_bp_copy):
    run, bp_model = fa_run_and_bp_copy
    x, y = run.data.x_train[:64], run.data.y_train[:64]
    assert sharpness(run.model, x, y, trace_samples=8) == sharpness(bp_model, x, y,
                                                                    trace_samples=8)
    np.testing.assert_array_equal(loss_slice_2d(run.model, x, y, steps=3).loss,
                                  loss_slice_2d(bp_model, x, y, steps=3).loss)
    assert F.cross_entropy(run.model(x), y).item() == pytest.approx(
        loss_slice_1d(run.model, x, y, steps=3).loss[1], rel=1e-5)
