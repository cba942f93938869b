"""Kolen–Pollack learning: feedback weights that learn the forward weights' update."""

from __future__ import annotations

from .base import StoredLayerFeedback


class KP(StoredLayerFeedback):
    """Learned feedback ``B_l`` (parameters ``B1``, ``B2`` …) that receives exactly the
    forward weights' update, ``grad B_l = grad W_l = δ_lᵀ h_{l-1}``, and the same
    weight decay λ from the optimizer (Kolen & Pollack 1994; Akrout et al. 2019,
    "Deep learning without weight transport").

    Under SGD with weight decay, ``W_l − B_l`` only feels the decay and shrinks as
    ``(1 − lr·λ)^t``, so ``B_l → W_l`` whatever its start (``init_angle`` sets that
    start). With ``feedback_sparsity`` a fixed 0/1 mask ``m`` multiplies ``B_l`` at
    every use, so ``m ⊙ B_l → m ⊙ W_l``; under ``"rescaled"`` sparsity the initial
    ``B_l`` is drawn ``1/sqrt(1 − p)`` larger instead (:class:`~.base.Rule`).
    Math: docs/math.md#kp
    """

    name = "kp"
    description = ("Kolen–Pollack: feedback weights get the same update and weight decay "
                   "as the forward weights, so they converge to them.")
    paper = "Kolen & Pollack 1994; Akrout et al. 2019, NeurIPS"
    defaults = {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 1e-2}
    learned_feedback = True
    adaptive_feedback = True
    uses_init_angle = True
    uses_feedback_sparsity = True

    def compute_grads(self, model, x, y):
        loss = super().compute_grads(model, x, y)
        for l in range(1, model.n_layers):
            # Same update as W (δᵀh, computed once); a copy, so that an optimizer
            # working in place on one gradient cannot touch the other.
            self.stored_feedback(l).grad = model.layers[l].weight.grad.clone()
        return loss
