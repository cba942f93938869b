"""What the dashboard's controls may show and change, decided without widgets.

Everything here reads the settings schema (:data:`fa_explore.settings.SETTINGS`:
which rule attribute says a rule uses a setting, which datasets take it), the
rule classes' attributes (``expansion_ratios``, ``models``, ``feedback_kind``)
and the dataset specs (``kind``, ``downloads``, ``available``), and leaves the
validation of combinations to :class:`RunConfig`; nothing branches on a rule's or
dataset's name, so a rule added as one file shows up with the right controls
enabled.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..config import RunConfig, config_from_query_lenient
from ..data import DATASETS
from ..models import MODELS
from ..rules import RULES
from ..settings import APP_SETTINGS, RULE_DEFAULTABLE, SETTINGS

# Query keys Voilà itself reads from the page URL (voila/handler.py: ``template``,
# ``theme``; older Voilà and its JupyterLab preview: ``voila-``...); not run settings.
VOILA_QUERY_KEYS = ("voila-template", "voila-theme", "template", "theme")
# Credentials jupyter-server reads from the query (``?token=``, added by Jupyter,
# Voilà's --token and JupyterHub/Binder links): not settings, and never put into a
# link meant for others.
CREDENTIAL_QUERY_KEYS = ("token",)

# Fields left out of "what differs" labels: bookkeeping, not experiment settings.
UNCOMPARED_FIELDS = ("eval_every", "eval_size", "device", "threads")

# Optimisation hyperparameters a rule may set a default for; "rule defaults" resets
# these (the expansion ratio has its own dropdown entry for the rule's default).
RULE_DEFAULT_FIELDS = tuple(n for n in RULE_DEFAULTABLE if SETTINGS[n].group == "optimisation")

DEFAULT_EXPANSION_CHOICES = (1, 2, 4, 8, 16)
# A dropdown's entry for None (the rule's or the dataset's default): ipywidgets reads
# a value of None as "nothing selected".
DEFAULT_CHOICE = "(default)"
# Dropdown value standing for "the rule's default" (None): ipywidgets reads a
# value of None as "nothing selected". Ratios are >= 1, so 0 is free.
RULE_DEFAULT_CHOICE = 0


def plain_message(error: BaseException) -> str:
    """An exception's message in plain words for the status line (no traceback,
    no ``RunConfig.`` prefix, first line only)."""
    text = str(error).strip() or type(error).__name__
    text = text.replace("RunConfig.", "").replace("RunConfig has", "the settings have")
    return text.splitlines()[0]


# Rule-dependent settings: those whose declaration names a rule attribute.
RULE_DEPENDENT = tuple(n for n, s in SETTINGS.items() if s.rule_flag)


def rules_using(setting: str) -> list[str]:
    """The registered rules that use ``setting`` (one of :data:`RULE_DEPENDENT`)."""
    flag = SETTINGS[setting].rule_flag
    return [name for name, cls in RULES.items() if getattr(cls, flag)]


def disabled_reasons(config: RunConfig) -> dict[str, str | None]:
    """For each rule-dependent control, why it is disabled (None when it applies),
    in one short sentence (:func:`rules_using` says which rules do use it)."""
    rule = RULES[config.rule]
    no_feedback = {"none": "it has no feedback weights",
                   "direct": "its feedback goes straight from the output error to each layer",
                   "layer": "its feedback is not a fixed random draw"}.get(
                       rule.feedback_kind, "it does not use this setting")
    reasons: dict[str, str | None] = {}
    for name in RULE_DEPENDENT:
        if SETTINGS[name].applies(rule):
            reasons[name] = None
        elif name == "expansion_ratio":
            reasons[name] = f"Not used by {rule.name}: only product feedback rules have one."
        else:
            reasons[name] = f"Not used by {rule.name}: {no_feedback}."
    supported = [m for m in MODELS if m in rule.models]
    reasons["model"] = None if len(supported) > 1 else (
        f"{rule.name} trains only the {supported[0].upper()}.")
    return reasons


def expansion_choices(config: RunConfig) -> list[tuple[str, int]]:
    """Dropdown options for the PFA expansion ratio: the rule default
    (:data:`RULE_DEFAULT_CHOICE`), then the ratios the rule accepts."""
    rule = RULES[config.rule]
    values = list(rule.expansion_ratios or DEFAULT_EXPANSION_CHOICES)
    if config.expansion_ratio is not None and config.expansion_ratio not in values:
        values.append(config.expansion_ratio)
    default = rule.defaults.get("expansion_ratio")
    label = "rule default" + (f" ({default})" if default is not None else "")
    return [(label, RULE_DEFAULT_CHOICE)] + [(str(v), v) for v in sorted(values)]


def model_choices(config: RunConfig) -> list[str]:
    return [m for m in MODELS if m in RULES[config.rule].models]


def dataset_available(spec: Any) -> bool:
    """Whether a dataset can be loaded now: its :class:`~fa_explore.data.DatasetSpec`'s
    ``available`` (False only for a downloadable set that is not cached yet)."""
    return bool(spec.available)


def dataset_choices(config: RunConfig) -> list[tuple[str, str]]:
    """Dataset options: every registered set; one that still has to be downloaded
    is marked (:func:`download_hint` says how to get it)."""
    return [(name if dataset_available(spec) else f"{name} (not downloaded yet)", name)
            for name, spec in DATASETS.items()]


def download_hint(name: str) -> str:
    """How to get a downloadable set that is not cached yet ("" when it is there)."""
    spec = DATASETS[name]
    if dataset_available(spec):
        return ""
    return (f"{name} is not downloaded yet. Train downloads it once (from OpenML) where the "
            "server has internet access; offline, fetch it on a machine that has, with "
            f"python -c \"import fa_explore; fa_explore.load_dataset('{name}')\", and copy "
            "the cache folder over (see fa-explore datasets).")


def device_choices() -> list[tuple[str, str]]:
    """``auto`` (saying what it picks), ``cpu``, and ``cuda`` only when present."""
    has_cuda = torch.cuda.is_available()
    options = [(f"auto ({'cuda' if has_cuda else 'cpu'})", "auto"), ("cpu", "cpu")]
    if has_cuda:
        options.append((f"cuda ({torch.cuda.get_device_name(0)})", "cuda"))
    return options


def change_config(config: RunConfig, **changes: Any) -> tuple[RunConfig, str]:
    """Apply control changes to a config.

    Returns ``(new_config, note)``. Switching rule clears the settings the new
    rule does not use (and says so in ``note``) rather than refusing. Any other
    impossible combination raises ``ValueError`` with the config's own message,
    so the caller can keep the old config and show why.
    """
    notes = []
    if "rule" in changes and changes["rule"] != config.rule:
        if changes["rule"] not in RULES:
            raise ValueError(f"rule must be one of {', '.join(RULES)}; got {changes['rule']!r}")
        rule = RULES[changes["rule"]]
        for name in RULE_DEPENDENT:
            setting = SETTINGS[name]
            if getattr(config, name) != setting.off_value() and not setting.applies(rule):
                changes.setdefault(name, setting.off_value())
                notes.append(setting.label)
        if config.expansion_ratio is not None and rule.expansion_ratios is not None and (
                config.expansion_ratio not in rule.expansion_ratios):
            changes.setdefault("expansion_ratio", None)
            notes.append(SETTINGS["expansion_ratio"].label)
        if config.model not in rule.models:
            changes.setdefault("model", rule.models[0])
            notes.append(f"model (now {rule.models[0]})")
        kept = {k: v for k, v in config.rule_options.items() if k in rule.options}
        if kept != config.rule_options:
            changes.setdefault("rule_options", kept)
            notes.append("rule options")
    extra = ""
    # The step schedule and its milestones come together, whichever is set first.
    if changes.get("lr_milestones") and config.lr_schedule != "step" and (
            "lr_schedule" not in changes):
        changes["lr_schedule"] = "step"
        extra = "The schedule is now step (milestones are its own)."
    elif changes.get("lr_schedule") not in (None, "step") and config.lr_milestones and (
            "lr_milestones" not in changes):
        changes["lr_milestones"] = ()
        extra = "Milestones cleared (only the step schedule has them)."
    elif changes.get("lr_schedule") == "step" and not config.lr_milestones and (
            "lr_milestones" not in changes):
        epochs = config.resolve_field("epochs") or 2
        changes["lr_milestones"] = (max(1, epochs // 2),)
        extra = f"Milestone set to epoch {max(1, epochs // 2)}: change it under milestones."
    new = config.replace(**changes)
    note = (f"{new.rule} does not use the {', '.join(notes)}: reset." if notes else "")
    return new, " ".join(n for n in (note, extra) if n)


def config_from_query(query: str | None) -> tuple[RunConfig, str]:
    """The config a page link asks for, and a message when the link is bad.

    Voilà's own keys (``theme``, ``template``) and credentials (``token``) are
    ignored, and the dashboard's own settings (``seeds``:
    :func:`.appsettings.app_settings_from_query` reads them) are only checked. A bad
    link keeps its valid settings and gives a message listing every invalid one; it
    never raises.
    """
    if not query:
        return RunConfig(), ""
    from .appsettings import app_settings_from_query

    config, problems = config_from_query_lenient(
        query, ignore=VOILA_QUERY_KEYS + CREDENTIAL_QUERY_KEYS + tuple(APP_SETTINGS))
    problems += app_settings_from_query(query)[1]
    if not problems:
        return config, ""
    listed = "; ".join(plain_message(ValueError(p)) for p in problems)
    return config, f"Some of this link's settings cannot be used and were left out: {listed}."


def format_value(value: Any) -> str:
    """A config value as a short legend label."""
    if value is None:
        return "default"
    if isinstance(value, (list, tuple)):
        return "×".join(str(v) for v in value) or "none"
    if isinstance(value, float):
        return f"{value:g}" if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        return ",".join(f"{k}={format_value(v)}" for k, v in sorted(value.items())) or "{}"
    return str(value)


def difference_labels(configs: list[RunConfig]) -> list[str]:
    """One legend label per config naming only the settings that differ between
    them, e.g. ``rule=fa, lr=0.01``. Values are compared with rule defaults
    filled in; a hyperparameter left to the rule's default in every config
    follows the rule and is not named on its own."""
    if not configs:
        return []
    dicts = [c.resolve().to_dict() for c in configs]
    follows_rule = {name for name in RULE_DEFAULT_FIELDS
                    if all(getattr(c, name) is None for c in configs)}
    differing = [name for name in dicts[0]
                 if name not in UNCOMPARED_FIELDS and name not in follows_rule
                 and any(d[name] != dicts[0][name] for d in dicts[1:])]
    labels = []
    for index, d in enumerate(dicts, start=1):
        parts = [f"{name}={format_value(d[name])}" for name in differing]
        labels.append(", ".join(parts) if parts else f"run {index}")
    return labels


# ----------------------------------------------------- controls from the schema
def ui_range(setting: Any, value: Any = None) -> tuple[float, float]:
    """A slider's range: the declared ``ui_minimum``/``ui_maximum`` (else the hard
    bounds), widened to hold ``value`` when a link or the API asks for a value
    outside it (never beyond the hard bounds, which the config already enforces)."""
    low = setting.ui_minimum if setting.ui_minimum is not None else setting.minimum
    high = setting.ui_maximum if setting.ui_maximum is not None else setting.maximum
    low = 0.0 if low is None else float(low)
    high = (low + 1.0) if high is None else float(high)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        low, high = min(low, float(value)), max(high, float(value))
    return low, high


def log_base(setting: Any) -> int:
    """Integer settings on a log slider (the batch size) move by powers of two."""
    return 2 if setting.kind == "int" else 10


def log_exponents(setting: Any, value: Any = None) -> tuple[float, float]:
    """A log slider's exponent range (base :func:`log_base`), from :func:`ui_range`."""
    base = log_base(setting)
    low, high = ui_range(setting, value)
    if low <= 0:
        low = high / base**6
    return (math.floor(math.log(low, base) + 1e-9), math.ceil(math.log(high, base) - 1e-9))


def slider_step(setting: Any, low: float, high: float) -> float:
    """A slider's step: whole units for integers, else about 1/100 of the range at
    a round value (5° for an angle, 0.01 for a fraction)."""
    if setting.kind == "int":
        return 1
    raw = (high - low) / 100 or 0.01
    exponent = math.floor(math.log10(raw))
    for mantissa in (1, 2, 5, 10):
        if mantissa * 10**exponent >= raw:
            step = mantissa * 10**exponent
            break
    return 5.0 if setting.unit == "degrees" else float(f"{step:g}")


def _bound_text(value: float) -> str:
    return f"{value:,}" if isinstance(value, int) else f"{value:g}"


def clamp_to_bounds(setting: Any, value: Any, label: str = "") -> tuple[Any, str]:
    """``value`` moved into the setting's hard bounds, and a note saying so (empty
    when it fitted). An exclusive bound clamps to the nearest allowed round value
    (the UI minimum where one is declared)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return value, ""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{setting.label} must be a finite number; got {value}")
    integer = setting.kind in ("int", "ints")
    low, high = setting.minimum, setting.maximum
    clamped = value
    if low is not None and (value < low or (setting.exclusive_minimum and value <= low)):
        clamped = low if not setting.exclusive_minimum else (
            setting.ui_minimum if setting.ui_minimum is not None else None)
        if clamped is None:
            raise ValueError(f"{setting.label} must be above {_bound_text(low)}; got {value:g}")
        word = "smallest"
    elif high is not None and (value > high or (setting.exclusive_maximum and value >= high)):
        clamped = high if not setting.exclusive_maximum else (
            setting.ui_maximum if setting.ui_maximum is not None else None)
        if clamped is None:
            raise ValueError(f"{setting.label} must be below {_bound_text(high)}; got {value:g}")
        word = "largest"
    if clamped == value:
        return value, ""
    clamped = int(clamped) if integer else float(clamped)
    return clamped, (f"{label or setting.label} {_bound_text(value)} is out of range: using the "
                     f"{word} allowed, {_bound_text(clamped)}.")


def parse_number(setting: Any, text: str) -> Any:
    """A number box's text as the setting's value: empty means None (its
    ``none_means``) for an optional setting. ``ValueError`` in plain words."""
    text = (text or "").strip().replace("_", "").replace(",", "")
    if not text or text.lower() in ("none", "default", "auto"):
        if setting.optional:
            return None
        raise ValueError(f"{setting.label} needs a value ({setting.allowed()})")
    try:
        number = float(text)
    except ValueError:
        raise ValueError(f"{setting.label} must be a number; got {text[:20]!r}") from None
    if setting.kind == "int":
        if not number.is_integer():
            raise ValueError(f"{setting.label} must be a whole number; got {text[:20]!r}")
        return int(number)
    return number


def parse_ints(setting: Any, text: str) -> tuple[int, ...]:
    """A list box's text (``16, 32`` or ``[16, 32]``) as a tuple of integers."""
    cleaned = (text or "").strip().strip("[]()")
    if not cleaned:
        return ()
    try:
        return tuple(int(part) for part in cleaned.replace(";", ",").replace(" ", ",").split(",")
                     if part)
    except ValueError:
        raise ValueError(f"{setting.label} must be whole numbers separated by commas; got "
                         f"{text[:30]!r}") from None


def shown_value(config: RunConfig, name: str) -> Any:
    """What a control shows for a setting: the value with the rule's default filled in,
    and a dataset's own default for its options (e.g. the 2-D sets' noise)."""
    value = config.resolve_field(name)
    if value is None and SETTINGS[name].dataset_option:
        value = DATASETS[config.dataset].option_defaults.get(name)
    return value


def setting_state(config: RunConfig, name: str) -> tuple[bool, str | None]:
    """``(shown, disabled reason)`` of a setting's control for this config: settings
    of other datasets or models are hidden; rule-dependent ones are shown disabled,
    with the reason (:func:`disabled_reasons`)."""
    setting = SETTINGS[name]
    spec = DATASETS[config.dataset]
    if setting.dataset_option and name not in spec.extra_options:
        return False, None
    if setting.models and config.model not in setting.models:
        return False, None
    if setting.rule_flag:
        return True, disabled_reasons(config).get(name)
    if name == "model":
        return True, disabled_reasons(config)["model"]
    return True, None


def help_text(setting: Any) -> str:
    """A control's tooltip: the schema's help, unit, range and what None means."""
    parts = [setting.help[0].upper() + setting.help[1:] if setting.help else setting.label]
    if setting.unit:
        parts.append(f"({setting.unit})")
    text = " ".join(parts) + "."
    if setting.kind in ("int", "float") and setting.bounds_text():
        text += f" Allowed: {setting.bounds_text()}."
    if setting.optional and setting.none_means:
        text += f" Empty: {setting.none_means}."
    if setting.live:
        text += " Changes a running run live."
    return text


def rule_label(name: str) -> str:
    """A rule's dropdown label: its name and the title of its description."""
    description = RULES[name].description
    title = description.split(":")[0] if ":" in description else ""
    return f"{name} — {title}" if title and len(title) <= 40 else name


def dropdown_choices(config: RunConfig, name: str, option_of: str | None = None
                     ) -> list[tuple[str, Any]]:
    """A dropdown's ``(label, value)`` options for a setting (or, with ``option_of``,
    a rule option). The choices are the schema's, except for what the registries
    decide (rules, datasets and whether they are downloaded, the rule's models, the
    devices present, the rule's expansion ratios). An optional setting starts with
    its default (:data:`DEFAULT_CHOICE`), named."""
    if option_of is not None:
        option = RULES[option_of].options[name]
        return [(str(c), c) for c in option.allowed_choices() or ()]
    setting = SETTINGS[name]
    if name == "rule":
        return [(rule_label(n), n) for n in RULES]
    if name == "dataset":
        return dataset_choices(config)
    if name == "model":
        return [(m, m) for m in model_choices(config)]
    if name == "device":
        devices = device_choices()
        if config.device not in [v for _, v in devices]:  # e.g. a link made on a GPU box
            devices.append((f"{config.device} (not available here)", config.device))
        return devices
    if name == "expansion_ratio":
        return [(label, DEFAULT_CHOICE if value == RULE_DEFAULT_CHOICE else value)
                for label, value in expansion_choices(config)]
    options = [(str(c), c) for c in setting.allowed_choices() or ()]
    if setting.optional:
        if setting.rule_default:
            label = f"rule default ({format_value(config.resolve_field(name))})"
        else:
            label = setting.none_means or "default"
        options.insert(0, (label, DEFAULT_CHOICE))
    return options
