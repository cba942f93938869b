"""Shared helpers for the product feedback rules' tests (test_pfa.py, test_pfa_o.py)."""

from __future__ import annotations

import torch

from fa_explore import RULES
from fa_explore.models import build_model
from fa_explore.rules.base import layer_forward

from feedback_checks import N_CLASSES, tiny_config


def float64_pair(rule: str, model: str = "mlp", **fields):
    """A (model, rule) pair built in float64 from the start, so the rule's draws (an
    orthogonal P's QR above all) are exact in float64, not rounded float32 ones.
    MLP 5-7-6-4, or CNN 1x8x8 -> conv3 -> conv4 -> 6 -> 4."""
    cfg, shape = tiny_config(rule, model, **fields)
    cfg = cfg.resolve()
    net = build_model(cfg, shape, N_CLASSES).double()
    learner = RULES[rule](net, cfg, torch.Generator().manual_seed(cfg.seed + 1))
    return net, learner


def set_r(rule, layer: int, value: torch.Tensor) -> None:
    with torch.no_grad():
        rule.get_parameter(f"R{layer}").copy_(value.reshape(rule.get_parameter(f"R{layer}").shape))


def align_paths(model, rule) -> None:
    """Set every ``R_l = P_l⁺ W_l`` (the minimum-norm solution), so ``P_l R_l = W_l``."""
    for l in range(1, model.n_layers):
        p = rule.get_buffer(f"P{l}")
        weight = model.layers[l].weight.detach()
        set_r(rule, l, torch.linalg.pinv(p) @ weight.flatten(1))


def bp_deltas(model, x, y):
    """Per layer: its input ``h_{l-1}`` and the exact ``δ_l = ∂L/∂a_l`` (plain autograd)."""
    inputs, outputs = [], []

    def record(index, layer, h):
        out = layer(h)
        out.retain_grad()
        inputs.append(h.detach())
        outputs.append(out)
        return out

    torch.nn.functional.cross_entropy(model(x, record), y).backward()
    for p in model.parameters():
        p.grad = None
    return inputs, [out.grad for out in outputs]


def local_r_grad(layer, h, delta, p, r):
    """``grad R = ēᵀ h`` with ``ē`` the channel/neuron mixing of ``δ`` by ``P``, summed
    over the batch (and positions), by plain autograd of the layer's map with ``R``."""
    extra_error = torch.einsum("bo...,on->bn...", delta, p)
    r = r.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(layer_forward(layer, h, r, None), r, extra_error)
    return grad
