"""PFA-o: product feedback alignment with an orthogonal fixed pathway."""

from __future__ import annotations

import torch

from .pfa import PFA


class PFAO(PFA):
    """Product feedback alignment with orthogonal ``P`` (Li & Benna 2024,
    arXiv:2405.20594, "PFA-o").

    As :class:`~fa_explore.rules.pfa.PFA` with expansion ratio ``k = 1`` and ``P``
    (shape ``(N_l, N_l)``) a uniformly random orthogonal matrix, so ``P Pᵀ = I``
    exactly and ``R → Pᵀ W`` makes the path ``P R`` equal ``W``: no extra neurons
    are needed for a BP-exact pathway, yet no single feedback synapse mirrors a
    forward one.
    Math: docs/math.md#pfa_o
    """

    name = "pfa_o"
    description = ("Product feedback alignment with an orthogonal fixed P (k = 1): the "
                   "learned path P·R converges to W itself.")
    paper = "Li & Benna 2024, arXiv:2405.20594 (PFA-o)"
    defaults = {**PFA.defaults, "expansion_ratio": 1}
    expansion_ratios = (1,)

    def draw_p(self, weight, n_extra):
        """Orthonormal rows: ``Qᵀ`` from the QR of a Gaussian ``(N̄, N_out)`` draw, the
        signs fixed by ``diag(R)`` so that ``Q`` is Haar-distributed."""
        gaussian = self.randn(n_extra, weight.shape[0], like=weight)
        q, r = torch.linalg.qr(gaussian)
        return (q * torch.sign(torch.diagonal(r))).t().contiguous()
