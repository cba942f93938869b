"""The ``fa-explore`` command: train a run, list the rules and the datasets.

``fa-explore train`` takes one option per :class:`~fa_explore.config.RunConfig`
field, generated from the dataclass (so a new field is a new option with no
change here), starts from ``--config FILE.json`` when given, shows a progress
bar, prints the final metrics per layer and, with ``--out DIR``, saves the run.

Exit codes: 0 success, 2 invalid arguments or config (message on stderr),
3 the run diverged, 130 interrupted.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shutil
import sys
import textwrap
import types
import typing
from pathlib import Path
from typing import Any, Sequence

from . import __version__
from .config import ACTIVATIONS, DEVICES, MODELS, OPTIMIZERS, RULE_DEFAULTABLE, RunConfig

EXIT_OK, EXIT_USAGE, EXIT_DIVERGED, EXIT_INTERRUPTED = 0, 2, 3, 130

# Help for the fields; a field missing here still gets an option with generic help.
FIELD_HELP = {
    "rule": "learning rule",
    "dataset": "dataset",
    "model": "model kind",
    "hidden": "hidden layer widths, e.g. 128 128 or 128,128 (none: no hidden layer)",
    "channels": "convolution widths of model cnn, e.g. 16 32",
    "activation": "hidden activation",
    "init_angle": "degrees between each initial feedback matrix and its forward weight "
                  "(soft initial alignment; 0 = adaFA)",
    "feedback_sparsity": "fraction p of feedback entries set to zero",
    "expansion_ratio": "PFA's expansion ratio k",
    "optimizer": "optimizer",
    "lr": "learning rate",
    "momentum": "SGD momentum",
    "weight_decay": "weight decay",
    "batch_size": "minibatch size",
    "epochs": "passes over the training set",
    "seed": "random seed (model init, feedback, batch order)",
    "device": "where to train",
    "n_classes": "train on a seeded subset of this many classes",
    "label_noise": "fraction of training labels flipped to another class",
    "train_size": "seeded subsample of the training set",
    "standardize": "standardise features with training statistics",
    "noise": "noise of the generated 2-D sets",
    "n_samples": "examples of the generated 2-D sets",
    "eval_every": "steps between evaluations (default: about 50 per run)",
    "eval_size": "examples evaluated per evaluation (train and test)",
    "rule_options": "rule options as a JSON object, e.g. '{\"alpha\": 0.1}' "
                    "(see also --rule-option)",
}


def _choices() -> dict[str, Sequence[str]]:
    from .data import DATASETS
    from .rules import RULES

    return {"rule": list(RULES), "dataset": list(DATASETS), "model": MODELS,
            "activation": ACTIVATIONS, "optimizer": OPTIMIZERS, "device": DEVICES}


# ------------------------------------------------------------ value parsing
def _unwrap_optional(hint: Any) -> tuple[Any, bool]:
    """``X | None`` -> ``(X, True)``; anything else -> ``(hint, False)``."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return (args[0] if len(args) == 1 else hint), len(args) < len(typing.get_args(hint))
    return hint, False


def _scalar_parser(kind: type, optional: bool):
    """An argparse ``type`` for one int/float/str value ("none" is None when optional)."""
    words = {int: "an integer", float: "a number", str: "a word"}[kind]

    def parse(text: str):
        if optional and text.lower() in ("none", "null", "default"):
            return None
        try:
            if kind is int:
                value = float(text)  # accepts 1e3; must still be a whole number
                if not value.is_integer():
                    raise ValueError
                return int(value)
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {words}{' or none' if optional else ''}; got {text!r}") from None

    return parse


def _parse_json_object(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object such as "
                                         f"'{{\"alpha\": 0.1}}'; got {text!r}")
    return value


def _parse_rule_option(text: str) -> tuple[str, Any]:
    """``key=value``; the value is read as JSON (numbers, true/false) or kept as text."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected key=value, e.g. alpha=0.1; got {text!r}")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip(), value


def _widths(tokens: Sequence[str], name: str) -> tuple[int, ...]:
    """``["128", "128"]`` or ``["128,128"]`` -> ``(128, 128)``; ``none`` -> ``()``."""
    parts = [p for token in tokens for p in token.replace(",", " ").split()]
    if len(parts) == 1 and parts[0].lower() in ("none", "()"):
        return ()
    try:
        return tuple(int(p) for p in parts)
    except ValueError:
        raise ValueError(f"RunConfig.{name} must be a tuple of integer widths >= 1 "
                         f"(e.g. 128 128 or 128,128); got {' '.join(tokens)!r}") from None


# ----------------------------------------------------------------- parser
def _add_config_options(parser: argparse.ArgumentParser) -> dict[str, str]:
    """One option per RunConfig field; returns field name -> how to convert it."""
    group = parser.add_argument_group("run config (one option per RunConfig field; "
                                      "unset fields keep the --config file's or the "
                                      "default value)")
    hints = typing.get_type_hints(RunConfig)
    choices = _choices()
    defaults = RunConfig()
    conversions = {}
    for f in dataclasses.fields(RunConfig):
        flags = [f"--{f.name.replace('_', '-')}"]
        if "_" in f.name:
            flags.append(f"--{f.name}")
        kind, optional = _unwrap_optional(hints[f.name])
        default = getattr(defaults, f.name)
        shown = "the rule's default" if f.name in RULE_DEFAULTABLE and default is None \
            else default
        help_text = FIELD_HELP.get(f.name, f.name.replace("_", " "))
        if f.name in choices:
            help_text += f"; one of: {', '.join(choices[f.name])}"
        help_text += f" (default: {shown})"
        common = dict(dest=f.name, default=argparse.SUPPRESS, help=help_text)
        if kind is bool:
            group.add_argument(*flags, action=argparse.BooleanOptionalAction, **common)
            conversions[f.name] = "plain"
        elif typing.get_origin(kind) is tuple:
            group.add_argument(*flags, nargs="*", metavar="N", **common)
            conversions[f.name] = "widths"
        elif kind is dict or typing.get_origin(kind) is dict:
            group.add_argument(*flags, type=_parse_json_object, metavar="JSON", **common)
            conversions[f.name] = "plain"
        elif kind in (int, float, str):
            metavar = "{" + ",".join(choices[f.name]) + "}" if f.name in choices else None
            group.add_argument(*flags, type=_scalar_parser(kind, optional), metavar=metavar,
                               **common)
            conversions[f.name] = "plain"
        else:  # a field type this CLI does not know: accept JSON
            group.add_argument(*flags, type=json.loads, metavar="JSON", **common)
            conversions[f.name] = "plain"
    return conversions


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fa-explore",
        description="Learning without weight transport: train feedback-alignment-family "
                    "rules and compare them with backpropagation.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    train = commands.add_parser(
        "train", help="train one run and print its final metrics",
        description="Train one run, showing progress, then print the final metrics per "
                    "layer. Example: fa-explore train --rule fa --dataset digits --epochs 5")
    train.add_argument("--config", metavar="FILE.json", type=Path,
                       help="start from a saved config: a RunConfig JSON file, a saved "
                            "run's run.json, or a saved run's directory")
    train.add_argument("--rule-option", "--rule_option", dest="rule_option",
                       metavar="KEY=VALUE", action="append", type=_parse_rule_option,
                       default=[], help="set one rule option (repeatable), e.g. alpha=0.1")
    train.add_argument("--out", metavar="DIR", type=Path,
                       help="save the run (config, history, weights) into DIR")
    train.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    train.set_defaults(conversions=_add_config_options(train))

    commands.add_parser("rules", help="list the learning rules and the knobs they use")
    commands.add_parser("datasets", help="list the datasets")
    return parser


# ------------------------------------------------------------------ config
def read_config_file(path: Path) -> RunConfig:
    """A RunConfig from a JSON file (bare config or a saved run's ``run.json``)."""
    if path.is_dir():
        path = path / "run.json"
    try:
        text = path.read_text()
    except OSError as exc:
        raise ValueError(f"--config {path}: cannot read the file ({exc.strerror})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--config {path}: not valid JSON ({exc})") from None
    if isinstance(data, dict) and "format_version" in data and "config" in data:
        data = data["config"]  # a saved run's run.json
    return RunConfig.from_dict(data)


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """The RunConfig that parsed ``train`` arguments describe (validated)."""
    base = read_config_file(args.config) if args.config else RunConfig()
    changes: dict[str, Any] = {}
    for name, conversion in args.conversions.items():
        if name in vars(args):
            value = getattr(args, name)
            changes[name] = _widths(value, name) if conversion == "widths" else value
    if args.rule_option or "rule_options" in changes:
        options = dict(changes.get("rule_options", base.rule_options))
        options.update(args.rule_option)
        changes["rule_options"] = options
    return base.replace(**changes) if changes else base


# ------------------------------------------------------------------ tables
def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]],
                 max_width: int | None = None) -> str:
    """A plain-text table; cells wrap so the table fits ``max_width`` columns."""
    cells = [[_cell(v) for v in row] for row in rows]
    natural = [max([len(h)] + [len(line) for row in cells for line in
                               row[i].splitlines() or [""]]) for i, h in enumerate(headers)]
    # Never narrower than the header or a column's longest word (up to 30): words
    # such as first_epoch_weight_decay stay whole.
    floors = [max(len(h), min(30, max([len(word) for row in cells
                                       for word in row[i].split()] or [0])))
              for i, h in enumerate(headers)]
    widths = list(natural)
    limit = max_width or shutil.get_terminal_size((120, 24)).columns
    gap = 2
    while sum(widths) + gap * (len(widths) - 1) > limit:
        shrinkable = [i for i in range(len(widths)) if widths[i] > floors[i]]
        if not shrinkable:
            break  # narrower is unreadable: let the terminal wrap the lines
        widths[max(shrinkable, key=widths.__getitem__)] -= 1

    def render(row: Sequence[str]) -> list[str]:
        wrapped = [textwrap.wrap(text, width, break_on_hyphens=False) or [""]
                   for text, width in zip(row, widths)]
        height = max(len(w) for w in wrapped)
        return [(" " * gap).join((w[i] if i < len(w) else "").ljust(width)
                                 for w, width in zip(wrapped, widths)).rstrip()
                for i in range(height)]

    lines = render(list(headers))
    lines.append((" " * gap).join("-" * w for w in widths))
    for row in cells:
        lines.extend(render(row))
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.3e}"
    return str(value)


def rules_table(max_width: int | None = None) -> str:
    from .rules import RULES

    rows = []
    for name, cls in RULES.items():
        knobs = []
        if cls.uses_init_angle:
            knobs.append("init_angle")
        if cls.uses_feedback_sparsity:
            knobs.append("feedback_sparsity")
        if cls.uses_expansion_ratio:
            ratios = cls.expansion_ratios
            knobs.append("expansion_ratio" + (f" ({', '.join(map(str, ratios))})"
                                              if ratios else ""))
        knobs += [f"{key}={value}" for key, value in cls.options.items()]
        defaults = ", ".join(f"{k}={v}" for k, v in cls.defaults.items())
        rows.append([name, cls.paper, cls.description, ", ".join(cls.models),
                     cls.feedback_kind, ", ".join(knobs) or "-", defaults or "-"])
    return format_table(["name", "paper", "description", "models", "feedback",
                         "knobs / options", "defaults"], rows, max_width)


def datasets_table(max_width: int | None = None) -> str:
    from .data import DATASETS

    rows = [[name, spec.kind, "x".join(map(str, spec.input_shape)), spec.n_classes,
             spec.downloads, spec.description] for name, spec in DATASETS.items()]
    return format_table(["name", "kind", "shape", "classes", "downloads", "description"],
                        rows, max_width)


def layer_table(row: dict[str, Any]) -> str:
    """Per-layer metrics of one history row (columns ``metric/layer``)."""
    metrics: list[str] = []
    layers: list[int] = []
    for key in row:
        metric, sep, layer = key.rpartition("/")
        if sep and layer.isdigit():
            if metric not in metrics:
                metrics.append(metric)
            if int(layer) not in layers:
                layers.append(int(layer))
    body = [[layer] + [row.get(f"{m}/{layer}", math.nan) for m in metrics]
            for layer in sorted(layers)]
    return format_table(["layer", *metrics], body)


def describe_config(cfg: RunConfig) -> str:
    shape = cfg.hidden if cfg.model == "mlp" else f"channels {cfg.channels}, {cfg.hidden}"
    return (f"{cfg.rule} on {cfg.dataset}: {cfg.model} {shape} {cfg.activation}, "
            f"{cfg.optimizer} lr={cfg.lr:g} momentum={cfg.momentum:g} "
            f"weight_decay={cfg.weight_decay:g}, batch {cfg.batch_size}, "
            f"{cfg.epochs} epochs, seed {cfg.seed}")


# ---------------------------------------------------------------- commands
def _train(args: argparse.Namespace) -> int:
    from .training import train

    cfg = config_from_args(args)
    print(describe_config(cfg.resolve()), flush=True)
    run = train(cfg, progress=not args.no_progress)
    if run.rows:
        final = run.final
        print()
        print(layer_table(final))
        print()
        print(format_table(["step", "epoch", "train_loss", "train_acc", "test_loss",
                            "test_acc", "time_s"],
                           [[final.get("step"), final.get("epoch"), final.get("train_loss"),
                             final.get("train_acc"), final.get("test_loss"),
                             final.get("test_acc"), final.get("time")]]))
    if args.out is not None:
        print(f"saved to {run.save(args.out)}")
    if run.status == "diverged":
        print(f"fa-explore: run {run.status}: {run.message}", file=sys.stderr)
        return EXIT_DIVERGED
    print(f"status: {run.status} ({run.message})")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``fa-explore`` and ``python -m fa_explore``; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse has printed usage/help already
        return int(exc.code or 0)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        if args.command == "train":
            return _train(args)
        if args.command == "rules":
            print(rules_table())
        elif args.command == "datasets":
            print(datasets_table())
        return EXIT_OK
    except ValueError as exc:
        # Invalid configs and inputs: the message names the field and what is allowed.
        print(f"fa-explore: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("fa-explore: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
