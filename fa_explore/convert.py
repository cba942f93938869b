"""Layer-local learning rules on any torch model: :func:`convert`.

``net, rule = convert(module, "fa", example_input=x)`` finds the ``nn.Linear``,
``nn.Conv1d`` and ``nn.Conv2d`` layers that ``module``'s forward calls, in the
order one forward on ``example_input`` calls them, and returns

- ``net``, a :class:`ConvertedNet`: the model interface the rules and metrics
  read (``layers`` in that order, ``n_layers``, ``input_shape``,
  ``forward(x, layer_call=None)``), running ``module``'s OWN forward (residual
  connections, batch norm, pooling, anything in between stays as written);
- ``rule``, the rule built for it (``rule.cfg`` is its resolved
  :class:`~fa_explore.config.RunConfig`, e.g. for
  :func:`~fa_explore.training.make_optimizers`).

How the layers are routed: each found layer's ``__class__`` becomes a small
subclass (``_RoutedLinear(nn.Linear)`` ...) whose ``forward`` runs the rule's
``layer_call(index, layer, h)`` while ``net(x, layer_call)`` runs, and the plain
layer forward otherwise. Nothing is wrapped or renamed: the layers stay where
they are in ``module``, ``isinstance`` checks still hold, and ``net(x)`` computes
exactly what ``module(x)`` did. ``module`` is converted in place (``net.module``
is that same object; :meth:`ConvertedNet.restore` gives it its plain classes
back); deep-copy it first to keep an unconverted original.

How the names are kept: ``net.state_dict()``, ``net.load_state_dict()``,
``net.named_parameters()`` and ``net.named_buffers()`` use ``module``'s own names
(``conv1.weight``, not ``module.conv1.weight``), so a converted model's state dict
loads into the original architecture and back.

Only rules whose feedback is one matrix per layer standing in for ``W``
(``Rule.feedback_kind == "layer"``) can train an arbitrary graph: their error
travels back through the model's own autograd graph with each layer's weight
replaced. Direct rules need the output-to-layer structure and forward-gradient
rules the chain of blocks; :func:`convert` refuses them.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn

from .config import RunConfig
from .models import FeedforwardNet, LayerCall
from .rules import RULES, Rule
from .settings import SETTINGS


# ------------------------------------------------------------------ routing
class _Router:
    """Which ``layer_call`` the routed layers of one converted model use now.

    A plain object (not a module, so it is in no state dict); every routed layer
    of a model and its :class:`ConvertedNet` share one, and ``copy.deepcopy``
    gives the copy its own.
    """

    def __init__(self) -> None:
        self.call: LayerCall | None = None
        self.inside: nn.Module | None = None  # the layer whose layer_call runs now
        self.called: set[int] = set()

    def run(self, layer: nn.Module, h: torch.Tensor) -> torch.Tensor:
        index = layer._fa_index
        if index in self.called:
            raise RuntimeError(
                f"layer {layer._fa_name!r} was called twice in one forward (weight sharing); "
                "fa_explore.convert supports each Linear/Conv layer called once")
        self.called.add(index)
        outer, self.inside = self.inside, layer
        try:  # inside its own layer_call, `layer(h)` is the plain layer
            return self.call(index, layer, h)
        finally:
            self.inside = outer


class _Routed:
    """Mixin of the routed layer classes: the forward asks the router."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        router = self._fa_router
        if router.call is None or router.inside is self:
            return super().forward(input)
        return router.run(self, input)

    def _get_name(self) -> str:  # print(model) shows the layer as before
        return type(self).__mro__[2].__name__


class _RoutedLinear(_Routed, nn.Linear):
    pass


class _RoutedConv1d(_Routed, nn.Conv1d):
    pass


class _RoutedConv2d(_Routed, nn.Conv2d):
    pass


_ROUTED: dict[type[nn.Module], type[nn.Module]] = {
    nn.Linear: _RoutedLinear, nn.Conv1d: _RoutedConv1d, nn.Conv2d: _RoutedConv2d}
_KINDS = tuple(_ROUTED)
_PREFIX = "module."


# ------------------------------------------------- names: the module's own
def _state_dict_names(net, state_dict, prefix, local_metadata) -> None:
    """State-dict post hook: ``{prefix}module.conv1.weight`` -> ``{prefix}conv1.weight``."""
    inner = prefix + _PREFIX
    for key in [k for k in state_dict if k.startswith(inner)]:
        state_dict[prefix + key[len(inner):]] = state_dict.pop(key)  # order kept
    metadata = getattr(state_dict, "_metadata", None)
    if metadata is not None:
        outer = prefix[:-1]
        for key in [k for k in metadata if k == inner[:-1] or k.startswith(inner)]:
            rest = key[len(inner):]
            metadata[prefix + rest if rest else outer] = metadata.pop(key)


def _load_names(net, state_dict, prefix, *args) -> None:
    """Load-state-dict pre hook: the module's names go to the child ``module``."""
    for key in [k for k in state_dict if k.startswith(prefix)]:
        state_dict[prefix + _PREFIX + key[len(prefix):]] = state_dict.pop(key)


class ConvertedNet(FeedforwardNet):
    """A user's module seen as a model the rules can train (made by :func:`convert`).

    ``layers``: the routed layers in execution order (a tuple; they live in
    ``module``, under their own names, listed in ``layer_names``);
    ``input_shape``: one example's shape; ``forward(x, layer_call=None)``: the
    module's forward, each routed layer run by ``layer_call`` when one is given.
    """

    name = "converted"
    description = "a user's own module, its Linear/Conv layers routed to the rule"
    # Layer l + 1 need not consume layer l's output: the conservation law and
    # outgoing_weights, which assume a chain, are undefined (metrics report NaN).
    is_chain = False

    def __init__(self, module: nn.Module, layers: list[nn.Module], names: list[str],
                 input_shape: tuple[int, ...], router: _Router):
        super().__init__()
        self.module = module
        self.layers = tuple(layers)  # a tuple: not registered a second time
        self.layer_names = tuple(names)
        self.input_shape = tuple(input_shape)
        self._router = router
        self.register_state_dict_post_hook(_state_dict_names)
        self.register_load_state_dict_pre_hook(_load_names)

    def forward(self, x: torch.Tensor, layer_call: LayerCall | None = None) -> torch.Tensor:
        router = self._router
        saved = router.call, router.inside, router.called
        router.call, router.inside, router.called = layer_call, None, set()
        try:
            return self.module(x)
        finally:
            router.call, router.inside, router.called = saved

    def __getattr__(self, name: str):
        # The module's submodules by their own names (net.fc, net.get_submodule("fc")),
        # so name paths from named_parameters() resolve here too (torch.func's
        # functional_call). Tensors directly on the module are not reached this way.
        try:
            return super().__getattr__(name)
        except AttributeError:
            module = self.__dict__.get("_modules", {}).get("module")
            child = getattr(module, "_modules", {}).get(name)
            if child is None:
                raise
            return child

    def named_parameters(self, prefix: str = "", recurse: bool = True,
                         remove_duplicate: bool = True):
        return self.module.named_parameters(prefix, recurse, remove_duplicate)

    def named_buffers(self, prefix: str = "", recurse: bool = True,
                      remove_duplicate: bool = True):
        return self.module.named_buffers(prefix, recurse, remove_duplicate)

    def restore(self) -> nn.Module:
        """Give ``module``'s layers their plain classes back and return it (this
        ``ConvertedNet`` and its rule no longer route them)."""
        for layer in self.layers:
            layer.__class__ = type(layer).__mro__[2]
            for attr in ("_fa_router", "_fa_index", "_fa_name"):
                delattr(layer, attr)
        self.layers = ()
        return self.module

    def extra_repr(self) -> str:
        return f"layers: {', '.join(self.layer_names)}"


# ---------------------------------------------------------------- convert
def layer_rules() -> list[str]:
    """The rules :func:`convert` accepts: those with one feedback matrix per layer."""
    return [name for name, cls in RULES.items() if cls.feedback_kind == "layer"]


def convert_settings() -> list[str]:
    """The RunConfig fields :func:`convert` accepts: the rule's and the optimiser's
    settings and the seed (the data, the model and the run are the caller's)."""
    return [name for name, s in SETTINGS.items()
            if (s.group in ("rule", "optimisation") and name != "rule") or name == "seed"]


def _trace(module: nn.Module, example_input: torch.Tensor):
    """Layers of the known kinds in the order one forward calls them, with names.
    Leaves the module's buffers (batch-norm statistics) and the random state as
    they were."""
    names = {}
    for name, m in module.named_modules():
        if isinstance(m, _KINDS):
            names.setdefault(m, name)
    order: list[nn.Module] = []
    counts: dict[nn.Module, int] = {}
    first_input_needs_grad = []

    def hook(m, args):
        if m not in counts:
            order.append(m)
            counts[m] = 0
            if len(order) == 1:
                first_input_needs_grad.append(
                    any(isinstance(a, torch.Tensor) and a.requires_grad for a in args))
        counts[m] += 1

    handles = [m.register_forward_pre_hook(hook) for m in names]
    saved = [(b, b.detach().clone()) for b in module.buffers()]
    devices = sorted({t.device.index or 0 for t in [*module.parameters(), *module.buffers()]
                      if t.device.type == "cuda"})
    try:
        with torch.random.fork_rng(devices=devices), torch.enable_grad():
            module(example_input)
    finally:
        for h in handles:
            h.remove()
        with torch.no_grad():
            for buffer, value in saved:
                buffer.copy_(value)
    shared = [f"{names[m]!r} ({counts[m]} times)" for m in order if counts[m] > 1]
    if shared:
        raise ValueError(
            f"fa_explore.convert: layer {', '.join(shared)} is called more than once in one "
            "forward (weight sharing); each Linear/Conv layer must be called once")
    uncalled = [name for m, name in names.items() if m not in counts]
    return order, names, uncalled, bool(first_input_needs_grad and first_input_needs_grad[0])


def _check_layer(layer: nn.Module, name: str) -> None:
    if isinstance(layer, (nn.Conv1d, nn.Conv2d)):
        if isinstance(layer.padding, str):
            raise ValueError(f"fa_explore.convert: layer {name!r} has padding={layer.padding!r}; "
                             "the rules' custom backward needs integer padding")
        if layer.padding_mode != "zeros":
            raise ValueError(f"fa_explore.convert: layer {name!r} has padding_mode="
                             f"{layer.padding_mode!r}; the rules' custom backward needs 'zeros'")


def convert(module: nn.Module, rule: str = "fa", *, example_input: torch.Tensor,
            **settings: Any) -> tuple[ConvertedNet, Rule]:
    """Make the layer-local ``rule`` train ``module``; return ``(net, rule)``.

    ``example_input``: one batch the module accepts (its forward is run once,
    leaving buffers and random state untouched, to find the layers' execution
    order; ``input_shape`` is its shape without the batch dimension).
    ``settings``: the RunConfig fields of :func:`convert_settings` (e.g.
    ``init_angle``, ``feedback_sparsity``, ``rule_options``, ``lr``,
    ``optimizer``, ``momentum``, ``weight_decay``, ``seed``).

    Raises ``ValueError`` for a rule without per-layer feedback, a setting that
    describes data or a model, a module without routable layers, a layer called
    twice in one forward, and a convolution with string padding or a non-zero
    padding mode. Warns about Linear/Conv modules that the forward does not call
    or whose subclass has its own forward (they stay ordinary layers, learning
    and passing errors by exact backprop), and when the first layer's input
    depends on parameters (rules give layer 0 no feedback, so those parameters
    get their error through ``W_0`` itself).
    """
    if isinstance(module, ConvertedNet) or any(isinstance(m, _Routed) for m in module.modules()):
        raise ValueError("fa_explore.convert: this module is already converted; call "
                         "net.restore() first or convert a fresh copy")
    if rule not in RULES:
        raise ValueError(f"fa_explore.convert: rule must be one of {', '.join(layer_rules())}; "
                         f"got {rule!r}")
    rule_cls = RULES[rule]
    if rule_cls.feedback_kind != "layer":
        raise ValueError(
            f"fa_explore.convert: rule {rule!r} ({rule_cls.feedback_kind} feedback) needs the "
            "network's layer structure, which an arbitrary module does not declare; rules "
            f"that train any module: {', '.join(layer_rules())}")
    allowed = convert_settings()
    wrong = [name for name in settings if name not in allowed]
    if wrong:
        raise ValueError(
            f"fa_explore.convert: {', '.join(map(repr, wrong))} is not a setting of convert(); "
            f"it takes {', '.join(allowed)} (the data, the model and the run are yours)")
    if not isinstance(example_input, torch.Tensor) or example_input.dim() < 1:
        raise ValueError("fa_explore.convert: example_input must be a batch tensor "
                         "(batch dimension first) that the module's forward accepts")
    cfg = RunConfig(rule=rule, **settings).resolve()

    order, names, uncalled, first_needs_grad = _trace(module, example_input)
    routable = [m for m in order if type(m) in _ROUTED]
    other = [names[m] for m in order if type(m) not in _ROUTED]
    if not routable:
        raise ValueError("fa_explore.convert: the module's forward calls no nn.Linear, "
                         "nn.Conv1d or nn.Conv2d module (functional calls such as F.linear "
                         "are not seen)")
    for m in routable:
        _check_layer(m, names[m])
    left = uncalled + other
    if left:
        warnings.warn(f"fa_explore.convert: {', '.join(left)} not routed (not called in the "
                      "example forward, or a subclass with its own forward): they stay "
                      "ordinary layers and pass errors by exact backprop", stacklevel=2)
    if first_needs_grad:
        warnings.warn(f"fa_explore.convert: the input of the first layer {names[routable[0]]!r} "
                      "depends on parameters; rules give layer 0 no feedback matrix, so those "
                      "parameters learn from the error sent through its own weight (backprop)",
                      stacklevel=2)

    router = _Router()
    for index, layer in enumerate(routable):
        layer.__class__ = _ROUTED[type(layer)]
        layer._fa_router, layer._fa_index, layer._fa_name = router, index, names[layer]
    net = ConvertedNet(module, routable, [names[m] for m in routable],
                       tuple(example_input.shape[1:]), router)
    device = routable[0].weight.device
    generator = torch.Generator(device=device).manual_seed(cfg.seed + 1)
    return net, rule_cls(net, cfg, generator).to(device)


__all__ = ["ConvertedNet", "convert", "convert_settings", "layer_rules"]
