"""The ``fa-explore`` command: train a run, list the rules and the datasets.

``fa-explore train`` takes one option per setting of the schema
(:data:`fa_explore.settings.SETTINGS`: help, allowed values and defaults come from
there, so a new setting is a new option with no change here), starts from
``--config FILE.json`` when given, shows a progress bar, prints the final metrics
per layer and, with ``--out DIR``, saves the run. ``fa-explore rules`` and
``fa-explore settings`` list the rules (their options) and the settings.
``fa-explore sweep GRID.yaml`` runs a grid of runs (:mod:`fa_explore.sweep`).

Every known failure is one line on stderr, ``fa-explore: error: ...`` naming the
option, field or file, and one of these exit codes (``--debug`` shows the
traceback instead):

* 0: success.
* 1: unexpected internal error (a bug; run again with ``--debug`` for the traceback).
* 2: invalid arguments, config or file: a bad option or value, a ``--config`` file
  that is missing, unreadable, not a regular file, over the size cap, not UTF-8,
  not JSON or not a valid RunConfig, an ``--out`` directory that cannot be created
  or written (checked before training), or saving the finished run failed (its
  results are printed first).
* 3: the run diverged (a NaN or infinite loss).
* 4: a dataset is unavailable: not downloaded yet and the download failed (offline).
* 5: ``fa-explore sweep`` ran, but some of its points failed (their rows say why).
* 130: interrupted (Ctrl-C); with ``--out`` the partial run is saved, status ``stopped``.
* 141: the output pipe was closed (e.g. ``fa-explore rules | head``).

``python -m fa_explore`` is the same command.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import stat
import sys
import tempfile
import textwrap
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import __version__
from .config import RunConfig
from .settings import GROUPS, SETTINGS, in_group, rule_option_settings, short_repr

EXIT_OK, EXIT_INTERNAL, EXIT_USAGE, EXIT_DIVERGED, EXIT_DATA_UNAVAILABLE = 0, 1, 2, 3, 4
EXIT_INTERRUPTED, EXIT_BROKEN_PIPE = 130, 141  # 128 + SIGINT, 128 + SIGPIPE
EXIT_SWEEP_FAILED = 5  # the sweep ran; some of its points failed

# ------------------------------------------------------------ value parsing
def _scalar_parser(setting):
    """An argparse ``type`` turning one word into the setting's Python type ("none"
    is None where the setting allows it). Bounds and choices are the config's to
    check, so the message names the field and the allowed values."""
    kind = setting.kind

    def parse(text: str):
        if setting.optional and text.lower() in ("none", "null", "default"):
            return None
        if kind == "str":
            return text
        try:
            if kind == "int":
                value = float(text)  # accepts 1e3; must still be a whole number
                if not value.is_integer():
                    raise ValueError
                return int(value) if abs(value) < 2**63 else int(text)
            return float(text)
        except (ValueError, OverflowError):
            raise argparse.ArgumentTypeError(
                f"--{setting.name.replace('_', '-')} must be {setting.allowed()}; "
                f"got {short_repr(text)}") from None

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


def _integers(tokens: Sequence[str], name: str) -> tuple[int, ...]:
    """``["128", "128"]`` or ``["128,128"]`` -> ``(128, 128)``; ``none`` -> ``()``."""
    parts = [p for token in tokens for p in token.replace(",", " ").split()]
    if len(parts) == 1 and parts[0].lower() in ("none", "()"):
        return ()
    try:
        return tuple(int(p) for p in parts)
    except ValueError:
        raise ValueError(f"RunConfig.{name} must be {SETTINGS[name].allowed()} (e.g. 128 128 "
                         f"or 128,128); got {short_repr(' '.join(tokens))}") from None


# ----------------------------------------------------------------- parser
def _help_text(setting) -> str:
    text = setting.help
    if setting.unit:
        text += f" [{setting.unit}]"
    text += f"; {setting.allowed()}"
    if setting.rule_default:
        default = f"the rule's default, else {setting.fallback}"
    elif isinstance(setting.default, tuple):
        default = " ".join(map(str, setting.default)) or "none"
    else:
        default = setting.default
    return (text + f" (default: {default})").replace("%", "%%")


def _add_config_options(parser: argparse.ArgumentParser) -> dict[str, str]:
    """One option per declared setting (:data:`fa_explore.settings.SETTINGS`);
    returns field name -> how to convert what argparse collected."""
    conversions = {}
    for group_name in GROUPS:
        group = parser.add_argument_group(
            f"{group_name} settings (unset ones keep the --config file's or the default value)")
        for setting in in_group(group_name):
            if not setting.cli:
                continue
            name = setting.name
            flags = [f"--{name.replace('_', '-')}"] + ([f"--{name}"] if "_" in name else [])
            common = dict(dest=name, default=argparse.SUPPRESS, help=_help_text(setting))
            if setting.kind == "bool":
                group.add_argument(*flags, action=argparse.BooleanOptionalAction, **common)
                conversions[name] = "plain"
            elif setting.kind == "ints":
                group.add_argument(*flags, nargs="*", metavar="N", **common)
                conversions[name] = "ints"
            else:
                choices = setting.allowed_choices()
                metavar = "{" + ",".join(map(str, choices)) + "}" if choices else None
                group.add_argument(*flags, type=_scalar_parser(setting), metavar=metavar,
                                   **common)
                conversions[name] = "plain"
    parser.add_argument("--rule-options", "--rule_options", dest="rule_options",
                        type=_parse_json_object, metavar="JSON", default=argparse.SUPPRESS,
                        help="rule options as a JSON object, e.g. '{\"alpha\": 0.1}' "
                             "(see also --rule-option and `fa-explore rules`)")
    conversions["rule_options"] = "plain"
    return conversions


EXIT_CODES_HELP = """\
exit codes:
  0    success
  1    unexpected internal error (run again with --debug for the traceback)
  2    invalid arguments, config or file (--config, --out), or saving the run failed
  3    the run diverged
  4    a dataset is not downloaded and cannot be downloaded now (offline)
  5    a sweep ran but some of its points failed (the table says why)
  130  interrupted (Ctrl-C); with --out the partial run is saved
  141  the output pipe was closed"""

# A config file is a few hundred bytes; a saved run's run.json also holds the history
# (about 1 KB an evaluation), so the cap leaves room for long, densely evaluated runs.
CONFIG_MAX_BYTES = 16 * 2**20


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors, ``fa-explore: error: ...``: the usage line of
    ``train`` (one option per RunConfig field) is longer than a screen."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"fa-explore: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    # SUPPRESS: a subcommand's unset --debug keeps a --debug given before the command.
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the traceback of an error instead of one line")
    parser = _Parser(
        prog="fa-explore", epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Learning without weight transport: train feedback-alignment-family "
                    "rules and compare them with backpropagation.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of an error instead of one line")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    train = commands.add_parser(
        "train", help="train one run and print its final metrics", parents=[common],
        epilog=EXIT_CODES_HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train one run, showing progress, then print the final metrics per "
                    "layer.\nExample: fa-explore train --rule fa --dataset digits --epochs 5")
    train.add_argument("--config", metavar="FILE.json", type=Path,
                       help="start from a saved config: a RunConfig JSON file, a saved "
                            "run's run.json, or a saved run's directory (at most "
                            f"{CONFIG_MAX_BYTES // 2**20} MiB)")
    train.add_argument("--rule-option", "--rule_option", dest="rule_option",
                       metavar="KEY=VALUE", action="append", type=_parse_rule_option,
                       default=[], help="set one rule option (repeatable), e.g. alpha=0.1")
    train.add_argument("--out", metavar="DIR", type=Path,
                       help="save the run (config, history, weights) into DIR, created "
                            "and checked before training; Ctrl-C saves the partial run")
    train.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    train.set_defaults(conversions=_add_config_options(train))

    sweep = commands.add_parser(
        "sweep", help="run a grid of runs (in parallel, cached) and print a table",
        parents=[common], epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run every point of a grid, in parallel and cached on disk, then print "
                    "a table (the varied settings, status, final test accuracy, time). "
                    "GRID.yaml (or .json) holds base: (RunConfig fields), grid: (setting: "
                    "list of values) and optionally backend, workers, address, metrics. "
                    "\nExample: fa-explore sweep grid.yaml --out results.csv")
    sweep.add_argument("file", metavar="GRID.yaml", type=Path, help="the sweep file")
    sweep.add_argument("--backend", choices=("local", "dask", "sequential"),
                       help="where the points run (default: the file's, else local)")
    sweep.add_argument("--workers", type=int, metavar="N",
                       help="worker processes (default: the file's, else one per CPU)")
    sweep.add_argument("--address", metavar="URL",
                       help="a Dask scheduler, e.g. tcp://127.0.0.1:8786 (backend dask)")
    sweep.add_argument("--out", metavar="FILE.csv", type=Path,
                       help="write the whole results table as CSV")
    sweep.add_argument("--cache-dir", metavar="DIR", type=Path,
                       help="cache of finished points (default: $FA_EXPLORE_SWEEPS or "
                            "~/.cache/fa_explore/sweeps)")
    sweep.add_argument("--no-cache", action="store_true",
                       help="recompute every point and store nothing")
    sweep.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    commands.add_parser("rules", help="list the learning rules and the knobs they use",
                        parents=[common])
    commands.add_parser("datasets", help="list the datasets", parents=[common])
    settings = commands.add_parser("settings", help="list every setting with its allowed values",
                                   parents=[common])
    settings.add_argument("--markdown", action="store_true",
                          help="print the docs' settings table (docs/settings.md) instead")
    return parser


# ------------------------------------------------------------------ config
_JSON_KINDS = {list: "an array", str: "a string", int: "a number", float: "a number",
               bool: "true or false", type(None): "null"}


def _read_capped(path: Path, label: str) -> bytes:
    """The bytes of the regular file ``path``, refusing anything else or anything over
    CONFIG_MAX_BYTES without reading it whole (``/dev/zero`` never ends; a named
    pipe would block: O_NONBLOCK opens it at once, and fstat then refuses it)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)
                     | getattr(os, "O_BINARY", 0))
    except OSError as exc:
        raise ValueError(f"{label}: cannot read the file ({exc.strerror or exc})") from None
    with open(fd, "rb", closefd=True) as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ValueError(f"{label}: not a regular file (a device, pipe or socket); "
                             "give a JSON file")
        cap = f"larger than {CONFIG_MAX_BYTES // 2**20} MiB, the cap on a config file"
        if info.st_size > CONFIG_MAX_BYTES:
            raise ValueError(f"{label}: {cap} ({info.st_size} bytes)")
        try:
            raw = f.read(CONFIG_MAX_BYTES + 1)  # the size may change after fstat
        except OSError as exc:
            raise ValueError(f"{label}: cannot read the file ({exc.strerror or exc})") \
                from None
    if len(raw) > CONFIG_MAX_BYTES:
        raise ValueError(f"{label}: {cap}")
    return raw


def read_config_file(path: Path) -> RunConfig:
    """A RunConfig from a JSON file (bare config or a saved run's ``run.json``), or a
    saved run's directory. Every problem is a ``ValueError`` naming the file."""
    path = Path(path)
    try:
        is_dir = path.is_dir()
    except OSError:  # e.g. permission denied on a parent: reading reports it
        is_dir = False
    if is_dir:
        if not (path / "run.json").exists():
            raise ValueError(f"--config {path}: a directory without run.json (give a "
                             "RunConfig JSON file or a saved run's directory)")
        path = path / "run.json"
    label = f"--config {path}"
    raw = _read_capped(path, label)
    try:
        text = raw.decode("utf-8-sig")  # a byte-order mark is tolerated
    except UnicodeDecodeError as exc:
        raise ValueError(f"{label}: not UTF-8 text ({exc.reason} at byte {exc.start})") \
            from None
    try:
        data = json.loads(text)
    except RecursionError:
        raise ValueError(f"{label}: not a usable JSON file: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, or an integer of too many digits
        raise ValueError(f"{label}: not valid JSON ({exc})") from None
    if isinstance(data, dict) and "format_version" in data and "config" in data:
        data = data["config"]  # a saved run's run.json
    if not isinstance(data, dict):
        kind = _JSON_KINDS.get(type(data), type(data).__name__)
        raise ValueError(  # noqa: TRY004 - a bad file, not a bad call: exit 2
            f"{label}: expected a JSON object (a RunConfig or a saved run's run.json); "
            f"got {kind}")
    try:
        return RunConfig.from_dict(data)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{label}: {exc}") from None


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """The RunConfig that parsed ``train`` arguments describe (validated)."""
    base = read_config_file(args.config) if args.config else RunConfig()
    changes: dict[str, Any] = {}
    for name, conversion in args.conversions.items():
        if name in vars(args):
            value = getattr(args, name)
            changes[name] = _integers(value, name) if conversion == "ints" else value
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
                   for text, width in zip(row, widths, strict=True)]
        height = max(len(w) for w in wrapped)
        return [(" " * gap).join((w[i] if i < len(w) else "").ljust(width)
                                 for w, width in zip(wrapped, widths, strict=True)).rstrip()
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
    """Every rule with the settings it uses, its options and its defaults, all read
    from the rule classes and the schema's ``rule_flag`` declarations."""
    from .rules import RULES

    flagged = [s for s in SETTINGS.values() if s.rule_flag]
    rows = []
    for name, cls in RULES.items():
        uses = []
        for setting in flagged:
            if getattr(cls, setting.rule_flag):
                extra = ""
                if setting.name == "expansion_ratio" and cls.expansion_ratios:
                    extra = f" ({', '.join(map(str, cls.expansion_ratios))})"
                uses.append(setting.name + extra)
        options = [f"{key}={option.default} ({option.allowed()}): {option.help}"
                   for key, option in rule_option_settings(cls).items()]
        defaults = ", ".join(f"{k}={v}" for k, v in cls.defaults.items())
        rows.append([name, cls.paper, cls.description, ", ".join(cls.models),
                     cls.feedback_kind, ", ".join(uses) or "-", "; ".join(options) or "-",
                     defaults or "-"])
    return format_table(["name", "paper", "description", "models", "feedback", "uses",
                         "options", "defaults"], rows, max_width)


def settings_table(max_width: int | None = None) -> str:
    """Every setting: group, allowed values, default and help (from the schema)."""
    rows = [[s.name, s.group, s.allowed(), _help_text(s).rpartition("(default: ")[2][:-1],
             s.help] for s in SETTINGS.values()]
    return format_table(["setting", "group", "allowed", "default", "meaning"], rows,
                        max_width)


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
def _prepare_out(path: Path) -> list[Path]:
    """Create the ``--out`` directory (with its parents) and check that it can be
    written, before training; returns the folders it created, deepest first."""
    label = f"--out {path}"
    created = []
    try:
        if path.exists() and not path.is_dir():
            raise ValueError(f"{label}: not a directory (a file of that name exists)")
        missing = path
        while not missing.exists() and missing.parent != missing:
            created.append(missing)
            missing = missing.parent
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _remove_empty(created)
        raise ValueError(f"{label}: cannot create the directory "
                         f"({exc.strerror or exc})") from None
    try:
        with tempfile.TemporaryFile(dir=path, prefix=".fa-explore-"):
            pass
    except OSError as exc:
        _remove_empty(created)
        raise ValueError(f"{label}: the directory is not writable "
                         f"({exc.strerror or exc})") from None
    return created


def _remove_empty(folders: Sequence[Path]) -> None:
    """Remove the folders ``_prepare_out`` made, deepest first, while they are empty."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def _save(run, out: Path) -> str | None:
    """Save ``run`` into ``out``; None, or why it could not be saved."""
    try:
        run.save(out)
    except Exception as exc:  # noqa: BLE001 - OSError, or the safetensors writer's errors
        return _one_line(exc.strerror if isinstance(exc, OSError) and exc.strerror
                         else f"{type(exc).__name__}: {exc}")
    return None


def _train(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    out = args.out
    created = _prepare_out(out) if out is not None else []
    try:
        return _train_into(args, cfg, out)
    finally:
        _remove_empty(created)  # a run that never got saved leaves no empty folder


def _train_into(args: argparse.Namespace, cfg: RunConfig, out: Path | None) -> int:
    from . import training

    print(describe_config(cfg.resolve()), flush=True)
    bar = None  # made at the first snapshot, once the data has loaded (or failed to)
    run = None
    begun = 0  # training steps begun: train_iter asks should_stop before each one

    def count_step() -> bool:
        nonlocal begun
        begun += 1
        if bar is not None and begun - 1 > bar.n:
            bar.update(begun - 1 - bar.n)  # tqdm throttles the redraws
        return False

    # train_iter rather than train: the Run is at hand when Ctrl-C arrives.
    try:
        try:
            for snapshot in training.train_iter(cfg, should_stop=count_step):
                run = snapshot.run
                if bar is None and not args.no_progress:
                    from tqdm.auto import tqdm

                    bar = tqdm(total=snapshot.total_steps, unit="step", desc=cfg.rule)
                if bar is not None:
                    training.show_progress(bar, snapshot)
        finally:
            if bar is not None:
                bar.close()
    except KeyboardInterrupt:
        return _interrupted(run, begun, out)
    if run is None:
        raise RuntimeError("training ended without a snapshot")

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
    failed = _save(run, out) if out is not None else None
    if out is not None and failed is None:
        print(f"saved to {out}")
    if run.status == "diverged":
        print(f"fa-explore: run {run.status}: {_one_line(run.message)}", file=sys.stderr)
    else:
        print(f"status: {run.status} ({run.message})")
    if failed is not None:
        print(f"fa-explore: error: --out {out}: could not save the run ({failed}); the "
              "results above are not saved", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_DIVERGED if run.status == "diverged" else EXIT_OK


def _interrupted(run, begun: int, out: Path | None) -> int:
    """Ctrl-C during training: save the partial run (status stopped) into --out."""
    if run is None:
        what = "before training started" + ("; nothing saved" if out is not None else "")
    else:
        where = f"at step {begun} of {run.total_steps}"
        run.status, run.message = "stopped", f"interrupted (Ctrl-C) {where}"
        if out is None:
            what = f"{where}; not saved (give --out DIR to keep a partial run)"
        else:
            failed = _save(run, out)
            what = (f"{where}; partial run saved to {out}" if failed is None
                    else f"{where}; could not save the partial run to {out} ({failed})")
    print(f"fa-explore: interrupted {what}", file=sys.stderr)
    return EXIT_INTERRUPTED


def _one_line(text: Any) -> str:
    return " ".join(str(text).split())


def _failure(exc: Exception) -> tuple[int, str]:
    """The exit code and the one-line message of an exception that reached main."""
    data = sys.modules.get(f"{__package__}.data")  # not imported: not a data error
    if data is not None and isinstance(exc, data.DataUnavailableError):
        return EXIT_DATA_UNAVAILABLE, _one_line(exc)
    if isinstance(exc, ValueError):
        # Invalid configs and inputs: the message names the field, option or file.
        return EXIT_USAGE, _one_line(exc)
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return EXIT_INTERNAL, (f"out of memory ({_one_line(exc) or type(exc).__name__}); "
                               "try a smaller --hidden, --batch-size or --train-size")
    detail = _one_line(exc)
    return EXIT_INTERNAL, (f"internal error: {type(exc).__name__}"
                           f"{': ' + detail if detail else ''} (run with --debug for the "
                           "traceback)")


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"fa-explore: warning: {_one_line(message)}", file=sys.stderr)


def _quiet_stdout() -> None:
    """After a broken pipe: point stdout at devnull so that the exit flush is quiet."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def _sweep(args: argparse.Namespace) -> int:
    """``fa-explore sweep GRID.yaml``: every error in the file or the grid is one
    ValueError naming the file (exit 2, from ``main``); exit 5 when the sweep ran
    but some of its points failed (their rows say why)."""
    import time

    from .sweep import expand_grid, load_sweep_file, sweep

    spec = load_sweep_file(args.file)
    try:
        plan = expand_grid(spec["base"], spec["grid"])
    except ValueError as exc:
        raise ValueError(f"{args.file}: {exc}") from None
    backend = args.backend or spec["backend"]
    address = args.address or spec["address"]
    if address is not None and backend != "dask":
        raise ValueError(f"{args.file}: address {address} needs backend dask; got {backend}")
    workers = args.workers if args.workers is not None else spec["workers"]
    if workers is not None and workers < 1:
        raise ValueError(f"--workers must be at least 1; got {workers}")
    print(f"sweep {args.file}: {len(plan.points)} points ({len(plan.valid_points)} valid) "
          f"over {', '.join(plan.varied) or 'nothing'}, backend {backend}", flush=True)
    started = time.perf_counter()
    try:
        table = sweep(spec["base"], spec["grid"], backend=backend, address=address,
                      workers=workers, cache_dir=args.cache_dir, cache=not args.no_cache,
                      metrics=spec["metrics"], progress=not args.no_progress)
    except (ImportError, OSError) as exc:  # no dask installed; a scheduler out of reach
        raise ValueError(f"{args.file}: backend {backend}: {exc}") from None
    elapsed = time.perf_counter() - started
    columns = [*plan.varied, "status", "test_acc", "wall_time"]
    shown = [c for c in columns if c in table.columns]
    print()
    print(format_table([("time_s" if c == "wall_time" else c) for c in shown],
                       table[shown].itertuples(index=False, name=None)))
    problems = table[table["status"].isin(["failed", "invalid"])]
    if len(problems):
        print()
    for (status, message), group in problems.groupby(
            ["status", problems["message"].map(lambda m: str(m).splitlines()[0])], sort=False):
        print(f"{status} ({len(group)} point{'s' * (len(group) > 1)}): {message}")
    counts = table["status"].value_counts()
    print(f"\n{len(table)} points: " + ", ".join(f"{n} {s}" for s, n in counts.items())
          + f" ({int(table['cached'].sum())} from the cache) in {elapsed:.1f} s")
    if args.out is not None:
        try:
            table.to_csv(args.out, index=False)
        except OSError as exc:
            raise ValueError(f"--out {args.out}: cannot write ({exc.strerror or exc})") from None
        print(f"wrote {args.out}")
    return EXIT_SWEEP_FAILED if (table["status"] == "failed").any() else EXIT_OK


def _command(argv: Sequence[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    if args.command == "train":
        return _train(args)
    if args.command == "sweep":
        return _sweep(args)
    if args.command == "rules":
        print(rules_table())
    elif args.command == "datasets":
        print(datasets_table())
    elif args.command == "settings":
        if args.markdown:
            from .settings import settings_markdown

            print(settings_markdown(), end="")
        else:
            print(settings_table())
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``fa-explore`` and ``python -m fa_explore``; returns the exit code
    (see the module docstring) and prints every failure as one line on stderr."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv  # read before parsing: a failing parser is a bug too
    try:
        with warnings.catch_warnings():
            if not debug:
                warnings.showwarning = _show_warning  # one line each, too
            return _command(argv)
    except SystemExit as exc:  # argparse: help, version or a one-line usage error
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE if exc.code else EXIT_OK
    except KeyboardInterrupt:  # outside training (which saves a partial run)
        print("fa-explore: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _quiet_stdout()
        return EXIT_BROKEN_PIPE
    except Exception as exc:
        if debug:
            raise
        code, message = _failure(exc)
        print(f"fa-explore: error: {message}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
