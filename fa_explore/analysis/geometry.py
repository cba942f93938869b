"""The geometry of product feedback alignment, with its closed forms.

PFA (Li & Benna 2024, "Deep learning without weight symmetry") sends a layer's
error through a fixed random ``P`` (``N × N̄``, ``N̄ = k·N``, entries of variance
``1/N̄``) and a learned ``R``. Weight decay drives ``R → Pᵀ W``, so the path
``P R → P Pᵀ W``. Two facts of random-matrix theory then say how well it can
align with ``W``:

* the eigenvalues of ``P Pᵀ`` follow the Marchenko–Pastur law with ratio
  ``λ = N / N̄ = 1/k``: support ``[(1 − √λ)², (1 + √λ)²]``, mean 1, variance ``λ``
  (:func:`marchenko_pastur_density`, :func:`marchenko_pastur_edges`);
* for a random ``W``, ``cos∠(W, P Pᵀ W) ≈ 1/√(1 + 1/k)`` and
  ``‖P Pᵀ W‖ / ‖W‖ ≈ √(1 + 1/k)`` (45° at k = 1, 17.5° at k = 10, 5.7° at k = 100)
  (:func:`path_alignment_theory`, measured by :func:`path_geometry`).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..metrics import angle_between


def marchenko_pastur_edges(expansion_ratio: float) -> tuple[float, float]:
    """Support ``(a, b)`` of the eigenvalues of ``P Pᵀ`` for ratio ``λ = 1/k``."""
    _check_ratio(expansion_ratio)
    root = math.sqrt(1.0 / expansion_ratio)
    return (1 - root) ** 2, (1 + root) ** 2


def marchenko_pastur_density(x: np.ndarray | float, expansion_ratio: float) -> np.ndarray:
    """The Marchenko–Pastur density of ``P Pᵀ``'s eigenvalues at ``x`` (ratio
    ``λ = 1/k ≤ 1``, unit mean): ``√((b − x)(x − a)) / (2π λ x)`` on ``[a, b]``."""
    a, b = marchenko_pastur_edges(expansion_ratio)
    lam = 1.0 / expansion_ratio
    x = np.asarray(x, dtype=float)
    inside = (x > a) & (x < b)
    out = np.zeros_like(x)
    xi = x[inside]
    out[inside] = np.sqrt((b - xi) * (xi - a)) / (2 * math.pi * lam * xi)
    return out


def path_alignment_theory(expansion_ratio: float) -> tuple[float, float]:
    """``(angle in degrees, norm ratio)`` of ``P Pᵀ W`` against a random ``W`` for
    large layers: ``arccos(1/√(1 + 1/k))`` and ``√(1 + 1/k)``."""
    _check_ratio(expansion_ratio)
    factor = 1 + 1 / expansion_ratio
    return math.degrees(math.acos(1 / math.sqrt(factor))), math.sqrt(factor)


def random_p(n_out: int, expansion_ratio: int, generator: torch.Generator | None = None,
             orthogonal: bool = False, dtype=torch.float64) -> torch.Tensor:
    """A ``P`` as PFA draws it in distribution: ``(n_out, k·n_out)`` Gaussian entries
    of variance ``1/N̄`` (PFA uses Xavier-uniform of the same variance), or with
    orthonormal rows (PFA-o, k = 1: ``P Pᵀ = I`` exactly)."""
    n_extra = expansion_ratio * n_out
    g = torch.randn(n_extra, n_out, generator=generator, dtype=dtype)
    if orthogonal:
        q, r = torch.linalg.qr(g)
        return (q * torch.sign(torch.diagonal(r))).t().contiguous()
    return g.t() / math.sqrt(n_extra)


def p_spectrum(p: torch.Tensor) -> np.ndarray:
    """Eigenvalues of ``P Pᵀ`` (ascending)."""
    p = p.detach().double()
    return torch.linalg.eigvalsh(p @ p.t()).cpu().numpy()


def product_spectrum(rule, layer: int) -> np.ndarray:
    """Eigenvalues of ``P Pᵀ`` of a product-feedback rule's layer (``layer`` ≥ 1, as
    the rule's buffers ``P1``, ``P2`` …), masks applied as the backward uses them."""
    factors = getattr(rule, "product_factors", None)
    if factors is None:
        raise ValueError(f"rule {rule.name!r} has no product feedback pathway (P and R)")
    p, _ = factors(layer)
    return p_spectrum(p)


def path_geometry(weight: torch.Tensor, p: torch.Tensor) -> tuple[float, float]:
    """``(angle in degrees, norm ratio)`` between ``W`` and the path ``P Pᵀ W`` that
    PFA's ``R → Pᵀ W`` leads to."""
    w = weight.detach().double().reshape(weight.shape[0], -1)
    p = p.detach().double()
    path = p @ (p.t() @ w)
    return angle_between(w, path), float(path.norm() / w.norm())


def _check_ratio(expansion_ratio: float) -> None:
    if not (isinstance(expansion_ratio, (int, float)) and expansion_ratio >= 1):
        raise ValueError(f"expansion_ratio must be a number >= 1; got {expansion_ratio!r}")
