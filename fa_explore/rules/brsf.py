"""Batchwise random-magnitude sign-concordant feedback (brSF)."""

from __future__ import annotations

import torch

from .frsf import FRSF


class BRSF(FRSF):
    """Feedback ``B_l = |M_l(t)| ⊙ sign(W_l)`` with ``M_l(t)`` redrawn (as frSF's ``M``:
    ``weight_init`` times ``feedback_init_gain``) from the rule's generator at every
    step (Liao, Leibo & Poggio 2016, batchwise random-magnitude sign-concordant
    feedback).

    Each step uses the ``M`` drawn at the end of the previous one (or at init) and
    then draws the next, so ``effective_feedback`` is always the matrix the next
    backward will use, and ``M`` lives in buffers that ``probe_grads`` and
    save/load restore.
    Math: docs/math.md#brsf
    """

    name = "brsf"
    description = ("Sign symmetry with random magnitudes redrawn every batch: errors "
                   "travel back through |M(t)|·sign(W).")
    paper = "Liao, Leibo & Poggio 2016, AAAI (batchwise random-magnitude sign-concordant feedback)"
    # The magnitudes change every step, so frSF's potential is not conserved.
    conservation_law = False

    batchable = True

    def after_backward(self, model):
        with torch.no_grad():
            for l in range(1, model.n_layers):
                self.draw_feedback(getattr(self, f"M{l}"))
