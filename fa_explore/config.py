"""RunConfig: the one validated, serialisable description of a training run.

The same object drives the CLI, the dashboard, the page URL, sweeps and saved
runs. Fields left as ``None`` mean "the rule's default"; :meth:`RunConfig.resolve`
fills them in. Every invalid value raises ``ValueError`` naming the field and
what is allowed.
"""

from __future__ import annotations

import dataclasses
import json
import math
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

ACTIVATIONS = ("relu", "leaky_relu", "tanh")
MODELS = ("mlp", "cnn")
OPTIMIZERS = ("sgd", "adam")
DEVICES = ("auto", "cpu", "cuda")

# Defaults used when neither the user nor the rule sets a value.
GLOBAL_DEFAULTS: dict[str, Any] = {
    "optimizer": "adam",
    "lr": 1e-3,
    "momentum": 0.0,
    "weight_decay": 0.0,
    "batch_size": 32,
    "epochs": 20,
    "expansion_ratio": None,
}

# Fields a rule may give its own default for (RuleClass.defaults).
RULE_DEFAULTABLE = tuple(GLOBAL_DEFAULTS)


def _fail(name: str, allowed: str, value: Any) -> ValueError:
    return ValueError(f"RunConfig.{name} must be {allowed}; got {value!r}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


@dataclass(frozen=True)
class RunConfig:
    """A training run: which rule, data, model and optimisation.

    ``None`` in ``optimizer``, ``lr``, ``momentum``, ``weight_decay``,
    ``batch_size``, ``epochs`` and ``expansion_ratio`` means "the rule's default"
    (see :meth:`resolve`); ``None`` in ``eval_every`` lets training evaluate about
    50 times per run.
    """

    rule: str = "fa"
    dataset: str = "digits"
    model: str = "mlp"
    hidden: tuple[int, ...] = (128, 128)
    channels: tuple[int, ...] = (16, 32)
    activation: str = "relu"
    init_angle: float | None = None
    feedback_sparsity: float = 0.0
    expansion_ratio: int | None = None
    optimizer: str | None = None
    lr: float | None = None
    momentum: float | None = None
    weight_decay: float | None = None
    batch_size: int | None = None
    epochs: int | None = None
    seed: int = 0
    device: str = "auto"
    n_classes: int | None = None
    label_noise: float = 0.0
    train_size: int | None = None
    standardize: bool = True
    noise: float | None = None
    n_samples: int | None = None
    eval_every: int | None = None
    eval_size: int = 1000
    rule_options: dict = field(default_factory=dict)

    # ------------------------------------------------------------------ checks
    def __post_init__(self) -> None:
        coerce = object.__setattr__
        for name in ("hidden", "channels"):
            value = getattr(self, name)
            if isinstance(value, (list, tuple)):
                coerce(self, name, tuple(value))
        # JSON and URLs give floats for ints and ints for floats; accept exact ones.
        for name in ("expansion_ratio", "batch_size", "epochs", "seed", "n_classes",
                     "train_size", "n_samples", "eval_every", "eval_size"):
            value = getattr(self, name)
            if isinstance(value, float) and value.is_integer():
                coerce(self, name, int(value))
        for name in ("init_angle", "feedback_sparsity", "lr", "momentum", "weight_decay",
                     "label_noise", "noise"):
            value = getattr(self, name)
            if _is_int(value):
                coerce(self, name, float(value))
        if self.rule_options is None:
            coerce(self, "rule_options", {})
        self._validate()

    def _validate(self) -> None:
        from .data import DATASETS
        from .rules import RULES

        if self.rule not in RULES:
            raise _fail("rule", "one of " + ", ".join(RULES), self.rule)
        rule_cls = RULES[self.rule]
        if self.dataset not in DATASETS:
            raise _fail("dataset", "one of " + ", ".join(DATASETS), self.dataset)
        if self.model not in MODELS:
            raise _fail("model", "one of " + ", ".join(MODELS), self.model)
        if self.model not in rule_cls.models:
            raise _fail("model", f"one of {', '.join(rule_cls.models)} for rule "
                        f"{self.rule!r}", self.model)
        for name in ("hidden", "channels"):
            value = getattr(self, name)
            if not isinstance(value, tuple) or not all(_is_int(w) and w >= 1 for w in value):
                raise _fail(name, "a tuple of integer widths >= 1", value)
        if not self.channels and self.model == "cnn":
            raise _fail("channels", "at least one convolution width for model 'cnn'",
                        self.channels)
        if self.activation not in ACTIVATIONS:
            raise _fail("activation", "one of " + ", ".join(ACTIVATIONS), self.activation)
        if self.init_angle is not None:
            if not rule_cls.uses_init_angle:
                users = ", ".join(n for n, c in RULES.items() if c.uses_init_angle)
                raise _fail("init_angle", f"None for rule {self.rule!r} (it has no "
                            f"layer-to-layer feedback to align; rules that use it: {users})",
                            self.init_angle)
            if not _is_number(self.init_angle) or not 0 <= self.init_angle <= 180:
                raise _fail("init_angle", "None or an angle in degrees within [0, 180]",
                            self.init_angle)
        if not _is_number(self.feedback_sparsity) or not 0 <= self.feedback_sparsity < 1:
            raise _fail("feedback_sparsity", "a number p with 0 <= p < 1",
                        self.feedback_sparsity)
        if self.feedback_sparsity > 0 and not rule_cls.uses_feedback_sparsity:
            raise _fail("feedback_sparsity", f"0 for rule {self.rule!r} (it has no "
                        "feedback weights to sparsify)", self.feedback_sparsity)
        if self.expansion_ratio is not None:
            allowed = rule_cls.expansion_ratios
            if not rule_cls.uses_expansion_ratio:
                raise _fail("expansion_ratio", f"None for rule {self.rule!r} (only the "
                            "product feedback rules use it)", self.expansion_ratio)
            if not _is_int(self.expansion_ratio) or self.expansion_ratio < 1 or (
                    allowed is not None and self.expansion_ratio not in allowed):
                text = ("an integer >= 1" if allowed is None
                        else "one of " + ", ".join(map(str, allowed)))
                raise _fail("expansion_ratio", f"{text} for rule {self.rule!r}",
                            self.expansion_ratio)
        if self.optimizer is not None and self.optimizer not in OPTIMIZERS:
            raise _fail("optimizer", "None or one of " + ", ".join(OPTIMIZERS), self.optimizer)
        if self.lr is not None and (not _is_number(self.lr) or self.lr <= 0):
            raise _fail("lr", "None or a positive number", self.lr)
        if self.momentum is not None and (not _is_number(self.momentum)
                                          or not 0 <= self.momentum < 1):
            raise _fail("momentum", "None or a number in [0, 1)", self.momentum)
        if self.weight_decay is not None and (not _is_number(self.weight_decay)
                                              or self.weight_decay < 0):
            raise _fail("weight_decay", "None or a number >= 0", self.weight_decay)
        for name in ("batch_size", "epochs", "eval_every"):
            value = getattr(self, name)
            if value is not None and (not _is_int(value) or value < 1):
                raise _fail(name, "None or an integer >= 1", value)
        if not _is_int(self.seed) or self.seed < 0:
            raise _fail("seed", "an integer >= 0", self.seed)
        if self.device not in DEVICES:
            raise _fail("device", "one of " + ", ".join(DEVICES), self.device)
        if self.n_classes is not None and (not _is_int(self.n_classes) or self.n_classes < 2):
            raise _fail("n_classes", "None (all classes) or an integer >= 2", self.n_classes)
        if not _is_number(self.label_noise) or not 0 <= self.label_noise < 1:
            raise _fail("label_noise", "a fraction in [0, 1)", self.label_noise)
        if self.train_size is not None and (not _is_int(self.train_size)
                                            or self.train_size < 1):
            raise _fail("train_size", "None (all) or an integer >= 1", self.train_size)
        if not isinstance(self.standardize, bool):
            raise _fail("standardize", "True or False", self.standardize)
        if self.noise is not None and (not _is_number(self.noise) or self.noise < 0):
            raise _fail("noise", "None (dataset default) or a number >= 0", self.noise)
        if self.n_samples is not None and (not _is_int(self.n_samples) or self.n_samples < 10):
            raise _fail("n_samples", "None (dataset default) or an integer >= 10",
                        self.n_samples)
        if not _is_int(self.eval_size) or self.eval_size < 1:
            raise _fail("eval_size", "an integer >= 1", self.eval_size)
        if not isinstance(self.rule_options, dict):
            raise _fail("rule_options", "a dict of option name to value", self.rule_options)
        for key, value in self.rule_options.items():
            if key not in rule_cls.options:
                allowed = ", ".join(rule_cls.options) or "none"
                raise ValueError(f"RunConfig.rule_options has unknown option {key!r} for "
                                 f"rule {self.rule!r}; allowed: {allowed}")
            if not _is_number(value) and not isinstance(value, (bool, str)):
                raise ValueError(f"RunConfig.rule_options[{key!r}] must be a number, bool "
                                 f"or string; got {value!r}")
        # Datasets check their own options (e.g. noise only for 2-D sets).
        DATASETS[self.dataset].check_config(self)

    # --------------------------------------------------------------- defaults
    def resolve(self) -> RunConfig:
        """Return a copy with every ``None`` hyperparameter set to the rule's default."""
        from .rules import RULES

        rule_cls = RULES[self.rule]
        changes = {}
        for name in RULE_DEFAULTABLE:
            if getattr(self, name) is None:
                value = rule_cls.defaults.get(name, GLOBAL_DEFAULTS[name])
                if value is not None:
                    changes[name] = value
        options = {**rule_cls.options, **self.rule_options}
        if options != self.rule_options:
            changes["rule_options"] = options
        return self.replace(**changes) if changes else self

    def rule_option(self, name: str) -> Any:
        """The value of a rule option, falling back to the rule's default."""
        from .rules import RULES

        if name in self.rule_options:
            return self.rule_options[name]
        return RULES[self.rule].options[name]

    # ---------------------------------------------------------- serialisation
    def replace(self, **changes: Any) -> RunConfig:
        """A validated copy with some fields changed."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(f"RunConfig has no field(s) {', '.join(sorted(unknown))}; "
                             f"fields: {', '.join(field_names())}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-compatible dict (tuples become lists)."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else (
                dict(value) if isinstance(value, dict) else value)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        if not isinstance(data, dict):
            raise ValueError(f"RunConfig.from_dict needs a dict; got {type(data).__name__}")
        unknown = set(data) - set(field_names())
        if unknown:
            raise ValueError(f"RunConfig has no field(s) {', '.join(sorted(unknown))}; "
                             f"fields: {', '.join(field_names())}")
        return cls(**data)

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_json(cls, text: str) -> RunConfig:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"RunConfig.from_json: not valid JSON ({exc})") from None
        return cls.from_dict(data)

    def to_query(self) -> str:
        """URL query string holding only the fields that differ from the defaults."""
        default = RunConfig().to_dict()
        items = {}
        for name, value in self.to_dict().items():
            if value != default[name]:
                items[name] = value if isinstance(value, str) else json.dumps(value)
        return urllib.parse.urlencode(items)

    @classmethod
    def from_query(cls, query: str) -> RunConfig:
        """Inverse of :meth:`to_query`; accepts a leading ``?``."""
        data: dict[str, Any] = {}
        for name, raw in urllib.parse.parse_qsl(query.lstrip("?"), keep_blank_values=True):
            if name not in field_names():
                raise ValueError(f"unknown setting {name!r} in the link; "
                                 f"settings: {', '.join(field_names())}")
            try:
                data[name] = json.loads(raw)
            except json.JSONDecodeError:
                data[name] = raw  # plain strings such as rule=fa
        return cls.from_dict(data)


def field_names() -> list[str]:
    return [f.name for f in dataclasses.fields(RunConfig)]
