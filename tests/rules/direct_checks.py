"""Shared checks for the direct feedback rules (dfa, dkp, fdfa).

A hand-written DFA backward ``δ_l = (e D_l) ⊙ σ'(a_l)``, ``δ_L = e`` (reference
notation) with the closed-form cross-entropy error ``e = (softmax(y) − onehot)/B``,
and the Jacobians ``∂y/∂h_l`` computed independently with ``torch.func``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.func import jacrev, vmap

from fa_explore.models import CNN

N_CLASSES = 4


def output_error(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``∂L/∂y`` of the batch-mean cross-entropy, in closed form."""
    return (torch.softmax(logits, 1) - F.one_hot(y, logits.shape[1])) / len(y)


def activation_slope(model, pre: torch.Tensor) -> torch.Tensor:
    """σ'(a) for the model's activation, written out."""
    kind = type(model.activation).__name__
    if kind == "ReLU":
        return (pre > 0).to(pre.dtype)
    if kind == "LeakyReLU":
        return torch.where(pre > 0, torch.ones_like(pre),
                           torch.full_like(pre, model.activation.negative_slope))
    if kind == "Tanh":
        return 1 - torch.tanh(pre) ** 2
    raise AssertionError(kind)


def block(model, index: int, h: torch.Tensor) -> torch.Tensor:
    """Hidden block ``index`` of the plain model: layer, activation (and pooling)."""
    if isinstance(model, CNN) and index == model.n_conv:
        h = h.flatten(1)
    out = model.activation(model.layers[index](h))
    if isinstance(model, CNN) and index < model.n_conv:
        out = model.pool(out)
    return out


def hidden_outputs(model, x: torch.Tensor) -> list[torch.Tensor]:
    """``[h_0 = x, h_1, …, h_{L-1}]`` of the plain forward (no graph)."""
    with torch.no_grad():
        hs = [x.reshape(len(x), *model.input_shape) if isinstance(model, CNN) else x.flatten(1)]
        for index in range(model.n_layers - 1):
            hs.append(block(model, index, hs[-1]))
    return hs


def manual_dfa_mlp(model, feedbacks, x, y) -> list[torch.Tensor]:
    """DFA written out for an MLP: ``δ_l = (e D_l) ⊙ σ'(a_l)``, ``δ_L = e``;
    ``grad W_l = δ_lᵀ h_{l-1}``, ``grad b_l = Σ δ_l``. ``feedbacks[l]`` is ``D_l``
    (1-based; index 0 unused). Returns [W_1, b_1, …] grads."""
    with torch.no_grad():
        inputs, pre = [x.flatten(1)], []
        for index, layer in enumerate(model.layers):
            pre.append(inputs[-1] @ layer.weight.T + layer.bias)
            if index < model.n_layers - 1:
                inputs.append(model.activation(pre[-1]))
        error = output_error(pre[-1], y)
        grads = []
        for l in range(model.n_layers):
            if l == model.n_layers - 1:
                delta = error
            else:
                delta = (error @ feedbacks[l + 1]) * activation_slope(model, pre[l])
            grads += [delta.T @ inputs[l], delta.sum(0)]
    return grads


def manual_dfa_any(model, feedbacks, x, y) -> list[torch.Tensor]:
    """DFA for any model, block by block with separate autograd calls: the hidden
    block ``l`` on its (fixed) input gets ``e D_l`` at its output; the output layer
    gets ``e``. Returns [W_1, b_1, …] grads."""
    hs = hidden_outputs(model, x)
    with torch.no_grad():
        logits = model(x)
    error = output_error(logits, y)
    grads = []
    for index in range(model.n_layers - 1):
        layer = model.layers[index]
        out = block(model, index, hs[index])
        seed = (error @ feedbacks[index + 1]).view_as(out)
        grads += [g.detach() for g in torch.autograd.grad(out, [layer.weight, layer.bias],
                                                          seed)]
    last = model.layers[-1]
    grads += [error.T @ hs[-1].flatten(1), error.sum(0)]
    assert grads[-2].shape == last.weight.shape
    return grads


def perturbed_logits(model):
    """``f(x, z_1, …, z_{L-1})``: the plain forward with ``z_l`` added to ``h_l``."""

    def forward(x, *zs):
        def call(index, layer, h):
            return layer(h if index == 0 else h + zs[index - 1].view_as(h))

        return model(x, call)

    return forward


def batch_jvp(model, x, perturbations) -> torch.Tensor:
    """``Σ_l J_l u_l`` with the full Jacobians of the logits w.r.t. every hidden output
    (``torch.func.jacrev``), contracted with the ``u_l`` (flattened per example)."""
    forward = perturbed_logits(model)
    zeros = tuple(torch.zeros_like(u) for u in perturbations)
    n_hidden = len(perturbations)
    jacobians = jacrev(lambda *zs: forward(x, *zs), argnums=tuple(range(n_hidden)))(*zeros)
    return sum(torch.einsum("bkcj,cj->bk", j, u)
               for j, u in zip(jacobians, perturbations, strict=True))


def mean_jacobians(model, x) -> list[torch.Tensor]:
    """Batch-mean ``∂y/∂h_l`` per hidden layer, shape ``(N_L, N_l)``, by
    ``vmap(jacrev)`` over single examples."""
    forward = perturbed_logits(model)
    hs = hidden_outputs(model, x)[1:]
    n_hidden = len(hs)

    def single(example, *zs):
        return forward(example[None], *(z[None] for z in zs))[0]

    zeros = tuple(torch.zeros_like(h.flatten(1)) for h in hs)
    jac = vmap(jacrev(single, argnums=tuple(range(1, n_hidden + 1))))(x, *zeros)
    return [j.mean(0) for j in jac]
