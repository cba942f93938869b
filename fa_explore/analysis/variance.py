"""How good is a rule's gradient estimate? Bias, variance and alignment over fresh draws.

The FDFA paper (Bacho & Chu 2024, "Low-variance forward gradients using direct
feedback alignment and momentum") compares learning rules by the quality of their
weight-gradient estimates: how far their mean is from the true gradient (bias),
how much single draws scatter around that mean (variance), and the angle between
an estimate and the true gradient. Forward gradients are unbiased but noisy
(FG-W's variance grows with the parameter count, FG-A's with the neuron count);
DFA and DKP are deterministic given their feedback but biased; FDFA trades a
little bias for a low variance.

:func:`gradient_draws` asks a rule for ``draws`` estimates on one batch, each
with a *fresh* random draw (the rule's generator is re-seeded per draw, unlike
:meth:`~fa_explore.rules.base.Rule.probe_grads`, which repeats one draw), and
leaves the rule, its random stream and the model exactly as they were.
:func:`estimator_statistics` turns them into one row per layer. The true gradient
always comes from the plain forward (:func:`fa_explore.metrics.true_grads`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd
import torch

from ..metrics import angle_between, true_grads


def gradient_draws(model, rule, x: torch.Tensor, y: torch.Tensor, draws: int = 32,
                   seed: int = 0) -> list[list[torch.Tensor]]:
    """``draws`` estimates of every layer's weight gradient by ``rule`` on ``(x, y)``,
    draw ``i`` from the rule's generator seeded with ``seed + i``; ``[draw][layer]``.

    The rule's state (feedback, running estimates), its generator's state and the
    model's ``.grad`` are the same afterwards as before.
    """
    if not isinstance(draws, int) or draws < 1:
        raise ValueError(f"draws must be an integer >= 1; got {draws!r}")
    saved = rule.generator.get_state()
    try:
        out = []
        for i in range(draws):
            rule.generator.manual_seed(seed + i)
            out.append(rule.probe_grads(model, x, y))  # restores the state it changed
        return out
    finally:
        rule.generator.set_state(saved)


def draw_statistics(estimates: Sequence[torch.Tensor], exact: torch.Tensor) -> dict:
    """Bias, variance and angles of several estimates of one tensor ``exact``.

    All squared quantities are relative to ``‖exact‖²``: ``variance`` = the mean
    of ‖ĝ − mean‖² (with n − 1), ``bias`` = ‖E[ĝ] − g‖², estimated as
    ‖mean − g‖² − variance/n (the mean of n draws scatters by variance/n around
    E[ĝ]; clipped at 0), ``mse`` = mean ‖ĝ − g‖²; ``mean_angle`` is the average
    angle between a single draw and ``g``, ``angle_of_mean`` that of their mean
    (degrees).
    """
    stacked = torch.stack([e.detach().double().flatten() for e in estimates])
    g = exact.detach().double().flatten()
    scale = float(g.pow(2).sum())
    if scale == 0:
        return {"bias": math.nan, "variance": math.nan, "mse": math.nan,
                "mean_angle": math.nan, "angle_of_mean": math.nan, "draws": len(estimates)}
    mean = stacked.mean(0)
    n = len(estimates)
    variance = float((stacked - mean).pow(2).sum(1).sum() / max(n - 1, 1)) / scale
    raw_bias = float((mean - g).pow(2).sum()) / scale
    return {
        "bias": max(raw_bias - variance / n, 0.0) if n > 1 else raw_bias,
        "variance": variance if n > 1 else math.nan,
        "mse": float((stacked - g).pow(2).sum(1).mean()) / scale,
        "mean_angle": sum(angle_between(e, g) for e in stacked) / n,
        "angle_of_mean": angle_between(mean, g),
        "draws": n,
    }


def estimator_statistics(model, rule, x: torch.Tensor, y: torch.Tensor, draws: int = 32,
                         seed: int = 0) -> pd.DataFrame:
    """One row per layer (``layer`` from 1): the rule's gradient-estimate ``bias``,
    ``variance``, ``mse`` (relative to the true gradient's squared norm),
    ``mean_angle`` and ``angle_of_mean`` (degrees) over ``draws`` fresh draws, with
    ``n_weights`` of the layer and the rule's ``name``."""
    exact = true_grads(model, x, y)
    samples = gradient_draws(model, rule, x, y, draws, seed)
    rows = []
    for index, g in enumerate(exact):
        row = {"rule": rule.name, "layer": index + 1, "n_weights": g.numel()}
        row.update(draw_statistics([s[index] for s in samples], g))
        rows.append(row)
    return pd.DataFrame(rows)


def fg_w_relative_variance(model, x: torch.Tensor, y: torch.Tensor) -> list[float]:
    """FG-W's per-layer relative variance in closed form, for comparison with
    :func:`estimator_statistics`: with one ``v ~ N(0, I)`` over all parameters and
    ``ĝ_l = (∇·v) v_l``, ``E‖ĝ_l − ∇_l‖² = P_l ‖∇‖² + ‖∇_l‖²`` where ``P_l`` counts the
    layer's weights and ``‖∇‖²`` runs over every parameter, biases included."""
    params = [p for p in model.parameters()]
    with torch.enable_grad():
        loss = torch.nn.functional.cross_entropy(model(x), y)
        grads = torch.autograd.grad(loss, params)
    total = sum(float(g.double().pow(2).sum()) for g in grads)
    by_param = dict(zip(map(id, params), grads, strict=True))
    out = []
    for layer in model.layers:
        g = by_param[id(layer.weight)]
        own = float(g.double().pow(2).sum())
        out.append((g.numel() * total + own) / own if own else math.nan)
    return out
