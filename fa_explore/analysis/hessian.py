"""Curvature of the network function: Hessian-vector products, top eigenvalues,
trace and spectral density of the loss Hessian.

Everything here is the Hessian of the mean cross-entropy of the model's **plain
forward** with respect to its parameters, by true automatic differentiation
(``torch.func``: ``functional_call`` on the parameters, ``grad`` for the
gradient and ``jvp`` of that gradient for ``H v``, i.e. forward-over-reverse).
A rule's custom backward never enters: the curvature is a property of the
function and its weights, so a model trained by feedback alignment and a
backprop model loaded with the same state dict give the same numbers.

The estimators follow PyHessian (Yao et al., *PyHessian: Neural Networks
Through the Lens of the Hessian*, IEEE BigData 2020):

* :func:`hessian_eigenvalues`: top eigenvalues by Lanczos (ARPACK's implicitly
  restarted Lanczos, ``scipy.sparse.linalg.eigsh``, on a ``LinearOperator``
  wrapping the product) or by power iteration with deflation;
* :func:`hessian_trace`: Hutchinson's estimator with Rademacher probes
  (Hutchinson 1989, *A stochastic estimator of the trace of the influence
  matrix for Laplacian smoothing splines*);
* :func:`hessian_density`: stochastic Lanczos quadrature (Ubaru, Chen & Saad
  2017, *Fast estimation of tr(f(A)) via stochastic Lanczos quadrature*;
  Ghorbani, Krishnan & Xiao 2019, *An investigation into neural net
  optimization via Hessian eigenvalue density*), smoothed by
  :func:`density_on_grid`.

The model is never changed: the work runs on a private copy holding a snapshot
of the parameters (a training thread may keep stepping the original), and no
``.grad`` is touched. For a large batch, ``batch_size`` splits ``(x, y)`` into
chunks; the Hessian of the mean loss is the chunk Hessians' mean weighted by
chunk size, so the numbers do not depend on the chunking (up to rounding).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, jvp, vmap

METHODS = ("lanczos", "power")
# Probes pushed through one vmapped product (trace, density): bounds the memory
# of a batched product to this many copies of the parameters and activations.
PROBE_CHUNK = 32


class HessianOperator:
    """``v ↦ H v`` for the mean cross-entropy of ``model`` on ``(x, y)``.

    ``params`` names the parameters to differentiate with respect to (default
    all, in ``model.named_parameters()`` order: the order flat vectors use, the
    same as the run's trajectory); the others stay fixed at their values.
    The operator holds a copy of the model and of the parameters taken when it
    is built, so later changes to the model do not reach it.
    """

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 params: Sequence[str] | None = None, batch_size: int | None = None):
        named = dict(model.named_parameters())
        if not named:
            raise ValueError("the model has no parameters")
        if params is None:
            names = list(named)
        else:
            params = [params] if isinstance(params, str) else list(params)
            unknown = [n for n in params if n not in named]
            if unknown or not params:
                raise ValueError(f"params must name some of the model's parameters "
                                 f"({', '.join(named)}); got {params!r}")
            names = [n for n in named if n in set(params)]  # model order
        if len(x) == 0 or len(x) != len(y):
            raise ValueError(f"x and y must be a non-empty batch of equal length; got "
                             f"{len(x)} and {len(y)}")
        if batch_size is not None and (isinstance(batch_size, bool)
                                       or not isinstance(batch_size, int) or batch_size < 1):
            raise ValueError(f"batch_size must be a positive integer or None; got {batch_size!r}")

        self.names = names
        self.evaluator = copy.deepcopy(model).eval()
        for p in self.evaluator.parameters():  # the copy's own tensors are never used
            p.requires_grad_(False)
        first = named[names[0]]
        self.device, self.dtype = first.device, first.dtype
        self.primals = {n: named[n].detach().clone() for n in names}
        self.fixed = {n: p.detach().clone() for n, p in named.items() if n not in self.primals}
        self.shapes = [self.primals[n].shape for n in names]
        self.sizes = [self.primals[n].numel() for n in names]
        self.n = sum(self.sizes)

        x = x.to(device=self.device, dtype=self.dtype)
        y = y.to(self.device)
        size = len(x) if batch_size is None else batch_size
        self.chunks = [(x[s:s + size], y[s:s + size], min(size, len(x) - s) / len(x))
                       for s in range(0, len(x), size)]

        def loss(primals, xc, yc):
            logits = functional_call(self.evaluator, {**self.fixed, **primals}, (xc,))
            return F.cross_entropy(logits, yc)

        self._loss = loss
        self._grad = grad(loss)

    # -------------------------------------------------------------- layouts
    def flatten(self, tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([tensors[n].reshape(-1) for n in self.names])

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        pieces = torch.split(flat, self.sizes)
        return {n: piece.reshape(shape)
                for n, piece, shape in zip(self.names, pieces, self.shapes, strict=True)}

    def as_dict(self, v) -> dict[str, torch.Tensor]:
        """``v`` (flat tensor/array, or a dict by parameter name) as a dict of
        tensors on the model's device and dtype."""
        if isinstance(v, Mapping):
            missing = [n for n in self.names if n not in v]
            extra = [n for n in v if n not in self.primals]
            if missing or extra:
                raise ValueError(f"v must hold exactly the parameters {self.names}; "
                                 f"missing {missing}, unexpected {extra}")
            out = {}
            for n, shape in zip(self.names, self.shapes, strict=True):
                t = torch.as_tensor(v[n], device=self.device, dtype=self.dtype)
                if t.shape != shape:
                    raise ValueError(f"v[{n!r}] has shape {tuple(t.shape)}; the parameter "
                                     f"has {tuple(shape)}")
                out[n] = t
            return out
        flat = torch.as_tensor(v, device=self.device, dtype=self.dtype)
        if flat.shape != (self.n,):
            raise ValueError(f"a flat v must have shape ({self.n},) (the chosen parameters); "
                             f"got {tuple(flat.shape)}")
        return self.unflatten(flat)

    # -------------------------------------------------------------- products
    def _hvp_dict(self, v: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        total = None
        for xc, yc, weight in self.chunks:
            _, hv = jvp(lambda p, xc=xc, yc=yc: self._grad(p, xc, yc), (self.primals,), (v,))
            if total is None:
                total = {n: weight * t for n, t in hv.items()}
            else:
                for n, t in hv.items():
                    total[n] = total[n] + weight * t
        return total

    def hvp(self, v):
        """``H v``: a dict for a dict, a flat tensor for a flat tensor (numpy for numpy)."""
        if isinstance(v, Mapping):
            return self._hvp_dict(self.as_dict(v))
        out = self.flatten(self._hvp_dict(self.as_dict(v)))
        return out.cpu().numpy() if isinstance(v, np.ndarray) else out

    def matvec(self, flat: torch.Tensor) -> torch.Tensor:
        """``H v`` for a flat ``v`` of any float dtype; the result in the model's dtype."""
        return self.flatten(self._hvp_dict(self.unflatten(flat.to(self.device, self.dtype))))

    def matmat(self, flats: torch.Tensor) -> torch.Tensor:
        """``H v`` for each row of ``flats`` (vmapped in chunks of :data:`PROBE_CHUNK`)."""
        batched = vmap(self.matvec)
        flats = flats.to(self.device, self.dtype)
        return torch.cat([batched(flats[s:s + PROBE_CHUNK])
                          for s in range(0, len(flats), PROBE_CHUNK)])

    def loss(self) -> float:
        """The mean cross-entropy at the operator's parameters."""
        with torch.no_grad():
            return float(sum(w * self._loss(self.primals, xc, yc).item()
                             for xc, yc, w in self.chunks))

    def dense(self) -> torch.Tensor:
        """The full ``(n, n)`` Hessian, one product per basis vector (tiny nets only)."""
        eye = torch.eye(self.n, device=self.device, dtype=self.dtype)
        return self.matmat(eye)


def hessian_vector_product(model: nn.Module, x: torch.Tensor, y: torch.Tensor, v,
                           params: Sequence[str] | None = None,
                           batch_size: int | None = None):
    """``H v``, ``H`` the Hessian of the mean cross-entropy of the plain forward.

    ``v`` is a flat vector over the chosen parameters (``params`` names, default
    all, laid out in ``model.named_parameters()`` order) or a dict of tensors by
    parameter name; the result has the same form (a flat numpy array for a numpy
    ``v``). Forward-over-reverse: ``torch.func.jvp`` of ``torch.func.grad``.
    The model and its ``.grad`` are not changed.
    """
    return HessianOperator(model, x, y, params, batch_size).hvp(v)


# ------------------------------------------------------------- eigenvalues
def _check_count(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}")
    return int(value)


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def _power_iteration(op: HessianOperator, k: int, iters: int, tol: float, seed: int):
    """PyHessian's power iteration with deflation: each new vector is kept
    orthogonal to the eigenvectors already found."""
    gen = _generator(seed)
    values, vectors = [], []
    for _ in range(k):
        v = torch.randn(op.n, generator=gen, dtype=torch.float64)
        value = None
        for _ in range(iters):
            for u in vectors:  # deflation (Gram-Schmidt against found vectors)
                v = v - (u @ v) * u
            v = v / v.norm()
            hv = op.matvec(v).double().cpu()
            for u in vectors:
                hv = hv - (u @ hv) * u
            new = float(v @ hv)
            converged = value is not None and abs(new - value) <= tol * (abs(value) + 1e-12)
            value, v = new, hv
            if converged:
                break
        v = v / v.norm() if float(v.norm()) > 0 else v
        values.append(value)
        vectors.append(v)
    order = np.argsort(values)[::-1]
    return (np.asarray(values)[order],
            torch.stack(vectors).numpy()[order])


def _lanczos_eigsh(op: HessianOperator, k: int, iters: int | None, tol: float, seed: int):
    from scipy.sparse.linalg import LinearOperator, eigsh

    if k >= op.n:
        raise ValueError(f"k must be smaller than the number of parameters ({op.n}) for "
                         f"method 'lanczos'; got {k}")

    def matvec(v):
        flat = torch.from_numpy(np.ascontiguousarray(v, dtype=np.float64).reshape(-1))
        return op.matvec(flat).double().cpu().numpy()

    operator = LinearOperator((op.n, op.n), matvec=matvec, dtype=np.float64)
    v0 = np.random.default_rng(seed).standard_normal(op.n)
    values, vectors = eigsh(operator, k=k, which="LA", tol=tol, maxiter=iters, v0=v0)
    order = np.argsort(values)[::-1]
    return values[order], vectors[:, order].T


def hessian_eigenvalues(model: nn.Module, x: torch.Tensor, y: torch.Tensor, k: int = 1,
                        method: str = "lanczos", iters: int | None = None,
                        tol: float = 1e-6, seed: int = 0,
                        params: Sequence[str] | None = None, batch_size: int | None = None,
                        return_eigenvectors: bool = False):
    """The ``k`` largest eigenvalues of the loss Hessian, in decreasing order.

    ``method``:

    * ``"lanczos"`` (default): ARPACK's implicitly restarted Lanczos
      (``scipy.sparse.linalg.eigsh``, ``which="LA"``: largest algebraic) on a
      ``LinearOperator`` wrapping the Hessian-vector product; ``tol`` is
      ARPACK's relative accuracy, ``iters`` its restart limit (default scipy's);
      needs ``k`` < the number of parameters.
    * ``"power"``: power iteration with deflation as in PyHessian (Yao et al.
      2020), at most ``iters`` products per eigenvalue (default 100), stopping
      when the Rayleigh quotient changes by less than ``tol`` relative. Power
      iteration finds the eigenvalues of largest *magnitude*; they are the
      largest algebraic ones when the positive curvature dominates (as near a
      minimum), and its convergence slows when the next eigenvalue is close.

    ``seed`` fixes the start vector. Returns a numpy array of ``k`` values, or
    ``(values, vectors)`` with ``return_eigenvectors``: ``vectors`` is
    ``(k, n_params)``, unit rows laid out like ``model.named_parameters()``
    (restricted to ``params`` when given).
    """
    k = _check_count("k", k)
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
    if iters is not None:
        iters = _check_count("iters", iters)
    if not (isinstance(tol, (int, float)) and math.isfinite(tol) and tol >= 0):
        raise ValueError(f"tol must be a finite number >= 0; got {tol!r}")
    op = HessianOperator(model, x, y, params, batch_size)
    if k > op.n:
        raise ValueError(f"k must be at most the number of parameters ({op.n}); got {k}")
    if method == "power":
        values, vectors = _power_iteration(op, k, iters or 100, tol, seed)
    else:
        values, vectors = _lanczos_eigsh(op, k, iters, tol, seed)
    return (values, vectors) if return_eigenvectors else values


# ------------------------------------------------------------------ trace
def _rademacher(count: int, n: int, seed: int) -> torch.Tensor:
    """``count`` seeded Rademacher probes (±1 entries), float64 ``(count, n)``; the
    same probes on every device."""
    bits = torch.randint(0, 2, (count, n), generator=_generator(seed))
    return bits.to(torch.float64).mul_(2).sub_(1)


@dataclass(frozen=True)
class TraceEstimate:
    """Hutchinson's estimate of ``tr(H)``: the mean of ``vᵀHv`` over Rademacher
    probes, its standard error (sample std / √samples) and the per-probe values."""

    mean: float
    stderr: float
    values: np.ndarray

    @property
    def samples(self) -> int:
        return len(self.values)


def hessian_trace(model: nn.Module, x: torch.Tensor, y: torch.Tensor, samples: int = 100,
                  seed: int = 0, params: Sequence[str] | None = None,
                  batch_size: int | None = None) -> TraceEstimate:
    """Hutchinson's trace estimator (Hutchinson 1989), as in PyHessian.

    ``tr(H) = E[vᵀHv]`` for probes with independent ±1 entries; the estimate is
    the mean over ``samples`` seeded probes and its standard error is the
    sample standard deviation over √samples (for Rademacher probes the
    variance of one term is ``2(‖H‖_F² − Σᵢ Hᵢᵢ²)``). Probes go through the
    product vmapped in chunks.
    """
    samples = _check_count("samples", samples, 2)
    op = HessianOperator(model, x, y, params, batch_size)
    probes = _rademacher(samples, op.n, seed)
    values = np.empty(samples)
    for s in range(0, samples, PROBE_CHUNK):
        block = probes[s:s + PROBE_CHUNK]
        hv = op.matmat(block).double().cpu()
        values[s:s + len(block)] = (block * hv).sum(1).numpy()
    return TraceEstimate(mean=float(values.mean()),
                         stderr=float(values.std(ddof=1) / math.sqrt(samples)),
                         values=values)


# ---------------------------------------------------------------- density
@dataclass(frozen=True)
class SpectralDensity:
    """Stochastic Lanczos quadrature of the Hessian's eigenvalue density.

    ``nodes`` are the Ritz values of every probe's Lanczos run, ``weights`` their
    Gauss quadrature weights divided by the number of probes, so that they sum
    to 1 and ``Σ wⱼ f(λⱼ)`` estimates ``tr f(H) / n_params``.
    ``probe`` tells which probe each node came from.
    """

    nodes: np.ndarray
    weights: np.ndarray
    probe: np.ndarray
    n_params: int

    def moment(self, power: int) -> float:
        """``Σ wⱼ λⱼ^power``: an estimate of ``tr(H^power) / n_params``."""
        return float(np.sum(self.weights * self.nodes ** power))

    def on_grid(self, grid=None, sigma: float | None = None, n_points: int = 1000):
        """See :func:`density_on_grid`."""
        return density_on_grid(self, grid, sigma, n_points)


def _lanczos_tridiagonal(op: HessianOperator, v: torch.Tensor, steps: int):
    """``steps`` Lanczos steps from ``v`` with full reorthogonalisation (in float64
    on the model's device); stops early at an invariant subspace. Returns the
    diagonal and off-diagonal of the tridiagonal matrix."""
    device = op.device
    v = v.to(device=device, dtype=torch.float64)
    basis = [v / v.norm()]
    alphas, betas = [], []
    scale = 0.0
    for j in range(steps):
        w = op.matvec(basis[j]).to(torch.float64)
        alpha = float(w @ basis[j])
        alphas.append(alpha)
        q = torch.stack(basis)
        for _ in range(2):  # full reorthogonalisation, twice for accuracy
            w = w - q.T @ (q @ w)
        beta = float(w.norm())
        scale = max(scale, abs(alpha), beta)
        if j == steps - 1 or beta <= 1e-10 * max(scale, 1e-30):
            break
        betas.append(beta)
        basis.append(w / beta)
    return np.asarray(alphas), np.asarray(betas)


def hessian_density(model: nn.Module, x: torch.Tensor, y: torch.Tensor, n_vectors: int = 1,
                    n_steps: int = 100, seed: int = 0, params: Sequence[str] | None = None,
                    batch_size: int | None = None) -> SpectralDensity:
    """Eigenvalue density of the Hessian by stochastic Lanczos quadrature
    (Ubaru et al. 2017; Ghorbani et al. 2019), as PyHessian's ``density``.

    For each of ``n_vectors`` seeded Rademacher probes (normalised), ``n_steps``
    Lanczos steps (at most the number of parameters) give a tridiagonal ``T``;
    its eigenvalues are the nodes and the squared first components of its
    eigenvectors the weights. The defaults are PyHessian's (one probe, 100 steps).
    Smooth with :func:`density_on_grid` (or ``.on_grid()``).
    """
    from scipy.linalg import eigh_tridiagonal

    n_vectors = _check_count("n_vectors", n_vectors)
    n_steps = _check_count("n_steps", n_steps)
    op = HessianOperator(model, x, y, params, batch_size)
    steps = min(n_steps, op.n)
    probes = _rademacher(n_vectors, op.n, seed)
    nodes, weights, probe = [], [], []
    for index, v in enumerate(probes):
        diagonal, off = _lanczos_tridiagonal(op, v, steps)
        if len(diagonal) == 1:
            values, vectors = diagonal, np.ones((1, 1))
        else:
            values, vectors = eigh_tridiagonal(diagonal, off)
        nodes.append(values)
        weights.append(vectors[0] ** 2 / n_vectors)
        probe.append(np.full(len(values), index))
    return SpectralDensity(nodes=np.concatenate(nodes), weights=np.concatenate(weights),
                           probe=np.concatenate(probe), n_params=op.n)


def density_on_grid(density: SpectralDensity, grid=None, sigma: float | None = None,
                    n_points: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """The SLQ density smoothed with a Gaussian kernel of width ``sigma``:
    ``ρ(t) = Σⱼ wⱼ N(t; λⱼ, σ²)`` on ``grid`` (default: ``n_points`` points
    spanning the nodes widened by 3σ). ``sigma`` defaults to 1% of the nodes'
    range (at least 1e-6 times the largest magnitude, and 1e-6). Returns
    ``(grid, values)``; the values integrate to about 1 over a grid that covers
    the nodes.
    """
    nodes = np.asarray(density.nodes, dtype=float)
    weights = np.asarray(density.weights, dtype=float)
    if sigma is None:
        spread = float(np.ptp(nodes)) if nodes.size else 0.0
        magnitude = float(np.abs(nodes).max()) if nodes.size else 0.0
        sigma = max(0.01 * spread, 1e-6 * magnitude, 1e-6)
    if not (math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be a positive number; got {sigma!r}")
    if grid is None:
        _check_count("n_points", n_points, 2)
        grid = np.linspace(nodes.min() - 3 * sigma, nodes.max() + 3 * sigma, n_points)
    grid = np.asarray(grid, dtype=float)
    z = (grid[:, None] - nodes[None, :]) / sigma
    values = (np.exp(-0.5 * z ** 2) / (sigma * math.sqrt(2 * math.pi))) @ weights
    return grid, values
