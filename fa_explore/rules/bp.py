"""Backpropagation: the reference every other rule is measured against."""

from __future__ import annotations

from .base import Rule, outgoing_weights


class BP(Rule):
    """Exact gradient: errors travel back through ``Wᵀ`` (``B_l = W_l``).

    Math: docs/math.md#bp
    """

    name = "bp"
    description = "Backpropagation: errors travel back through the transposed forward weights."
    paper = "Rumelhart, Hinton & Williams 1986"
    feedback_kind = "layer"
    conservation_law = True
    batchable = True

    def compute_grads(self, model, x, y):
        loss = self.loss(model(x), y)
        loss.backward()
        return loss.detach()

    def backward_matrix(self, model, layer):
        return model.layers[layer].weight.detach()

    def effective_feedback(self, model, layer):
        return model.layers[layer].weight.detach() if layer > 0 else None

    def conservation_potential(self, model, layer):
        # Balancedness (Du et al. 2018): Δ ½‖w_i‖² = Δ ½‖v_i‖².
        return 0.5 * outgoing_weights(model, layer).pow(2).sum(1)
