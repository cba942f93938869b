"""Robustness of the network function: accuracy under adversarial and random
input perturbations.

Attacks use the **true input gradient** of the plain forward
(``torch.func.grad`` of the cross-entropy of ``functional_call`` with respect
to the input), never a rule's backward: robustness is a property of the
function, so a model trained by feedback alignment and a backprop model with the
same state dict give identical results. The work runs on a private copy of the
model in eval mode; the model, its mode and its ``.grad`` are not changed.

* FGSM, the fast gradient sign method (Goodfellow, Shlens & Szegedy 2015,
  *Explaining and harnessing adversarial examples*): one step of size ε along
  ``sign(∇ₓL)`` (L∞) or ``∇ₓL / ‖∇ₓL‖₂`` (L2).
* PGD, projected gradient descent (Madry et al. 2018, *Towards deep learning
  models resistant to adversarial attacks*): a seeded random start in the ε-ball,
  then ``steps`` ascent steps each projected back onto the ball.

Inputs in this package are standardised features, not pixels in [0, 1], so
nothing is clamped unless ``clip=(lo, hi)`` is given.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

ATTACKS = ("fgsm", "pgd")
NORMS = ("linf", "l2")
# Examples per chunk of the attack and evaluation (bounds memory on big sets).
CHUNK = 4096


class _Function:
    """The plain forward of a private eval-mode copy of ``model`` at a snapshot of
    its parameters, with the per-example input gradient of the cross-entropy."""

    def __init__(self, model: nn.Module):
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.params = {n: p.detach().clone() for n, p in model.named_parameters()}
        reference = next(iter(self.params.values()))
        self.device, self.dtype = reference.device, reference.dtype

        def example_loss(xi, yi):
            logits = functional_call(self.model, self.params, (xi.unsqueeze(0),))
            return F.cross_entropy(logits, yi.unsqueeze(0))

        self._input_grad = vmap(grad(example_loss))  # ∇ₓ of each example's own loss

    def prepare(self, x, y):
        x = torch.as_tensor(x).to(device=self.device, dtype=self.dtype)
        y = torch.as_tensor(y).to(self.device)
        if len(x) == 0 or len(x) != len(y):
            raise ValueError(f"x and y must be a non-empty batch of equal length; got "
                             f"{len(x)} and {len(y)}")
        return x, y

    @torch.no_grad()
    def logits(self, x):
        return torch.cat([functional_call(self.model, self.params, (x[s:s + CHUNK],))
                          for s in range(0, len(x), CHUNK)])

    def input_grad(self, x, y):
        return self._input_grad(x, y)


def _per_example_norm(t: torch.Tensor) -> torch.Tensor:
    """L2 norm of each example, shaped to broadcast against ``t``."""
    return t.flatten(1).norm(dim=1).view(-1, *([1] * (t.dim() - 1)))


def _direction(g: torch.Tensor, norm: str) -> torch.Tensor:
    """The steepest-ascent unit step for ``norm``: sign(g) for L∞, g/‖g‖₂ for L2
    (zero where the gradient is zero)."""
    if norm == "linf":
        return g.sign()
    length = _per_example_norm(g)
    return torch.where(length > 0, g / length.clamp_min(torch.finfo(g.dtype).tiny),
                       torch.zeros_like(g))


def _project(delta: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """``delta`` projected onto the ε-ball of ``norm``."""
    if norm == "linf":
        return delta.clamp(-eps, eps)
    length = _per_example_norm(delta)
    scale = torch.where(length > eps, eps / length.clamp_min(torch.finfo(delta.dtype).tiny),
                        torch.ones_like(length))
    return delta * scale


def _random_start(x: torch.Tensor, eps: float, norm: str,
                  generator: torch.Generator) -> torch.Tensor:
    """A seeded point uniformly distributed in the ε-ball (L∞: a uniform cube;
    L2: a uniform direction with radius ε·U^(1/d))."""
    if norm == "linf":
        noise = torch.rand(x.shape, generator=generator, dtype=torch.float64) * 2 - 1
        return (eps * noise).to(x)
    direction = torch.randn(x.shape, generator=generator, dtype=torch.float64)
    direction = direction / _per_example_norm(direction)
    d = x[0].numel()
    radius = torch.rand(len(x), generator=generator, dtype=torch.float64) ** (1.0 / d)
    return (eps * radius.view(-1, *([1] * (x.dim() - 1))) * direction).to(x)


def _check_options(eps, method, norm, steps, step_size, clip):
    if method not in ATTACKS:
        raise ValueError(f"method must be one of {', '.join(ATTACKS)}; got {method!r}")
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {', '.join(NORMS)}; got {norm!r}")
    if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps >= 0):
        raise ValueError(f"eps must be a finite number >= 0; got {eps!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1; got {steps!r}")
    if step_size is not None and not (isinstance(step_size, (int, float))
                                      and math.isfinite(step_size) and step_size > 0):
        raise ValueError(f"step_size must be a positive number or None; got {step_size!r}")
    if clip is not None:
        lo, hi = clip
        if not lo < hi:
            raise ValueError(f"clip must be (lo, hi) with lo < hi; got {clip!r}")


def _attack(f: _Function, x, y, eps, method, norm, steps, step_size, seed, clip,
            random_start):
    def clipped(t):
        return t if clip is None else t.clamp(*clip)

    if eps == 0:
        return clipped(x.clone())
    if method == "fgsm":
        return clipped(x + eps * _direction(f.input_grad(x, y), norm))

    # PGD (Madry et al. 2018). Each example keeps its strongest iterate: a
    # misclassified one if any, else the one of largest loss.
    alpha = 2.5 * eps / steps if step_size is None else step_size
    generator = torch.Generator().manual_seed(int(seed))
    delta = _random_start(x, eps, norm, generator) if random_start else torch.zeros_like(x)
    adv = clipped(x + delta)
    best, best_wrong, best_loss = adv.clone(), None, None
    for _ in range(steps):
        adv = adv + alpha * _direction(f.input_grad(adv, y), norm)
        adv = clipped(x + _project(adv - x, eps, norm))
        with torch.no_grad():
            logits = functional_call(f.model, f.params, (adv,))
            loss = F.cross_entropy(logits, y, reduction="none")
            wrong = logits.argmax(1) != y
        if best_loss is None:
            better = torch.ones_like(wrong)
        else:
            better = (wrong & ~best_wrong) | ((wrong == best_wrong) & (loss > best_loss))
        mask = better.view(-1, *([1] * (x.dim() - 1)))
        best = torch.where(mask, adv, best)
        best_wrong = wrong if best_wrong is None else torch.where(better, wrong, best_wrong)
        best_loss = loss if best_loss is None else torch.where(better, loss, best_loss)
    return best


def adversarial_examples(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float,
                         method: str = "fgsm", norm: str = "linf", steps: int = 10,
                         step_size: float | None = None, seed: int = 0,
                         clip: tuple[float, float] | None = None,
                         random_start: bool = True) -> torch.Tensor:
    """Adversarial versions of ``x`` within distance ``eps`` (``norm``: ``"linf"`` or
    ``"l2"``, per example), on the model's device and dtype.

    ``method="fgsm"`` (Goodfellow et al. 2015): ``x + ε·sign(∇ₓL)`` or
    ``x + ε·∇ₓL/‖∇ₓL‖₂``. ``method="pgd"`` (Madry et al. 2018): from a seeded
    uniform point of the ball (``random_start``), ``steps`` steps of
    ``step_size`` (default ``2.5·ε/steps``) along the same direction, each
    projected back onto the ball; each example keeps its strongest iterate
    (misclassified if any, else of largest loss). ``clip=(lo, hi)`` clamps the
    result into a valid input range (none by default: inputs are standardised).
    ``∇ₓL`` is each example's own cross-entropy gradient through the plain forward.
    """
    _check_options(eps, method, norm, steps, step_size, clip)
    f = _Function(model)
    x, y = f.prepare(x, y)
    return torch.cat([_attack(f, x[s:s + CHUNK], y[s:s + CHUNK], float(eps), method, norm,
                              steps, step_size, seed + s, clip, random_start)
                      for s in range(0, len(x), CHUNK)])


def _accuracy(f: _Function, x, y) -> float:
    return float((f.logits(x).argmax(1) == y).double().mean())


def attack_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float,
                    method: str = "fgsm", norm: str = "linf", steps: int = 10,
                    step_size: float | None = None, seed: int = 0,
                    clip: tuple[float, float] | None = None, random_start: bool = True,
                    return_examples: bool = False):
    """Accuracy of ``model`` on adversarial examples of ``(x, y)``
    (see :func:`adversarial_examples` for the attacks and their options).

    ``eps = 0`` gives the clean accuracy. Returns the accuracy in [0, 1], or
    ``(accuracy, x_adv)`` with ``return_examples``.
    """
    _check_options(eps, method, norm, steps, step_size, clip)
    f = _Function(model)
    x, y = f.prepare(x, y)
    adv = torch.cat([_attack(f, x[s:s + CHUNK], y[s:s + CHUNK], float(eps), method, norm,
                             steps, step_size, seed + s, clip, random_start)
                     for s in range(0, len(x), CHUNK)])
    accuracy = _accuracy(f, adv, y)
    return (accuracy, adv) if return_examples else accuracy


def noise_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, sigma: float,
                   seed: int = 0, repeats: int = 1) -> float:
    """Accuracy under Gaussian input noise ``x + σ·N(0, I)`` (seeded), averaged over
    ``repeats`` draws. ``sigma = 0`` gives the clean accuracy."""
    if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma >= 0):
        raise ValueError(f"sigma must be a finite number >= 0; got {sigma!r}")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be an integer >= 1; got {repeats!r}")
    f = _Function(model)
    x, y = f.prepare(x, y)
    generator = torch.Generator().manual_seed(int(seed))
    total = 0.0
    for _ in range(repeats):
        noise = torch.randn(x.shape, generator=generator, dtype=torch.float64).to(x)
        total += _accuracy(f, x + sigma * noise, y)
    return total / repeats


CURVE_METHODS = ATTACKS + ("noise",)


def _labelled_models(models_or_runs) -> list[tuple[str, nn.Module]]:
    """``(label, model)`` pairs from a mapping label → model/run or a sequence of
    models/runs (runs labelled by their rule, models ``model k``)."""
    if isinstance(models_or_runs, (nn.Module,)) or hasattr(models_or_runs, "model"):
        models_or_runs = [models_or_runs]
    if isinstance(models_or_runs, Mapping):
        items = [(str(label), entry) for label, entry in models_or_runs.items()]
    else:
        items = []
        for k, entry in enumerate(models_or_runs):
            config = getattr(entry, "config", None)
            items.append((config.rule if config is not None else f"model {k + 1}", entry))
        counts: dict[str, int] = {}
        for label, _ in items:
            counts[label] = counts.get(label, 0) + 1
        seen: dict[str, int] = {}
        for k, (label, entry) in enumerate(items):
            if counts[label] > 1:  # two runs of one rule: number them
                seen[label] = seen.get(label, 0) + 1
                items[k] = (f"{label} {seen[label]}", entry)
    pairs = []
    for label, entry in items:
        model = entry if isinstance(entry, nn.Module) else getattr(entry, "model", None)
        if not isinstance(model, nn.Module):
            raise ValueError(f"models_or_runs must hold models or runs; got "
                             f"{type(entry).__name__} for {label!r}")
        pairs.append((label, model))
    if not pairs:
        raise ValueError("models_or_runs is empty")
    return pairs


def robustness_curve(models_or_runs, x: torch.Tensor, y: torch.Tensor,
                     eps_values: Sequence[float], method: str = "fgsm", norm: str = "linf",
                     **options) -> pd.DataFrame:
    """Accuracy against perturbation size for several models or runs at once.

    ``models_or_runs``: a mapping label → model or :class:`~fa_explore.Run`, or a
    sequence of them (runs labelled by their rule). ``method`` is ``"fgsm"``,
    ``"pgd"`` (``eps`` a radius in ``norm``, ``options`` passed to
    :func:`attack_accuracy`) or ``"noise"`` (``eps`` the noise σ, ``options``
    to :func:`noise_accuracy`). Returns a tidy frame with columns ``run``,
    ``eps``, ``accuracy``, ``method``, ``norm`` (``"gaussian"`` for noise rows).
    """
    if method not in CURVE_METHODS:
        raise ValueError(f"method must be one of {', '.join(CURVE_METHODS)}; got {method!r}")
    eps_values = [float(e) for e in np.atleast_1d(np.asarray(eps_values, dtype=float))]
    rows = []
    for label, model in _labelled_models(models_or_runs):
        for eps in eps_values:
            if method == "noise":
                accuracy = noise_accuracy(model, x, y, eps, **options)
            else:
                accuracy = attack_accuracy(model, x, y, eps, method=method, norm=norm, **options)
            rows.append({"run": label, "eps": eps, "accuracy": accuracy, "method": method,
                         "norm": "gaussian" if method == "noise" else norm})
    return pd.DataFrame(rows, columns=["run", "eps", "accuracy", "method", "norm"])
