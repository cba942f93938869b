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
from typing import Callable, Sequence

import torch
from torch import nn

LayerCall = Callable[[int, nn.Module, torch.Tensor], torch.Tensor]


def _plain_call(index: int, layer: nn.Module, h: torch.Tensor) -> torch.Tensor:
    return layer(h)


def make_activation(name: str) -> nn.Module:
    if name == "relu":
        return nn.ReLU()
    if name == "leaky_relu":
        return nn.LeakyReLU(0.1)
    if name == "tanh":
        return nn.Tanh()
    raise ValueError(f"activation must be one of relu, leaky_relu, tanh; got {name!r}")


def init_weight_(weight: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Xavier-uniform (gain 1), the init of every forward weight and of random feedback.

    Feedback alignment draws its feedback "from the same distribution as W"; keeping
    one function for both makes that literal.
    """
    fan_out = weight.shape[0] * math.prod(weight.shape[2:])
    fan_in = weight.shape[1] * math.prod(weight.shape[2:])
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    with torch.no_grad():
        return weight.uniform_(-bound, bound, generator=generator)


def xavier_std(weight: torch.Tensor) -> float:
    """Standard deviation of :func:`init_weight_` for a tensor of this shape."""
    fan_out = weight.shape[0] * math.prod(weight.shape[2:])
    fan_in = weight.shape[1] * math.prod(weight.shape[2:])
    return math.sqrt(2.0 / (fan_in + fan_out))


class FeedforwardNet(nn.Module):
    """Base of the models: ``layers`` in forward order and a hidden activation."""

    layers: nn.ModuleList

    def _init(self, generator: torch.Generator | None) -> None:
        for layer in self.layers:
            init_weight_(layer.weight, generator)
            nn.init.zeros_(layer.bias)

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    def layer_weights(self) -> list[torch.Tensor]:
        return [layer.weight for layer in self.layers]


class MLP(FeedforwardNet):
    """Fully connected net: ``input -> hidden... -> n_classes`` (linear output)."""

    def __init__(self, input_shape: Sequence[int], hidden: Sequence[int], n_classes: int,
                 activation: str = "relu", generator: torch.Generator | None = None):
        super().__init__()
        self.input_shape = tuple(input_shape)
        widths = [math.prod(input_shape), *hidden, n_classes]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.activation = make_activation(activation)
        self._init(generator)

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

    def __init__(self, input_shape: Sequence[int], channels: Sequence[int],
                 hidden: Sequence[int], n_classes: int, activation: str = "relu",
                 generator: torch.Generator | None = None):
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
            convs.append(conv(c_in, c_out, kernel_size=5, padding=2))
            spatial = [s // 2 for s in spatial]
            c_in = c_out
        self.n_conv = len(convs)
        widths = [c_in * math.prod(spatial), *hidden, n_classes]
        fcs = [nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:])]
        self.layers = nn.ModuleList([*convs, *fcs])
        self.activation = make_activation(activation)
        self.pool = pool(2)
        self._init(generator)

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


def build_model(cfg, input_shape=None, n_classes=None, generator=None) -> FeedforwardNet:
    """The plain model a config describes (no rule attached).

    ``input_shape`` and ``n_classes`` default to the dataset's (loading it if the
    registry does not know them statically).
    """
    from .data import dataset_shape

    if input_shape is None or n_classes is None:
        shape, classes = dataset_shape(cfg)
        input_shape = shape if input_shape is None else input_shape
        n_classes = classes if n_classes is None else n_classes
    if generator is None:
        generator = torch.Generator().manual_seed(cfg.seed)
    if cfg.model == "mlp":
        return MLP(input_shape, cfg.hidden, n_classes, cfg.activation, generator)
    if cfg.model == "cnn":
        return CNN(input_shape, cfg.channels, cfg.hidden, n_classes, cfg.activation, generator)
    raise ValueError(f"RunConfig.model must be one of mlp, cnn; got {cfg.model!r}")
