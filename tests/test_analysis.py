"""fa_explore.analysis.landscape: the trajectory's PCA plane, the loss on it, and
the decision grid of a 2-D model, checked against direct evaluations."""

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import vector_to_parameters

from fa_explore import CNN, MLP
from fa_explore.analysis import (
    DecisionGrid,
    TrajectoryPCA,
    decision_grid,
    loss_surface,
    trajectory_pca,
)


def orthonormal_pair(n_params, seed=0):
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((n_params, 2)))
    return q.T  # (2, n_params)


def flat_params(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def loss_with_vector(model, vector, x, y):
    """Cross-entropy of a copy of ``model`` holding the parameters ``vector``."""
    clone = copy.deepcopy(model)
    dtype = next(model.parameters()).dtype
    vector_to_parameters(torch.as_tensor(vector, dtype=dtype), clone.parameters())
    with torch.no_grad():
        return F.cross_entropy(clone(x), y).item()


def state_copy(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_unchanged(model, before):
    after = model.state_dict()
    assert before.keys() == after.keys()
    for key in before:
        assert torch.equal(before[key], after[key]), key
    assert all(p.requires_grad for p in model.parameters())


# ------------------------------------------------------------ trajectory_pca
def test_pca_recovers_the_plane_a_trajectory_lies_in():
    rng = np.random.default_rng(1)
    n_params = 60
    center = rng.standard_normal(n_params)
    basis = orthonormal_pair(n_params)
    # Coefficients with clearly different spreads along the two directions.
    coefficients = np.column_stack([np.linspace(-3, 3, 25) + 0.1 * rng.standard_normal(25),
                                    np.sin(np.linspace(0, 3, 25))])
    points = center + coefficients @ basis
    pca = trajectory_pca(points)

    assert isinstance(pca, TrajectoryPCA)
    assert pca.directions.shape == (2, n_params) and pca.coords.shape == (25, 2)
    np.testing.assert_allclose(pca.directions @ pca.directions.T, np.eye(2), atol=1e-12)
    np.testing.assert_allclose(pca.center, points.mean(0), atol=1e-12)
    # The principal plane is the plane the points were drawn in ...
    np.testing.assert_allclose(np.linalg.norm(basis @ pca.directions.T, axis=1), 1, atol=1e-10)
    # ... so the 2-D coordinates give back every point exactly, and no variance is left.
    np.testing.assert_allclose(pca.center + pca.coords @ pca.directions, points, atol=1e-10)
    assert pca.explained_variance_ratio.sum() == pytest.approx(1, abs=1e-10)
    assert pca.explained_variance_ratio[0] > pca.explained_variance_ratio[1] > 0
    # Variance along each direction, as the coordinates have it.
    np.testing.assert_allclose(pca.coords.var(0) / pca.coords.var(0).sum(),
                               pca.explained_variance_ratio, atol=1e-10)
    # Oriented so that training runs towards increasing coordinates.
    assert (pca.coords[-1] >= pca.coords[0]).all()


def test_pca_of_a_noisy_trajectory_explains_less_than_everything():
    rng = np.random.default_rng(2)
    points = rng.standard_normal((10, 30)).cumsum(0)
    pca = trajectory_pca(torch.tensor(points, dtype=torch.float32), steps=range(0, 100, 10))
    assert 0 < pca.explained_variance_ratio.sum() < 1
    assert list(pca.steps) == list(range(0, 100, 10))
    # The coordinates are the projections of the centred points.
    centred = points - points.mean(0)
    np.testing.assert_allclose(pca.coords, centred @ pca.directions.T, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("points", [
    np.array([[1.0, 2.0, 3.0, 4.0]]),                       # a single point
    np.array([[1.0, 2.0, 3.0, 4.0], [2.0, 2.0, 3.0, 5.0]]),   # a segment
    np.ones((5, 4)),                                          # no movement at all
    np.outer(np.arange(6.0), [1.0, -1.0, 2.0, 0.0]),          # a straight line
])
def test_degenerate_trajectories_get_padded_orthonormal_directions(points):
    pca = trajectory_pca(points)
    np.testing.assert_allclose(pca.directions @ pca.directions.T, np.eye(2), atol=1e-12)
    np.testing.assert_allclose(pca.center + pca.coords @ pca.directions, points, atol=1e-12)
    moved = np.ptp(points, axis=0).max() > 0
    np.testing.assert_allclose(pca.explained_variance_ratio, [1.0 if moved else 0.0, 0.0],
                               atol=1e-12)
    # The padded direction is seeded: the same call gives the same plane.
    np.testing.assert_allclose(trajectory_pca(points).directions, pca.directions, atol=1e-12)


@pytest.mark.parametrize("bad", [np.empty((0, 5)), np.ones(5), np.ones((3, 1)),
                                 np.array([[0.0, np.nan], [1.0, 2.0]])])
def test_pca_rejects_invalid_points(bad):
    with pytest.raises(ValueError, match="points"):
        trajectory_pca(bad)


def test_pca_rejects_steps_of_the_wrong_length():
    with pytest.raises(ValueError, match="steps"):
        trajectory_pca(np.ones((3, 4)), steps=[0, 1])


# -------------------------------------------------------------- loss_surface
def rectangle_trajectory(model, half_sides=(2.0, 1.0), seed=0):
    """Four points on the corners of a rectangle around the model's parameters,
    so the principal directions are the rectangle's sides and, with margin 0 and
    resolution 3, the grid corners are exactly the trajectory points."""
    theta = flat_params(model).numpy()
    basis = orthonormal_pair(len(theta), seed) * 0.5
    corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * np.array(half_sides)
    return theta + corners @ basis


def test_loss_surface_of_a_linear_model_matches_the_closed_form():
    torch.manual_seed(0)
    model = MLP((3,), (), 4).double()  # a single linear layer: logits = W x + b
    x, y = torch.randn(16, 3, dtype=torch.float64), torch.randint(0, 4, (16,))
    before = state_copy(model)
    pca = trajectory_pca(rectangle_trajectory(model))
    surface = loss_surface(model, x, y, pca, resolution=5, margin=0.25)

    assert surface.loss.shape == (5, 5)
    xn, yn = x.numpy(), y.numpy()
    for i, b in enumerate(surface.ys):
        for j, a in enumerate(surface.xs):
            theta = pca.center + a * pca.directions[0] + b * pca.directions[1]
            weight, bias = theta[:12].reshape(4, 3), theta[12:]
            logits = xn @ weight.T + bias
            log_z = np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1)) + logits.max(1)
            expected = np.mean(log_z - logits[np.arange(16), yn])
            assert surface.loss[i, j] == pytest.approx(expected, rel=1e-12)
    assert_unchanged(model, before)


def test_grid_corners_are_the_trajectory_points_and_match_their_loss():
    torch.manual_seed(1)
    model = MLP((6,), (7, 5), 3).double()
    x, y = torch.randn(20, 6, dtype=torch.float64), torch.randint(0, 3, (20,))
    points = rectangle_trajectory(model)
    pca = trajectory_pca(points)
    surface = loss_surface(model, x, y, pca, resolution=3, margin=0.0)
    for point, (a, b) in zip(points, pca.coords, strict=True):
        j = int(np.flatnonzero(np.isclose(surface.xs, a, atol=1e-9))[0])
        i = int(np.flatnonzero(np.isclose(surface.ys, b, atol=1e-9))[0])
        assert surface.loss[i, j] == pytest.approx(loss_with_vector(model, point, x, y),
                                                   rel=1e-10)


def direct_surface(model, x, y, pca, surface):
    return np.array([[loss_with_vector(model, pca.center + a * pca.directions[0]
                                       + b * pca.directions[1], x, y)
                      for a in surface.xs] for b in surface.ys])


@pytest.mark.parametrize("make", [
    lambda: MLP((1, 4, 4), (8,), 3, activation="tanh"),
    # A conv first layer (linear in its parameters too) and pooling under vmap.
    lambda: CNN((1, 8, 8), (2,), (6,), 3),
    # Not a FeedforwardNet: every parameter goes through functional_call.
    lambda: nn.Sequential(nn.Flatten(), nn.Linear(16, 5), nn.ReLU(), nn.Linear(5, 3)),
])
def test_loss_surface_equals_direct_evaluation_on_every_grid_point(make):
    torch.manual_seed(2)
    model = make().double()
    shape = (1, 8, 8) if isinstance(model, CNN) else (1, 4, 4)
    x, y = torch.randn(12, *shape, dtype=torch.float64), torch.randint(0, 3, (12,))
    theta = flat_params(model).numpy()
    rng = np.random.default_rng(3)
    points = theta + 0.05 * rng.standard_normal((6, len(theta))).cumsum(0)
    pca = trajectory_pca(points, steps=[0, 10, 20, 30, 40, 50])
    before = state_copy(model)
    surface = loss_surface(model, x, y, pca, resolution=4)
    np.testing.assert_allclose(surface.loss, direct_surface(model, x, y, pca, surface),
                               rtol=1e-10)
    # Chunks of one grid point each give the same surface.
    single = loss_surface(model, x, y, pca, resolution=4, chunk_bytes=1)
    np.testing.assert_allclose(single.loss, surface.loss, rtol=1e-12)
    assert_unchanged(model, before)


def test_loss_surface_grid_covers_the_trajectory_with_the_margin():
    model = MLP((3,), (4,), 2).double()
    x, y = torch.randn(8, 3, dtype=torch.float64), torch.randint(0, 2, (8,))
    pca = trajectory_pca(rectangle_trajectory(model, half_sides=(3.0, 1.0)))
    surface = loss_surface(model, x, y, pca, resolution=7, margin=0.5)
    lo, hi = pca.coords.min(0), pca.coords.max(0)
    span = hi - lo
    np.testing.assert_allclose([surface.xs[0], surface.xs[-1]],
                               [lo[0] - 0.5 * span[0], hi[0] + 0.5 * span[0]])
    np.testing.assert_allclose([surface.ys[0], surface.ys[-1]],
                               [lo[1] - 0.5 * span[1], hi[1] + 0.5 * span[1]])
    assert surface.xs.shape == surface.ys.shape == (7,)


def test_loss_surface_of_a_float32_model_from_a_float32_trajectory():
    torch.manual_seed(3)
    model = MLP((5,), (6,), 3)
    x, y = torch.randn(10, 5), torch.randint(0, 3, (10,))
    points = torch.tensor(rectangle_trajectory(model), dtype=torch.float32)
    pca = trajectory_pca(points)
    surface = loss_surface(model, x, y, pca, resolution=3, margin=0.0)
    assert surface.loss.dtype == np.float64 and np.isfinite(surface.loss).all()
    j = int(np.argmin(abs(surface.xs - pca.coords[0, 0])))
    i = int(np.argmin(abs(surface.ys - pca.coords[0, 1])))
    assert surface.loss[i, j] == pytest.approx(loss_with_vector(model, points[0], x, y),
                                               rel=1e-5)


def test_loss_surface_rejects_a_pca_of_another_model():
    model = MLP((3,), (4,), 2)
    pca = trajectory_pca(np.random.default_rng(0).standard_normal((4, 10)))
    with pytest.raises(ValueError, match="parameters"):
        loss_surface(model, torch.randn(4, 3), torch.zeros(4, dtype=torch.long), pca)


@pytest.mark.parametrize("kwargs", [dict(resolution=1), dict(resolution=2.5),
                                    dict(margin=-0.1), dict(margin=math.inf)])
def test_loss_surface_rejects_bad_grid_settings(kwargs):
    model = MLP((3,), (4,), 2)
    pca = trajectory_pca(rectangle_trajectory(model))
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        loss_surface(model, torch.randn(4, 3), torch.zeros(4, dtype=torch.long), pca, **kwargs)


# ------------------------------------------------------------- decision_grid
def test_decision_grid_is_the_models_softmax_at_each_grid_point():
    torch.manual_seed(4)
    model = MLP((2,), (9,), 3).double()
    data = torch.randn(40, 2) * torch.tensor([2.0, 0.5])
    before = state_copy(model)
    grid = decision_grid(model, data, resolution=7, margin=0.3)

    assert isinstance(grid, DecisionGrid) and grid.probs.shape == (7, 7, 3)
    np.testing.assert_allclose(grid.xs[[0, -1]], [data[:, 0].min() - 0.3, data[:, 0].max() + 0.3],
                               rtol=1e-6)
    np.testing.assert_allclose(grid.ys[[0, -1]], [data[:, 1].min() - 0.3, data[:, 1].max() + 0.3],
                               rtol=1e-6)
    with torch.no_grad():
        for i, b in enumerate(grid.ys):
            for j, a in enumerate(grid.xs):
                logits = model(torch.tensor([[a, b]], dtype=torch.float64))[0]
                np.testing.assert_allclose(grid.probs[i, j], logits.softmax(0).numpy(),
                                           rtol=1e-12)
                assert grid.predicted[i, j] == logits.argmax().item()
    assert_unchanged(model, before)


def test_decision_grid_rejects_data_that_is_not_two_dimensional():
    model = MLP((2,), (4,), 2)
    with pytest.raises(ValueError, match="x2d"):
        decision_grid(model, np.ones((5, 3)))
    with pytest.raises(ValueError, match="x2d"):
        decision_grid(model, np.ones((0, 2)))
