"""The dashboard's Sweep tab without widgets: what can be varied, the sweep's
points, a worker thread running :func:`fa_explore.iter_sweep`, and the summary
its figure is drawn from (so all of it is testable without a browser).

What can be varied comes from the settings schema (:data:`~fa_explore.settings.SETTINGS`):
numeric settings with bounds (a range: from, to, points) and settings with a list
of choices, booleans included (a list of choices); the seed is not one of them,
it is the sweep's third field (``seeds`` runs of every point, for a band).

Threads follow :class:`~fa_explore.app.session.TrainingSession`: the worker
publishes an immutable :class:`SweepView` (the rows so far, as read-only
mappings, and the status) under the session's lock and calls ``on_change``; the
dashboard's renderer thread, the only one writing widgets, draws from
``session.view``. :meth:`SweepSession.stop` returns at once: the sweep's
``should_stop`` cancels the points not started, and a point training in this
process (the ``sequential`` backend) stops at its next step; the ``local``
backend's workers are told to stop and are ended if they do not.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd

from ..config import RunConfig, field_names
from ..settings import MAX_SEED, SETTINGS, Setting, short_repr
from ..sweep import BACKENDS, iter_sweep
from .controls import change_config, plain_message, ui_range
from .session import join_worker, log

# The dashboard's sweep runs on the student's kernel (2 shared cores on a small
# server): small by default, and bounded.
MAX_SWEEP_RUNS = 24  # grid points × seeds in one sweep from the dashboard
MAX_SWEEP_SEEDS = 5
DEFAULT_POINTS = 3
DEFAULT_SEEDS = 1
DEFAULT_EPOCHS = 2  # each point's epochs, unless epochs is what the sweep varies
DEFAULT_BACKEND = "sequential"  # in this process: Stop stops the running point at once
LOCAL_WORKERS = 2  # processes of the local backend (each imports torch: seconds, memory)
SEED = "seed"  # the band's field, never an axis
# Statuses whose final metrics are a result (a diverged run's last evaluation
# counts, as in trainability maps); failed and invalid points are failures.
FAILED = ("failed", "invalid")
STATUSES = ("ready", "running", "stopping", "finished", "stopped", "error")

ChangeListener = Callable[["SweepSession"], None]


# ------------------------------------------------------------------ axes
@dataclass(frozen=True)
class Axis:
    """A setting a sweep can vary: ``numeric`` (a range) or with ``choices``."""

    setting: Setting
    numeric: bool
    choices: tuple[Any, ...] = ()

    @property
    def name(self) -> str:
        return self.setting.name

    @property
    def label(self) -> str:
        return self.setting.label

    @property
    def integer(self) -> bool:
        return self.setting.kind == "int"

    @property
    def log(self) -> bool:
        """Whether its points are spaced on a log scale by default (the schema's
        log slider: learning rate, gains, batch size)."""
        return self.setting.control == "log_slider"

    def default_range(self, config: RunConfig | None = None) -> tuple[float, float]:
        """``(from, to)``: the slider's range (widened to hold ``config``'s value),
        moved inside open bounds."""
        s = self.setting
        low, high = ui_range(s, None if config is None else getattr(config, s.name))
        if s.exclusive_minimum and s.minimum is not None and low <= s.minimum:
            low = s.minimum + 0.1 * (high - low)
        if s.exclusive_maximum and s.maximum is not None and high >= s.maximum:
            high = s.maximum - 0.1 * (high - low)
        if self.integer:
            low, high = math.ceil(low), math.floor(high)
        return low, high


def sweep_axes() -> dict[str, Axis]:
    """Every setting a sweep can vary, by name, in the schema's order: numeric
    settings with both bounds, and settings with choices (booleans too)."""
    axes = {}
    for name, setting in SETTINGS.items():
        if name == SEED:
            continue
        if setting.kind == "bool":
            axes[name] = Axis(setting, False, (False, True))
        elif setting.kind == "str" and setting.allowed_choices() is not None:
            axes[name] = Axis(setting, False, setting.allowed_choices())
        elif setting.kind in ("int", "float") and (
                setting.minimum is not None and setting.maximum is not None):
            axes[name] = Axis(setting, True)
    return axes


def _axis(name: str, where: str) -> Axis:
    axes = sweep_axes()
    if name not in axes:
        raise ValueError(f"{where} must be one of {', '.join(axes)}; got {short_repr(name)}")
    return axes[name]


def axis_values(name: str, start: float | None = None, stop: float | None = None,
                points: int | None = None, choices: Sequence[Any] | None = None,
                log: bool | None = None) -> tuple[Any, ...]:
    """The values a sweep gives setting ``name``: ``points`` values from ``start``
    to ``stop`` (evenly spaced, or on a log scale with ``log``, by default for
    the schema's log sliders; integers rounded, repeats dropped) for a numeric
    setting, or ``choices`` (in order, repeats dropped) for one with choices.
    Each value is checked by the schema: ``ValueError`` naming the setting and
    what it allows."""
    axis = _axis(name, "the sweep's setting")
    setting = axis.setting
    where = "sweep"
    if not axis.numeric:
        if choices is None or len(choices) == 0:
            raise ValueError(f"sweep.{name} needs at least one value; choose from "
                             f"{', '.join(map(str, axis.choices))}")
        values = [setting.coerce(v, where) for v in choices]
        for v in values:
            if v not in axis.choices:
                raise setting.error(v, where)
        return tuple(dict.fromkeys(values))
    if isinstance(points, bool) or not isinstance(points, int) or not (
            1 <= points <= MAX_SWEEP_RUNS):
        raise ValueError(f"sweep points of {name} must be an integer in [1, {MAX_SWEEP_RUNS}]; "
                         f"got {short_repr(points)}")
    ends = []
    for end, value in (("from", start), ("to", stop)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(
                value):
            raise ValueError(f"sweep {end} of {name} must be a number; got {short_repr(value)}")
        ends.append(setting.coerce(value, where))
    low, high = (float(e) for e in ends)
    log = axis.log if log is None else bool(log)
    if points == 1:
        raw = np.array([low])
    elif log:
        if low <= 0 or high <= 0:
            raise ValueError(f"sweep from and to of {name} must be > 0 on a log scale; got "
                             f"{low:g} and {high:g}")
        raw = np.geomspace(low, high, points)
    else:
        raw = np.linspace(low, high, points)
    raw[0], raw[-1] = low, (high if points > 1 else low)  # exact ends, no rounding drift
    if axis.integer:
        values = [setting.coerce(int(round(v)), where) for v in raw]
    else:
        values = [setting.coerce(float(f"{v:.6g}") if 0 < i < points - 1 else float(v), where)
                  for i, v in enumerate(raw)]
    return tuple(dict.fromkeys(values))


def metric_choices(config: RunConfig) -> tuple[str, ...]:
    """The final metrics a sweep of ``config`` can plot: losses and accuracies,
    then every per-layer column of its network (``weight_angle/2`` ...)."""
    from ..sweep import _HEAD_METRICS

    n_layers = len(config.hidden) + 1 + (len(config.channels) if config.model == "cnn" else 0)
    layered = [f"{family}/{layer}" for family in ("weight_angle", "grad_angle", "norm_ratio",
                                                  "conservation")
               for layer in range(1, n_layers + 1)]
    return (*_HEAD_METRICS, *layered)


# ------------------------------------------------------------------ spec
@dataclass(frozen=True)
class SweepSpec:
    """One dashboard sweep: the base config, one or two varied settings with
    their values, how many seeds each point runs, the metric plotted, the
    backend. Build it with :meth:`make` (which checks everything)."""

    base: RunConfig
    x: str
    x_values: tuple[Any, ...]
    y: str | None = None
    y_values: tuple[Any, ...] = ()
    seeds: tuple[int, ...] = (0,)
    metric: str = "test_acc"
    backend: str = DEFAULT_BACKEND
    workers: int | None = None

    @classmethod
    def make(cls, base: RunConfig, x: str, x_values: Sequence[Any], y: str | None = None,
             y_values: Sequence[Any] | None = None, *, seeds: int = DEFAULT_SEEDS,
             metric: str = "test_acc", backend: str = DEFAULT_BACKEND,
             epochs: int | None = DEFAULT_EPOCHS) -> SweepSpec:
        """A checked spec: ``seeds`` runs per point (seeds from the base's, upwards),
        at most :data:`MAX_SWEEP_RUNS` runs in all; ``epochs`` replaces the base's
        (unless epochs is varied; None keeps it). ``ValueError`` naming the field."""
        _axis(x, "sweep setting 1")
        if y is not None:
            _axis(y, "sweep setting 2")
            if y == x:
                raise ValueError(f"sweep setting 2 must differ from setting 1 ({x})")
            if not y_values:
                raise ValueError(f"sweep.{y} needs at least one value")
        if not x_values:
            raise ValueError(f"sweep.{x} needs at least one value")
        if isinstance(seeds, bool) or not isinstance(seeds, int) or not (
                1 <= seeds <= MAX_SWEEP_SEEDS):
            raise ValueError(f"sweep seeds must be an integer in [1, {MAX_SWEEP_SEEDS}]; got "
                             f"{short_repr(seeds)}")
        if base.seed + seeds - 1 > MAX_SEED:
            raise ValueError(f"sweep seeds go past the largest seed {MAX_SEED}")
        if backend not in BACKENDS:
            raise ValueError(f"sweep backend must be one of {', '.join(BACKENDS)}; got "
                             f"{short_repr(backend)}")
        choices = metric_choices(base)
        if metric not in choices:
            raise ValueError(f"sweep metric must be one of {', '.join(choices)}; got "
                             f"{short_repr(metric)}")
        n = len(x_values) * (len(y_values) if y is not None else 1) * seeds
        if n > MAX_SWEEP_RUNS:
            raise ValueError(f"the sweep has {n} runs (points × seeds); at most "
                             f"{MAX_SWEEP_RUNS} run from the dashboard (use fa_explore.sweep "
                             "in a notebook for more)")
        if epochs is not None and "epochs" not in (x, y):
            base = base.replace(epochs=epochs)
        return cls(base, x, tuple(x_values), y, tuple(y_values or ()) if y else (),
                   tuple(range(base.seed, base.seed + seeds)), metric, backend,
                   LOCAL_WORKERS if backend != "sequential" else None)

    @property
    def cells(self) -> list[tuple[int, int | None, int]]:
        """``(x index, y index or None, seed index)`` of each run, in run order."""
        ys = range(len(self.y_values)) if self.y is not None else [None]
        return list(itertools.product(range(len(self.x_values)), ys, range(len(self.seeds))))

    @property
    def n_runs(self) -> int:
        """Runs in all: grid points × seeds."""
        return len(self.cells)

    def points(self) -> list[dict[str, Any]]:
        """The sweep's explicit points (changes to the base), in :attr:`cells` order.
        A rule change clears what the new rule does not use (as the rule control
        does), so ``rule`` × anything needs no filtering; a combination still
        impossible is kept as is and becomes an invalid row with the reason."""
        base_values = self.base.to_dict()
        out = []
        for i, j, k in self.cells:
            changes = {self.x: self.x_values[i], SEED: self.seeds[k]}
            if self.y is not None:
                changes[self.y] = self.y_values[j]
            try:
                cfg, _ = change_config(self.base, **dict(changes))
            except (ValueError, TypeError):
                out.append(changes)
                continue
            values = cfg.to_dict()
            diff = {n: getattr(cfg, n) for n in field_names()
                    if values[n] != base_values[n] and n not in changes}
            out.append({**changes, **diff})
        return out


# --------------------------------------------------------------- summary
@dataclass(frozen=True)
class SweepSummary:
    """The sweep's results per grid point, for the figure: ``cells`` has one row
    per (x, y) point in grid order, with columns ``x_index``, ``y_index`` (None
    for a curve), ``mean``, ``min``, ``max`` of the metric over the seeds done,
    ``n`` (seeds with a value), ``failed`` (seeds failed or invalid), ``pending``
    (seeds not done) and ``message`` (the first failure's reason)."""

    x: str
    x_values: tuple[Any, ...]
    y: str | None
    y_values: tuple[Any, ...]
    metric: str
    seeds: int
    log_x: bool
    numeric_x: bool
    cells: pd.DataFrame = field(repr=False)

    def grid(self, column: str = "mean") -> np.ndarray:
        """``column`` as a matrix: rows are y values, columns x values."""
        rows = max(1, len(self.y_values))
        out = np.full((rows, len(self.x_values)), np.nan, dtype=float)
        for cell in self.cells.itertuples():
            out[0 if cell.y_index is None else cell.y_index, cell.x_index] = getattr(cell,
                                                                                    column)
        return out


def summarize(spec: SweepSpec, rows: Sequence[Mapping[str, Any]]) -> SweepSummary:
    """Group the rows that have landed (sweep rows, ``row["point"]`` the index in
    :meth:`SweepSpec.points`) by grid point: mean, min and max of the metric over
    seeds, and how many seeds failed or are still to come."""
    cells = spec.cells
    groups: dict[tuple[int, int | None], dict[str, Any]] = {}
    for i, j, _ in cells:
        groups.setdefault((i, j), {"values": [], "failed": 0, "done": 0, "message": ""})
    for row in rows:
        index = row.get("point")
        if not isinstance(index, int) or not 0 <= index < len(cells):
            continue
        i, j, _ = cells[index]
        group = groups[(i, j)]
        group["done"] += 1
        value = row.get(spec.metric)
        if row.get("status") in FAILED:
            group["failed"] += 1
            group["message"] = group["message"] or str(row.get("message") or row["status"])
        elif isinstance(value, (int, float)) and math.isfinite(value):
            group["values"].append(float(value))
    table = []
    for (i, j), group in groups.items():
        values = group["values"]
        table.append({"x_index": i, "y_index": j,
                      "mean": float(np.mean(values)) if values else math.nan,
                      "min": min(values) if values else math.nan,
                      "max": max(values) if values else math.nan,
                      "n": len(values), "failed": group["failed"],
                      "pending": len(spec.seeds) - group["done"], "message": group["message"]})
    axis = sweep_axes()[spec.x]
    log_x = axis.numeric and axis.log and all(v > 0 for v in spec.x_values)
    return SweepSummary(spec.x, spec.x_values, spec.y, spec.y_values, spec.metric,
                        len(spec.seeds), log_x, axis.numeric,
                        pd.DataFrame(table, columns=["x_index", "y_index", "mean", "min", "max",
                                                     "n", "failed", "pending", "message"]))


# --------------------------------------------------------------- session
@dataclass(frozen=True, eq=False)
class SweepView:
    """What the Sweep tab shows: the spec, the rows landed so far (read-only
    mappings, in arrival order), the status and a message. Never changed."""

    generation: int
    spec: SweepSpec | None
    rows: tuple[Mapping[str, Any], ...]
    status: str
    message: str

    @property
    def done(self) -> int:
        return len(self.rows)

    @property
    def failed(self) -> int:
        return sum(1 for r in self.rows if r.get("status") in FAILED)

    def summary(self) -> SweepSummary | None:
        """The rows so far per grid point (:func:`summarize`); None before a sweep."""
        return None if self.spec is None else summarize(self.spec, self.rows)


class SweepSession:
    """Runs one dashboard sweep at a time in a worker thread.

    Methods are called from the UI (kernel) thread and never wait for the
    worker. ``on_change`` is called (from the worker or the caller, under the
    session's lock) after every new :attr:`view`. ``cache_dir``/``cache`` go to
    :func:`~fa_explore.iter_sweep` (default: its on-disk cache, so a sweep run
    again shows its finished points at once). ``hooks["row"]`` is called by the
    worker after each published row (tests park it there).
    """

    def __init__(self, *, on_change: ChangeListener | None = None,
                 cache_dir: str | Path | None = None, cache: bool = True):
        self.on_change = on_change
        self.cache_dir, self.cache = cache_dir, cache
        self.hooks: dict[str, Callable[[], None]] = {}
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self.generation = 0
        self.view = SweepView(0, None, (), "ready", "choose what to vary and press Run sweep")

    @property
    def active(self) -> bool:
        """A sweep is going (running, or stopping)."""
        return self.view.status in ("running", "stopping")

    def start(self, spec: SweepSpec) -> int:
        """Start ``spec`` in a new worker thread; returns its generation.
        ``ValueError`` while a sweep is going."""
        with self._lock:
            if self.active:
                raise ValueError("A sweep is going: Stop it first.")
            self.generation += 1
            generation = self.generation
            self._stop = stop = threading.Event()
            self._publish(SweepView(generation, spec, (), "running",
                                    f"0 of {spec.n_runs} runs done"))
            worker = threading.Thread(target=self._work, args=(generation, spec, stop),
                                      name=f"fx-sweep-{generation}", daemon=True)
            self._worker = worker
            worker.start()
            return generation

    def stop(self) -> bool:
        """Cancel the points not done (returns at once). False if none is going."""
        with self._lock:
            if not self.active:
                return False
            self._stop.set()
            view = self.view
            self._publish(SweepView(view.generation, view.spec, view.rows, "stopping",
                                    "stopping: the points not done are cancelled"))
            return True

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait for the worker to end (tests, closing). True if none is left."""
        return join_worker(self._worker, timeout)

    def close(self, timeout: float | None = 10.0) -> None:
        """Stop the sweep and join its thread (``timeout`` bounds the join)."""
        with self._lock:
            self._stop.set()
            self.generation += 1  # nothing of the old sweep is published after this
        self.wait_idle(timeout)

    def _publish(self, view: SweepView) -> None:
        with self._lock:
            if view.generation != self.generation:
                return
            self.view = view
            if self.on_change is not None:
                try:
                    self.on_change(self)
                except Exception:  # noqa: BLE001 - a drawing error must not end the sweep
                    log.exception("sweep listener failed")

    def _work(self, generation: int, spec: SweepSpec, stop: threading.Event) -> None:
        rows: list[Mapping[str, Any]] = []
        started = time.perf_counter()
        rows_iter = None
        try:
            rows_iter = iter_sweep(spec.base, spec.points(), backend=spec.backend,
                                   workers=spec.workers, cache_dir=self.cache_dir,
                                   cache=self.cache, should_stop=stop.is_set)
            for row in rows_iter:
                rows.append(MappingProxyType(dict(row)))
                with self._lock:
                    status = "stopping" if stop.is_set() else "running"
                    failed = sum(1 for r in rows if r.get("status") in FAILED)
                    text = f"{len(rows)} of {spec.n_runs} runs done" + (
                        f", {failed} failed" if failed else "")
                    self._publish(SweepView(generation, spec, tuple(rows), status, text))
                hook = self.hooks.get("row")
                if hook is not None:
                    hook()
                if stop.is_set():
                    break
            rows_iter.close()
            failed = sum(1 for r in rows if r.get("status") in FAILED)
            note = f", {failed} failed (hover a point for why)" if failed else ""
            seconds = time.perf_counter() - started
            if stop.is_set() and len(rows) < spec.n_runs:
                status, text = "stopped", (f"stopped: {len(rows)} of {spec.n_runs} runs done, "
                                           f"the rest cancelled{note}")
            else:
                status, text = "finished", (f"{len(rows)} runs in {seconds:.0f} s{note}")
            self._publish(SweepView(generation, spec, tuple(rows), status, text))
        except Exception as exc:  # noqa: BLE001 - shown in plain words, logged in full
            log.exception("sweep %d failed", generation)
            self._publish(SweepView(generation, spec, tuple(rows), "error",
                                    f"the sweep failed: {plain_message(exc)}"))
        finally:
            if rows_iter is not None:
                rows_iter.close()


__all__ = ["MAX_SWEEP_RUNS", "Axis", "SweepSession", "SweepSpec", "SweepSummary", "SweepView",
           "axis_values", "metric_choices", "summarize", "sweep_axes"]
