"""Forward direct feedback alignment: direct feedback that tracks the Jacobian ∂y/∂h_l."""

from __future__ import annotations

import torch
import torch.autograd.forward_ad as fwAD
from torch import nn

from .base import layer_forward
from ..settings import Option
from .dfa import DFA


class FDFA(DFA):
    """Forward direct feedback alignment (Bacho & Chu 2024, "Low-variance forward
    gradients using direct feedback alignment and momentum", Neural Networks).

    DFA whose ``D_l`` (buffers, zero at start) follow the Jacobian ``∂y/∂h_l`` of the
    logits. Each step draws ``u_l ~ N(0, I)`` per example on every hidden output
    ``h_l``; one forward-mode pass (dual tensors riding on the training forward)
    gives ``ẏ = Σ_l J_l u_l``; as the ``u_l`` are independent,
    ``D̂_l = mean_batch(ẏ ⊗ u_l)`` is an unbiased estimate of the batch-mean ``J_l``,
    and ``D_l ← (1 − α) D_l + α D̂_l`` averages it over steps (the paper's momentum;
    option ``alpha``). The weights then learn by DFA with the updated ``D_l``. For
    the last hidden layer ``J = W_L`` exactly, so ``D_{L-1} → W_L`` and that layer's
    update approaches BP's.
    """

    name = "fdfa"
    description = ("Forward DFA: direct feedback matrices track the output Jacobian, "
                   "estimated by forward-mode perturbations and averaged over steps.")
    paper = "Bacho & Chu 2024, Neural Networks (seed: forward_direct_feedback_alignment)"
    options = {
        "alpha": Option("float", 0.02, "weight of the newest Jacobian estimate in D's running "
                        "average (the paper's momentum is 1 - alpha)", minimum=0, maximum=1,
                        exclusive_minimum=True),
    }
    adaptive_feedback = True
    uses_feedback_init = False  # D starts at zero

    def __init__(self, model, cfg, generator=None):
        super().__init__(model, cfg, generator)
        self.alpha = cfg.rule_option("alpha")

    def init_direct_feedback(self, empty):
        return torch.nn.init.zeros_(empty)

    def perturbed_forward(self, model, x):
        """The training forward with a random tangent ``u_l`` added at every hidden
        output: the logits ``y``, the hidden outputs ``h_l`` (for the DFA backward),
        ``ẏ = Σ_l J_l u_l`` and the ``u_l`` (flattened, ``(batch, N_l)``)."""
        hidden: list[torch.Tensor] = []
        perturbations: list[torch.Tensor] = []

        def call(index: int, layer: nn.Module, h: torch.Tensor) -> torch.Tensor:
            if index == 0:
                return layer(h.detach())  # nobody needs the input's error
            primal, tangent = fwAD.unpack_dual(h)
            u = self.randn(*primal.shape, like=primal)
            hidden.append(primal)
            perturbations.append(u.flatten(1))
            # The tangent carries everything upstream has sent plus this layer's u_l.
            tangent = u if tangent is None else tangent + u
            # The layer is linear in its input, so its tangent is the layer without
            # bias applied to the incoming tangent: cheaper than forward AD through
            # addmm, and kept out of the reverse graph. The activation and pooling
            # between layers stay the model's, differentiated by forward AD.
            with torch.no_grad():
                tangent_out = layer_forward(layer, tangent, layer.weight, None)
            # The detached input keeps each layer's backward local, as in DFA.
            return fwAD.make_dual(layer(primal.detach()), tangent_out)

        with fwAD.dual_level():
            logits, logits_dot = fwAD.unpack_dual(model(x, call))
        return logits, hidden, logits_dot, perturbations

    @torch.no_grad()
    def track_jacobians(self, logits_dot: torch.Tensor,
                        perturbations: list[torch.Tensor]) -> None:
        """``D_l ← (1 − α) D_l + α mean_batch(ẏ ⊗ u_l)`` for every hidden layer."""
        alpha = self.alpha
        scale = alpha / logits_dot.shape[0]
        for l, u in enumerate(perturbations, start=1):
            matrix = self.stored_direct_feedback(l)
            matrix.mul_(1 - alpha).addmm_(logits_dot.t(), u, alpha=scale)

    def compute_grads(self, model, x, y):
        logits, hidden, logits_dot, perturbations = self.perturbed_forward(model, x)
        if perturbations:  # a net without hidden layers has nothing to track
            self.track_jacobians(logits_dot, perturbations)
        error, loss = self.output_error(logits, y)
        self.send_errors(logits, hidden, error)
        return loss
