"""Feedback alignment, with optional soft initial alignment (IFA / adaFA)."""

from __future__ import annotations

from .base import FixedLayerFeedback


class FA(FixedLayerFeedback):
    """Fixed random feedback ``B_l`` drawn like ``W_l`` (Lillicrap et al. 2016).

    With ``init_angle=θ`` each ``B_l`` is built once at θ degrees from the initial
    ``W_l`` with ``‖B_l‖ = feedback_init_gain·‖W_l‖`` (soft initial alignment, IFA;
    θ = 0 is adaFA). θ is exact without sparsity; ``feedback_sparsity`` p masks the
    matrix after it is built, so the feedback in use, which the metrics report, is
    at a larger angle (``cos ≈ sqrt(1 − p)·cos θ``; see :meth:`Rule.init_feedback`).
    Math: docs/math.md#fa
    """

    name = "fa"
    description = ("Feedback alignment: errors travel back through fixed random matrices; "
                   "the forward weights learn to align with them.")
    paper = ("Lillicrap et al. 2016, Nat. Commun.; init_angle: soft initial alignment "
             "(IFA) and adaFA (implicit regularization in FA)")
    uses_init_angle = True
    conservation_law = True
    batchable = True
    uses_feedback_sparsity = True
