"""Per-layer alignment metrics (the math: ``docs/math.md#metrics``).

Nothing here branches on a rule's name: rules answer ``alignment_target`` (the
feedback matrix of a layer and what it should align with: ``B_l`` and ``W_l`` for
layer-to-layer feedback, ``D_l`` and the output-to-layer Jacobian for direct
feedback) and ``conservation_potential``, and the gradient angle compares whatever
the rule computes with the true gradient of the plain forward pass.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .models import is_homogeneous as activation_is_homogeneous
from .models import output_jacobian  # noqa: F401 - part of the metrics API


def pair_statistics(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``[a·b, ‖a‖, ‖b‖]`` of two tensors seen as flat vectors, in float64, as one
    tensor on their device (nothing read back yet): :func:`angle_from` and a norm
    ratio follow from it."""
    a, b = a.detach().flatten().double(), b.detach().flatten().double()
    return torch.stack([a @ b, a.norm(), b.norm()])


def angle_from(dot: float, norm_a: float, norm_b: float) -> float:
    """Degrees between two vectors from their dot product and norms (NaN if a norm
    is zero)."""
    if norm_a == 0 or norm_b == 0:
        return math.nan
    return math.degrees(math.acos(min(1.0, max(-1.0, dot / (norm_a * norm_b)))))


def angle_between(a: torch.Tensor, b: torch.Tensor) -> float:
    """Angle in degrees between two tensors seen as flat vectors (NaN if one is zero)."""
    return angle_from(*pair_statistics(a, b).tolist())


def weight_angle(weight: torch.Tensor, feedback: torch.Tensor | None) -> float:
    """Degrees between vec(W) and vec(B_eff); NaN where there is no feedback matrix."""
    return math.nan if feedback is None else angle_between(weight, feedback)


def norm_ratio(weight: torch.Tensor, feedback: torch.Tensor | None) -> float:
    """‖B_eff‖ / ‖W‖; NaN where there is no feedback matrix."""
    if feedback is None:
        return math.nan
    w = weight.detach().double().norm().item()
    return math.nan if w == 0 else feedback.detach().double().norm().item() / w


def true_grads(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    """Exact gradients of the mean cross-entropy w.r.t. each layer's weight, through
    the plain forward (never a rule's custom backward)."""
    weights = [layer.weight for layer in model.layers]
    with torch.enable_grad():
        loss = F.cross_entropy(model(x), y)
        return [g.detach() for g in torch.autograd.grad(loss, weights)]


def gradient_angles(model, rule, x, y) -> list[float]:
    """Per layer: degrees between the rule's ``grad W_l`` and the true gradient on the
    same batch (FDFA seed, Fig. 7). The rule's state is left untouched."""
    estimated = rule.probe_grads(model, x, y)
    exact = true_grads(model, x, y)
    return [angle_between(a, b) for a, b in zip(estimated, exact, strict=True)]


def is_homogeneous(model: nn.Module) -> bool:
    """σ'(a)·a = σ(a) holds (declared by the activation): the conservation law's premise."""
    return activation_is_homogeneous(model.activation)


def incoming_half_norms(model, layer: int) -> torch.Tensor:
    """½‖w_i‖² per neuron of ``layer``, its incoming weights together with its bias."""
    w = model.layers[layer].weight.detach()
    w = w.reshape(w.shape[0], -1)
    b = model.layers[layer].bias.detach()
    return 0.5 * (w.double().pow(2).sum(1) + b.double().pow(2))


class ConservationTracker:
    """Measures the implicit_regularization seed's conservation law (Thm 5.2).

    Per hidden layer: Σ_i [½‖w_i(t)‖² − ½‖w_i(0)‖²] / Σ_i [Q_i(t) − Q_i(0)], which is
    1 under the rule's gradient flow (plain SGD, small steps). NaN where the rule
    declares no such law (``conservation_law``), the activation is not
    homogeneous, or nothing has moved yet.
    """

    def __init__(self, model, rule):
        self.start: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        # Only a declared law is measured (Rule.conservation_law, never inherited).
        if (not getattr(rule, "conservation_law", False)
                or not getattr(model, "is_chain", True) or not is_homogeneous(model)):
            return
        for layer in range(model.n_layers - 1):
            potential = rule.conservation_potential(model, layer)
            if potential is not None:
                self.start[layer] = (incoming_half_norms(model, layer),
                                     potential.detach().double())

    def ratios(self, model, rule) -> list[float]:
        """The ratio per layer (NaN where not measured), read back in one go."""
        out = [math.nan] * model.n_layers
        if not self.start:
            return out
        sums = []
        for layer, (norms0, potential0) in self.start.items():
            sums.append((incoming_half_norms(model, layer) - norms0).sum())
            sums.append((rule.conservation_potential(model, layer).double() - potential0).sum())
        values = torch.stack(sums).tolist()
        for index, layer in enumerate(self.start):
            left, right = values[2 * index], values[2 * index + 1]
            out[layer] = left / right if right != 0 else math.nan
        return out


def sign_concordance(weight: torch.Tensor, feedback: torch.Tensor | None) -> float:
    """Fraction of entries of W whose sign equals the feedback's (zeros count as
    discordant); NaN where there is no feedback matrix. The implicit-regularization
    paper's Dale's-principle effect: FA drives W towards B's signs."""
    if feedback is None:
        return math.nan
    agree = torch.sign(weight.detach()) * torch.sign(feedback.detach()) > 0
    return float(agree.double().mean())


def layer_metrics(model, rule, probe_x, probe_y, tracker: ConservationTracker | None) -> dict:
    """All per-layer columns for one history row (layers numbered from 1). The weight
    angle, norm ratio and sign concordance compare the rule's feedback with what it
    should align with (:meth:`~fa_explore.rules.base.Rule.alignment_target`)."""
    estimated = rule.probe_grads(model, probe_x, probe_y)
    exact = true_grads(model, probe_x, probe_y)
    conservation = tracker.ratios(model, rule) if tracker else [math.nan] * model.n_layers
    # Every layer's scalars as tensors first, read back in one go: one host sync per
    # row instead of a few per metric and layer (the same float64 arithmetic).
    parts, has_feedback = [], []
    for index in range(len(model.layers)):
        parts.append(pair_statistics(estimated[index], exact[index]))
        pair = rule.alignment_target(model, index, probe_x)
        has_feedback.append(pair is not None)
        if pair is not None:
            feedback, target = pair
            agree = torch.sign(target.detach()) * torch.sign(feedback.detach()) > 0
            parts += [pair_statistics(target, feedback), agree.double().mean().reshape(1)]
    values = iter(torch.cat(parts).tolist())
    row = {}
    for index, feedback in enumerate(has_feedback):
        n = index + 1
        row[f"weight_angle/{n}"] = row[f"norm_ratio/{n}"] = math.nan
        row[f"grad_angle/{n}"] = angle_from(next(values), next(values), next(values))
        row[f"conservation/{n}"] = conservation[index]
        row[f"sign_concordance/{n}"] = math.nan
        if feedback:
            dot, norm_target, norm_feedback, agree = (next(values) for _ in range(4))
            row[f"weight_angle/{n}"] = angle_from(dot, norm_target, norm_feedback)
            row[f"norm_ratio/{n}"] = (math.nan if norm_target == 0
                                      else norm_feedback / norm_target)
            row[f"sign_concordance/{n}"] = agree
    return row


@torch.no_grad()
def evaluate(model, x: torch.Tensor, y: torch.Tensor, batch_size: int = 2048):
    """Mean cross-entropy and accuracy of the plain forward on (x, y)."""
    was_training = model.training
    model.eval()
    total_loss, correct = 0.0, 0
    for start in range(0, len(y), batch_size):
        logits = model(x[start:start + batch_size])
        target = y[start:start + batch_size]
        total_loss += F.cross_entropy(logits, target, reduction="sum").item()
        correct += (logits.argmax(1) == target).sum().item()
    model.train(was_training)
    return total_loss / len(y), correct / len(y)
