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


# ------------------------------------------------ random-direction slices
# Slices around one point (Li et al. 2018, Sec. 4-6), interpolation between two
# solutions (Goodfellow, Vinyals & Saxe 2015) and the sharpness numbers of the
# initial soft-alignment paper. Flat vectors are laid out as
# ``model.named_parameters()``, like the trajectory.
BIAS_MODES = ("zero", "weights")


@dataclass(frozen=True)
class LossSlice(LossSurface):
    """Mean cross-entropy on the plane ``θ + a·d₁ + b·d₂`` around a model's
    parameters θ: ``loss[i, j]`` at ``(xs[j], ys[i])`` (the model at ``(0, 0)``).
    ``directions`` are ``d₁, d₂`` (2, n_params); ``kind`` says how they were
    chosen (``"random"``, ``"hessian"`` or ``"given"``)."""

    directions: np.ndarray | None = None
    kind: str = "given"


@dataclass(frozen=True)
class LossSlice1D:
    """Loss and accuracy along ``θ + α·d`` (the model at ``α = 0``)."""

    alphas: np.ndarray
    loss: np.ndarray
    accuracy: np.ndarray
    direction: np.ndarray
    kind: str = "given"


@dataclass(frozen=True)
class Interpolation:
    """Loss and accuracy along ``(1 − α)·θ_a + α·θ_b``."""

    alphas: np.ndarray
    loss: np.ndarray
    accuracy: np.ndarray


@dataclass(frozen=True)
class Sharpness:
    """Curvature of the loss at a point, as the initial soft-alignment paper
    reports it: the Hessian's largest eigenvalue and its trace (Hutchinson
    estimate with its standard error), plus the loss there."""

    top_eigenvalue: float
    trace: float
    trace_stderr: float
    loss: float

    def as_dict(self) -> dict[str, float]:
        return {"top_eigenvalue": self.top_eigenvalue, "trace": self.trace,
                "trace_stderr": self.trace_stderr, "loss": self.loss}


def _flat_parameters(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def random_directions(model: nn.Module, seed: int = 0, filter_normalize: bool = True,
                      bias: str = "zero") -> np.ndarray:
    """Two seeded Gaussian directions in parameter space, shape ``(2, n_params)``.

    With ``filter_normalize`` (Li et al., *Visualizing the Loss Landscape of
    Neural Nets*, NeurIPS 2018, Sec. 4): every filter of a weight (a row of a
    linear layer's weight, an output channel of a convolution: a slice along
    dim 0) is rescaled to the norm of the same filter of the model's weight,
    ``d_ij ← d_ij / ‖d_ij‖ · ‖θ_ij‖``, so a slice is comparable across layers and
    across nets whose weights differ in scale. One-dimensional parameters
    (biases) follow ``bias``: ``"zero"`` leaves them out of the direction, as the
    paper's code does for its figures (``ignore='biasbn'``); ``"weights"`` sets
    them to the bias itself (its code's other option). Without
    ``filter_normalize`` the directions are plain ``N(0, I)`` draws over all
    parameters. The two directions are not orthogonalised (random directions in
    many dimensions nearly are).
    """
    if bias not in BIAS_MODES:
        raise ValueError(f"bias must be one of {', '.join(BIAS_MODES)}; got {bias!r}")
    generator = torch.Generator().manual_seed(int(seed))
    directions = []
    for _ in range(2):
        pieces = []
        for p in model.parameters():
            w = p.detach().double().cpu()
            d = torch.randn(w.shape, generator=generator, dtype=torch.float64)
            if filter_normalize:
                if w.dim() <= 1:
                    d = torch.zeros_like(w) if bias == "zero" else w.clone()
                else:
                    d_norm = d.flatten(1).norm(dim=1)
                    w_norm = w.flatten(1).norm(dim=1)
                    d = d * (w_norm / (d_norm + 1e-10)).view(-1, *([1] * (w.dim() - 1)))
            pieces.append(d.reshape(-1))
        directions.append(torch.cat(pieces).numpy())
    return np.stack(directions)


def _direction_array(model: nn.Module, value, count: int) -> np.ndarray:
    """A given direction (flat, or a dict by parameter name) or ``count`` of them as
    a float64 ``(count, n_params)`` array."""
    names = [n for n, _ in model.named_parameters()]
    shapes = {n: p.shape for n, p in model.named_parameters()}
    n_params = _n_params(model)

    def one(entry) -> np.ndarray:
        if isinstance(entry, dict):
            if set(entry) != set(names):
                raise ValueError(f"a direction given as a dict must hold exactly the "
                                 f"parameters {names}")
            parts = []
            for n in names:
                t = _as_numpy(entry[n]).astype(np.float64)
                if t.shape != tuple(shapes[n]):
                    raise ValueError(f"direction[{n!r}] has shape {t.shape}; the parameter "
                                     f"has {tuple(shapes[n])}")
                parts.append(t.reshape(-1))
            return np.concatenate(parts)
        flat = _as_numpy(entry).astype(np.float64)
        if flat.shape != (n_params,):
            raise ValueError(f"a flat direction must have shape ({n_params},); got {flat.shape}")
        return flat

    if count == 1 and (isinstance(value, dict) or _as_numpy(value).ndim == 1):
        out = one(value)[None]
    else:
        entries = list(value) if not isinstance(value, dict) else [value]
        if len(entries) != count:
            raise ValueError(f"expected {count} direction(s); got {len(entries)}")
        out = np.stack([one(e) for e in entries])
    if not np.isfinite(out).all():
        raise ValueError("directions must be finite")
    return out


def _resolve_directions(model, x, y, directions, count: int, seed: int):
    """``(array (count, n_params), kind)`` for ``None``/``"random"``, ``"hessian"``
    (top Hessian eigenvectors) or given directions."""
    if directions is None or (isinstance(directions, str) and directions == "random"):
        return random_directions(model, seed)[:count], "random"
    if isinstance(directions, str) and directions == "hessian":
        from .hessian import hessian_eigenvalues

        _, vectors = hessian_eigenvalues(model, x, y, k=count, seed=seed,
                                         return_eigenvectors=True)
        return np.asarray(vectors, dtype=np.float64), "hessian"
    if isinstance(directions, str):
        raise ValueError(f"directions must be 'random', 'hessian' or given vectors; "
                         f"got {directions!r}")
    return _direction_array(model, directions, count), "given"


def _check_span_steps(span, steps) -> None:
    if not (isinstance(span, (int, float)) and math.isfinite(span) and span > 0):
        raise ValueError(f"span must be a positive number; got {span!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
        raise ValueError(f"steps must be an integer >= 2; got {steps!r}")


def _check_batch(x, y) -> None:
    if len(x) == 0 or len(x) != len(y):
        raise ValueError(f"x and y must be a non-empty batch of equal length; got "
                         f"{len(x)} and {len(y)}")


@torch.no_grad()
def _loss_and_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                       thetas: torch.Tensor, chunk_bytes: int | None = None):
    """Mean cross-entropy and accuracy of ``model``'s plain forward at each row of
    ``thetas`` (flat parameter vectors), vmapped in chunks, on a private copy."""
    evaluator = copy.deepcopy(model).eval()
    reference = next(evaluator.parameters())
    device, dtype = reference.device, reference.dtype
    names = [n for n, _ in evaluator.named_parameters()]
    shapes = [p.shape for _, p in evaluator.named_parameters()]
    sizes = [p.numel() for _, p in evaluator.named_parameters()]
    x, y = x.to(device=device, dtype=dtype), y.to(device)
    thetas = thetas.to(device=device, dtype=dtype)

    def at(flat):
        params = {n: piece.reshape(shape)
                  for n, piece, shape in zip(names, torch.split(flat, sizes), shapes, strict=True)}
        logits = functional_call(evaluator, params, (x,))
        return F.cross_entropy(logits, y), (logits.argmax(1) == y).to(dtype).mean()

    batched = vmap(at)
    per_point = (sum(sizes) + _activation_numel(evaluator, x)) * reference.element_size()
    if chunk_bytes is None:
        chunk_bytes = SURFACE_CHUNK_BYTES.get(device.type, SURFACE_CHUNK_BYTES["cpu"])
    chunk = max(1, min(len(thetas), chunk_bytes // max(1, per_point)))
    losses, accuracies = [], []
    for start in range(0, len(thetas), chunk):
        loss, accuracy = batched(thetas[start:start + chunk])
        losses.append(loss)
        accuracies.append(accuracy)
    return (torch.cat(losses).double().cpu().numpy(),
            torch.cat(accuracies).double().cpu().numpy())


def loss_slice_2d(model: nn.Module, x: torch.Tensor, y: torch.Tensor, directions=None,
                  span: float = 1.0, steps: int = 21, seed: int = 0,
                  chunk_bytes: int | None = None) -> LossSlice:
    """Mean cross-entropy on the plane ``θ + a·d₁ + b·d₂``, ``a, b`` in
    ``linspace(-span, span, steps)`` around the model's parameters θ.

    ``directions``: ``None`` or ``"random"`` for :func:`random_directions`
    (filter-normalised, seeded by ``seed``; Li et al. 2018), ``"hessian"`` for
    the Hessian's two top eigenvectors (unit vectors, as in Fig. 5a of the
    initial soft-alignment paper: Cheon, Bae & Paik, *One-Time Soft Alignment
    Enables Resilient Learning without Weight Transport*), or two given
    directions (flat vectors or dicts by parameter name). Evaluated like
    :func:`loss_surface` (vmapped plain forward on a copy; the model is unchanged).
    """
    _check_span_steps(span, steps)
    _check_batch(x, y)
    d, kind = _resolve_directions(model, x, y, directions, 2, seed)
    center = _flat_parameters(model).double().cpu().numpy()
    frame = TrajectoryPCA(center=center, directions=d,
                          coords=np.array([[-span, -span], [span, span]], dtype=float),
                          explained_variance_ratio=np.zeros(2))
    surface = loss_surface(model, x, y, frame, resolution=steps, margin=0.0,
                           chunk_bytes=chunk_bytes)
    return LossSlice(xs=surface.xs, ys=surface.ys, loss=surface.loss, directions=d, kind=kind)


def loss_slice_1d(model: nn.Module, x: torch.Tensor, y: torch.Tensor, direction=None,
                  span: float = 1.0, steps: int = 21, seed: int = 0,
                  chunk_bytes: int | None = None) -> LossSlice1D:
    """Loss and accuracy along ``θ + α·d``, ``α`` in ``linspace(-span, span, steps)``.

    ``direction`` as in :func:`loss_slice_2d`, one of them: ``None``/``"random"``
    (the first filter-normalised random direction), ``"hessian"`` (the top
    eigenvector) or a given flat vector or dict.
    """
    _check_span_steps(span, steps)
    _check_batch(x, y)
    d, kind = _resolve_directions(model, x, y, direction, 1, seed)
    alphas = np.linspace(-span, span, steps)
    center = _flat_parameters(model).double()
    step = torch.as_tensor(d[0], dtype=torch.float64, device=center.device)
    thetas = center + torch.as_tensor(alphas, dtype=torch.float64,
                                      device=center.device)[:, None] * step
    loss, accuracy = _loss_and_accuracy(model, x, y, thetas, chunk_bytes)
    return LossSlice1D(alphas=alphas, loss=loss, accuracy=accuracy, direction=d[0], kind=kind)


def interpolate(model_a: nn.Module, model_b: nn.Module, x: torch.Tensor, y: torch.Tensor,
                alphas=None, chunk_bytes: int | None = None) -> Interpolation:
    """Loss and accuracy along the straight line ``(1 − α)·θ_a + α·θ_b`` between two
    models of one architecture (e.g. the BP and the FA solution from one
    initialisation; Goodfellow, Vinyals & Saxe 2015, *Qualitatively characterizing
    neural network optimization problems*). ``alphas`` default to 21 points on
    [0, 1]; values outside extrapolate. The endpoints are each model's own
    parameters exactly. Evaluated with ``model_a``'s plain forward on a copy;
    neither model changes.
    """
    _check_batch(x, y)
    shapes_a = [(n, tuple(p.shape)) for n, p in model_a.named_parameters()]
    shapes_b = [(n, tuple(p.shape)) for n, p in model_b.named_parameters()]
    if shapes_a != shapes_b:
        raise ValueError("model_a and model_b must have the same parameters (names and "
                         "shapes) to interpolate between them")
    alphas = np.linspace(0.0, 1.0, 21) if alphas is None else np.asarray(alphas, dtype=float)
    if alphas.ndim != 1 or alphas.size == 0 or not np.isfinite(alphas).all():
        raise ValueError("alphas must be a non-empty 1-D array of finite numbers")
    theta_a = _flat_parameters(model_a).double()
    theta_b = _flat_parameters(model_b).double().to(theta_a.device)
    a = torch.as_tensor(alphas, dtype=torch.float64, device=theta_a.device)[:, None]
    thetas = (1 - a) * theta_a + a * theta_b
    loss, accuracy = _loss_and_accuracy(model_a, x, y, thetas, chunk_bytes)
    return Interpolation(alphas=alphas, loss=loss, accuracy=accuracy)


def sharpness(model: nn.Module, x: torch.Tensor, y: torch.Tensor, trace_samples: int = 100,
              seed: int = 0, tol: float = 1e-6, params=None,
              batch_size: int | None = None) -> Sharpness:
    """The flatness numbers of the initial soft-alignment paper (Cheon, Bae & Paik,
    *One-Time Soft Alignment Enables Resilient Learning without Weight
    Transport*, Figs. 2e-k and 5c-d): the Hessian's largest eigenvalue and its
    trace, computed as there with PyHessian's estimators (Yao et al. 2020) —
    here Lanczos (:func:`~fa_explore.analysis.hessian.hessian_eigenvalues`) and
    Hutchinson's estimator with ``trace_samples`` Rademacher probes
    (:func:`~fa_explore.analysis.hessian.hessian_trace`). The paper's other
    curvature views are the eigenvalue density
    (:func:`~fa_explore.analysis.hessian.hessian_density`) and the loss on the
    top-two-eigenvector plane (``loss_slice_2d(..., directions="hessian")``); it
    reports no ε-sharpness. The loss is the plain forward's true Hessian
    whatever rule trained the model.
    """
    from .hessian import HessianOperator, hessian_eigenvalues, hessian_trace

    top = hessian_eigenvalues(model, x, y, k=1, tol=tol, seed=seed, params=params,
                              batch_size=batch_size)
    trace = hessian_trace(model, x, y, samples=trace_samples, seed=seed, params=params,
                          batch_size=batch_size)
    loss = HessianOperator(model, x, y, params, batch_size).loss()
    return Sharpness(top_eigenvalue=float(top[0]), trace=trace.mean,
                     trace_stderr=trace.stderr, loss=loss)


def sharpness_over_training(model: nn.Module, points, x: torch.Tensor, y: torch.Tensor,
                            steps=None, **options):
    """:func:`sharpness` at each recorded parameter vector of a training run (the
    paper's Fig. 2 f-k: trace and top eigenvalue over training).

    ``points`` is ``(n_points, n_params)``, e.g. ``run.trajectory.matrix()``, laid
    out as ``model.parameters()``; ``steps`` their training steps
    (``run.trajectory.steps``; default 0, 1, ...). ``options`` go to
    :func:`sharpness`. Returns a pandas DataFrame with columns ``step``,
    ``top_eigenvalue``, ``trace``, ``trace_stderr``, ``loss``. ``model`` only
    supplies the architecture; it is not changed.
    """
    import pandas as pd
    from torch.nn.utils import vector_to_parameters

    matrix = _as_numpy(points)
    n_params = _n_params(model)
    if matrix.ndim != 2 or matrix.shape[1] != n_params or len(matrix) == 0:
        raise ValueError(f"points must be (n_points, {n_params}); got shape {matrix.shape}")
    steps = np.arange(len(matrix)) if steps is None else np.asarray(steps)
    if steps.shape != (len(matrix),):
        raise ValueError(f"steps must have one entry per point ({len(matrix)})")
    probe = copy.deepcopy(model)
    reference = next(probe.parameters())
    rows = []
    for step, vector in zip(steps, matrix, strict=True):
        with torch.no_grad():
            vector_to_parameters(torch.as_tensor(vector, device=reference.device,
                                                 dtype=reference.dtype), probe.parameters())
        rows.append({"step": step.item(), **sharpness(probe, x, y, **options).as_dict()})
    return pd.DataFrame(rows, columns=["step", "top_eigenvalue", "trace", "trace_stderr",
                                       "loss"])
