"""The settings schema: every setting of a run declared once.

Like TensorFlow Playground's ``State.PROPS`` table, :data:`SETTINGS` holds one
:class:`Setting` per :class:`~fa_explore.config.RunConfig` field: its type,
default, bounds or choices, unit, one-line help, which rules, datasets or models
it applies to (read from their class attributes, never from a list of names) and
the control it wants. Rule options are declared the same way, as :class:`Option`
entries in each rule class's ``options``.

Everything else reads these declarations: the config's coercion and validation,
the CLI's options and ``--help``, the URL round trip, the dashboard's controls and
their disabled reasons, and the settings table in ``docs/settings.md``
(``fa-explore settings --markdown`` prints it).

Every rejected value raises ``ValueError`` naming the setting and what is
allowed; values are never converted in a way that can overflow or recurse.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from itertools import pairwise
from typing import Any

from .threads import MAX_THREADS, SHARED_LOAD

# Largest seed: scikit-learn's random_state (the 2-D sets, the splits) takes 32 bits.
MAX_SEED = 2**32 - 1
# What a config (a link, a file) may ask the machine to allocate.
MAX_WIDTH = 4096
MAX_DEPTH = 16
MAX_CHANNELS = 512
MAX_CONV_LAYERS = 4
MAX_EPOCHS = 10_000
MAX_PARAMETERS = 20_000_000  # model plus feedback, float32: 80 MB
MAX_STRING = 100  # longest string value accepted anywhere in a config
REPR_LIMIT = 60  # longest shown repr of a rejected value
# eval_every's default: total_steps // this (at least 1). An evaluation costs a few
# training steps (two evaluated forwards, the rule's and the true gradient on the
# probe batch, the metrics), so about 12 keep it under a tenth of a default run.
EVALUATIONS_PER_RUN = 12

KINDS = ("str", "int", "float", "bool", "ints", "options")
CONTROLS = ("dropdown", "slider", "log_slider", "number", "checkbox", "widths", "text",
            "options")


def short_repr(value: Any) -> str:
    """``repr`` cut to :data:`REPR_LIMIT` characters (a 5,000-digit number or a long
    string must not flood an error message)."""
    try:
        if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 200:
            return f"<an integer of about {int(value.bit_length() * 0.30103)} digits>"
        text = repr(value)
    except Exception:  # noqa: BLE001 - a hostile object's __repr__ may raise anything
        text = f"<{type(value).__name__} object>"
    return text if len(text) <= REPR_LIMIT else text[:REPR_LIMIT - 3] + "..."


def _is_integer(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _format_number(value: float | int) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value)) if abs(value) >= 1e4 else f"{value:g}"
    if isinstance(value, int) and value >= 10**6:
        exponent = round(math.log2(value + 1))
        if 2**exponent - 1 == value:
            return f"2^{exponent} - 1"
        return f"{value:,}".replace(",", "_")
    return f"{value:g}"


@dataclass(frozen=True)
class Setting:
    """One declared setting (a RunConfig field, or a rule option as :class:`Option`).

    ``kind``: ``str`` (a word, optionally one of ``choices``), ``int``, ``float``,
    ``bool``, ``ints`` (a tuple of integers such as layer widths) or ``options``
    (the rule options mapping). ``optional`` allows ``None``, whose meaning is
    ``none_means``. ``rule_default``: a rule may give its own default (``None``
    then means "the rule's default", falling back to ``fallback``).

    Where it applies: ``rule_flag`` names a rule class attribute that is true for
    the rules using this setting; ``dataset_option`` means only datasets listing
    the setting in ``extra_options`` take it; ``models`` lists the model kinds it
    means something for. Outside those, a setting with ``strict=True`` must keep
    its default (a ValueError otherwise); a non-strict one is just ignored.

    ``control`` is the widget the dashboard builds; ``ui_minimum``/``ui_maximum``
    the slider's range where it is narrower than what is accepted; ``live`` marks
    settings a running run can take without restarting.
    """

    kind: str
    default: Any
    help: str
    name: str = ""
    group: str = ""
    label: str = ""
    unit: str = ""
    optional: bool = False
    none_means: str = ""
    choices: Sequence[Any] | Callable[[], Sequence[Any]] | None = None
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    exclusive_maximum: bool = False
    max_items: int | None = None
    increasing: bool = False
    rule_default: bool = False
    fallback: Any = None
    rule_flag: str | None = None
    dataset_option: bool = False
    models: tuple[str, ...] | None = None
    strict: bool = True
    control: str = "number"
    ui_minimum: float | None = None
    ui_maximum: float | None = None
    live: bool = False
    cli: bool = True

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"setting {self.name!r}: kind must be one of {KINDS}")
        if self.control not in CONTROLS:
            raise ValueError(f"setting {self.name!r}: control must be one of {CONTROLS}")

    def named(self, name: str, group: str = "") -> Setting:
        """This declaration with its name (and group) filled in."""
        return replace(self, name=name, group=group or self.group,
                       label=self.label or name.replace("_", " "))

    # ----------------------------------------------------------- description
    def allowed_choices(self) -> tuple[Any, ...] | None:
        if self.choices is None:
            return None
        return tuple(self.choices() if callable(self.choices) else self.choices)

    def bounds_text(self) -> str:
        """The accepted range in words, e.g. ``a number in (0, 100]``."""
        if self.minimum is None and self.maximum is None:
            return ""
        low = "(" if self.exclusive_minimum else "["
        high = ")" if self.exclusive_maximum else "]"
        lo = "-inf" if self.minimum is None else _format_number(self.minimum)
        hi = "inf" if self.maximum is None else _format_number(self.maximum)
        return f"{low}{lo}, {hi}{high}"

    def allowed(self) -> str:
        """What this setting accepts, in words (used in every error message)."""
        choices = self.allowed_choices()
        if self.kind == "bool":
            text = "true or false"
        elif self.kind == "options":
            text = "a mapping of option name to value"
        elif choices is not None:
            text = "one of " + ", ".join(str(c) for c in choices)
        elif self.kind == "ints":
            bounds = self.bounds_text()
            text = "a list of integers" + (f" in {bounds}" if bounds else "")
            if self.max_items is not None:
                text += f", at most {self.max_items} of them"
            if self.increasing:
                text += ", strictly increasing"
        elif self.kind in ("int", "float"):
            noun = "an integer" if self.kind == "int" else "a number"
            bounds = self.bounds_text()
            text = noun + (f" in {bounds}" if bounds else "")
        else:
            text = f"a word of at most {MAX_STRING} characters"
        if self.optional:
            meaning = self.none_means or ("the rule's default" if self.rule_default else "unset")
            text = f"None ({meaning}) or {text}"
        return text

    def error(self, value: Any, where: str = "RunConfig", allowed: str | None = None
              ) -> ValueError:
        return ValueError(f"{where}.{self.name} must be {allowed or self.allowed()}; "
                          f"got {short_repr(value)}")

    # ------------------------------------------------------------- checking
    def coerce(self, value: Any, where: str = "RunConfig") -> Any:
        """The value in canonical form (ints for integer settings, floats for
        numbers, tuples for lists), or ``ValueError`` naming the setting."""
        if value is None:
            if self.optional:
                return None
            raise self.error(value, where)
        if self.kind == "bool":
            if isinstance(value, bool):
                return value
            raise self.error(value, where)
        if self.kind == "str":
            if not isinstance(value, str) or len(value) > MAX_STRING:
                raise self.error(value, where)
            choices = self.allowed_choices()
            if choices is not None and value not in choices:
                raise self.error(value, where)
            return value
        if self.kind == "int":
            return self._number(value, where, integer=True)
        if self.kind == "float":
            return self._number(value, where, integer=False)
        if self.kind == "ints":
            if not isinstance(value, (list, tuple)):
                raise self.error(value, where)
            if self.max_items is not None and len(value) > self.max_items:
                raise self.error(value, where)
            items = tuple(self._number(v, where, integer=True, whole=value) for v in value)
            if self.increasing and any(a >= b for a, b in pairwise(items)):
                raise self.error(value, where)
            return items
        raise TypeError(f"setting {self.name!r} of kind {self.kind!r} is coerced by its owner")

    def _number(self, value: Any, where: str, integer: bool, whole: Any = None):
        shown = value if whole is None else whole
        if integer:
            if _is_integer(value):
                number = int(value)
            elif isinstance(value, float) and math.isfinite(value) and value.is_integer():
                number = int(value)  # JSON and links write 3.0 for 3
            else:
                raise self.error(shown, where)
        else:
            if not _is_real(value):
                raise self.error(shown, where)
            # Compare huge integers exactly before float() could overflow.
            if _is_integer(value) and not self._within(int(value)):
                raise self.error(shown, where)
            number = float(value)
            if not math.isfinite(number):
                raise self.error(shown, where)
        if not self._within(number):
            raise self.error(shown, where)
        return number

    def _within(self, number: float | int) -> bool:
        if self.minimum is not None and (number < self.minimum or (
                self.exclusive_minimum and number == self.minimum)):
            return False
        if self.maximum is not None and (number > self.maximum or (
                self.exclusive_maximum and number == self.maximum)):
            return False
        return True

    # ------------------------------------------------------- applicability
    def applies(self, rule_cls: type | None = None, dataset_spec: Any = None,
                model: str | None = None) -> bool:
        """Whether this setting means something for that rule, dataset and model."""
        if self.rule_flag and rule_cls is not None and not getattr(rule_cls, self.rule_flag):
            return False
        if self.dataset_option and dataset_spec is not None and (
                self.name not in dataset_spec.extra_options):
            return False
        return not (self.models and model is not None and model not in self.models)

    def off_value(self) -> Any:
        """The value the setting must keep where it does not apply."""
        return self.default


class Option(Setting):
    """A rule option, declared in a rule class's ``options``: the same fields as
    :class:`Setting`; the key in ``options`` gives its name."""


# ------------------------------------------------------------ rule options
class FrozenOptions(Mapping):
    """A read-only, hashable mapping (a config's rule options).

    ``cfg.rule_options["x"] = 1`` raises ``TypeError``, as for a tuple; use
    ``cfg.replace(rule_options={...})``.
    """

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, Any] | Sequence[tuple[str, Any]] = ()):
        object.__setattr__(self, "_items", dict(items))

    def __getitem__(self, key: str) -> Any:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(tuple(sorted(self._items.items())))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            return dict(self._items) == dict(other)
        return NotImplemented

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("rule options are read-only; use RunConfig.replace")

    def __repr__(self) -> str:
        return repr(self._items)

    def to_dict(self) -> dict[str, Any]:
        return dict(self._items)


def rule_option_settings(rule_cls: type) -> dict[str, Option]:
    """The rule's declared options, each named by its key."""
    return {key: option.named(key, "rule option") for key, option in rule_cls.options.items()}


def coerce_rule_options(value: Any, rule_cls: type) -> FrozenOptions:
    """Validated, coerced, read-only rule options for ``rule_cls``."""
    if value is None:
        return FrozenOptions()
    if not isinstance(value, Mapping):
        raise ValueError("RunConfig.rule_options must be a mapping of option name to value; "
                         f"got {short_repr(value)}")
    declared = rule_option_settings(rule_cls)
    out = {}
    for key, raw in value.items():
        if not isinstance(key, str) or key not in declared:
            allowed = ", ".join(declared) or "none (it takes no options)"
            raise ValueError(f"RunConfig.rule_options has unknown option {short_repr(key)} "
                             f"for rule {rule_cls.name!r}; allowed: {allowed}")
        out[key] = declared[key].coerce(raw, where=f"RunConfig.rule_options[{rule_cls.name}]")
    return FrozenOptions(out)


# ------------------------------------------------------------------ table
def _rules() -> tuple[str, ...]:
    from .rules import RULES

    return tuple(RULES)


def _datasets() -> tuple[str, ...]:
    from .data import DATASETS

    return tuple(DATASETS)


def _models() -> tuple[str, ...]:
    from .models import MODELS

    return tuple(MODELS)


def _activations() -> tuple[str, ...]:
    from .models import ACTIVATIONS

    return tuple(ACTIVATIONS)


def _inits() -> tuple[str, ...]:
    from .models import WEIGHT_INITS

    return tuple(WEIGHT_INITS)


S = Setting
# Groups in display order; within a group, the order of the table.
_TABLE: dict[str, dict[str, Setting]] = {
    "rule": {
        "rule": S("str", "fa", "learning rule", choices=_rules, control="dropdown"),
        "init_angle": S(
            "float", None, "angle between each initial feedback matrix and its forward "
            "weight (soft initial alignment; 0 is adaFA), measured before any sparsity mask",
            unit="degrees", optional=True, none_means="an independent random draw",
            minimum=0, maximum=180, rule_flag="uses_init_angle", control="slider",
            label="initial angle"),
        "feedback_sparsity": S(
            "float", 0.0, "fraction p of feedback entries set to zero by a fixed random mask",
            minimum=0, maximum=1, exclusive_maximum=True, rule_flag="uses_feedback_sparsity",
            control="slider", ui_maximum=0.99, label="feedback sparsity"),
        "feedback_sparsity_scaling": S(
            "str", "rescaled", "how a sparse feedback keeps its scale: 'rescaled' multiplies "
            "fixed masks by 1/sqrt(1-p), and a learned matrix's initial draw instead of its "
            "0/1 mask (so sparsity does not speed its learning up); 'unscaled' keeps 0/1 masks "
            "and unscaled draws (the PFA authors' convention; PFA's P then has variance "
            "1/(N̄(1-p)))",
            choices=("rescaled", "unscaled"), rule_flag="uses_feedback_sparsity",
            control="dropdown", label="sparsity scaling"),
        "expansion_ratio": S(
            "int", None, "PFA's expansion ratio k: the extra population has k times the "
            "layer's neurons", optional=True, rule_default=True, minimum=1, maximum=128,
            rule_flag="uses_expansion_ratio", control="dropdown", label="expansion ratio"),
        "feedback_init_gain": S(
            "float", 1.0, "multiplies the scale of every randomly drawn feedback matrix "
            "(B, sign feedback's M, DFA's D, PFA's R; PFA's P keeps E[PPᵀ] = I); with "
            "init_angle, ‖B‖ = gain·‖W‖",
            minimum=0, maximum=100, exclusive_minimum=True, rule_flag="uses_feedback_init",
            control="log_slider", ui_minimum=0.01, ui_maximum=100, label="feedback gain"),
        "rule_options": S("options", None, "rule options (see `fa-explore rules`)",
                          control="options", cli=False, label="rule options"),
    },
    "data": {
        "dataset": S("str", "digits", "dataset", choices=_datasets, control="dropdown"),
        "n_classes": S("int", None, "train on a seeded subset of this many classes",
                       optional=True, none_means="all classes", minimum=2, maximum=1000,
                       control="number", label="classes"),
        "label_noise": S("float", 0.0, "fraction of training labels flipped to another class",
                         minimum=0, maximum=1, exclusive_maximum=True, control="slider",
                         ui_maximum=0.9, label="label noise"),
        "train_size": S("int", None, "seeded subsample of the training set", optional=True,
                        none_means="all", minimum=1, maximum=10_000_000, unit="examples",
                        control="number", label="train size"),
        "standardize": S("bool", True, "standardise features with training statistics",
                         control="checkbox"),
        "noise": S("float", None, "noise (Gaussian std) of the generated 2-D sets",
                   optional=True, none_means="the dataset's default", minimum=0, maximum=10,
                   dataset_option=True, control="slider", ui_maximum=1.0),
        "n_samples": S("int", None, "examples of a generated dataset", optional=True,
                       none_means="the dataset's default", minimum=10, maximum=200_000,
                       dataset_option=True, unit="examples", control="number",
                       label="samples"),
        "data_seed": S("int", None, "seed of the data draws (class subset, label noise, "
                       "subsample, generated sets)", optional=True,
                       none_means="the same as seed", minimum=0, maximum=MAX_SEED,
                       control="number", label="data seed"),
    },
    "model": {
        "model": S("str", "mlp", "model kind", choices=_models, control="dropdown"),
        "hidden": S("ints", (128, 128), "hidden layer widths (none: no hidden layer)",
                    minimum=1, maximum=MAX_WIDTH, max_items=MAX_DEPTH, control="widths",
                    ui_maximum=1024),
        "channels": S("ints", (16, 32), "convolution widths of the CNN", minimum=1,
                      maximum=MAX_CHANNELS, max_items=MAX_CONV_LAYERS, models=("cnn",),
                      strict=False, control="widths", ui_maximum=128),
        "activation": S("str", "relu", "hidden activation", choices=_activations,
                        control="dropdown"),
        "weight_init": S("str", "xavier_uniform", "distribution of the initial forward weights "
                         "(random feedback is drawn from the same one): 'xavier_uniform' or "
                         "'normal' = N(0, 1/fan_in)", choices=_inits, control="dropdown",
                         label="init"),
        "init_gain": S("float", 1.0, "multiplies the scale of the initial forward weights",
                       minimum=0, maximum=100, exclusive_minimum=True, control="log_slider",
                       ui_minimum=0.01, ui_maximum=100, label="init gain"),
    },
    "optimisation": {
        "optimizer": S("str", None, "optimizer", optional=True, rule_default=True,
                       fallback="adam", choices=("sgd", "adam"), control="dropdown"),
        "lr": S("float", None, "learning rate", optional=True, rule_default=True,
                fallback=1e-3, minimum=0, maximum=100, exclusive_minimum=True,
                control="log_slider", ui_minimum=1e-5, ui_maximum=1.0, live=True,
                label="learning rate"),
        "momentum": S("float", None, "SGD momentum", optional=True, rule_default=True,
                      fallback=0.0, minimum=0, maximum=1, exclusive_maximum=True,
                      control="slider", ui_maximum=0.99, live=True),
        "weight_decay": S("float", None, "weight decay (L2, in the optimizer)", optional=True,
                          rule_default=True, fallback=0.0, minimum=0, maximum=10,
                          control="log_slider", ui_minimum=1e-6, ui_maximum=0.1, live=True,
                          label="weight decay"),
        "batch_size": S("int", None, "minibatch size", optional=True, rule_default=True,
                        fallback=32, minimum=1, maximum=65536, unit="examples",
                        control="log_slider", ui_maximum=1024, label="batch"),
        "epochs": S("int", None, "passes over the training set", optional=True,
                    rule_default=True, fallback=20, minimum=1, maximum=MAX_EPOCHS,
                    control="number", ui_maximum=200),
        "lr_schedule": S("str", "constant", "learning-rate schedule: constant; step "
                         "(times lr_factor at each of lr_milestones); cosine (to 0 over the run)",
                         choices=("constant", "step", "cosine"), control="dropdown",
                         label="schedule"),
        "lr_milestones": S("ints", (), "epochs at which the step schedule multiplies the "
                           "learning rate by lr_factor", minimum=1, maximum=MAX_EPOCHS,
                           max_items=32, increasing=True, unit="epochs", control="widths",
                           label="milestones"),
        "lr_factor": S("float", 0.1, "factor of the step schedule at each milestone",
                       minimum=0, maximum=1, exclusive_minimum=True, control="number",
                       label="lr factor"),
    },
    "run": {
        "seed": S("int", 0, "random seed of the model init, the feedback and the batch order",
                  minimum=0, maximum=MAX_SEED, control="number"),
        "device": S("str", "auto", "where to train (auto: CUDA when present)",
                    choices=("auto", "cpu", "cuda"), control="dropdown"),
        "threads": S("int", None, "CPU threads torch uses for the run, set in its training "
                     "thread at its start. Unset: $FA_EXPLORE_THREADS, else auto: 1 when the "
                     f"process has one CPU or the load average is >= {SHARED_LOAD:g} (shared "
                     "cores), else one per CPU (fa_explore/threads.py)", optional=True,
                     none_means="auto", minimum=1, maximum=MAX_THREADS, control="number"),
        "target_loss": S("float", None, "stop once the evaluated training loss is at most "
                         "this", optional=True, none_means="no target", minimum=0,
                         maximum=1e6, control="number", label="target loss"),
        "target_acc": S("float", None, "stop once the evaluated training accuracy is at "
                        "least this", optional=True, none_means="no target", minimum=0,
                        maximum=1, exclusive_minimum=True, control="number",
                        label="target accuracy"),
        "divergence_factor": S("float", 10.0, "end the run as diverged when the evaluated "
                               "training loss exceeds this many times its initial value",
                               minimum=1, maximum=1e12, control="number",
                               label="divergence factor"),
        "eval_every": S("int", None, "steps between evaluations", optional=True,
                        none_means=f"about {EVALUATIONS_PER_RUN} per run", minimum=1,
                        maximum=10_000_000, unit="steps", control="number",
                        label="eval every"),
        "eval_size": S("int", 1000, "examples evaluated per evaluation (train and test)",
                       minimum=1, maximum=1_000_000, unit="examples", control="number",
                       label="eval size"),
        "hessian_every": S("int", None, "evaluations between logs of the Hessian's top "
                           "eigenvalue and trace (columns hessian_top, hessian_trace) of the "
                           "training loss on the probe batch", optional=True,
                           none_means="never", minimum=1, maximum=1_000_000,
                           unit="evaluations", control="number", label="hessian every"),
        "trajectory_every": S("int", None, "steps between the recorded points of the "
                              "parameter trajectory (loss-landscape view)", optional=True,
                              none_means="at every evaluation", minimum=1,
                              maximum=10_000_000, unit="steps", control="number",
                              label="trajectory every"),
    },
}
del S

SETTINGS: dict[str, Setting] = {name: setting.named(name, group)
                                for group, table in _TABLE.items()
                                for name, setting in table.items()}

# Settings of the dashboard itself, not of a run (no RunConfig field, no CLI option):
# declared like the run's, so their controls, bounds, help and link keys come from here.
APP_GROUP = "dashboard"
MAX_SEEDS = 16
APP_SETTINGS: dict[str, Setting] = {name: setting.named(name, APP_GROUP) for name, setting in {
    "seeds": Setting(
        "int", 1, "train this many seeds (seed, seed+1, …) at once and draw every curve as "
        "their mean with a min–max band; the scatter, regions, landscape, pins and export "
        "show the first seed's run", minimum=1, maximum=MAX_SEEDS, control="slider",
        cli=False),
}.items()}
GROUPS: tuple[str, ...] = tuple(_TABLE)
RULE_DEFAULTABLE: tuple[str, ...] = tuple(n for n, s in SETTINGS.items() if s.rule_default)


def in_group(group: str) -> list[Setting]:
    return [s for s in SETTINGS.values() if s.group == group]


# -------------------------------------------------------------- docs table
def _default_text(setting: Setting) -> str:
    if setting.rule_default:
        return f"rule's ({setting.fallback})"
    value = setting.default
    if value is None:
        return "None"
    if isinstance(value, tuple):
        return " ".join(map(str, value)) or "()"
    return str(value)


def _applies_text(setting: Setting) -> str:
    parts = []
    if setting.rule_flag:
        from .rules import RULES

        parts.append("rules " + ", ".join(n for n, c in RULES.items()
                                          if getattr(c, setting.rule_flag)))
    if setting.dataset_option:
        from .data import DATASETS

        parts.append("datasets " + ", ".join(n for n, s in DATASETS.items()
                                             if setting.name in s.extra_options))
    if setting.models:
        parts.append("model " + ", ".join(setting.models))
    return "; ".join(parts) or "all"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def settings_markdown() -> str:
    """``docs/settings.md``: every setting and every rule option, from the schema."""
    from .rules import RULES

    lines = ["# Settings", "",
             "Generated from the schema (`fa_explore/settings.py` and each rule's `options`) by",
             "`fa-explore settings --markdown > docs/settings.md`; a test keeps it current.",
             "Every setting is a `RunConfig` field, a `fa-explore train` option",
             "(`--name-with-dashes`) and a key of the dashboard's link (`?name=value`).",
             "Outside the rules, datasets or models a setting applies to, it must keep its",
             "default.", ""]
    for group in GROUPS:
        lines += [f"## {group.capitalize()}", "",
                  "| setting | allowed | default | unit | applies to | meaning |",
                  "|---|---|---|---|---|---|"]
        for s in in_group(group):
            lines.append("| " + " | ".join(_cell(t) for t in (
                f"`{s.name}`", s.allowed(), _default_text(s), s.unit or "", _applies_text(s),
                s.help + (" (changes a running run live)" if s.live else ""))) + " |")
        lines.append("")
    lines += ["## Dashboard", "",
              "Settings of the dashboard, not of a run: a control and a key of the link",
              "(`?seeds=4`), not a `RunConfig` field.", "",
              "| setting | allowed | default | meaning |", "|---|---|---|---|"]
    for s in APP_SETTINGS.values():
        lines.append("| " + " | ".join(_cell(t) for t in (
            f"`{s.name}`", s.allowed(), _default_text(s), s.help)) + " |")
    lines.append("")
    lines += ["## Rule options", "",
              "Set with `rule_options={...}` in Python, `--rule-option key=value` on the",
              "command line.", "",
              "| rule | option | allowed | default | meaning |", "|---|---|---|---|---|"]
    for name, cls in RULES.items():
        for key, option in rule_option_settings(cls).items():
            lines.append("| " + " | ".join(_cell(t) for t in (
                f"`{name}`", f"`{key}`", option.allowed(), str(option.default),
                option.help)) + " |")
    lines.append("")
    lines += ["## Rule defaults", "",
              "Settings left at `None` take the rule's default:", "",
              "| rule | defaults |", "|---|---|"]
    for name, cls in RULES.items():
        text = ", ".join(f"`{k}={v}`" for k, v in cls.defaults.items()) or "-"
        lines.append(f"| `{name}` | {text} |")
    return "\n".join(lines) + "\n"
