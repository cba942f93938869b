"""Loss landscape along a training trajectory, and decision regions of 2-D models.

The trajectory view follows Li et al., *Visualizing the Loss Landscape of Neural
Nets* (NeurIPS 2018, Sec. 7): project the recorded parameter vectors on their
first two principal components and draw the loss on the plane they span,
``θ(a, b) = center + a·d₁ + b·d₂``.

Every loss here is the model's plain forward (``torch.func.functional_call`` on a
copy of the model), never a rule's training pass, so the landscape is the true
function whatever rule trained it. Nothing here changes the model it is given.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

# Memory the grid evaluation may use per vmapped chunk (parameters + activations).
# On a CPU, chunks that stay in cache are fastest (measured: 16 MB beats 256 MB by
# 2x for the digits net); a GPU wants large batches.
SURFACE_CHUNK_BYTES = {"cpu": 16 * 2**20, "cuda": 1024 * 2**20}
# Directions whose variance is below this fraction of the total are numerically
# arbitrary (a trajectory that moved along fewer than two directions).
DEGENERATE_VARIANCE = 1e-12


@dataclass(frozen=True)
class TrajectoryPCA:
    """A trajectory in the plane of its first two principal components.

    ``center`` is the mean point (n_params,), ``directions`` the two orthonormal
    principal directions (2, n_params), ``coords`` each point's coordinates along
    them (n_points, 2) and ``explained_variance_ratio`` the share of the
    trajectory's variance along each (0 for a padded direction). ``steps`` are
    the training steps of the points when the caller gave them.
    """

    center: np.ndarray
    directions: np.ndarray
    coords: np.ndarray
    explained_variance_ratio: np.ndarray
    steps: np.ndarray | None = None

    @property
    def n_points(self) -> int:
        return len(self.coords)


@dataclass(frozen=True)
class LossSurface:
    """Mean cross-entropy on the PCA plane: ``loss[i, j]`` is at ``(xs[j], ys[i])``."""

    xs: np.ndarray
    ys: np.ndarray
    loss: np.ndarray


@dataclass(frozen=True)
class DecisionGrid:
    """Class probabilities of a 2-D model on a grid: ``probs[i, j]`` at ``(xs[j], ys[i])``."""

    xs: np.ndarray
    ys: np.ndarray
    probs: np.ndarray  # (len(ys), len(xs), n_classes)

    @property
    def predicted(self) -> np.ndarray:
        """The most probable class at each grid point, shape ``(len(ys), len(xs))``."""
        return self.probs.argmax(-1)


def _as_numpy(points) -> np.ndarray:
    if isinstance(points, torch.Tensor):
        points = points.detach().cpu().numpy()
    return np.asarray(points)


def _orthonormal_padding(known: np.ndarray, count: int, n_params: int,
                         seed: int) -> np.ndarray:
    """``count`` seeded random unit directions orthogonal to the rows of ``known``
    and to each other (Gram-Schmidt, applied twice for accuracy)."""
    rng = np.random.default_rng(seed)
    basis = [row for row in known]
    extra = []
    while len(extra) < count:
        v = rng.standard_normal(n_params)
        for _ in range(2):
            for b in basis:
                v = v - (v @ b) * b
        norm = np.linalg.norm(v)
        if norm > 1e-8:
            v = v / norm
            basis.append(v)
            extra.append(v)
    return np.array(extra).reshape(count, n_params)


def trajectory_pca(points: torch.Tensor | np.ndarray, steps=None,
                   seed: int = 0) -> TrajectoryPCA:
    """Principal-component plane of a parameter trajectory (sklearn ``PCA``).

    ``points`` is ``(n_points, n_params)``, e.g. ``run.trajectory.matrix()``, and
    ``steps`` optionally their training steps (``run.trajectory.steps``). When the
    trajectory spans fewer than two directions (one or two points, or no
    movement) the missing directions are seeded random ones orthogonal to the
    rest, with zero explained variance.
    """
    from sklearn.decomposition import PCA

    matrix = _as_numpy(points)
    if matrix.ndim != 2 or matrix.shape[0] == 0 or matrix.shape[1] < 2:
        raise ValueError("points must be a (n_points, n_params) array with n_points >= 1 "
                         f"and n_params >= 2; got shape {tuple(matrix.shape)}")
    if not np.isfinite(matrix).all():
        raise ValueError("points must be finite (a diverged run has no landscape)")
    # float32 trajectories stay float32 (they can be large); anything else is float64.
    matrix = matrix if matrix.dtype == np.float32 else matrix.astype(np.float64)
    n_points, n_params = matrix.shape
    if steps is not None:
        steps = np.asarray(steps)
        if steps.shape != (n_points,):
            raise ValueError(f"steps must have one entry per point ({n_points}); "
                             f"got shape {steps.shape}")

    center = matrix.mean(0, dtype=np.float64)
    kept = np.empty((0, n_params))
    ratios = np.zeros(2)
    if n_points >= 2 and np.ptp(matrix, axis=0).max() > 0:
        # ARPACK finds just the leading singular vectors: exact to working
        # precision and far cheaper than a full SVD of a (128, 10⁶) trajectory.
        pca = PCA(n_components=min(2, n_points - 1), svd_solver="arpack",
                  random_state=seed).fit(matrix)
        # Keep only directions the trajectory actually moved along.
        keep = pca.explained_variance_ratio_ > DEGENERATE_VARIANCE
        kept = pca.components_[keep].astype(np.float64)
        ratios[:len(kept)] = pca.explained_variance_ratio_[keep]
    directions = np.concatenate(
        [kept, _orthonormal_padding(kept, 2 - len(kept), n_params, seed)])
    # A principal direction's sign is arbitrary; orient them so that training runs
    # from low to high coordinates (left to right, bottom to top) in the plot.
    # (Padded directions keep their seeded sign: the path has no extent along them.)
    moved = (matrix[-1] - matrix[0]).astype(np.float64) @ kept.T
    directions[:len(kept)][moved < 0] *= -1
    # Centre in the trajectory's own precision: a float64 copy of a large float32
    # trajectory would double its memory.
    coords = ((matrix - center.astype(matrix.dtype)) @ directions.T.astype(matrix.dtype))
    coords = coords.astype(np.float64)
    return TrajectoryPCA(center=center, directions=directions, coords=coords,
                         explained_variance_ratio=ratios, steps=steps)


def _grid_axes(coords: np.ndarray, resolution: int, margin: float) -> list[np.ndarray]:
    """Per PCA axis, ``resolution`` points over the coordinates' range widened by
    ``margin`` times that range on each side.

    A flat axis (a nearly straight path) still gets a visible band: at least a
    tenth of the longer range, or 1 when the trajectory never moved.
    """
    lows, highs = coords.min(0), coords.max(0)
    spans = highs - lows
    floor = 0.1 * float(spans.max()) if spans.max() > 0 else 1.0
    axes = []
    for k in range(2):
        middle = 0.5 * (float(lows[k]) + float(highs[k]))
        half = 0.5 * max(float(spans[k]), floor) * (1 + 2 * margin)
        axes.append(np.linspace(middle - half, middle + half, resolution))
    return axes


def _check_resolution(resolution: int) -> None:
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 2:
        raise ValueError(f"resolution must be an integer >= 2; got {resolution!r}")


def _check_margin(margin: float) -> None:
    if not (isinstance(margin, (int, float)) and math.isfinite(margin) and margin >= 0):
        raise ValueError(f"margin must be a finite number >= 0; got {margin!r}")


def _activation_numel(model: nn.Module, x: torch.Tensor) -> int:
    """Elements output by the model's leaf modules in one forward on ``x`` (a bound
    on the activations one grid point keeps alive)."""
    total = 0

    def count(module, inputs, output):
        nonlocal total
        if isinstance(output, torch.Tensor):
            total += output.numel()

    leaves = [m for m in model.modules() if next(m.children(), None) is None]
    handles = [m.register_forward_hook(count) for m in leaves]
    try:
        model(x[:1])
    finally:
        for handle in handles:
            handle.remove()
    return total * len(x)


@torch.no_grad()
def loss_surface(model: nn.Module, x: torch.Tensor, y: torch.Tensor, pca: TrajectoryPCA,
                 resolution: int = 25, margin: float = 0.5,
                 chunk_bytes: int | None = None) -> LossSurface:
    """Mean cross-entropy of ``model`` on ``(x, y)`` over the plane of ``pca``.

    The grid covers the trajectory's coordinates widened by ``margin`` times
    their range on each side. Each grid point's parameters
    ``center + a·d₁ + b·d₂`` are laid out as ``model.named_parameters()`` (the
    order the trajectory flattens them in) and evaluated with ``functional_call``,
    vmapped over chunks of grid points sized to ``chunk_bytes`` (default: per
    device, :data:`SURFACE_CHUNK_BYTES`). The work happens
    on a copy of the model, so the model itself is neither changed nor
    borrowed (a training thread may keep using it).
    """
    _check_resolution(resolution)
    _check_margin(margin)
    names_shapes = [(name, p.shape) for name, p in model.named_parameters()]
    n_params = sum(math.prod(shape) for _, shape in names_shapes)
    if pca.center.shape != (n_params,):
        raise ValueError(f"pca has {pca.center.shape[0]} parameters but the model has "
                         f"{n_params}; compute it from this model's trajectory")
    if len(x) == 0 or len(x) != len(y):
        raise ValueError(f"x and y must be a non-empty batch of equal length; got "
                         f"{len(x)} and {len(y)}")
    xs, ys = _grid_axes(pca.coords, resolution, margin)

    # A private copy: functional_call swaps parameters in and out of the module it
    # is given, which must never be seen by a training step running concurrently.
    evaluator = copy.deepcopy(model).eval()
    reference = next(evaluator.parameters())
    device, dtype = reference.device, reference.dtype
    x, y = x.to(device=device, dtype=dtype), y.to(device)
    center = torch.as_tensor(pca.center, device=device, dtype=dtype)
    d1, d2 = torch.as_tensor(pca.directions, device=device, dtype=dtype)

    # Per parameter: its slice of center and of both directions, in its own shape.
    pieces, offset = {}, 0
    for name, shape in names_shapes:
        part = slice(offset, offset + math.prod(shape))
        pieces[name] = (center[part].view(shape), d1[part].view(shape), d2[part].view(shape))
        offset += math.prod(shape)

    first_layer = _first_layer_outputs(evaluator, x, pieces)
    if first_layer is None:
        def loss_at(params, a, b):
            return F.cross_entropy(functional_call(evaluator, params, (x,)), y)
    else:
        # Layer 0 sees the fixed input, and its output is linear in its own
        # parameters: out(a, b) = out(center) + a·out(d₁) + b·out(d₂). Three
        # evaluations replace one per grid point (half the work for a 784-wide input).
        first_names, (out_c, out_1, out_2) = first_layer
        pieces = {n: piece for n, piece in pieces.items() if n not in first_names}

        def loss_at(params, a, b):
            def layer_call(index, layer, h):
                return out_c + a * out_1 + b * out_2 if index == 0 else layer(h)
            logits = functional_call(evaluator, params, (x,), {"layer_call": layer_call})
            return F.cross_entropy(logits, y)

    batched_loss = vmap(loss_at)
    grid_a, grid_b = np.meshgrid(xs, ys)  # (res, res): [i, j] -> (xs[j], ys[i])
    a_all = torch.as_tensor(grid_a.ravel(), device=device, dtype=dtype)
    b_all = torch.as_tensor(grid_b.ravel(), device=device, dtype=dtype)
    per_point = (n_params + _activation_numel(evaluator, x)) * reference.element_size()
    if chunk_bytes is None:
        chunk_bytes = SURFACE_CHUNK_BYTES.get(device.type, SURFACE_CHUNK_BYTES["cpu"])
    chunk = max(1, min(len(a_all), chunk_bytes // max(1, per_point)))

    losses = []
    for start in range(0, len(a_all), chunk):
        a, b = a_all[start:start + chunk], b_all[start:start + chunk]
        params = {}
        for name, (c, u, v) in pieces.items():
            expand = (-1,) + (1,) * c.dim()
            params[name] = c + a.view(expand) * u + b.view(expand) * v
        losses.append(batched_loss(params, a, b))
    loss = torch.cat(losses).double().cpu().numpy().reshape(resolution, resolution)
    return LossSurface(xs=xs, ys=ys, loss=loss)


def _first_layer_outputs(model: nn.Module, x: torch.Tensor, pieces: dict):
    """For a :class:`FeedforwardNet`, layer 0's parameter names and its outputs on
    ``x`` under the center and under each direction; None for other modules."""
    from ..models import FeedforwardNet

    if not isinstance(model, FeedforwardNet):
        return None
    layer = model.layers[0]
    names = {local: f"layers.0.{local}" for local, _ in layer.named_parameters()}
    if not set(names.values()) <= set(pieces):
        return None
    inputs = []

    def record_input(index, layer, h):
        if index == 0:
            inputs.append(h)
        return layer(h)

    model(x, layer_call=record_input)  # layer 0's input: x as the model shapes it
    h0 = inputs[0]
    outputs = tuple(functional_call(layer, {local: pieces[full][k]
                                            for local, full in names.items()}, (h0,))
                    for k in range(3))
    return set(names.values()), outputs


@torch.no_grad()
def decision_grid(model: nn.Module, x2d: torch.Tensor | np.ndarray, resolution: int = 100,
                  margin: float = 0.5) -> DecisionGrid:
    """Softmax class probabilities of a model with 2-D inputs on a grid.

    The grid covers the data's bounding box padded by ``margin`` (in data units,
    the sets being standardised) on every side. Uses the plain forward.
    """
    _check_resolution(resolution)
    _check_margin(margin)
    data = _as_numpy(x2d).astype(np.float64)
    if data.ndim != 2 or data.shape[1] != 2 or len(data) == 0:
        raise ValueError(f"x2d must be a non-empty (n, 2) array of 2-D inputs; "
                         f"got shape {tuple(data.shape)}")
    xs = np.linspace(data[:, 0].min() - margin, data[:, 0].max() + margin, resolution)
    ys = np.linspace(data[:, 1].min() - margin, data[:, 1].max() + margin, resolution)
    grid_a, grid_b = np.meshgrid(xs, ys)
    reference = next(model.parameters())
    inputs = torch.as_tensor(np.stack([grid_a.ravel(), grid_b.ravel()], 1),
                             device=reference.device, dtype=reference.dtype)
    probs = torch.softmax(model(inputs), dim=1)
    probs = probs.double().cpu().numpy().reshape(resolution, resolution, -1)
    return DecisionGrid(xs=xs, ys=ys, probs=probs)
