"""Uniform sign-concordant feedback (uSF, "sign symmetry")."""

from __future__ import annotations

import torch

from ..models import xavier_std
from .base import LayerFeedbackRule, outgoing_weights


class USF(LayerFeedbackRule):
    """Feedback ``B_l = s · sign(W_l)``, recomputed from the current ``W_l`` at every
    step, with ``s = sqrt(2 / (fan_in + fan_out))`` the Xavier std of ``W_l``
    (Liao, Leibo & Poggio 2016, "How important is weight symmetry in
    backpropagation?", uniform sign-concordant feedback).

    Only the signs travel back, never the magnitudes. With ``feedback_sparsity``
    a fixed mask ``B{l}_mask`` multiplies ``B_l`` at every use.
    Math: docs/math.md#usf
    """

    name = "usf"
    description = ("Sign symmetry: errors travel back through s·sign(W), the forward "
                   "weights' signs at a fixed magnitude.")
    paper = "Liao, Leibo & Poggio 2016, AAAI (uniform sign-concordant feedback)"
    uses_feedback_sparsity = True
    conservation_law = True
    batchable = True
    masked_feedback_tensors = 1

    def __init__(self, model, cfg, generator=None):
        super().__init__(model, cfg, generator)
        for l in range(1, model.n_layers):
            self.register_buffer(f"B{l}_mask", self.make_mask(model.layers[l].weight))

    def feedback_matrix(self, model, layer):
        weight = model.layers[layer].weight.detach()
        # In place on the fresh sign tensor: one allocation per step, not two.
        return self.masked(torch.sign(weight).mul_(xavier_std(weight)),
                           getattr(self, f"B{layer}_mask"))

    def conservation_potential(self, model, layer):
        # b_i = s·m_i ⊙ sign(v_i), so ⟨b_i, dv_i⟩ = d(s Σ_j m_ij |v_ij|): the FA law
        # Δ ½‖w_i‖² = Δ⟨b_i, v_i⟩ becomes Δ ½‖w_i‖² = s · Δ‖v_i‖₁ (masked).
        following = layer + 1
        magnitudes = outgoing_weights(model, layer).abs()
        mask = getattr(self, f"B{following}_mask")
        if mask is not None:
            magnitudes = magnitudes * outgoing_weights(model, layer, mask)
        return xavier_std(model.layers[following].weight) * magnitudes.sum(1)
