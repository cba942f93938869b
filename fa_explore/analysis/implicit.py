"""Quantities of the implicit-regularization analysis of feedback alignment.

"Implicit regularization in feedback alignment learning mechanisms for neural
networks" (Theorem 5.2) shows that under FA flow every hidden neuron ``i``
conserves ``½‖w_i‖² − ⟨b_i, v_i⟩`` (``w_i`` its incoming weights with bias, ``v_i``
its outgoing column ``W_{l+1}[:, i]``, ``b_i`` the matching feedback column), and
for sign-FA, BP and frSF the analogous potentials (see each rule's
``conservation_potential``). Consequences the paper draws and these functions
measure:

* :func:`conservation_per_neuron`: the law neuron by neuron, as the distribution
  of ``Δ½‖w_i‖² / ΔQ_i`` (the logged ``conservation/l`` is the ratio of the sums);
* :func:`output_alignment`: Lemma 5.4, per neuron of the last hidden layer the
  cosine between ``v_i`` and ``b_i``: with ``⟨b_i, v_i(0)⟩ ≥ ½‖w_i(0)‖²`` at the start
  the law keeps ``⟨b_i, v_i(t)⟩ ≥ ½‖w_i(t)‖² ≥ 0``, never obtuse;
* :func:`sign_concordance`: the share of weights whose sign matches their
  feedback's (the Dale's-principle effect the paper discusses: output neurons of
  constant sign).

They read the model and the rule as they are now; pass the state at any point of
training (e.g. inside a ``train_iter`` loop) to follow them over a run.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch

from ..metrics import incoming_half_norms, is_homogeneous
from ..metrics import sign_concordance as concordance
from ..rules.base import outgoing_weights


def sign_concordance(model, rule) -> list[float]:
    """Per layer (index 0 is layer 1): the fraction of entries of ``W_l`` whose sign
    equals that of the feedback standing in for it (NaN where there is none, e.g.
    layer 1 and direct or forward-gradient rules). Zeros count as discordant."""
    return [concordance(layer.weight, rule.effective_feedback(model, index))
            for index, layer in enumerate(model.layers)]


def output_alignment(model, rule) -> np.ndarray:
    """Per neuron ``i`` of the last hidden layer: ``cos∠(v_i, b_i)`` with ``v_i`` the
    output weights' column ``W_L[:, i]`` and ``b_i`` the feedback's (Lemma 5.4:
    never obtuse under FA from a suitable start). Raises ``ValueError`` without a
    hidden layer or without a feedback matrix for the output layer."""
    last = model.n_layers - 1
    if last < 1:
        raise ValueError("output_alignment needs a hidden layer (hidden=() has none)")
    feedback = rule.effective_feedback(model, last)
    if feedback is None:
        raise ValueError(f"rule {rule.name!r} has no feedback matrix for the output layer")
    v = outgoing_weights(model, last - 1).double()
    b = outgoing_weights(model, last - 1, feedback).double()
    norms = v.norm(dim=1) * b.norm(dim=1)
    cos = (v * b).sum(1) / norms
    return torch.where(norms > 0, cos, torch.full_like(cos, math.nan)).cpu().numpy()


def conservation_per_neuron(model, rule, start_model) -> dict[int, np.ndarray]:
    """For every hidden layer (key: layer number from 1) with a conservation law,
    the per-neuron ratio ``[½‖w_i(t)‖² − ½‖w_i(0)‖²] / [Q_i(t) − Q_i(0)]`` between
    ``start_model`` (the weights at the start) and ``model`` (now), with ``rule``'s
    potential ``Q_i`` (1 under the rule's gradient flow). Empty for activations that
    are not homogeneous or rules without a law; NaN for a neuron whose potential
    did not move."""
    out: dict[int, np.ndarray] = {}
    if not is_homogeneous(model):
        return out
    for layer in range(model.n_layers - 1):
        now = rule.conservation_potential(model, layer)
        if now is None:
            continue
        before = rule.conservation_potential(start_model, layer)
        left = incoming_half_norms(model, layer) - incoming_half_norms(start_model, layer)
        right = now.double() - before.double()
        ratio = torch.where(right != 0, left / right, torch.full_like(left, math.nan))
        out[layer + 1] = ratio.cpu().numpy()
    return out


def model_at(run, index: int = 0):
    """A copy of ``run.model`` with the parameters of the ``index``-th point of the
    run's recorded trajectory (0: the initial weights)."""
    points = run.trajectory.points
    if not points:
        raise ValueError("the run has no recorded trajectory")
    model = copy.deepcopy(run.model)
    flat = points[index].to(next(model.parameters()).dtype)
    torch.nn.utils.vector_to_parameters(flat.to(next(model.parameters()).device),
                                        model.parameters())
    return model
