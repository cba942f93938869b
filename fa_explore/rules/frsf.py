"""Fixed random-magnitude sign-concordant feedback (frSF)."""

from __future__ import annotations

import torch

from .base import LayerFeedbackRule, outgoing_weights


class FRSF(LayerFeedbackRule):
    """Feedback ``B_l = |M_l| ⊙ sign(W_l)``: the forward weights' current signs with
    fixed random magnitudes ``|M_l|``, ``M_l`` drawn once like ``W_l`` (the
    ``weight_init`` distribution, times ``feedback_init_gain``)
    (Liao, Leibo & Poggio 2016, fixed random-magnitude sign-concordant feedback).

    ``M_l`` is stored as buffer ``M{l}``; every metric sees the effective ``B_l``
    above, never ``|M_l|`` alone (BioTorch measures the angle of ``|M|`` and so
    reports a wrong one). With ``feedback_sparsity`` a fixed mask ``B{l}_mask``
    multiplies ``B_l`` at every use.
    Math: docs/math.md#frsf
    """

    name = "frsf"
    description = ("Sign symmetry with fixed random magnitudes: errors travel back "
                   "through |M|·sign(W), M drawn once.")
    paper = "Liao, Leibo & Poggio 2016, AAAI (fixed random-magnitude sign-concordant feedback)"
    uses_feedback_sparsity = True
    conservation_law = True
    batchable = True
    uses_feedback_init = True
    stored_feedback_tensors = masked_feedback_tensors = 1

    def __init__(self, model, cfg, generator=None):
        super().__init__(model, cfg, generator)
        for l in range(1, model.n_layers):
            weight = model.layers[l].weight.detach()
            # The mask is B_l's (it masks |M| ⊙ sign(W)), hence its name.
            self.register_feedback(f"M{l}", self.draw_feedback(torch.empty_like(weight)),
                                   learned=False, mask_name=f"B{l}_mask")
        # layer -> (M, mask, their versions, m ⊙ |M|): see magnitudes().
        self._magnitudes: dict[int, tuple] = {}

    def magnitudes(self, layer: int) -> torch.Tensor:
        """``m ⊙ |M_l|`` (the mask ``m`` applied when there is one), computed once and
        reused while ``M_l`` and the mask are the same tensors at the same versions:
        an in-place change (a redraw, ``load_state_dict``, a test's ``copy_``) bumps
        the version and ``.to()`` makes new tensors, either recomputes it."""
        m, mask = getattr(self, f"M{layer}"), getattr(self, f"B{layer}_mask")
        key = (m._version, None if mask is None else mask._version)
        cached = self._magnitudes.get(layer)
        if cached is not None and cached[0] is m and cached[1] is mask and cached[2] == key:
            return cached[3]
        value = self.masked(m.abs(), mask)
        self._magnitudes[layer] = (m, mask, key, value)
        return value

    def feedback_matrix(self, model, layer):
        # sign(W) ∈ {−1, 0, 1}: multiplying by it is exact, so m ⊙ |M| ⊙ sign(W) equals
        # (|M| ⊙ sign(W)) ⊙ m bit for bit, with one product per step instead of three.
        signs = torch.sign(model.layers[layer].weight.detach())
        return signs.mul_(self.magnitudes(layer))

    def conservation_potential(self, model, layer):
        # b_i = m_i ⊙ |M_i| ⊙ sign(v_i) with fixed magnitudes, so ⟨b_i, dv_i⟩ =
        # d Σ_j m_ij |M_ij| |v_ij| = d⟨b_i, v_i⟩: the FA law with b_i following v_i's signs.
        feedback = self.feedback_matrix(model, layer + 1)
        return (outgoing_weights(model, layer, feedback)
                * outgoing_weights(model, layer)).sum(1)
