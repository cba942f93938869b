"""RunConfig: the one validated, serialisable description of a training run.

The same object drives the CLI, the dashboard, the page URL, sweeps and saved
runs. What each field accepts, means and applies to is declared once, in
:data:`fa_explore.settings.SETTINGS`; this module coerces and validates against
those declarations and adds the checks that involve several fields. Fields left
as ``None`` in the rule-defaultable settings mean "the rule's default";
:meth:`RunConfig.resolve` fills them in. Every invalid value raises
``ValueError`` naming the field and what is allowed.
"""

from __future__ import annotations

import dataclasses
import json
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .settings import (
    MAX_PARAMETERS,
    RULE_DEFAULTABLE,
    SETTINGS,
    FrozenOptions,
    coerce_rule_options,
    rule_option_settings,
    short_repr,
)

# Longest JSON text or link query a config is read from.
MAX_JSON_BYTES = 1 << 20
MAX_QUERY_CHARS = 8192


def _default(name: str):
    """The dataclass default of a field: the schema's, declared there once."""
    value = SETTINGS[name].default
    if name == "rule_options":
        return field(default_factory=FrozenOptions)
    return field(default=value)


@dataclass(frozen=True)
class RunConfig:
    """A training run: which rule, data, model and optimisation.

    Each field is declared in :data:`fa_explore.settings.SETTINGS` (type, bounds,
    help, where it applies); ``docs/settings.md`` lists them. ``None`` in
    ``optimizer``, ``lr``, ``momentum``, ``weight_decay``, ``batch_size``,
    ``epochs`` and ``expansion_ratio`` means "the rule's default" (see
    :meth:`resolve`). The config is immutable and hashable; ``rule_options`` is a
    read-only mapping.
    """

    rule: str = _default("rule")
    init_angle: float | None = _default("init_angle")
    feedback_sparsity: float = _default("feedback_sparsity")
    feedback_sparsity_scaling: str = _default("feedback_sparsity_scaling")
    expansion_ratio: int | None = _default("expansion_ratio")
    feedback_init_gain: float = _default("feedback_init_gain")
    rule_options: Mapping[str, Any] = _default("rule_options")
    dataset: str = _default("dataset")
    n_classes: int | None = _default("n_classes")
    label_noise: float = _default("label_noise")
    train_size: int | None = _default("train_size")
    standardize: bool = _default("standardize")
    noise: float | None = _default("noise")
    n_samples: int | None = _default("n_samples")
    data_seed: int | None = _default("data_seed")
    model: str = _default("model")
    hidden: tuple[int, ...] = _default("hidden")
    channels: tuple[int, ...] = _default("channels")
    activation: str = _default("activation")
    weight_init: str = _default("weight_init")
    init_gain: float = _default("init_gain")
    optimizer: str | None = _default("optimizer")
    lr: float | None = _default("lr")
    momentum: float | None = _default("momentum")
    weight_decay: float | None = _default("weight_decay")
    batch_size: int | None = _default("batch_size")
    epochs: int | None = _default("epochs")
    lr_schedule: str = _default("lr_schedule")
    lr_milestones: tuple[int, ...] = _default("lr_milestones")
    lr_factor: float = _default("lr_factor")
    seed: int = _default("seed")
    device: str = _default("device")
    threads: int | None = _default("threads")
    target_loss: float | None = _default("target_loss")
    target_acc: float | None = _default("target_acc")
    divergence_factor: float = _default("divergence_factor")
    eval_every: int | None = _default("eval_every")
    eval_size: int = _default("eval_size")
    hessian_every: int | None = _default("hessian_every")
    trajectory_every: int | None = _default("trajectory_every")

    # ------------------------------------------------------------------ checks
    def __post_init__(self) -> None:
        from .rules import RULES

        coerce = object.__setattr__
        rule = SETTINGS["rule"].coerce(self.rule)
        coerce(self, "rule", rule)
        for name in field_names():
            if name not in ("rule", "rule_options"):
                coerce(self, name, SETTINGS[name].coerce(getattr(self, name)))
        coerce(self, "rule_options", coerce_rule_options(self.rule_options, RULES[rule]))
        self._check_combinations()

    def _check_combinations(self) -> None:
        """What no single declaration can say: where settings apply, and limits that
        involve several fields."""
        from .data import DATASETS
        from .models import MODELS
        from .rules import RULES

        rule_cls, spec, model_cls = RULES[self.rule], DATASETS[self.dataset], MODELS[self.model]
        if self.model not in rule_cls.models:
            raise _fail("model", f"one of {', '.join(rule_cls.models)} for rule "
                        f"{self.rule!r}", self.model)
        if spec.kind not in model_cls.input_kinds:
            fitting = ", ".join(n for n, m in MODELS.items() if spec.kind in m.input_kinds)
            raise _fail("model", f"one of {fitting} for dataset {self.dataset!r} ({spec.kind} "
                        f"data; {self.model} needs {' or '.join(model_cls.input_kinds)} data)",
                        self.model)
        for name, setting in SETTINGS.items():
            if not setting.strict or setting.applies(rule_cls, spec, self.model):
                continue
            value = getattr(self, name)
            if value != setting.off_value():
                raise _fail(name, f"{short_repr(setting.off_value())} {_not_used(setting, self)}",
                            value)
        if self.model == "cnn" and not self.channels:
            raise _fail("channels", "at least one convolution width for model 'cnn'",
                        self.channels)
        ratios = rule_cls.expansion_ratios
        if self.expansion_ratio is not None and ratios is not None and (
                self.expansion_ratio not in ratios):
            raise _fail("expansion_ratio", f"None or one of {', '.join(map(str, ratios))} for "
                        f"rule {self.rule!r}", self.expansion_ratio)
        if self.n_classes is not None and self.n_classes > spec.n_classes:
            narrowed = dataclasses.replace(SETTINGS["n_classes"], maximum=spec.n_classes)
            raise _fail("n_classes", f"{narrowed.allowed()} for dataset {self.dataset!r}",
                        self.n_classes)
        if self.lr_schedule == "step" and not self.lr_milestones:
            raise _fail("lr_milestones", "at least one epoch for lr_schedule 'step'",
                        self.lr_milestones)
        if self.lr_schedule != "step" and self.lr_milestones:
            raise _fail("lr_milestones", f"() for lr_schedule {self.lr_schedule!r} (only the "
                        "step schedule has milestones)", self.lr_milestones)
        n_params = self.parameter_count()
        if n_params > MAX_PARAMETERS:
            raise ValueError(
                f"RunConfig describes a network of about {n_params:,} parameters (model and "
                f"feedback); at most {MAX_PARAMETERS:,} are allowed: make hidden, channels "
                f"or expansion_ratio smaller (hidden={self.hidden}, channels={self.channels})")

    def parameter_count(self) -> int:
        """Parameters of the model plus the rule's feedback state, from the shapes
        alone (nothing is allocated): what the size bound checks."""
        from .data import DATASETS
        from .models import MODELS
        from .rules import RULES

        spec = DATASETS[self.dataset]
        n_classes = self.n_classes or spec.n_classes
        model = MODELS[self.model].parameter_count(self, spec.input_shape, n_classes)
        return int(model * (1 + RULES[self.rule].feedback_size_factor(self.resolve_field(
            "expansion_ratio"), self.feedback_sparsity)))

    # --------------------------------------------------------------- defaults
    def resolve_field(self, name: str) -> Any:
        """A field's value with the rule's default filled in (see :meth:`resolve`)."""
        from .rules import RULES

        value = getattr(self, name)
        if value is None and name in RULE_DEFAULTABLE:
            return RULES[self.rule].defaults.get(name, SETTINGS[name].fallback)
        return value

    def resolve(self) -> RunConfig:
        """Return a copy with every ``None`` hyperparameter set to the rule's default
        and every rule option present."""
        from .rules import RULES

        changes = {}
        for name in RULE_DEFAULTABLE:
            if getattr(self, name) is None:
                value = self.resolve_field(name)
                if value is not None:
                    changes[name] = value
        options = {key: option.default for key, option in
                   rule_option_settings(RULES[self.rule]).items()}
        options.update(self.rule_options)
        if options != dict(self.rule_options):
            changes["rule_options"] = options
        return self.replace(**changes) if changes else self

    def rule_option(self, name: str) -> Any:
        """The value of a rule option, falling back to the rule's declared default."""
        from .rules import RULES

        declared = RULES[self.rule].options
        if name not in declared:
            raise ValueError(f"rule {self.rule!r} has no option {name!r}; options: "
                             f"{', '.join(declared) or 'none'}")
        return self.rule_options.get(name, declared[name].default)

    # ---------------------------------------------------------- serialisation
    def replace(self, **changes: Any) -> RunConfig:
        """A validated copy with some fields changed."""
        _check_names(changes, "RunConfig.replace")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-compatible dict (tuples become lists)."""
        out = {}
        for name in field_names():
            value = getattr(self, name)
            if isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, Mapping):
                value = dict(value)
            out[name] = value
        return out

    @classmethod
    def from_dict(cls, data: Any) -> RunConfig:
        """A config from :meth:`to_dict`'s output; unknown keys are an error."""
        if not isinstance(data, Mapping):
            raise ValueError(f"RunConfig.from_dict needs a mapping of setting name to value; "
                             f"got {type(data).__name__}")
        _check_names(data, "RunConfig")
        return cls(**data)

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), allow_nan=False, **kwargs)

    @classmethod
    def from_json(cls, text: str | bytes) -> RunConfig:
        """A config from :meth:`to_json`'s output (at most 1 MiB)."""
        return cls.from_dict(parse_json(text, "RunConfig.from_json"))

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
        """Inverse of :meth:`to_query`; accepts a leading ``?``. Any invalid field
        raises ``ValueError`` (see :func:`config_from_query_lenient` for a version
        that keeps the valid fields)."""
        return cls.from_dict(query_values(query))


def _fail(name: str, allowed: str, value: Any) -> ValueError:
    return ValueError(f"RunConfig.{name} must be {allowed}; got {short_repr(value)}")


def _not_used(setting, cfg: RunConfig) -> str:
    """Why a setting must keep its default for this config, naming who uses it."""
    from .data import DATASETS
    from .rules import RULES

    if setting.rule_flag and not getattr(RULES[cfg.rule], setting.rule_flag):
        users = ", ".join(n for n, c in RULES.items() if getattr(c, setting.rule_flag))
        return f"for rule {cfg.rule!r} (it does not use {setting.name}; rules that do: {users})"
    users = ", ".join(n for n, s in DATASETS.items() if setting.name in s.extra_options)
    return f"for dataset {cfg.dataset!r} (only these datasets take it: {users})"


def field_names() -> list[str]:
    return [f.name for f in dataclasses.fields(RunConfig)]


def _check_names(data: Mapping, where: str) -> None:
    names = set(field_names())
    bad = [k for k in data if not isinstance(k, str) or k not in names]
    if bad:
        shown = ", ".join(short_repr(k) if not isinstance(k, str) else k for k in bad[:5])
        raise ValueError(f"{where} has no field(s) {shown}; fields: {', '.join(field_names())}")


def parse_json(text: str | bytes, where: str) -> Any:
    """``json.loads`` whose every failure (too long, invalid, too deeply nested, a
    number of too many digits) is a ``ValueError`` naming ``where``."""
    if not isinstance(text, (str, bytes, bytearray)):
        raise ValueError(f"{where}: needs JSON text; got {type(text).__name__}")
    if len(text) > MAX_JSON_BYTES:
        raise ValueError(f"{where}: the JSON text is longer than {MAX_JSON_BYTES} bytes")
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError(f"{where}: the JSON is nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise ValueError(f"{where}: not valid JSON ({str(exc)[:200]})") from None


def _query_pairs(query: str) -> list[tuple[str, str]]:
    if not isinstance(query, str):
        raise ValueError(f"a link's query must be text; got {type(query).__name__}")
    if len(query) > MAX_QUERY_CHARS:
        raise ValueError(f"the link is longer than {MAX_QUERY_CHARS} characters")
    return urllib.parse.parse_qsl(query.lstrip("?"), keep_blank_values=True)


def _query_value(name: str, raw: str) -> Any:
    """A link's text for one setting as a Python value: words stay words, the rest is
    JSON; text that is not JSON stays text, which the setting then rejects by name."""
    setting = SETTINGS[name]
    if setting.kind == "str" and not (setting.optional and raw in ("null", "none", "")):
        return raw
    if raw in ("none", "None", ""):
        return None
    try:
        return parse_json(raw, f"RunConfig.{name}")
    except ValueError:
        return raw


def query_values(query: str) -> dict[str, Any]:
    """The settings a link's query names, as Python values (not yet validated)."""
    data: dict[str, Any] = {}
    for name, raw in _query_pairs(query):
        if name not in SETTINGS:
            raise ValueError(f"unknown setting {short_repr(name)} in the link; settings: "
                             f"{', '.join(field_names())}")
        if name in data:
            raise ValueError(f"the link sets {name} twice")
        data[name] = _query_value(name, raw)
    return data


def config_from_query_lenient(query: str, ignore: tuple[str, ...] = ()
                              ) -> tuple[RunConfig, list[str]]:
    """The config a link asks for, keeping every valid field, and one message per
    problem (unknown or invalid fields, impossible combinations). Never raises
    for a bad link; ``ignore`` lists keys that belong to someone else (Voilà's)."""
    problems: list[str] = []
    try:
        pairs = _query_pairs(query)
    except ValueError as exc:
        return RunConfig(), [str(exc)]
    values: dict[str, Any] = {}
    for name, raw in pairs:
        if name in ignore:
            continue
        if name not in SETTINGS:
            problems.append(f"unknown setting {short_repr(name)}")
            continue
        if name in values:
            problems.append(f"{name} is set twice (the last value is kept)")
        value = _query_value(name, raw)
        if name == "rule_options":
            values[name] = value
            continue
        try:
            values[name] = SETTINGS[name].coerce(value)
        except ValueError as exc:
            problems.append(str(exc).replace("RunConfig.", ""))
    # Drop the fields that make the combination impossible, one at a time, naming each.
    for _ in range(len(values) + 1):
        try:
            return RunConfig(**values), problems
        except ValueError as exc:
            culprit = next((n for n in values if str(exc).startswith(f"RunConfig.{n} ")
                            or str(exc).startswith(f"RunConfig.{n}[")), None)
            if culprit is None:
                culprit = next((n for n in reversed(list(values)) if n not in ("rule",)),
                               "rule")
            problems.append(str(exc).replace("RunConfig.", ""))
            values.pop(culprit, None)
    return RunConfig(), problems


def _check_schema() -> None:
    """Every field declared, every declaration a field: a field added with only a
    dataclass line fails at import, not silently unchecked."""
    fields, declared = set(field_names()), set(SETTINGS)
    if fields != declared:
        raise RuntimeError(f"RunConfig fields and SETTINGS differ: undeclared "
                           f"{sorted(fields - declared)}, no field {sorted(declared - fields)}")


_check_schema()
