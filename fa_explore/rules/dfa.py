"""Direct feedback alignment: the output error reaches every hidden layer at once."""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import nn

from ..models import FeedforwardNet
from .base import Rule


def hidden_shapes(model: FeedforwardNet) -> list[torch.Size]:
    """Per-example shape of ``h_l``, the input of ``model.layers[l]`` for ``l ≥ 1``: the
    previous block's output after its activation (and pooling, in a CNN)."""
    shapes: list[torch.Size] = []

    def record(index: int, layer: nn.Module, h: torch.Tensor) -> torch.Tensor:
        if index > 0:
            shapes.append(h.shape[1:])
        return layer(h)

    weight = model.layers[0].weight
    with torch.no_grad():
        model(torch.zeros(1, *model.input_shape, device=weight.device, dtype=weight.dtype),
              record)
    return shapes


class DFA(Rule):
    """Direct feedback alignment (Nøkland 2016, "Direct feedback alignment provides
    learning in deep neural networks", NeurIPS).

    Each hidden layer ``l`` receives the output error ``e = ∂L/∂y`` through its own
    fixed random matrix ``D_l`` of shape ``(N_L, N_l)`` (buffers ``D1``, ``D2`` …;
    ``N_l`` is the number of values in ``h_l``, a flattened pooled feature map in a
    CNN): ``δ_l = (e D_l) ⊙ σ'(a_l)``; the output layer gets ``δ_L = e``. Nothing
    travels from layer to layer, so the rule runs every layer on a detached input
    and sends each layer's error in one backward call over ``[y, h_1, …, h_{L-1}]``.

    Subclasses change where ``D_l`` comes from: :class:`~fa_explore.rules.dkp.DKP`
    learns it as a direct readout, :class:`~fa_explore.rules.fdfa.FDFA` tracks the
    Jacobian ``∂y/∂h_l`` with forward gradients.
    Math: docs/math.md#dfa
    """

    name = "dfa"
    description = ("Direct feedback alignment: fixed random matrices send the output error "
                   "straight to every hidden layer.")
    paper = "Nøkland 2016, NeurIPS"
    defaults = {"optimizer": "adam", "lr": 1e-3}
    uses_feedback_sparsity = True
    uses_feedback_init = True
    feedback_kind = "direct"
    # True makes D_l parameters (learned by an optimizer), False buffers.
    learned_feedback: ClassVar[bool] = False

    def __init__(self, model, cfg, generator=None):
        super().__init__(model, cfg, generator)
        output_weight = model.layers[-1].weight
        n_out = output_weight.shape[0]
        for l, shape in enumerate(hidden_shapes(model), start=1):
            empty = torch.empty(n_out, math.prod(shape), device=output_weight.device,
                                dtype=output_weight.dtype)
            self.register_feedback(f"D{l}", self.init_direct_feedback(empty),
                                   self.feedback_is_parameter())

    def feedback_is_parameter(self) -> bool:
        """Whether ``D_l`` are parameters (stepped by an optimizer) or buffers; the
        class's ``learned_feedback`` unless a subclass decides from its options."""
        return self.learned_feedback

    def init_direct_feedback(self, empty: torch.Tensor) -> torch.Tensor:
        """Initial ``D_l``: the forward weights' init distribution (``weight_init``) for
        a matrix of ``D_l``'s shape ``(N_L, N_l)``, times ``feedback_init_gain``, so
        ``D_l`` is scaled like ``W_L`` (the exact feedback of the last hidden layer)."""
        return self.draw_feedback(empty)

    # ------------------------------------------------------------ feedback
    def stored_direct_feedback(self, layer: int) -> torch.Tensor:
        """``D_layer`` as stored (``layer`` counts hidden layers from 1)."""
        return getattr(self, f"D{layer}")

    def direct_feedback(self, layer: int) -> torch.Tensor:
        """``D_layer`` as used in the backward pass now (mask applied), shape
        ``(N_L, N_layer)``."""
        return self.masked_feedback(f"D{layer}")

    def effective_feedback(self, model, layer):
        return None  # D_l maps the output to layer l: no matrix stands in for W_l

    def alignment_target(self, model, layer, x):
        """``D_l`` and what it stands for: the true output-to-layer Jacobian ``∂y/∂h_l``
        of the plain forward, averaged over the probe batch ``x`` (for the last hidden
        layer that is ``W_L``). None for the first layer (no error goes to the input)."""
        if layer == 0:
            return None
        from ..models import output_jacobian

        return self.direct_feedback(layer), output_jacobian(model, layer, x)

    # ------------------------------------------------------------ training
    def local_forward(self, model: FeedforwardNet,
                      x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The logits ``y`` and the hidden outputs ``h_1 … h_{L-1}``, each layer run on
        a detached input: backward from ``h_l`` reaches ``W_l`` and ``b_l`` only, and no
        layer computes a gradient for its input."""
        hidden: list[torch.Tensor] = []

        def call(index: int, layer: nn.Module, h: torch.Tensor) -> torch.Tensor:
            if index > 0:
                hidden.append(h)
            return layer(h.detach())

        return model(x, call), hidden

    def output_error(self, logits: torch.Tensor,
                     y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``e = ∂L/∂y`` of the batch-mean loss, and the loss (both detached)."""
        leaf = logits.detach().requires_grad_()
        with torch.enable_grad():
            loss = self.loss(leaf, y)
            (error,) = torch.autograd.grad(loss, leaf)
        return error, loss.detach()

    def send_errors(self, logits: torch.Tensor, hidden: list[torch.Tensor],
                    error: torch.Tensor) -> None:
        """One backward call: ``e`` into the output layer, ``e D_l`` into ``h_l``, whose
        local graph applies ``σ'(a_l)`` (and the pooling's routing) and fills the grads
        of layer ``l``."""
        grads = [(error @ self.direct_feedback(l)).view_as(h)
                 for l, h in enumerate(hidden, start=1)]
        torch.autograd.backward([logits, *hidden], [error, *grads])

    def compute_grads(self, model, x, y):
        logits, hidden = self.local_forward(model, x)
        error, loss = self.output_error(logits, y)
        self.send_errors(logits, hidden, error)
        return loss
