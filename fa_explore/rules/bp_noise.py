"""Backpropagation with injected gradient noise: the reference line of variance plots."""

from __future__ import annotations

import torch

from ..settings import Option
from .base import Rule


class NoisyBP(Rule):
    """The exact gradient plus Gaussian noise of a chosen relative variance (the
    reference the FDFA paper draws its estimators against: Bacho & Chu 2024,
    "Low-variance forward gradients using direct feedback alignment and momentum").

    Per parameter tensor ``p`` with true gradient ``g``: ``grad p = g + ε``,
    ``ε ~ N(0, σ² I)`` with ``σ² = relative_variance · ‖g‖² / numel(p)``, so
    ``E‖ε‖² / ‖g‖² = relative_variance``: an unbiased estimate whose variance is
    set by hand, to place other rules' estimates (bias, variance) against.
    Math: docs/math.md#bp_noise
    """

    name = "bp_noise"
    description = ("Backpropagation plus Gaussian gradient noise of a chosen relative "
                   "variance: the reference line for the gradient-variance analyses.")
    paper = "Bacho & Chu 2024, Neural Networks (noisy-BP reference)"
    feedback_kind = "layer"
    options = {
        "relative_variance": Option("float", 1.0, "E‖noise‖² / ‖true gradient‖² per "
                                    "parameter tensor", minimum=0, maximum=1e6),
    }

    def __init__(self, model, cfg, generator=None):
        super().__init__(model, cfg, generator)
        self.relative_variance = cfg.rule_option("relative_variance")

    def compute_grads(self, model, x, y):
        loss = self.loss(model(x), y)
        loss.backward()
        with torch.no_grad():
            for p in model.parameters():
                g = p.grad
                std = (self.relative_variance * g.pow(2).sum() / g.numel()).sqrt()
                g.add_(self.randn(*g.shape, like=g) * std)
        return loss.detach()

    def effective_feedback(self, model, layer):
        return model.layers[layer].weight.detach() if layer > 0 else None
