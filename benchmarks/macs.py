"""Multiply-adds of one training step, per rule, from the layer shapes alone.

Only the matrix products and convolutions are counted (the work that grows with
the layer sizes); activations, pooling, masks, the loss and the optimizer's
elementwise update are left out. One multiply-add (MAC) of a linear layer with
``n_in`` inputs and ``n_out`` outputs is one of its ``n_in·n_out`` weights used for
one example; a convolution's weight is used once per output position.

Notation per parametrised layer ``l = 0 … L`` (``L`` the output layer): ``c_l`` =
MACs of its forward for one example (``n_in·n_out`` for a linear layer,
``positions·C_in·k²·C_out`` for a convolution), ``N_l`` = size of its flattened
input ``h_{l-1}`` seen by the next rule's feedback (``N_L`` the number of
classes is ``n_out`` of the last layer), ``B`` the batch. The gradient of a
layer's weight costs ``c_l`` as well, and so does the gradient of its input.

Each ``*_macs`` function returns the MACs of one step for the batch; ``mac_ratio``
divides by :func:`bp_macs`. The functions follow the rules' code in
``fa_explore/rules``: when a rule changes how it computes, its formula here must
change too (benchmarks/bench.py prints formula and measurement side by side).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from fa_explore.rules.pfa import through_population_is_cheaper


@dataclass(frozen=True)
class LayerShape:
    """One parametrised layer as the MAC formulas see it."""

    macs: int            # c_l: forward multiply-adds for one example
    positions: int       # output positions (1 for a linear layer)
    fan_in: int          # one row of W: n_in, or C_in·k² for a convolution
    n_out: int           # outputs (channels of a convolution)
    output_size: int     # values of the layer's output per example (n_out·positions)
    hidden_size: int     # N_l: values of the block's output after activation and
    #                      pooling (the next layer's input); n_out for the last layer
    is_linear: bool


def layer_shapes(model: nn.Module, input_shape) -> list[LayerShape]:
    """The :class:`LayerShape` of every parametrised layer of a FeedforwardNet, read
    from one forward of a single zero example."""
    seen: list[tuple[nn.Module, torch.Size, torch.Size]] = []

    def record(index, layer, h):
        out = layer(h)
        seen.append((layer, h.shape[1:], out.shape[1:]))
        return out

    weight = model.layers[0].weight
    with torch.no_grad():
        model(torch.zeros(1, *input_shape, dtype=weight.dtype, device=weight.device), record)
    shapes = []
    for index, (layer, _, out_shape) in enumerate(seen):
        positions = math.prod(out_shape[1:]) if not isinstance(layer, nn.Linear) else 1
        fan_in = layer.weight[0].numel()
        n_out = layer.weight.shape[0]
        hidden = (math.prod(seen[index + 1][1]) if index + 1 < len(seen)
                  else math.prod(out_shape))
        shapes.append(LayerShape(positions * fan_in * n_out, positions, fan_in, n_out,
                                 math.prod(out_shape), hidden, isinstance(layer, nn.Linear)))
    return shapes


# --------------------------------------------------------------------- rules
def bp_macs(shapes: list[LayerShape], batch: int) -> int:
    """BP: forward ``c_l`` for every layer, weight gradient ``c_l`` for every layer,
    input gradient ``c_l`` for every layer but the first (nobody needs the error at
    the input): ``B·(2 Σ_l c_l + Σ_{l≥1} c_l)``."""
    return batch * (2 * sum(s.macs for s in shapes) + sum(s.macs for s in shapes[1:]))


def layer_feedback_macs(shapes, batch):
    """FA and every rule with one matrix ``B_l`` per layer (usf, frsf, brsf, kp, wm
    without its mirror phase, bp_noise): the same products as BP, ``B_l`` in place of
    ``W_l``."""
    return bp_macs(shapes, batch)


def wm_macs(shapes, batch, mirror_batch: int = 32, mirror_every: int = 1):
    """WM: BP's products, plus per mirror phase and layer ``l ≥ 1`` the response
    ``r = ξ W_lᵀ`` and the correlation ``rᵀ ξ``: ``2·mirror_batch·c_l``, once every
    ``mirror_every`` steps; a convolution also counts, per tap, the positions it
    meets (a weight gradient of one example of ones: ``c_l``)."""
    mirror = sum(2 * mirror_batch * s.macs + (0 if s.is_linear else s.macs)
                 for s in shapes[1:])
    return bp_macs(shapes, batch) + mirror / mirror_every


def pfa_macs(shapes, batch, expansion_ratio: int = 10):
    """PFA with ``N̄ = k·n_out`` extra neurons per layer ``l ≥ 1``: forward and weight
    gradient ``2 B c_l`` for every layer (layer 0 has no input gradient), then the
    cheaper of the two equal ways (``through_population_is_cheaper``, the rule's own
    choice; convolutions always through the product), with ``rows = B·positions``:

    - through the population (linear): ``ē = δ P``, ``ē R``, ``grad R = ēᵀ h``:
      ``rows·N̄·(n_out + 2·fan_in)``;
    - through the product: ``P R`` (``n_out·N̄·fan_in``), the input gradient through
      it (``B c_l``) and ``grad R = Pᵀ grad W`` (``N̄·n_out·fan_in``).
    """
    total = 2 * batch * sum(s.macs for s in shapes)
    for s in shapes[1:]:
        n_extra = expansion_ratio * s.n_out
        rows = batch * s.positions
        population = s.is_linear and through_population_is_cheaper(
            rows, s.n_out, n_extra, s.fan_in)
        if population:
            total += rows * n_extra * (s.n_out + 2 * s.fan_in)
        else:
            total += 2 * s.n_out * n_extra * s.fan_in + batch * s.macs
    return total


def pfa_o_macs(shapes, batch):
    """PFA-o: :func:`pfa_macs` with ``k = 1``."""
    return pfa_macs(shapes, batch, expansion_ratio=1)


def dfa_macs(shapes, batch):
    """DFA: forward and weight gradient ``2 B c_l`` for every layer, no input
    gradient anywhere; each hidden layer gets ``e D_l``: ``B·N_L·N_l``."""
    n_classes = shapes[-1].hidden_size
    return (2 * batch * sum(s.macs for s in shapes)
            + batch * n_classes * sum(s.hidden_size for s in shapes[:-1]))


def fdfa_macs(shapes, batch):
    """FDFA (per-layer probes, running average): DFA's products, plus for every
    hidden output ``h_l`` (the input of layer ``l ≥ 1``) one forward-mode probe from
    layer ``l`` up, where only tangents are computed (``B Σ_{j≥l} c_j``: the layers
    below run on an empty batch), plus the estimate's update
    ``D_l ← (1−α) D_l + α ẏᵀu / B`` (``B·N_L·N_l``)."""
    n_classes = shapes[-1].hidden_size
    probes = sum(batch * sum(s.macs for s in shapes[start:]) for start in range(1, len(shapes)))
    estimates = batch * n_classes * sum(s.hidden_size for s in shapes[:-1])
    return dfa_macs(shapes, batch) + probes + estimates


def fg_w_macs(shapes, batch):
    """FG-W: one jvp through the whole net with every weight perturbed: the primal
    forward ``B c_l``, and the tangent ``ẋ Wᵀ + x Ẇᵀ`` (``2 B c_l``; ``B c_0`` for the
    first layer, whose input has no tangent); no backward pass."""
    forward = batch * sum(s.macs for s in shapes)
    tangent = batch * shapes[0].macs + 2 * batch * sum(s.macs for s in shapes[1:])
    return forward + tangent


def fg_a_macs(shapes, batch):
    """FG-A: the recorded forward (``B Σ c_l``), then per hidden layer ``l`` one
    forward-mode pass from its pre-activation up in which the layers above reuse
    their recorded outputs and compute only tangents (``B Σ_{j>l} c_j``), then every
    layer's local weight gradient (``B Σ c_l``)."""
    forward = batch * sum(s.macs for s in shapes)
    passes = sum(batch * sum(s.macs for s in shapes[l + 1:]) for l in range(len(shapes) - 1))
    return 2 * forward + passes


def lg_fg_a_macs(shapes, batch):
    """LG-FG-A: the recorded forward and the local weight gradients (``2 B Σ c_l``);
    per hidden block a jvp through its local head only (primal and tangent,
    ``2 B N_l C``), and the head's own gradient (``B N_l C``), ``C`` the classes."""
    n_classes = shapes[-1].hidden_size
    heads = 3 * batch * n_classes * sum(s.hidden_size for s in shapes[:-1])
    return 2 * batch * sum(s.macs for s in shapes) + heads


MAC_FORMULAS: dict[str, Callable[[list[LayerShape], int], float]] = {
    "pfa": pfa_macs,
    "pfa_o": pfa_o_macs,
    "fdfa": fdfa_macs,
    "fg_w": fg_w_macs,
    "fg_a": fg_a_macs,
    "lg_fg_a": lg_fg_a_macs,
    # The rest, for completeness (no target of their own beyond the timing table).
    "bp": bp_macs,
    "fa": layer_feedback_macs,
    "dfa": dfa_macs,
    "wm": wm_macs,
}


def mac_ratio(rule: str, shapes: list[LayerShape], batch: int) -> float | None:
    """MACs of ``rule``'s step over BP's, or None where no formula is written."""
    formula = MAC_FORMULAS.get(rule)
    return None if formula is None else formula(shapes, batch) / bp_macs(shapes, batch)


# ------------------------------------------------------------ random numbers
def random_draws(rule: str, shapes: list[LayerShape], batch: int,
                 mirror_batch: int = 32) -> tuple[int, int]:
    """``(normal, uniform)`` random numbers one step of ``rule`` draws with its
    defaults, from the shapes. No multiply-add, but on a CPU each costs about as
    much as tens of them (``torch.randn`` ~5 ns per number on one core): the
    forward-gradient rules, brsf and wm pay for them on top of their MACs.

    - fg_w, bp_noise: one normal per parameter (weights and biases);
    - fg_a, lg_fg_a: one normal per pre-activation of every hidden layer and example;
    - fdfa (per-layer probes): one normal per hidden output ``h_l`` and example;
    - wm: ``mirror_batch`` noise inputs of every layer ``l ≥ 1`` (normals);
    - brsf: a fresh ``M_l`` the shape of ``W_l`` for every ``l ≥ 1`` (uniform).
    """
    params = sum(s.fan_in * s.n_out + s.n_out for s in shapes)
    if rule in ("fg_w", "bp_noise"):
        return params, 0
    if rule in ("fg_a", "lg_fg_a"):
        return batch * sum(s.output_size for s in shapes[:-1]), 0
    if rule == "fdfa":
        return batch * sum(s.hidden_size for s in shapes[:-1]), 0
    if rule == "wm":
        return mirror_batch * sum(s.hidden_size for s in shapes[:-1]), 0
    if rule == "brsf":
        return 0, sum(s.fan_in * s.n_out for s in shapes[1:])
    return 0, 0
