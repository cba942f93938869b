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
from ..settings import RULE_DEFAULTABLE, SETTINGS

# Query keys Voilà itself reads from the page URL; they are not run settings.
VOILA_QUERY_KEYS = ("voila-template", "voila-theme", "template", "theme")

# Fields left out of "what differs" labels: bookkeeping, not experiment settings.
UNCOMPARED_FIELDS = ("eval_every", "eval_size", "device")

# Optimisation hyperparameters a rule may set a default for; "rule defaults" resets
# these (the expansion ratio has its own dropdown entry for the rule's default).
RULE_DEFAULT_FIELDS = tuple(n for n in RULE_DEFAULTABLE if SETTINGS[n].group == "optimisation")

DEFAULT_EXPANSION_CHOICES = (1, 2, 4, 8, 16)
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
    """Dataset options: every set that can be loaded now, plus the configured one
    (e.g. from a shared link) even when it still has to be downloaded."""
    options = []
    for name, spec in DATASETS.items():
        if dataset_available(spec):
            options.append((name, name))
        elif name == config.dataset:
            options.append((f"{name} (not downloaded yet)", name))
    return options


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
    new = config.replace(**changes)
    note = (f"{new.rule} does not use the {', '.join(notes)}: reset." if notes else "")
    return new, note


def config_from_query(query: str | None) -> tuple[RunConfig, str]:
    """The config a page link asks for, and a message when the link is bad.

    Voilà's own keys (``theme``, ``template``) are ignored. A bad link keeps its
    valid settings and gives a message listing every invalid one; it never raises.
    """
    if not query:
        return RunConfig(), ""
    config, problems = config_from_query_lenient(query, ignore=VOILA_QUERY_KEYS)
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
