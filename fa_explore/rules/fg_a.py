"""Activity-perturbed forward gradient (FG-A): forward-mode derivatives per layer."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from torch import nn

from .base import Rule, layer_forward, weight_grads

# a_l (a dual tensor: primal a_l, tangent u_l) -> (per-example losses ℓ_n, dual, the
# batch loss being Σ_n ℓ_n / B; a tuple of extra outputs whose primals the caller keeps)
ExampleLosses = Callable[[torch.Tensor], tuple[torch.Tensor, tuple[torch.Tensor, ...]]]


class ActivityForwardGradient(NamedTuple):
    """One FG-A draw. Per layer ``l``: its input ``h_{l-1}`` and pre-activation
    ``a_l``; per hidden layer: the perturbation ``u_l`` (shape of ``a_l``), the
    per-example directional derivatives ``d_l[n] = (∂L/∂a_l[n])·u_l[n]`` and
    whatever the loss function returned beside the losses (``extras``)."""

    loss: torch.Tensor
    logits: torch.Tensor
    inputs: list[torch.Tensor]
    outputs: list[torch.Tensor]
    perturbations: list[torch.Tensor]
    derivatives: list[torch.Tensor]
    extras: list[tuple[torch.Tensor, ...]]


def output_error(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``e = ∂L/∂y`` of the batch-mean cross-entropy: ``(softmax(y) − onehot) / B``."""
    error = torch.softmax(logits, dim=1)
    error[torch.arange(len(y), device=y.device), y] -= 1
    return error / len(y)


def example_losses(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-example cross-entropy ``ℓ_n``. The batch loss is ``L = Σ_n ℓ_n / B``, so
    ``∂L/∂a[n] = (∂ℓ_n/∂a[n]) / B``: FG-A divides the jvp by ``B`` afterwards (a
    Python-scalar division of a dual tensor inside the jvp costs more than the layer)."""
    return F.cross_entropy(logits, y, reduction="none")


def record_forward(model, x: torch.Tensor):
    """The plain forward, keeping each layer's input ``h_{l-1}`` and output ``a_l``
    (FG-A reuses them: the inputs for the local updates, the outputs as the points
    the jvps start from)."""
    inputs, outputs = [], []

    def record(index, layer, h):
        a = layer(h)
        inputs.append(h)
        outputs.append(a)
        return a

    logits = model(x, record)
    return logits, inputs, outputs


class _Reached(Exception):
    """Carries a layer's input out of the model's forward (``run_from(stop=...)``)."""

    def __init__(self, h: torch.Tensor):
        super().__init__()
        self.h = h


def dual_layer(module: nn.Module, h: torch.Tensor,
               primal_out: torch.Tensor | None = None) -> torch.Tensor:
    """``module(h)`` for a dual ``h`` (forward-mode AD), the tangent by hand: a linear
    or convolutional layer is linear in its input, so its tangent is the layer
    without bias applied to ``h``'s tangent. Forward AD through ``addmm`` would also
    multiply by the weight's (zero) tangent and copy the weight: about twice the
    work. ``primal_out``, when known (a recorded forward), is not recomputed."""
    primal, tangent = fwAD.unpack_dual(h)
    out = module(primal) if primal_out is None else primal_out
    if tangent is None:
        return out
    return fwAD.make_dual(out, layer_forward(module, tangent, module.weight, None))


def run_from(model, x: torch.Tensor, layer: int, a: torch.Tensor, stop: int | None = None,
             outputs: list[torch.Tensor] | None = None):
    """The model's forward with ``a`` in place of ``a_layer``; nothing below ``layer``
    is recomputed (those layers run on an empty batch, so that the model's own code
    between layers, activation, pooling, flattening, still decides what happens
    above ``layer``). With ``stop``, returns the input ``h_{stop-1}`` that layer
    ``stop`` would receive instead of running further. With ``outputs`` (the recorded
    ``a_j`` of the same batch) and a dual ``a``, the layers above take their recorded
    outputs as primals and compute only tangents (:func:`dual_layer`)."""

    def call(index, module, h):
        if index == layer:
            return a
        if index == stop:
            raise _Reached(h)
        if outputs is not None and index > layer:
            return dual_layer(module, h, outputs[index])
        return module(h)

    try:
        return model(x[:0], call)
    except _Reached as reached:
        return reached.h


class FGA(Rule):
    """Activity-perturbed forward gradient (Ren, Kornblith, Liao & Hinton 2023,
    "Scaling forward gradient with local losses", FG-A).

    For each hidden layer ``l`` an activity perturbation ``u_l ~ N(0, I)`` of the
    shape of its pre-activation ``a_l`` (one per example) and, by forward-mode AD
    (``torch.autograd.forward_ad``), the per-example directional derivative
    ``d_l[n] = (∂L/∂a_l[n])·u_l[n]``; then ``δ_l = d_l u_l`` (unbiased for
    ``∂L/∂a_l``) and the local update ``grad W_l = δ_lᵀ h_{l-1}``, ``grad b_l = Σ δ_l``.
    The output layer uses its exact error ``δ_L = e``. The variance grows with the
    number of neurons of a layer rather than with the number of weights (FG-W).
    Math: docs/math.md#fg_a
    """

    name = "fg_a"
    description = ("Forward gradient, activity perturbation: per layer a random direction "
                   "over the neurons, its derivative from forward-mode AD, then a local update.")
    paper = "Ren, Kornblith, Liao & Hinton 2023, ICLR (FG-A)"
    # Digits, MLP 64-128-128-10: ~96.5% test accuracy (seeds 0-2) in a few seconds.
    defaults = {"optimizer": "adam", "lr": 2e-3, "batch_size": 32, "epochs": 20}
    feedback_kind = "none"

    def hidden_losses(self, model, x, y, outputs, layer) -> ExampleLosses:
        """The function of ``a_layer`` (a dual tensor) whose per-example derivative
        FG-A estimates: here the global loss, by running the network from ``a_layer``
        upward (tangents only: the primals above are the recorded ``outputs``)."""

        def losses(a):
            return example_losses(run_from(model, x, layer, a, outputs=outputs), y), ()

        return losses

    def forward_gradient(self, model, x, y) -> ActivityForwardGradient:
        """One forward pass, then one forward-mode pass per hidden layer with that
        layer's ``u_l``."""
        with torch.no_grad(), fwAD.dual_level():  # forward mode only: no autograd graph
            logits, inputs, outputs = record_forward(model, x)
            perturbations, derivatives, extras = [], [], []
            # One jvp per hidden layer, the perturbation injected at that layer only.
            # A single jvp with every u_k injected at once returns one number per
            # example, d = Σ_k (∂L/∂a_k)·u_k (the chain rule sums what each u_k does
            # to the loss): δ_l = d u_l would carry the cross terms (∂L/∂a_k·u_k) u_l
            # of every other layer, zero-mean but adding the whole network's neuron
            # count to layer l's variance, and d would no longer be the reference's
            # d_l. The pass starts from the stored a_l, so the layers below are not
            # recomputed, and the layers above reuse their recorded outputs as primals.
            for layer in range(model.n_layers - 1):
                u = self.randn(*outputs[layer].shape, like=outputs[layer])
                losses, extra = self.hidden_losses(model, x, y, outputs, layer)(
                    fwAD.make_dual(outputs[layer], u))
                derivative = fwAD.unpack_dual(losses).tangent
                perturbations.append(u)
                derivatives.append(derivative / len(y))
                extras.append(tuple(fwAD.unpack_dual(e).primal for e in extra))
            loss = self.loss(logits, y)
        return ActivityForwardGradient(loss, logits, inputs, outputs, perturbations,
                                       derivatives, extras)

    def compute_grads(self, model, x, y):
        result = self.forward_gradient(model, x, y)
        self.set_layer_grads(model, result, y)
        return result.loss

    @torch.no_grad()
    def set_layer_grads(self, model, result: ActivityForwardGradient, y) -> None:
        """``δ_l = d_l u_l`` for hidden layers, the exact ``δ_L = e`` for the output
        layer, then every layer's local update ``grad W_l = δ_lᵀ h_{l-1}``."""
        deltas = [d.view(-1, *[1] * (u.dim() - 1)) * u
                  for d, u in zip(result.derivatives, result.perturbations, strict=True)]
        deltas.append(output_error(result.logits, y))
        for layer, delta, h in zip(model.layers, deltas, result.inputs, strict=True):
            layer.weight.grad, grad_b = weight_grads(layer, delta, h, layer.bias is not None)
            if layer.bias is not None:
                layer.bias.grad = grad_b
