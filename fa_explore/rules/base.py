"""The Rule base class and the pieces rules share.

A rule is an ``nn.Module`` that owns everything the model does not: feedback
matrices (buffers when fixed, parameters when learned), sparsity masks, running
estimates and its own random generator. ``compute_grads(model, x, y)`` runs the
training forward/backward its own way and fills ``.grad`` of every trainable
tensor, so any torch optimizer can step.

Conventions (see ``docs/math.md``): layer ``l`` (0-based
here, 1-based in metric names) has weight ``W`` of shape ``(N_out, N_in, *kernel)``;
a layer-to-layer feedback matrix has the same shape as ``W`` and replaces it in
the backward pass: ``grad_input = grad_output · B``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..models import CNN, MLP, FeedforwardNet, init_weight_
from ..settings import Option

Feedback = torch.Tensor | Callable[[torch.Tensor], torch.Tensor]


def _conv_params(layer: nn.Module) -> tuple:
    return (layer.stride, layer.padding, layer.dilation, layer.groups)


def layer_forward(layer: nn.Module, x: torch.Tensor, weight: torch.Tensor,
                  bias: torch.Tensor | None) -> torch.Tensor:
    """The layer's forward with explicit weights (linear, conv1d or conv2d)."""
    if isinstance(layer, nn.Linear):
        return F.linear(x, weight, bias)
    stride, padding, dilation, groups = _conv_params(layer)
    conv = F.conv2d if isinstance(layer, nn.Conv2d) else F.conv1d
    return conv(x, weight, bias, stride, padding, dilation, groups)


def input_grad(layer: nn.Module, grad_out: torch.Tensor, x: torch.Tensor,
               matrix: torch.Tensor) -> torch.Tensor:
    """``grad_out`` sent back through ``matrix`` in place of the layer's weight
    (``x`` is the layer's input; only its shape matters)."""
    if isinstance(layer, nn.Linear):
        return grad_out @ matrix
    stride, padding, dilation, groups = _conv_params(layer)
    grad_in, _, _ = torch.ops.aten.convolution_backward(
        grad_out, x, matrix, None, stride, padding, dilation, False, [0] * len(stride),
        groups, [True, False, False])
    return grad_in


def weight_grads(layer: nn.Module, grad_out: torch.Tensor, x: torch.Tensor,
                 want_bias: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The local update ``grad W = δᵀ h``, ``grad b = Σ δ`` for any layer kind."""
    if isinstance(layer, nn.Linear):
        grad_w = grad_out.t() @ x
        grad_b = grad_out.sum(0) if want_bias else None
        return grad_w, grad_b
    stride, padding, dilation, groups = _conv_params(layer)
    _, grad_w, grad_b = torch.ops.aten.convolution_backward(
        grad_out, x, layer.weight, [layer.weight.shape[0]] if want_bias else None, stride,
        padding, dilation, False, [0] * len(stride), groups, [False, True, want_bias])
    return grad_w, grad_b


class FeedbackLayer(torch.autograd.Function):
    """Forward as the layer; backward sends the error through ``feedback``.

    ``feedback`` is a tensor of the weight's shape (B in the reference) or a
    callable ``grad_output -> grad_input`` for rules whose pathway is not one
    matrix (PFA). The weight and bias get the ordinary local update ``δᵀ h``.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, layer, feedback):
        out = layer_forward(layer, x, weight, bias)
        ctx.layer, ctx.feedback = layer, feedback
        ctx.save_for_backward(x)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        (x,) = ctx.saved_tensors
        layer, feedback = ctx.layer, ctx.feedback
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        grad_x = None
        if need_x:
            grad_x = feedback(grad_out) if callable(feedback) else input_grad(
                layer, grad_out, x, feedback)
        grad_w = grad_b = None
        if need_w or need_b:
            grad_w, grad_b = weight_grads(layer, grad_out, x, need_b)
        return grad_x, grad_w, grad_b, None, None


def feedback_call(feedbacks: Sequence[Feedback | None]):
    """A ``layer_call`` that routes layer ``l``'s backward through ``feedbacks[l]``.

    ``None`` keeps the layer's own autograd (exact backward through W).
    """

    def call(index: int, layer: nn.Module, h: torch.Tensor) -> torch.Tensor:
        fb = feedbacks[index]
        if fb is None:
            return layer(h)
        return FeedbackLayer.apply(h, layer.weight, layer.bias, layer, fb)

    return call


class _SavedWeightSwap:
    """``saved_tensors_hooks`` that make autograd save ``B_l`` where it saves ``W_l``.

    For a layer's input gradient autograd saves the weight (``grad_input = δ W``,
    the transposed convolution with ``W``), for the weight gradient the layer's
    input. Saving ``B_l`` in place of ``W_l`` turns the layer's own C++ backward
    into feedback alignment's: ``grad_input = δ B_l``, ``grad W_l = δᵀ h`` unchanged,
    the same numbers as :class:`FeedbackLayer` without a Python autograd Function
    per layer. A saved tensor is recognised by storage, shape and strides (``W``
    itself, or the ``Wᵀ`` view that ``F.linear`` saves); :meth:`complete` says
    whether every swapped layer saved its weight exactly once.
    """

    def __init__(self, pairs: Sequence[tuple[int, torch.Tensor, torch.Tensor]]):
        self.table: dict[tuple, tuple[int, torch.Tensor]] = {}
        for index, weight, feedback in pairs:
            views = [(weight, feedback)]
            if weight.dim() == 2:
                views.append((weight.t(), feedback.t()))
            for w, b in views:
                self.table[(w.data_ptr(), w.shape, w.stride())] = (index, b)
        self.expected = {index for index, _, _ in pairs}
        self.hits: list[int] = []

    def pack(self, tensor: torch.Tensor):
        try:
            found = self.table.get((tensor.data_ptr(), tensor.shape, tensor.stride()))
        except RuntimeError:  # a tensor without storage (a wrapper or fake tensor)
            return tensor
        if found is None:
            return tensor
        self.hits.append(found[0])
        return found[1]

    @staticmethod
    def unpack(saved):
        return saved

    def complete(self) -> bool:
        return len(self.hits) == len(self.expected) and set(self.hits) == self.expected


def feedback_forward(model: FeedforwardNet, x: torch.Tensor,
                     feedbacks: Sequence[Feedback | None],
                     observe: Callable[[int, nn.Module, torch.Tensor], None] | None = None
                     ) -> torch.Tensor:
    """``model(x)`` whose backward sends layer ``l``'s error through ``feedbacks[l]``
    (None: through ``W_l`` itself); ``observe(index, layer, h)``, when given, sees
    every layer's input.

    Matrix feedback on the built-in models (:class:`~fa_explore.models.MLP`,
    :class:`~fa_explore.models.CNN`) goes through the layers' own autograd with
    ``B_l`` saved in place of ``W_l`` (:class:`_SavedWeightSwap`). Their forward has
    no side effects, so a forward in which a swapped weight was not saved exactly
    once (a layer whose input needs no gradient) simply runs again through
    :func:`feedback_call` (:class:`FeedbackLayer`), which gives the same numbers.
    Callable feedback and any other model (a converted module may update batch-norm
    statistics, or call a layer twice) take :func:`feedback_call` directly."""
    swaps = [(index, layer.weight, fb)
             for index, (layer, fb) in enumerate(zip(model.layers, feedbacks, strict=True))
             if fb is not None]
    routed = feedback_call(feedbacks)
    if observe is None:
        def plain(index, layer, h):
            return layer(h)

        def fallback(index, layer, h):
            return routed(index, layer, h)
    else:
        def plain(index, layer, h):
            observe(index, layer, h)
            return layer(h)

        def fallback(index, layer, h):
            observe(index, layer, h)
            return routed(index, layer, h)

    if (type(model) in (MLP, CNN) and swaps and torch.is_grad_enabled()
            and all(isinstance(fb, torch.Tensor) and fb.shape == w.shape for _, w, fb in swaps)):
        swap = _SavedWeightSwap(swaps)
        with torch.autograd.graph.saved_tensors_hooks(swap.pack, swap.unpack):
            out = model(x, plain if observe is not None else None)
        if swap.complete():
            return out
    return model(x, fallback)


def aligned_like(weight: torch.Tensor, angle_deg: float,
                 generator: torch.Generator | None, kind: str = "xavier_uniform",
                 gain: float = 1.0) -> torch.Tensor:
    """A matrix at exactly ``angle_deg`` from ``weight`` with ``gain`` times its norm
    (IFA): ``B = gain·‖W‖ (cos θ Ŵ + sin θ Ô)`` with Ô the normalised part of a fresh
    draw from the ``kind`` init orthogonal to W (initial_soft_alignment seed).

    The angle is exact for this matrix; a sparsity mask applied afterwards moves it
    (see :meth:`Rule.init_feedback`)."""
    w = weight.detach().double()
    w_hat = w / w.norm()
    g = init_weight_(torch.empty_like(weight), generator, kind).double()
    o = g - (g * w_hat).sum() * w_hat
    o_hat = o / o.norm()
    theta = math.radians(angle_deg)
    b = gain * w.norm() * (math.cos(theta) * w_hat + math.sin(theta) * o_hat)
    return b.to(weight.dtype)


class Rule(nn.Module):
    """How a model learns. Subclass it in one file of ``fa_explore/rules/``.

    Class attributes read by the config, the CLI and the dashboard:

    - ``name``: config name (``RunConfig.rule``); ``description``: one line;
      ``paper``: the source.
    - ``defaults``: default hyperparameters (RunConfig fields such as ``lr``).
    - ``options``: rule-specific settings (``RunConfig.rule_options``), each an
      :class:`~fa_explore.settings.Option` declaring its type, default, bounds and
      help; the config validates them, ``cfg.rule_option(name)`` reads them.
    - ``models``: the model kinds the rule supports.
    - ``uses_init_angle``, ``uses_feedback_sparsity``, ``uses_expansion_ratio``,
      ``uses_feedback_init``: which settings mean something for this rule (the
      schema's ``rule_flag``; a setting a rule does not use must keep its default).
    - ``feedback_kind``: ``"layer"`` (a matrix per layer standing in for W),
      ``"direct"`` (output-to-layer matrices) or ``"none"``.
    - ``adaptive_feedback``: the feedback changes during training (learned by an
      optimizer, a mirror phase or a running estimate), which decides how a
      sparsity mask scales (below).

    Random feedback draws (:meth:`draw_feedback`) come from ``cfg.weight_init``, the
    forward weights' distribution, scaled by ``cfg.feedback_init_gain``.

    Feedback sparsity p (``cfg.feedback_sparsity``; product_feedback_alignment seed,
    Fig. 6) is a fixed Bernoulli(1 − p) mask, drawn at init and applied at every use
    of the matrix. ``cfg.feedback_sparsity_scaling`` chooses how the feedback keeps
    its scale:

    - ``"rescaled"`` (default): a FIXED matrix's mask is 0 or ``1/sqrt(1 − p)``, so its
      norm is kept in expectation. An ADAPTIVE matrix gets a plain 0/1 mask and its
      initial draw is multiplied by ``1/sqrt(1 − p)`` instead: the same initial
      effective norm, but no change to how fast it learns. (A scaled mask inside the
      backward multiplies a learned matrix's gradient and its use by ``1/sqrt(1 − p)``
      each, so the effective matrix moves ``1/(1 − p)`` times faster; PFA at p = 0.99
      diverged from that.) What an adaptive matrix converges to is then masked
      unscaled: KP's ``m ⊙ B → m ⊙ W``.
    - ``"unscaled"``: every mask is 0/1 and no draw is rescaled (the PFA authors'
      code); a sparse fixed feedback is then ``sqrt(1 − p)`` times smaller. PFA keeps
      ``E[P Pᵀ] = I`` by drawing ``P`` with variance ``1/(N̄·(1 − p))``.
    - ``batchable``: True where a training step is exactly "the plain forward, a
      backward that sends layer ``l``'s error through :meth:`backward_matrix`, then
      :meth:`after_backward`", with the loss :meth:`loss`, the default
      :meth:`param_groups` and no :meth:`on_epoch_start`: such runs can train as one
      batched ensemble (:func:`fa_explore.train_many`). Declared per class and
      never inherited, like ``conservation_law``.
    - ``conservation_law``: True where :meth:`conservation_potential` gives a
      conserved quantity. It is declared per class and never inherited: a class
      that does not set it in its own body has none, and an inherited potential is
      then replaced by the base's None (a rule built on FA changes the flow, so
      FA's law need not hold for it); the metrics log NaN for it.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    defaults: ClassVar[dict[str, Any]] = {}
    options: ClassVar[dict[str, Option]] = {}
    models: ClassVar[tuple[str, ...]] = ("mlp", "cnn")
    uses_init_angle: ClassVar[bool] = False
    uses_feedback_sparsity: ClassVar[bool] = False
    uses_expansion_ratio: ClassVar[bool] = False
    uses_feedback_init: ClassVar[bool] = False
    expansion_ratios: ClassVar[tuple[int, ...] | None] = None
    feedback_kind: ClassVar[str] = "none"
    adaptive_feedback: ClassVar[bool] = False
    conservation_law: ClassVar[bool] = False
    batchable: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "batchable" not in cls.__dict__:
            cls.batchable = False  # a batched step is declared, never inherited
        if cls.batchable:
            # The batched ensemble runs none of these: a rule that needs them is not
            # batchable (its runs then train one by one).
            for hook in ("param_groups", "on_epoch_start", "loss"):
                if getattr(cls, hook) is not getattr(Rule, hook):
                    raise TypeError(f"rule {cls.name!r} is declared batchable but overrides "
                                    f"{hook}; a batchable rule keeps Rule.{hook}")
        if "conservation_law" not in cls.__dict__:
            cls.conservation_law = False  # a law is declared, never inherited
        if not cls.conservation_law:
            if cls.name and "conservation_potential" in cls.__dict__:
                raise TypeError(f"rule {cls.name!r} defines conservation_potential; declare "
                                "conservation_law = True in its class body (or drop it)")
            if "conservation_potential" not in cls.__dict__:
                cls.conservation_potential = Rule.conservation_potential

    def __init__(self, model: FeedforwardNet, cfg, generator: torch.Generator | None = None):
        super().__init__()
        self.cfg = cfg
        device = model.layers[0].weight.device
        self.generator = generator or torch.Generator(device=device).manual_seed(cfg.seed + 1)
        self.sparsity = float(cfg.feedback_sparsity)

    # Model-sized feedback tensors the rule stores, and how many of them carry a
    # sparsity mask (for the config's size bound).
    stored_feedback_tensors: ClassVar[int] = 0
    masked_feedback_tensors: ClassVar[int] = 0

    @classmethod
    def feedback_size_factor(cls, expansion_ratio: int | None, sparsity: float) -> float:
        """How many model-sized tensors of feedback state the rule keeps (masks
        included), for the config's size bound; 0 for rules without feedback."""
        return cls.stored_feedback_tensors + (cls.masked_feedback_tensors if sparsity > 0
                                              else 0)

    # ---------------------------------------------------------------- the API
    def compute_grads(self, model: FeedforwardNet, x: torch.Tensor,
                      y: torch.Tensor) -> torch.Tensor:
        """Fill ``.grad`` of every trainable tensor; return the (detached) batch loss."""
        raise NotImplementedError

    def effective_feedback(self, model: FeedforwardNet, layer: int) -> torch.Tensor | None:
        """The matrix standing in for ``model.layers[layer].weight`` in the backward
        pass, as it is used now (masks applied), or None where there is none."""
        return None

    def backward_matrix(self, model: FeedforwardNet, layer: int) -> torch.Tensor:
        """For a ``batchable`` rule: the matrix (shape of ``W_l``) layer ``layer``'s
        error is sent back through in the next step (``l ≥ 1``). It must draw no
        random numbers (per-step randomness belongs to :meth:`after_backward`)."""
        raise NotImplementedError(f"rule {self.name!r} has no backward_matrix "
                                  "(it is not batchable)")

    def after_backward(self, model: FeedforwardNet) -> None:
        """For a ``batchable`` rule: what the rule does after each step's backward
        (e.g. redraw a random feedback); nothing by default."""

    def alignment_target(self, model: FeedforwardNet, layer: int, x: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(feedback, target)``: the matrix this rule sends layer ``layer``'s error
        through and the matrix it should align with (the weight angle, norm ratio and
        sign concordance compare them), or None where there is none. By default the
        effective feedback ``B_l`` and the forward weight ``W_l``; rules whose feedback
        stands for something else (DFA's ``D_l``: the output-to-layer Jacobian) say
        so here. ``x`` is the probe batch (for targets that depend on the data)."""
        feedback = self.effective_feedback(model, layer)
        if feedback is None:
            return None
        return feedback, model.layers[layer].weight.detach()

    def conservation_potential(self, model: FeedforwardNet, layer: int) -> torch.Tensor | None:
        """Per-neuron ``Q_i`` of hidden layer ``layer`` such that, under this rule's
        gradient flow with a homogeneous activation, ``Δ ½‖w_i‖² = Δ Q_i``
        (implicit_regularization seed, Thm 5.2); None where no such law holds
        (always None unless the class declares ``conservation_law``)."""
        return None

    def param_groups(self, model: FeedforwardNet) -> list[dict[str, Any]]:
        """Optimizer parameter groups. A group may carry ``optimizer`` and its own
        hyperparameters; by default the model and the rule's learned feedback share
        the run's optimizer."""
        return [{"params": [*model.parameters(), *self.parameters()]}]

    def on_epoch_start(self, epoch: int, optimizers: Sequence[torch.optim.Optimizer]) -> None:
        """Hook for epoch-dependent schedules (e.g. PFA's weight decay)."""

    # -------------------------------------------------------------- helpers
    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, y)

    def randn(self, *shape: int, like: torch.Tensor) -> torch.Tensor:
        """Standard normal noise from the rule's own generator (reproducible)."""
        return torch.randn(*shape, generator=self.generator, device=like.device,
                           dtype=like.dtype)

    @property
    def density(self) -> float:
        """``1 − p``: the fraction of feedback entries a sparsity mask keeps."""
        return 1.0 - self.sparsity

    @property
    def rescaled_sparsity(self) -> bool:
        """Whether sparse feedback keeps its scale (``feedback_sparsity_scaling``)."""
        return self.sparsity > 0 and self.cfg.feedback_sparsity_scaling == "rescaled"

    def draw_feedback(self, empty: torch.Tensor) -> torch.Tensor:
        """Fill ``empty`` with a random feedback draw: the forward weights' init
        distribution (``cfg.weight_init``) times ``cfg.feedback_init_gain``."""
        return init_weight_(empty, self.generator, kind=self.cfg.weight_init,
                            gain=self.cfg.feedback_init_gain)

    def initial_scale(self, adaptive: bool | None = None) -> float:
        """Factor on an initial feedback draw: ``1/sqrt(1 − p)`` for an adaptive
        matrix under ``"rescaled"`` sparsity (its mask stays 0/1), else 1."""
        adaptive = self.adaptive_feedback if adaptive is None else adaptive
        return 1.0 / math.sqrt(self.density) if adaptive and self.rescaled_sparsity else 1.0

    def init_feedback(self, weight: torch.Tensor, adaptive: bool | None = None) -> torch.Tensor:
        """An initial layer-to-layer feedback matrix for ``weight``.

        A random draw (:meth:`draw_feedback`), or, with ``init_angle=θ`` on a rule
        that uses it, ``B`` at exactly θ from ``W`` with ``‖B‖ = feedback_init_gain·‖W‖``
        (:func:`aligned_like`). θ is the angle BEFORE any sparsity mask: the masked
        matrix that the backward and the metrics use is at another angle (for θ = 0
        and density d, ``cos = sqrt(Σ m W² / Σ W²) ≈ sqrt(d)``: about 45° at p = 0.5;
        in general ``cos ≈ sqrt(d)·cos θ``). An adaptive matrix under ``"rescaled"``
        sparsity is then multiplied by :meth:`initial_scale`."""
        if self.uses_init_angle and self.cfg.init_angle is not None:
            matrix = aligned_like(weight, self.cfg.init_angle, self.generator,
                                  self.cfg.weight_init, self.cfg.feedback_init_gain)
        else:
            matrix = self.draw_feedback(torch.empty_like(weight.detach()))
        scale = self.initial_scale(adaptive)
        return matrix if scale == 1.0 else matrix * scale

    def make_mask(self, like: torch.Tensor, adaptive: bool | None = None
                  ) -> torch.Tensor | None:
        """The fixed Bernoulli(1 − p) mask of a feedback matrix shaped like ``like``, or
        None when p = 0: 0/1, times ``1/sqrt(1 − p)`` for a fixed matrix under
        ``"rescaled"`` sparsity (see the class docstring). ``adaptive`` defaults to the
        rule's ``adaptive_feedback``."""
        if self.sparsity <= 0:
            return None
        adaptive = self.adaptive_feedback if adaptive is None else adaptive
        draw = torch.rand(like.shape, generator=self.generator, device=like.device)
        mask = (draw < self.density).to(like.dtype)
        if self.rescaled_sparsity and not adaptive:
            mask = mask / math.sqrt(self.density)
        return mask

    @staticmethod
    def masked(matrix: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return matrix if mask is None else matrix * mask

    def register_feedback(self, name: str, matrix: torch.Tensor, learned: bool,
                          mask_name: str | None = None) -> None:
        """Store a feedback matrix as ``name``: a parameter when ``learned`` (an
        optimizer steps it), else a buffer; then its fixed sparsity mask (buffer
        ``mask_name``, default ``{name}_mask``; None when p = 0), drawn after it from
        the rule's generator (:meth:`make_mask`)."""
        if learned:
            self.register_parameter(name, nn.Parameter(matrix))
        else:
            self.register_buffer(name, matrix)
        self.register_buffer(mask_name or f"{name}_mask", self.make_mask(matrix))

    def masked_feedback(self, name: str) -> torch.Tensor:
        """The stored feedback ``name`` as the backward uses it: its mask applied,
        detached when learned (its own gradient is the rule's to set)."""
        matrix = getattr(self, name)
        if isinstance(matrix, nn.Parameter):
            matrix = matrix.detach()
        return self.masked(matrix, getattr(self, f"{name}_mask"))

    def probe_grads(self, model: FeedforwardNet, x: torch.Tensor,
                    y: torch.Tensor) -> list[torch.Tensor]:
        """This rule's weight gradients on a batch, leaving the rule, its random
        generator and the model's ``.grad`` as they were (for metrics)."""
        saved_state = {k: v.detach().clone() for k, v in self.state_dict().items()}
        saved_rng = self.generator.get_state()
        params = [*model.parameters(), *self.parameters()]  # walked once, not three times
        saved_grads = [p.grad for p in params]
        for p in params:
            p.grad = None
        try:
            self.compute_grads(model, x, y)
            # The grads are fresh tensors (set to None above) that the restore below
            # detaches from the layers: no copy needed.
            return [layer.weight.grad.detach() if layer.weight.grad is not None
                    else torch.zeros_like(layer.weight) for layer in model.layers]
        finally:
            self.load_state_dict(saved_state)
            self.generator.set_state(saved_rng)
            for p, g in zip(params, saved_grads, strict=True):
                p.grad = g


def outgoing_weights(model: FeedforwardNet, layer: int,
                     matrix: torch.Tensor | None = None) -> torch.Tensor:
    """Row ``i`` = everything hidden neuron (or channel) ``i`` of ``layer`` sends to
    the next layer: ``W_{l+1}[:, i]``, over all kernel taps or flattened positions.
    ``matrix`` (shape of ``W_{l+1}``) replaces the weight, e.g. with the feedback."""
    n_neurons = model.layers[layer].weight.shape[0]
    w_next = model.layers[layer + 1].weight if matrix is None else matrix
    w_next = w_next.detach().reshape(w_next.shape[0], n_neurons, -1)
    return w_next.transpose(0, 1).reshape(n_neurons, -1)


class LayerFeedbackRule(Rule):
    """A rule whose backward pass uses one matrix ``B_l`` per layer ``l ≥ 1`` (the
    shape of ``W_l``) in place of ``W_l``. The first layer needs none: nobody
    needs the error at the input."""

    feedback_kind = "layer"

    def feedback_matrix(self, model: FeedforwardNet, layer: int) -> torch.Tensor:
        """The matrix used for ``layer``'s backward now (masks applied)."""
        raise NotImplementedError

    def compute_grads(self, model, x, y):
        feedbacks = [None] + [self.feedback_matrix(model, l) for l in range(1, model.n_layers)]
        loss = self.loss(feedback_forward(model, x, feedbacks), y)
        loss.backward()
        self.after_backward(model)
        return loss.detach()

    def backward_matrix(self, model, layer):
        return self.feedback_matrix(model, layer).detach()

    def effective_feedback(self, model, layer):
        return self.feedback_matrix(model, layer).detach() if layer > 0 else None


class StoredLayerFeedback(LayerFeedbackRule):
    """``B_l`` stored by the rule (buffers ``B1``, ``B2`` …, or parameters when
    ``learned_feedback``), initialised by :meth:`Rule.init_feedback`, with a fixed
    sparsity mask ``B{l}_mask`` when ``feedback_sparsity > 0`` (0/1 for an
    ``adaptive_feedback`` rule, see :class:`Rule`)."""

    learned_feedback: ClassVar[bool] = False
    uses_feedback_init = True
    stored_feedback_tensors = masked_feedback_tensors = 1

    def __init__(self, model, cfg, generator=None):
        super().__init__(model, cfg, generator)
        for l in range(1, model.n_layers):
            self.register_feedback(f"B{l}", self.init_feedback(model.layers[l].weight),
                                   self.learned_feedback)

    def stored_feedback(self, layer: int) -> torch.Tensor:
        return getattr(self, f"B{layer}")

    def feedback_matrix(self, model, layer):
        return self.masked_feedback(f"B{layer}")


class FixedLayerFeedback(StoredLayerFeedback):
    """Fixed ``B_l``: feedback alignment and its initial-alignment variants.

    It holds the FA potential; a subclass has the law only if it declares
    ``conservation_law = True`` (see :class:`Rule`)."""

    def conservation_potential(self, model, layer):
        # Under FA flow Δ ½‖w_i‖² = Δ ⟨b_i, v_i⟩ with b_i the fixed feedback column.
        b = outgoing_weights(model, layer, self.feedback_matrix(model, layer + 1))
        return (b * outgoing_weights(model, layer)).sum(1)
