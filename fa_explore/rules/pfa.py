"""Product feedback alignment (PFA): errors travel back through an extra population."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..models import init_std, init_weight_
from ..settings import Option
from .base import Rule, input_grad, layer_forward, weight_grads


def through_population_is_cheaper(rows: int, n_out: int, n_extra: int, fan_in: int) -> bool:
    """Whether the backward should go through the extra population (``ē = δ P``, then
    ``ē R`` and ``grad R = ēᵀ h``) rather than through the product (``δ (P R)`` and
    ``grad R = Pᵀ grad W``). Both give identical numbers; this compares their
    multiply-adds. ``rows`` = batch × output positions, ``fan_in`` = one row of ``R``.
    Through the population each row costs ``N̄·(N_out + 2·fan_in)``; the product costs
    ``2·N_out·N̄·fan_in`` once plus the layer's own backward. Wide linear layers with
    modest batches go through the population (forming ``P R`` would cost ``k`` times
    their backward); convolutions, whose rows are batch × positions, and narrow
    output layers go through the product."""
    through_population = rows * n_extra * (n_out + 2 * fan_in)
    through_product = n_out * fan_in * (2 * n_extra + rows)
    return through_population <= through_product


class ProductFeedbackLayer(torch.autograd.Function):
    """Forward as the layer; backward through the product pathway ``P`` then ``R``.

    ``ē = δ P`` (the extra population's error; for a convolution ``P`` mixes
    channels at every position), ``grad_input = ē R`` (for a convolution the
    transposed convolution of ``ē`` with the kernel ``R``). ``W`` and ``b`` get the
    local update ``δᵀ h`` and ``R`` gets ``ēᵀ h = Pᵀ (δᵀ h)``. Which way round the
    products are taken is chosen per layer for speed
    (:func:`through_population_is_cheaper`); the result is the same.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, feedback_r, layer, feedback_p):
        ctx.layer = layer
        ctx.save_for_backward(x, feedback_p, feedback_r)
        return layer_forward(layer, x, weight, bias)

    @staticmethod
    def backward(ctx, grad_out):
        x, p, r = ctx.saved_tensors
        layer = ctx.layer
        need_x, need_w, need_b, need_r = ctx.needs_input_grad[:4]
        n_out, n_extra = p.shape
        rows = grad_out.numel() // n_out
        is_linear = isinstance(layer, nn.Linear)
        # ēᵀh is a plain matmul only for linear layers; for a convolution Pᵀ (δᵀh),
        # the same sum over batch and positions, is also the cheaper one.
        population = is_linear and through_population_is_cheaper(
            rows, n_out, n_extra, r[0].numel())
        grad_w = grad_b = grad_x = grad_r = None
        if need_w or need_b or (need_r and not population):
            grad_w, grad_b = weight_grads(layer, grad_out, x, need_b)
        if population:
            extra_error = grad_out @ p  # ē: the extra population's error
            if need_x:
                grad_x = input_grad(layer, extra_error, x, r)
            if need_r:
                grad_r = extra_error.t() @ x
        else:
            if need_x:
                product = (p @ r.flatten(1)).view(n_out, *r.shape[1:])
                grad_x = input_grad(layer, grad_out, x, product)
            if need_r:
                grad_r = (p.t() @ grad_w.flatten(1)).view_as(r)
        return grad_x, (grad_w if need_w else None), grad_b, grad_r, None, None


class PFA(Rule):
    """Product feedback alignment (Li & Benna 2024, "Deep learning without weight
    symmetry", arXiv:2405.20594).

    For every layer ``l ≥ 1`` an extra population of ``N̄ = k·N_l`` neurons
    (``k = expansion_ratio``) carries the error back: a fixed ``P_l`` (buffer
    ``P{l}``, shape ``(N_l, N̄)``) and a learned ``R_l`` (parameter ``R{l}``, shape
    ``(N̄, N_{l-1})``, or ``(N̄, C_in, *kernel)`` for a convolution):
    ``ē = δ_l P_l``, ``δ_{l-1} = (ē R_l) ⊙ σ'(a_{l-1})``, ``grad R_l = ēᵀ h_{l-1}
    = P_lᵀ grad W_l``. With the same weight decay on ``W`` and ``R``,
    ``R − Pᵀ W`` only feels the decay (SGD with momentum is linear), so
    ``R → Pᵀ W`` and the path ``P R → P Pᵀ W ≈ W`` whatever ``R``'s start.
    Schedule as in the paper: a stronger decay for the first epoch (option
    ``first_epoch_weight_decay``, the paper's 0.03), then ``RunConfig.weight_decay``.
    The paper's 1e-4 afterwards follows ~940 steps of pull ``lr·λ = 3e-4`` (one
    MNIST epoch); a whole digits run is ~900 steps, so the default keeps that pull
    after the first epoch (lr 0.03, decay 0.01): the path angles then reach the
    paper's ~18° instead of staying FA-like. ``weight_decay=1e-4`` gives the
    paper's schedule exactly.

    Init: ``P`` from the ``weight_init`` family with variance ``1/N̄`` (Xavier-uniform
    with gain ``sqrt((1 + 1/k)/2)`` by default), so ``E[P Pᵀ] = I`` (Marchenko–Pastur
    spectrum with edges ``(1 ∓ 1/sqrt(k))²``); ``R`` is a random feedback draw
    (``weight_init``, gain 1 by default). ``feedback_init_gain`` scales ``R`` only: it
    sets the path's initial norm (the soft-alignment trainability map varies the
    feedback scale) while ``P``, the fixed projection, keeps ``E[P Pᵀ] = I``.

    Sparsity p, density ``d = 1 − p``: fixed masks ``P{l}_mask`` and ``R{l}_mask``
    multiply ``P`` and ``R`` at every use (``P_m``, ``R_m`` below). Both conventions
    (``feedback_sparsity_scaling``) give the same ``P_m``: kept entries of variance
    ``1/(N̄ d)``, so ``E[P_m P_mᵀ] = I`` still ("rescaled": ``P`` of variance ``1/N̄``
    under a mask of ``1/sqrt(d)``; "unscaled", the authors' code: ``P`` of variance
    ``1/(N̄ d)`` under a 0/1 mask). ``R`` learns, so its mask is 0/1 in both: its
    gradient ``m ⊙ (P_mᵀ grad W)`` and its use then carry no factor, and
    ``R − m ⊙ P_mᵀ W`` only feels the decay, ``R → m ⊙ P_mᵀ W``. They differ in
    ``R``'s initial draw, ``1/sqrt(d)`` larger under "rescaled". Path norm ratios
    ``‖P_m R_m‖/‖W‖`` (σ_R, σ_W: the init stds of ``R`` and ``W``):

    - at init: ``σ_R/σ_W`` ("rescaled", as without sparsity), ``sqrt(d)·σ_R/σ_W``
      ("unscaled");
    - at the decay's fixed point ``R_m = m ⊙ P_mᵀ W``, both conventions:
      ``sqrt(d² + (d (N_l − 1) + κ − d²)/N̄) ≈ sqrt(d² + d/k)`` (κ = 9/5, the
      kurtosis of uniform entries), at an angle ``arccos(1/sqrt(1 + 1/(k d)))``:
      0.35 and 30° at d = 0.3, k = 10. The path is ``d`` times shorter than ``W``
      there, as in the authors' code. (A ``1/sqrt(d)`` mask on ``R`` would give
      ``1/d`` times that, ≈ 1.16, but it multiplies ``R``'s learning rate by ``1/d``:
      100 at p = 0.99, which diverged.)
    Math: docs/math.md#pfa
    """

    name = "pfa"
    description = ("Product feedback alignment: errors travel back through a fixed random "
                   "P into an extra population, then a learned R, and P·R aligns with W.")
    paper = "Li & Benna 2024, arXiv:2405.20594 (Deep learning without weight symmetry)"
    # SGD (with momentum) keeps grad R = Pᵀ grad W a linear relation between the
    # updates, which is what makes R − Pᵀ W feel only the decay; Adam would not.
    defaults = {"optimizer": "sgd", "lr": 0.03, "momentum": 0.9, "weight_decay": 0.01,
                "expansion_ratio": 10}
    options = {
        "first_epoch_weight_decay": Option(
            "float", 0.03, "weight decay during the first epoch (then RunConfig.weight_decay)",
            minimum=0, maximum=10),
    }
    feedback_kind = "layer"
    uses_feedback_sparsity = True
    uses_expansion_ratio = True
    uses_feedback_init = True
    adaptive_feedback = True  # R learns (P is fixed: each mask is chosen per matrix)

    @classmethod
    def feedback_size_factor(cls, expansion_ratio, sparsity):
        # R is k times W, P about k times a square of the layer's outputs; masks double it.
        return 2.0 * (expansion_ratio or 1) * (2.0 if sparsity > 0 else 1.0)

    def __init__(self, model, cfg, generator=None):
        cfg = cfg.resolve()
        super().__init__(model, cfg, generator)
        self.expansion_ratio = int(cfg.expansion_ratio)
        for l in range(1, model.n_layers):
            weight = model.layers[l].weight
            n_extra = self.expansion_ratio * weight.shape[0]
            p = self.draw_p(weight, n_extra)
            if self.sparsity > 0 and not self.rescaled_sparsity:
                p = p / math.sqrt(self.density)  # the authors': Var 1/(N̄ d), 0/1 mask
            r = self.draw_feedback(weight.new_empty(n_extra, *weight.shape[1:]))
            r = r * self.initial_scale(adaptive=True)
            self.register_buffer(f"P{l}", p)
            self.register_parameter(f"R{l}", nn.Parameter(r))
            self.register_buffer(f"P{l}_mask", self.make_mask(p, adaptive=False))
            self.register_buffer(f"R{l}_mask", self.make_mask(r, adaptive=True))

    def draw_p(self, weight: torch.Tensor, n_extra: int) -> torch.Tensor:
        """The fixed ``P`` of shape ``(N_out, N̄)``: iid from the ``weight_init`` family
        with variance ``1/N̄``, so ``E[P Pᵀ] = I``."""
        shape = (weight.shape[0], n_extra)
        gain = math.sqrt(1.0 / n_extra) / init_std(shape, self.cfg.weight_init)
        return init_weight_(weight.new_empty(shape), self.generator, self.cfg.weight_init, gain)

    def product_factors(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(P, R)`` as used in layer ``layer``'s backward, masks applied (``R`` keeps
        its autograd link to the parameter, so its gradient lands in ``R{l}.grad``)."""
        p = self.masked(getattr(self, f"P{layer}"), getattr(self, f"P{layer}_mask"))
        r = self.masked(getattr(self, f"R{layer}"), getattr(self, f"R{layer}_mask"))
        return p, r

    def compute_grads(self, model, x, y):
        factors = [None] + [self.product_factors(l) for l in range(1, model.n_layers)]

        def call(index, layer, h):
            if index == 0:  # nobody needs the input's error: plain autograd
                return layer(h)
            p, r = factors[index]
            return ProductFeedbackLayer.apply(h, layer.weight, layer.bias, r, layer, p)

        loss = self.loss(model(x, call), y)
        loss.backward()
        return loss.detach()

    def effective_feedback(self, model, layer):
        if layer == 0:
            return None
        with torch.no_grad():
            p, r = self.product_factors(layer)
            return (p @ r.flatten(1)).view_as(model.layers[layer].weight)

    def on_epoch_start(self, epoch, optimizers):
        # The stronger decay first pulls R towards Pᵀ W (forgetting its random start).
        decay = (self.cfg.rule_option("first_epoch_weight_decay") if epoch == 0
                 else self.cfg.weight_decay)
        for optimizer in optimizers:
            for group in optimizer.param_groups:
                group["weight_decay"] = decay
