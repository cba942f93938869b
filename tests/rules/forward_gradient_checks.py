"""Shared checks for the forward-gradient rules (fg_w, fg_a, lg_fg_a).

Exact references come from ordinary reverse-mode autograd in float64; the
statistics test that an estimator averaged over many draws is the true gradient.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

Z_LIMIT = 5.0  # |z| beyond this has probability < 1e-6 under a correct estimator


@pytest.fixture(autouse=True)
def one_thread():
    """Thousands of draws on tiny nets: with two threads the hand-offs cost far more
    than the arithmetic (10x on a busy machine). Import it into a test module."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def pre_activation_grads(model, x, y) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The exact ``∂L/∂a_l`` of the batch-mean loss for every layer, by autograd, with
    the pre-activations ``a_l`` themselves."""
    outputs = []

    def keep(index, layer, h):
        a = layer(h)
        outputs.append(a)
        return a

    loss = F.cross_entropy(model(x, keep), y)
    grads = torch.autograd.grad(loss, outputs)
    return [g.detach() for g in grads], [a.detach() for a in outputs]


def per_example_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a[n]·b[n]`` for every example ``n`` (all dimensions but the batch)."""
    return (a * b).flatten(1).sum(1)


def draw_grads(rule, model, x, y, n_draws: int, params=None) -> list[torch.Tensor]:
    """``n_draws`` independent estimates (fresh draws from the rule's generator) of
    the gradient of each tensor in ``params`` (default: every layer's weight); per
    tensor a tensor of shape ``(n_draws, numel)``."""
    params = [layer.weight for layer in model.layers] if params is None else list(params)
    draws = [[] for _ in params]
    for _ in range(n_draws):
        for p in [*model.parameters(), *rule.parameters()]:
            p.grad = None
        rule.compute_grads(model, x, y)
        for per_tensor, p in zip(draws, params, strict=True):
            per_tensor.append(p.grad.flatten().clone())
    return [torch.stack(d) for d in draws]


def projection_z(samples: torch.Tensor, truth: torch.Tensor) -> float:
    """z statistic of ``H0: E[⟨ĝ, g⟩] / ‖g‖² = 1`` from draws ``ĝ_k`` (rows): the scale
    of the estimator along the true gradient, against its own standard error."""
    truth = truth.flatten()
    s = samples @ truth / truth.dot(truth)
    return ((s.mean() - 1) / (s.std() / math.sqrt(len(s)))).item()


def mean_tan2_of_chunk_means(samples: torch.Tensor, truth: torch.Tensor, chunk: int) -> float:
    """Average over disjoint chunks of ``chunk`` draws of tan² of the angle between the
    chunk's mean estimate and the true gradient (∝ 1/chunk for an unbiased estimator)."""
    truth = truth.flatten()
    unit = truth / truth.norm()
    means = samples[: len(samples) // chunk * chunk].reshape(-1, chunk, samples.shape[1]).mean(1)
    along = means @ unit
    across = (means - along[:, None] * unit).norm(dim=1)
    return ((across / along) ** 2).mean().item()


def relative_variance(samples: torch.Tensor, truth: torch.Tensor) -> float:
    """``E‖ĝ − g‖² / ‖g‖²`` estimated from the draws."""
    truth = truth.flatten()
    return ((samples - truth).pow(2).sum(1).mean() / truth.dot(truth)).item()
