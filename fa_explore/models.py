"""Plain PyTorch models: the function a rule trains.

A model keeps its parametrised layers (``nn.Linear`` / ``nn.Conv*d``) in
``model.layers``, in forward order, with ordinary parameter names
(``layers.0.weight`` ...), so state dicts move freely between rules.

``forward(x, layer_call=None)`` is an ordinary forward. A rule may pass
``layer_call(index, layer, h) -> output`` to run each parametrised layer its own
way (a custom backward, a detached input, a perturbation); everything between
layers (activations, pooling, flattening) stays the model's.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import ClassVar

import torch
from torch import nn

LayerCall = Callable[[int, nn.Module, torch.Tensor], torch.Tensor]


def _plain_call(index: int, layer: nn.Module, h: torch.Tensor) -> torch.Tensor:
    return layer(h)


@dataclass(frozen=True)
class Activation:
    """A hidden activation: how to make it, and whether it is positively homogeneous
    (``σ'(a)·a = σ(a)``, the premise of the FA conservation law)."""

    name: str
    make: Callable[[], nn.Module]
    homogeneous: bool
    description: str


ACTIVATIONS: dict[str, Activation] = {a.name: a for a in (
    Activation("relu", nn.ReLU, True, "max(0, a)"),
    Activation("leaky_relu", lambda: nn.LeakyReLU(0.1), True, "max(0.1·a, a)"),
    Activation("tanh", nn.Tanh, False, "tanh(a)"),
)}


def make_activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}; got {name!r}")
    module = ACTIVATIONS[name].make()
    module.fa_activation = name  # lets metrics look the declaration up
    return module


def is_homogeneous(activation: nn.Module) -> bool:
    """Whether a module made by :func:`make_activation` is positively homogeneous."""
    name = getattr(activation, "fa_activation", None)
    return name is not None and ACTIVATIONS[name].homogeneous


def fans(shape: Sequence[int]) -> tuple[int, int]:
    """``(fan_in, fan_out)`` of a weight of shape ``(N_out, N_in, *kernel)``."""
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


# Initial weight distributions: name -> (description, std as a function of the fans).
WEIGHT_INITS: dict[str, tuple[str, Callable[[int, int], float]]] = {
    "xavier_uniform": ("uniform on ±sqrt(6/(fan_in+fan_out)) (Glorot & Bengio 2010)",
                       lambda fan_in, fan_out: math.sqrt(2.0 / (fan_in + fan_out))),
    "normal": ("N(0, 1/fan_in), as in the implicit-regularization paper",
               lambda fan_in, fan_out: math.sqrt(1.0 / fan_in)),
}


def init_std(weight: torch.Tensor | Sequence[int], kind: str = "xavier_uniform",
             gain: float = 1.0) -> float:
    """Standard deviation of :func:`init_weight_` for a tensor of this shape."""
    shape = weight.shape if isinstance(weight, torch.Tensor) else tuple(weight)
    return gain * WEIGHT_INITS[kind][1](*fans(shape))


def xavier_std(weight: torch.Tensor) -> float:
    """Standard deviation of the default (Xavier-uniform, gain 1) init."""
    return init_std(weight)


def init_weight_(weight: torch.Tensor, generator: torch.Generator | None = None,
                 kind: str = "xavier_uniform", gain: float = 1.0) -> torch.Tensor:
    """Fill ``weight`` in place from an initial distribution (:data:`WEIGHT_INITS`),
    its scale multiplied by ``gain``: the init of every forward weight and of random
    feedback. Feedback alignment draws its feedback "from the same distribution as
    W"; keeping one function for both makes that literal."""
    if kind not in WEIGHT_INITS:
        raise ValueError(f"weight_init must be one of {', '.join(WEIGHT_INITS)}; got {kind!r}")
    with torch.no_grad():
        if kind == "normal":
            return weight.normal_(0.0, init_std(weight, kind, gain), generator=generator)
        fan_in, fan_out = fans(weight.shape)
        bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
        return weight.uniform_(-bound, bound, generator=generator)


class FeedforwardNet(nn.Module):
    """Base of the models: ``layers`` in forward order and a hidden activation."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    # Dataset kinds (DatasetSpec.kind) this model can read.
    input_kinds: ClassVar[tuple[str, ...]] = ()
    layers: nn.ModuleList

    def init_weights(self, generator: torch.Generator | None, kind: str = "xavier_uniform",
                     gain: float = 1.0) -> None:
        """Draw every weight from ``kind`` (scaled by ``gain``); biases start at 0."""
        for layer in self.layers:
            init_weight_(layer.weight, generator, kind, gain)
            nn.init.zeros_(layer.bias)

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @classmethod
    def from_config(cls, cfg, input_shape: Sequence[int], n_classes: int,
                    generator: torch.Generator | None = None) -> FeedforwardNet:
        raise NotImplementedError

    @classmethod
    def layer_shapes(cls, cfg, input_shape: Sequence[int], n_classes: int
                     ) -> list[tuple[int, ...]]:
        """The weight shapes a config gives, without building anything."""
        raise NotImplementedError

    @classmethod
    def parameter_count(cls, cfg, input_shape: Sequence[int], n_classes: int) -> int:
        """Weights and biases a config gives (for the size bound), from the shapes."""
        return sum(math.prod(s) + s[0] for s in cls.layer_shapes(cfg, input_shape, n_classes))


class MLP(FeedforwardNet):
    """Fully connected net: ``input -> hidden... -> n_classes`` (linear output)."""

    name = "mlp"
    description = "fully connected layers"
    input_kinds = ("image", "sequence", "2d")

    def __init__(self, input_shape: Sequence[int], hidden: Sequence[int], n_classes: int,
                 activation: str = "relu", generator: torch.Generator | None = None,
                 init: str = "xavier_uniform", init_gain: float = 1.0):
        super().__init__()
        self.input_shape = tuple(input_shape)
        widths = [math.prod(input_shape), *hidden, n_classes]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in pairwise(widths))
        self.activation = make_activation(activation)
        self.init_weights(generator, init, init_gain)

    @classmethod
    def from_config(cls, cfg, input_shape, n_classes, generator=None):
        return cls(input_shape, cfg.hidden, n_classes, cfg.activation, generator,
                   cfg.weight_init, cfg.init_gain)

    @classmethod
    def layer_shapes(cls, cfg, input_shape, n_classes):
        widths = [math.prod(input_shape), *cfg.hidden, n_classes]
        return [(b, a) for a, b in pairwise(widths)]

    def forward(self, x: torch.Tensor, layer_call: LayerCall | None = None) -> torch.Tensor:
        call = layer_call or _plain_call
        h = x.flatten(1)
        last = len(self.layers) - 1
        for index, layer in enumerate(self.layers):
            h = call(index, layer, h)
            if index < last:
                h = self.activation(h)
        return h


class CNN(FeedforwardNet):
    """LeNet-style net: [conv(k=5, same) -> act -> maxpool 2] per channel width, then an MLP.

    Works on images ``(C, H, W)`` with 2-D convolutions and on sequences ``(C, L)``
    (MNIST-1D) with 1-D ones.
    """

    name = "cnn"
    description = "LeNet-style: 5-wide convolutions with 2x max pooling, then an MLP"
    input_kinds = ("image", "sequence")
    kernel_size = 5

    def __init__(self, input_shape: Sequence[int], channels: Sequence[int],
                 hidden: Sequence[int], n_classes: int, activation: str = "relu",
                 generator: torch.Generator | None = None, init: str = "xavier_uniform",
                 init_gain: float = 1.0):
        super().__init__()
        self.input_shape = tuple(input_shape)
        if len(self.input_shape) not in (2, 3):
            raise ValueError("model 'cnn' needs image (C, H, W) or sequence (C, L) data; "
                             f"this dataset's input shape is {self.input_shape}")
        spatial = list(self.input_shape[1:])
        conv = nn.Conv2d if len(spatial) == 2 else nn.Conv1d
        pool = nn.MaxPool2d if len(spatial) == 2 else nn.MaxPool1d
        convs, c_in = [], self.input_shape[0]
        for c_out in channels:
            if min(spatial) < 2:
                raise ValueError(f"model 'cnn' with channels {tuple(channels)} pools the "
                                 f"input {self.input_shape} below size 1; use fewer channels")
            convs.append(conv(c_in, c_out, kernel_size=self.kernel_size,
                              padding=self.kernel_size // 2))
            spatial = [s // 2 for s in spatial]
            c_in = c_out
        self.n_conv = len(convs)
        widths = [c_in * math.prod(spatial), *hidden, n_classes]
        fcs = [nn.Linear(a, b) for a, b in pairwise(widths)]
        self.layers = nn.ModuleList([*convs, *fcs])
        self.activation = make_activation(activation)
        self.pool = pool(2)
        self.init_weights(generator, init, init_gain)

    @classmethod
    def from_config(cls, cfg, input_shape, n_classes, generator=None):
        return cls(input_shape, cfg.channels, cfg.hidden, n_classes, cfg.activation,
                   generator, cfg.weight_init, cfg.init_gain)

    @classmethod
    def layer_shapes(cls, cfg, input_shape, n_classes):
        spatial, c_in, shapes = list(input_shape[1:]), input_shape[0], []
        for c_out in cfg.channels:
            if min(spatial) < 2:
                raise ValueError(f"RunConfig.channels must have at most {len(shapes)} "
                                 f"convolution(s) for input {tuple(input_shape)}: each halves "
                                 f"the size; got {tuple(cfg.channels)}")
            shapes.append((c_out, c_in, *[cls.kernel_size] * len(spatial)))
            spatial, c_in = [s // 2 for s in spatial], c_out
        widths = [c_in * math.prod(spatial), *cfg.hidden, n_classes]
        return shapes + [(b, a) for a, b in pairwise(widths)]

    def forward(self, x: torch.Tensor, layer_call: LayerCall | None = None) -> torch.Tensor:
        call = layer_call or _plain_call
        h = x.reshape(x.shape[0], *self.input_shape)
        last = len(self.layers) - 1
        for index, layer in enumerate(self.layers):
            if index == self.n_conv:
                h = h.flatten(1)
            h = call(index, layer, h)
            if index < last:
                h = self.activation(h)
                if index < self.n_conv:
                    h = self.pool(h)
        return h


MODELS: dict[str, type[FeedforwardNet]] = {}


def register_model(cls: type[FeedforwardNet], replace: bool = False) -> type[FeedforwardNet]:
    """Add a model class to :data:`MODELS` under ``cls.name`` (a name is taken once
    unless ``replace``)."""
    if cls.name in MODELS and not replace:
        raise ValueError(f"a model named {cls.name!r} is already registered")
    MODELS[cls.name] = cls
    return cls


register_model(MLP)
register_model(CNN)


def build_model(cfg, input_shape: Sequence[int], n_classes: int,
                generator: torch.Generator | None = None) -> FeedforwardNet:
    """The plain model a config describes for data of this shape (no rule attached),
    initialised from ``generator`` (default: seeded from ``cfg.seed``)."""
    if generator is None:
        generator = torch.Generator().manual_seed(cfg.seed)
    return MODELS[cfg.model].from_config(cfg, tuple(input_shape), n_classes, generator)


def output_jacobian(model: nn.Module, layer: int, x: torch.Tensor) -> torch.Tensor:
    """``∂y/∂h_l`` of the plain forward, averaged over the examples of ``x``: shape
    ``(N_L, N_l)``, with ``h_l`` the input of ``model.layers[layer]`` flattened (a
    CNN's pooled feature map) and ``y`` the logits. For a linear network it is the
    product of the later weights, ``W_L ⋯ W_{l+1}``; for ``layer = L - 1``, ``W_L``.

    The model's own forward from layer ``layer`` up runs once on the whole batch
    (the layers below on an empty batch, so the model's code between layers,
    activations, pooling, flattening, decides the way), then one vector-Jacobian
    product per output unit, batched with ``torch.func.vmap``: row ``k`` is
    ``Σ_n ∂y_n[k]/∂h_n``, since no example's logits depend on another's input."""
    from torch.func import vjp, vmap

    if not 0 < layer < len(model.layers):
        raise ValueError(f"layer must be a hidden layer's index in 1..{len(model.layers) - 1}; "
                         f"got {layer!r}")
    recorded: dict[str, torch.Tensor] = {}

    def record(index: int, module: nn.Module, h: torch.Tensor) -> torch.Tensor:
        if index == layer:
            recorded["h"] = h.detach()
        return module(h)

    with torch.no_grad():
        model(x, record)
    h = recorded["h"]
    empty = x[:0]

    def head(h_batch: torch.Tensor) -> torch.Tensor:
        def call(index: int, module: nn.Module, h_in: torch.Tensor) -> torch.Tensor:
            return module(h_batch if index == layer else h_in)

        return model(empty, call)

    with torch.enable_grad():
        logits, pullback = vjp(head, h)
        n_out = logits.shape[1]
        # A per-example Jacobian for each example (vmap of jacrev, as before) cost N_L
        # backward passes per example; these are N_L for the whole batch.
        basis = torch.eye(n_out, dtype=logits.dtype, device=logits.device)
        (rows,) = vmap(pullback)(basis[:, None, :].expand(n_out, *logits.shape))
    return rows.mean(1).reshape(n_out, -1).detach()  # rows: (N_L, batch, *h_l shape)
