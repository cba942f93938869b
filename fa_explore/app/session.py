"""The dashboard's state and threads, with no widgets (so it is testable alone).

:class:`TrainingSession` holds the current :class:`~fa_explore.RunConfig`, the
status shown in the status line, a generation counter, the pinned runs and the
threads: one training worker per run (``fa_explore.train_iter``), one landscape
thread per run that recomputes the loss surface on the trajectory's PCA plane
every few seconds and once at the end, and a background warm-up.

With ``seeds`` > 1 the worker trains an ensemble (:func:`seed_configs`: seed,
seed+1, … on the same data) with :func:`fa_explore.train_many_iter`; member 0 is
"the run" of the view (scatter, regions, landscape, pins, export), and the view
also holds every member's rows for the curves' mean and band.

Consumers never read a run's growing lists: at every evaluation the worker
publishes a :class:`RunView`, an immutable snapshot (a tuple of history rows, the
run's status, step and the settings it runs with), and readers take
``session.view``. Every event carries the generation it belongs to and events of
an older generation are dropped, so a run replaced by a newer one can never draw
over it.

Nothing the UI calls blocks on a worker: :meth:`TrainingSession.stop` asks the
worker to stop (it ends within one training step) and returns at once; a new
run's worker first waits for its predecessor, in its own thread. Every state
change (status, generation, published view, pause) happens under one lock, and
tests can park the worker at named points (:attr:`TrainingSession.hooks`).
"""

from __future__ import annotations

import io
import logging
import math
import re
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from ..config import RunConfig, field_names
from ..data import DATASETS, Dataset, dataset_from_config, dataset_options
from ..ensemble import train_many_iter
from ..settings import APP_SETTINGS, MAX_PARAMETERS, MAX_SEED, SETTINGS
from ..threads import describe
from ..training import Run, Snapshot, train_iter
from .controls import dataset_available, difference_labels, format_value, plain_message

STATUSES = ("ready", "starting", "running", "paused", "stopped", "finished", "diverged",
            "error", "loaded")
ACTIVE = ("starting", "running", "paused")
LIVE_SETTINGS = tuple(name for name, s in SETTINGS.items() if s.live)

# A library only names its logger: where records go (the page's entry point sends
# them to the kernel's own stderr, i.e. the server's log) is the host's choice, and
# propagation stays on so hosts and pytest's caplog see them.
log = logging.getLogger(__name__)

StatusListener = Callable[["TrainingSession"], None]
SnapshotListener = Callable[["TrainingSession", Snapshot], None]
LandscapeListener = Callable[["TrainingSession", Any, Any], None]

# The warm-up builds at most this small a version of the configured model: it only
# has to run the code paths once, never allocate what a link asks for.
WARM_UP_WIDTH = 32
WARM_UP_CHANNELS = 8
WARM_UP_MAX_PARAMETERS = 1_000_000

# What an uploaded run may hold (a zip from Export: run.json, weights.safetensors).
MAX_UPLOAD_BYTES = 512 * 2**20
MAX_MEMBER_BYTES = {"run.json": 64 * 2**20,
                    "weights.safetensors": 4 * (MAX_PARAMETERS + 10_000) + 2**20}


class _Cancelled(Exception):
    """A wait given up because its run was stopped (never shown)."""


@dataclass(frozen=True)
class LiveChange:
    """A live setting changed while the run trained (applied before ``step``)."""

    step: int
    name: str
    old: Any
    new: Any

    def text(self) -> str:
        return (f"{SETTINGS[self.name].label} {format_value(self.old)} → "
                f"{format_value(self.new)} at step {self.step:,}")


@dataclass(frozen=True, eq=False)
class RunView:
    """An immutable snapshot of a run for the renderer, pins and export.

    ``rows`` is a tuple of the history rows at that moment (the rows themselves are
    never changed once appended); ``request`` is the config as asked (rule defaults
    left as None), with live changes applied; ``status`` the run's status then.
    ``run`` gives the model and rule (read, never changed, by consumers).
    """

    generation: int
    run: Run
    request: RunConfig
    rows: tuple[dict[str, Any], ...]
    status: str
    step: int
    total_steps: int
    live_changes: tuple[LiveChange, ...] = ()
    source: str = "trained"  # or "loaded" (uploaded)
    message: str = ""
    # An ensemble of seeds: how many, and each member's rows (member 0's are ``rows``).
    seeds: int = 1
    member_rows: tuple[tuple[dict[str, Any], ...], ...] = ()
    member_status: tuple[str, ...] = ()  # "waiting" for a member not started yet

    @property
    def config(self) -> RunConfig:
        """The run's resolved config (as it started)."""
        return self.run.config

    @cached_property
    def history(self) -> pd.DataFrame:
        return pd.DataFrame(list(self.rows))

    @property
    def final(self) -> dict[str, Any]:
        return dict(self.rows[-1]) if self.rows else {}

    @property
    def n_classes(self) -> int:
        return int(self.run.model.layers[-1].weight.shape[0])


@dataclass
class PinnedEntry:
    """A run kept for comparison: its config (for the legend) and its history."""

    config: RunConfig
    history: pd.DataFrame
    status: str
    generation: int  # of the run: a run is pinned once
    view: RunView | None = None
    elapsed: float = math.nan

    @property
    def dataset(self) -> str:
        return self.config.dataset


@dataclass(frozen=True)
class Progress:
    """Steps done of all steps; with ``seeds`` > 1 the steps of every seed, summed."""

    step: int
    total_steps: int
    elapsed: float  # seconds of training, pauses excluded
    threads: str = ""  # the thread policy's choice for the run, in words
    seeds: int = 1

    @property
    def fraction(self) -> float:
        return self.step / self.total_steps if self.total_steps else 0.0

    @property
    def eta(self) -> float | None:
        """Seconds left at the pace so far (None before the first step)."""
        if self.step <= 0 or not self.total_steps:
            return None
        return self.elapsed / self.step * (self.total_steps - self.step)


def format_seconds(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "–"
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(
        value)


def chance_warning(rows: Sequence[dict[str, Any]], n_classes: int) -> str:
    """A warning when the test accuracy fell back to chance (1/n_classes) after
    having been clearly above it (e.g. SGD at lr 1 on BP: 90%, then 21% on digits);
    empty otherwise. "Near chance" is within 15% of the way from chance to 100%,
    "clearly above" at least 30% of the way."""
    accs = [r["test_acc"] for r in rows if _finite(r.get("test_acc"))]
    if len(accs) < 3 or n_classes < 2:
        return ""
    chance = 1.0 / n_classes
    peak, last = max(accs), accs[-1]
    if peak >= chance + 0.3 * (1 - chance) and last <= chance + 0.15 * (1 - chance):
        return (f"test accuracy fell to {last:.0%}, near chance ({chance:.0%} for "
                f"{n_classes} classes), after reaching {peak:.0%}: the learning rate is "
                "probably too high")
    return ""


def divergence_text(view: RunView) -> str:
    """What the status line says about a diverged run (the badge says "diverged")."""
    run = view.run
    step = run.diverged_step if run.diverged_step is not None else view.step
    rows = [r for r in view.rows if _finite(r.get("train_loss"))]
    lr = run.config.lr
    hint = f"Lower the learning rate (now {lr:g})." if lr is not None else (
        "Lower the learning rate.")
    last = view.rows[-1].get("train_loss") if view.rows else None
    if rows and last is not None and view.rows[-1].get("step") == step and _finite(last):
        return (f"at step {step:,}: the training loss reached {last:.3g} (it started at "
                f"{rows[0]['train_loss']:.3g}). {hint}")
    return f"at step {step:,}: the training loss became infinite or NaN. {hint}"


def seed_configs(cfg: RunConfig, seeds: int) -> list[RunConfig]:
    """The configs of an ensemble of ``seeds`` seeds: ``cfg`` itself, then ``cfg``
    with seed+1, seed+2, …, each on ``cfg``'s data (its data seed fixed at ``cfg``'s),
    so that the band shows what the seed of the model, feedback and batch order
    changes. ``ValueError`` when a seed would pass the largest allowed."""
    seeds = APP_SETTINGS["seeds"].coerce(seeds, where="dashboard")
    if seeds == 1:
        return [cfg]
    if cfg.seed + seeds - 1 > MAX_SEED:
        raise ValueError(f"{seeds} seeds from seed {cfg.seed:,} go past the largest seed "
                         f"({MAX_SEED:,}): lower the seed or the number of seeds")
    data_seed = cfg.seed if cfg.data_seed is None else cfg.data_seed
    return [cfg] + [cfg.replace(seed=cfg.seed + k, data_seed=data_seed)
                    for k in range(1, seeds)]


def seeds_text(view: RunView) -> str:
    """What the status line adds about an ensemble's seeds (empty for one run): the
    mean final test accuracy and how many seeds diverged."""
    if view.seeds <= 1 or not view.member_rows:
        return ""
    finals = [rows[-1] for rows in view.member_rows if rows]
    accs = [r["test_acc"] for r in finals if _finite(r.get("test_acc"))]
    text = f" (seed {view.config.seed:,}"
    if accs:
        text += f"; mean of {view.seeds} seeds {sum(accs) / len(accs):.1%}"
    text += ")"
    diverged = view.member_status.count("diverged")
    return text + (f"; {diverged} of {view.seeds} seeds diverged" if diverged else "")


def warm_up_config(cfg: RunConfig) -> RunConfig | None:
    """A small version of ``cfg`` for the warm-up: same rule, data and optimizer,
    at most two hidden layers of :data:`WARM_UP_WIDTH` (and one convolution), so
    it never allocates what a link asks for. None when even that is too big."""
    try:
        small = cfg.replace(
            hidden=tuple(min(w, WARM_UP_WIDTH) for w in cfg.hidden[:2]),
            channels=tuple(min(c, WARM_UP_CHANNELS) for c in cfg.channels[:1]) or (
                cfg.channels if cfg.model != "cnn" else (WARM_UP_CHANNELS,)),
            eval_size=min(cfg.eval_size, 256), epochs=1, hessian_every=None)
    except ValueError:
        return None
    if small.parameter_count() > WARM_UP_MAX_PARAMETERS:
        return None
    return small


def join_worker(worker: threading.Thread | None, timeout: float | None) -> bool:
    """Join ``worker`` for at most ``timeout`` seconds; True when no worker is left."""
    if worker is not None and worker.is_alive():
        worker.join(timeout)
    return worker is None or not worker.is_alive()


class TrainingSession:
    """One dashboard's training state: config, status, generation, pinned runs and
    the worker threads. Methods are called from the UI (kernel) thread and never
    wait for a worker; listeners are called from the worker threads, under the
    session's lock (so an event can never overtake the state change it reports).

    ``landscape_interval`` (seconds) sets how often the loss surface is recomputed
    while a run trains; ``None`` turns the landscape off. ``hooks`` maps a point's
    name to a callable the worker calls there (tests park the worker with them):
    ``"loaded"`` (data loaded), ``"snapshot"`` (a view was published), ``"parked"``
    (about to wait while paused), ``"before_end"`` (training loop left, outcome not
    yet set) and ``"warm_up"`` (the warm-up is about to build its model).
    """

    MAX_PINNED = 6
    # How long a new run's worker waits for the previous one to end (a stuck
    # download cannot be cut) before it goes ahead without it.
    PREVIOUS_TIMEOUT = 10.0

    def __init__(self, config: RunConfig | None = None, *,
                 on_status: StatusListener | None = None,
                 on_snapshot: SnapshotListener | None = None,
                 on_landscape: LandscapeListener | None = None,
                 landscape_interval: float | None = 3.0, landscape_first: float = 0.5,
                 landscape_batch: int = 256, landscape_resolution: int = 25,
                 seeds: int = 1):
        self.config = config or RunConfig()
        # How many seeds Train trains (a dashboard setting: APP_SETTINGS["seeds"]).
        self.seeds = APP_SETTINGS["seeds"].coerce(seeds, where="dashboard")
        self.status = "ready"
        self.message = "pick a rule and press Train"
        self.warning = ""  # e.g. accuracy back at chance; shown beside the status
        self.generation = 0
        self.view: RunView | None = None
        self.pinned: list[PinnedEntry] = []
        self.on_status, self.on_snapshot, self.on_landscape = on_status, on_snapshot, on_landscape
        self.landscape_interval = landscape_interval
        self.landscape_first = landscape_first
        self.landscape_batch = landscape_batch
        self.landscape_resolution = landscape_resolution
        self.hooks: dict[str, Callable[[], None]] = {}
        self._lock = threading.RLock()  # every state change and listener call
        self._worker: threading.Thread | None = None
        self._worker_done = True  # the current generation's worker has left training
        self._threads: list[threading.Thread] = []
        self._stop_event = threading.Event()
        self._resume_event = threading.Event()
        self._stop_reason = ""
        self._step_pending = False
        self._live_pending: dict[str, Any] = {}
        self._live_values: dict[str, Any] = {}
        self._live_changes: list[LiveChange] = []
        self._request: RunConfig | None = None
        self._warm_cancel = threading.Event()
        self._dataset_cache: tuple[Any, Dataset] | None = None
        self._loading: dict[Any, threading.Event] = {}
        self._data_lock = threading.Lock()
        self._started_at = 0.0
        self._paused_total = 0.0
        self._waiting_since: float | None = None
        self._ended_at: float | None = None
        self._step, self._total_steps = 0, 0
        self._steps_taken = 0
        self._run_seeds = 1  # seeds of the run going (live changes need one run)

    # ------------------------------------------------------------------ state
    @property
    def active(self) -> bool:
        """A run is going (starting, running or paused)."""
        return self.status in ACTIVE

    @property
    def run(self) -> Run | None:
        """The run shown now (live, finished, stopped or loaded), or None."""
        view = self.view
        return None if view is None else view.run

    @property
    def run_generation(self) -> int:
        """The generation of :attr:`view` (a new number for every run)."""
        view = self.view
        return 0 if view is None else view.generation

    @property
    def run_request(self) -> RunConfig | None:
        """The config the shown run was asked for (live changes applied)."""
        view = self.view
        return None if view is None else view.request

    def matches_controls(self) -> bool:
        """Whether the shown run is what the current settings would train."""
        view = self.view
        return view is not None and view.request == self.config and (
            view.seeds == self.seeds or view.source == "loaded")

    def threads(self) -> list[threading.Thread]:
        """This session's threads that are still alive."""
        self._threads = [t for t in self._threads if t.is_alive()]
        return list(self._threads)

    def progress(self) -> Progress:
        now = self._ended_at or self._waiting_since or time.perf_counter()
        started = self._started_at
        elapsed = max(0.0, now - started - self._paused_total) if started else 0.0
        view = self.view
        threads = view.run.threads if view is not None else None
        return Progress(self._step, self._total_steps, elapsed,
                        describe(*threads) if threads else "", self._run_seeds)

    def _hook(self, name: str) -> None:
        hook = self.hooks.get(name)
        if hook is not None:
            hook()

    def set_config(self, config: RunConfig, reason: str = "settings changed") -> str:
        """Use a new config. A run going now takes a change of live settings only
        (learning rate, momentum, weight decay: applied between two steps) and
        returns ``"live"``; any other change stops it (``"stopped"``: it no longer
        matches the controls). An ensemble of seeds has no optimizer to change live:
        it starts again with the new settings (``"restarted"``). ``""``: nothing was
        going."""
        with self._lock:
            old = self.config
            if config == old:
                return ""
            self.config = config
            if not self.active:
                return ""
            changed = [n for n in field_names() if getattr(config, n) != getattr(old, n)]
            restart = self._run_seeds > 1 and all(n in LIVE_SETTINGS for n in changed)
            if all(n in LIVE_SETTINGS for n in changed) and not restart:
                for name in changed:
                    self._live_pending[name] = config.resolve_field(name)
                self._request = config
                if self.view is not None and self.view.generation == self.generation:
                    self.view = replace(self.view, request=config)
                return "live"
        if restart:
            self.start()
            return "restarted"
        self.stop(f"stopped: {reason}. Press Train to start a new run.")
        return "stopped"

    def set_seeds(self, seeds: int, reason: str = "seeds changed") -> str:
        """Train ``seeds`` seeds from the next Train on (1–16; ``ValueError`` naming
        the setting otherwise). A run going stops (``"stopped"``); ``""`` otherwise."""
        seeds = APP_SETTINGS["seeds"].coerce(seeds, where="dashboard")
        with self._lock:
            if seeds == self.seeds:
                return ""
            self.seeds = seeds
            if not self.active:
                return ""
        self.stop(f"stopped: {reason}. Press Train to start a new run.")
        return "stopped"

    # --------------------------------------------------------------- controls
    def start(self, config: RunConfig | None = None) -> int:
        """Start a run with ``config`` (default: the current one). A run going is
        stopped first; the new worker waits for the old one (there is never more
        than one training), so this returns at once. Returns the new generation."""
        with self._lock:
            if config is not None:
                self.config = config
            previous = self._worker
            if self.active:
                self._stop_event.set()
                self._resume_event.set()
            self._warm_cancel.set()  # the run needs the CPU more than the warm-up
            stop_event, resume_event = threading.Event(), threading.Event()
            resume_event.set()
            self.generation += 1
            generation = self.generation
            self._stop_event, self._resume_event = stop_event, resume_event
            self._stop_reason = ""
            self._step_pending = False
            self._live_pending, self._live_changes = {}, []
            self._request = self.config
            self._worker_done = False
            self._step, self._total_steps, self._steps_taken = 0, 0, 0
            self._started_at, self._paused_total, self._waiting_since = 0.0, 0.0, None
            self._ended_at = None
            self._run_seeds = self.seeds
            self.warning = ""
            self._set_status(generation, "starting", "loading data and building the model")
            worker = threading.Thread(
                target=self._work,
                args=(generation, self.config, stop_event, resume_event, previous,
                      self.seeds),
                name=f"fx-train-{generation}", daemon=True)
            self._worker = worker
            self._threads.append(worker)
            worker.start()
            return generation

    def stop(self, reason: str = "stopped by you") -> bool:
        """Stop the run going now: the status says so at once and the worker ends
        within one training step (it is never waited for here). Returns whether
        there was a run to stop."""
        with self._lock:
            if not self.active:
                return False
            self._stop_reason = reason
            self._stop_event.set()
            self._resume_event.set()  # a paused worker must wake up to see the stop
            self._freeze_clock()
            if self.view is not None and self.view.generation == self.generation:
                self.view = replace(self.view, status="stopped", message=reason)
            self._set_status(self.generation, "stopped", reason)
            return True

    def _freeze_clock(self) -> None:
        now = time.perf_counter()
        if self._ended_at is None:
            self._ended_at = now
        if self._waiting_since is not None:
            self._paused_total += now - self._waiting_since
            self._waiting_since = None

    def pause(self) -> bool:
        """Pause the run between two training steps. False when there is nothing to
        pause: still starting, or the run has just ended."""
        with self._lock:
            if self.status != "running" or self.view is None or self._worker_done:
                return False
            self._resume_event.clear()
            self._step_pending = False
            self._set_status(self.generation, "paused", "press Resume to go on, or Step")
            return True

    def resume(self) -> bool:
        with self._lock:
            if self.status != "paused" or self._worker_done:
                return False
            self._step_pending = False
            self._set_status(self.generation, "running", "training")
            self._resume_event.set()
            return True

    def step(self) -> bool:
        """While paused: train up to the next evaluation, then pause again."""
        with self._lock:
            if self.status != "paused" or self._worker_done or self._step_pending:
                return False
            self._step_pending = True
            self._set_status(self.generation, "paused", "stepping to the next evaluation")
            self._resume_event.set()
            return True

    def reset(self) -> None:
        """Stop any run and forget it (pinned runs stay)."""
        with self._lock:
            self.stop("stopped: reset")
            self.generation += 1
            self.view = None
            self.warning = ""
            self._step, self._total_steps, self._started_at = 0, 0, 0.0
            self._set_status(self.generation, "ready", "pick a rule and press Train")

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until no worker is training (for export and tests). True if none is."""
        return join_worker(self._worker, timeout)

    def close(self, timeout: float | None = 10.0) -> None:
        """Stop everything and join every thread (for tests and kernel shutdown);
        ``timeout`` bounds each join (``None``: wait as long as it takes)."""
        with self._lock:
            self.stop("stopped: dashboard closed")
            self._warm_cancel.set()
            self.generation += 1
        for thread in self.threads():
            thread.join(timeout)

    # ------------------------------------------------------------ comparison
    def pin(self) -> str:
        """Keep the shown run's curves for comparison. Raises ``ValueError`` in plain
        words when there is nothing to pin. Returns a note for the status line."""
        view = self.view
        if view is None or not view.rows:
            raise ValueError("Nothing to pin yet: train a run first.")
        if self.active:
            raise ValueError("Stop the run or let it finish before pinning it.")
        if any(entry.generation == view.generation for entry in self.pinned):
            raise ValueError("This run is already pinned.")
        elapsed = view.rows[-1].get("time", math.nan)
        self.pinned.append(PinnedEntry(view.request, view.history, view.status,
                                       view.generation, view, float(elapsed)))
        dropped = ""
        if len(self.pinned) > self.MAX_PINNED:
            self.pinned.pop(0)
            dropped = f" (only {self.MAX_PINNED} are kept: the oldest was unpinned)"
        return f"pinned run {len(self.pinned)}{dropped}; its curves stay for comparison"

    def clear_pinned(self) -> None:
        self.pinned.clear()

    def pinned_labels(self) -> list[tuple[str, pd.DataFrame]]:
        """``(legend label, history)`` per pinned run, labelled by what differs from
        the other pinned runs and the current settings."""
        if not self.pinned:
            return []
        labels = difference_labels([e.config for e in self.pinned] + [self.config])
        # One label more than pinned runs: the last is the current settings'.
        return [(label, e.history) for label, e in zip(labels, self.pinned, strict=False)]

    # ------------------------------------------------------- export / upload
    def _exportable(self) -> RunView:
        view = self.view
        if view is None or not view.rows:
            raise ValueError("Nothing to export yet: train a run first.")
        if self.active:
            raise ValueError("Stop the run or let it finish before exporting it.")
        if view.source == "trained" and not self.wait_idle(5.0):
            raise ValueError("The run is still stopping; try Export again in a moment.")
        return view

    def export(self, folder: str | Path, figures: dict[str, Any] | None = None) -> Path:
        """Save the shown run (config, history, weights) and ``figures`` (plotly
        figures, by file stem) as HTML into ``folder``. Returns the folder."""
        view = self._exportable()
        folder = Path(folder).resolve()
        _saved(view).save(folder)
        for stem, figure in (figures or {}).items():
            # One shared plotly.min.js in the folder: the pages open offline.
            figure.write_html(folder / f"{stem}.html", include_plotlyjs="directory")
        return folder

    def export_zip(self, figures: dict[str, Any] | None = None) -> tuple[str, bytes]:
        """The shown run as a zip for the browser to download: ``run.json``,
        ``weights.safetensors``, each figure as HTML and the plotly.js they share.
        Returns ``(file name, bytes)``; nothing stays on the server."""
        view = self._exportable()
        cfg = view.config
        stamp = time.strftime("%Y%m%d-%H%M%S")
        name = f"fa-explore-{cfg.rule}-{cfg.dataset}-{stamp}"
        with tempfile.TemporaryDirectory(prefix="fa-explore-export-") as tmp:
            folder = Path(tmp) / name
            self.export(folder, figures)
            buffer = io.BytesIO()
            with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
                for path in sorted(folder.iterdir()):
                    archive.write(path, f"{name}/{path.name}")
        return f"{name}.zip", buffer.getvalue()

    def load_zip(self, data: bytes, filename: str = "run.zip") -> RunView:
        """Show a run saved by Export (a zip holding ``run.json`` and
        ``weights.safetensors``, at its top or in one folder) so it can be viewed and
        pinned. Validated as :meth:`fa_explore.Run.load` does (JSON and safetensors
        only, never pickle); sizes are bounded. ``ValueError`` in plain words."""
        shown = re.sub(r"[^\w.\- ]", "_", Path(str(filename)).name)[:80] or "the file"
        if len(data) > MAX_UPLOAD_BYTES:
            raise ValueError(f"{shown} is larger than {MAX_UPLOAD_BYTES // 2**20} MB")
        try:
            archive = zipfile.ZipFile(io.BytesIO(data))
        except zipfile.BadZipFile:
            raise ValueError(f"{shown} is not a zip file (use a file made by Export)") from None
        with archive, tempfile.TemporaryDirectory(prefix="fa-explore-upload-") as tmp:
            members = {}
            for info in archive.infolist():
                base = info.filename.replace("\\", "/").rstrip("/").split("/")[-1]
                if base in MAX_MEMBER_BYTES and not info.is_dir():
                    if base in members:
                        raise ValueError(f"{shown} holds more than one {base}")
                    members[base] = info
            missing = [m for m in MAX_MEMBER_BYTES if m not in members]
            if missing:
                raise ValueError(f"{shown} has no {' and no '.join(missing)} (use a file "
                                 "made by Export)")
            for base, info in members.items():
                if info.file_size > MAX_MEMBER_BYTES[base]:
                    raise ValueError(f"{shown}: {base} is too large")
                with archive.open(info) as src:
                    payload = src.read(MAX_MEMBER_BYTES[base] + 1)
                if len(payload) > MAX_MEMBER_BYTES[base]:
                    raise ValueError(f"{shown}: {base} is too large")
                (Path(tmp) / base).write_bytes(payload)
            try:
                run = Run.load(tmp)
            except ValueError as exc:
                # Name the upload, never the server's temporary folder.
                text = str(exc).replace(f"saved run {tmp}", shown).replace(tmp, shown)
                raise ValueError(text) from None
        request = run.config
        with self._lock:
            if self.active:
                self.stop("stopped: a saved run was loaded")
            self.generation += 1
            rows = tuple(run.rows)
            last = rows[-1] if rows else {}
            view = RunView(self.generation, run, request, rows, run.status,
                           int(last.get("step", 0) or 0), run.total_steps, source="loaded",
                           message=run.message)
            self.view = view
            self.config = request
            self._step, self._total_steps = view.step, run.total_steps
            self._started_at, self._paused_total, self._waiting_since = 0.0, 0.0, None
            self._ended_at = None
            self._run_seeds = 1
            self.warning = chance_warning(rows, view.n_classes)
            acc = last.get("test_acc")
            text = f"{shown}: {run.config.rule} on {run.config.dataset}, {run.status}"
            if _finite(acc):
                text += f", test accuracy {acc:.1%}"
            self._set_status(self.generation, "loaded", text)
        return view

    # ---------------------------------------------------------------- threads
    def _set_status(self, generation: int, status: str, message: str) -> None:
        with self._lock:
            if generation != self.generation:
                return
            self.status, self.message = status, message
            self._emit(self.on_status, self)

    def _emit(self, listener, *args) -> None:
        if listener is None:
            return
        try:
            listener(*args)
        except Exception:  # noqa: BLE001 - a drawing error must not end the run
            log.exception("dashboard listener failed")

    def _load_data(self, cfg: RunConfig, stop: threading.Event | None = None) -> Dataset:
        """The config's data, cached (one set). A load already under way in another
        thread (the warm-up) is waited for, not repeated; ``stop`` gives up waiting."""
        key = (cfg.dataset, tuple(sorted(dataset_options(cfg).items())),
               cfg.n_classes, cfg.label_noise, cfg.train_size, cfg.standardize, cfg.data_seed,
               cfg.seed if cfg.data_seed is None else None)
        while True:
            with self._data_lock:
                if self._dataset_cache is not None and self._dataset_cache[0] == key:
                    return self._dataset_cache[1]
                pending = self._loading.get(key)
                mine = pending is None
                if mine:
                    pending = self._loading[key] = threading.Event()
            if mine:
                try:
                    data = dataset_from_config(cfg)
                    with self._data_lock:
                        self._dataset_cache = (key, data)
                    return data
                finally:
                    with self._data_lock:
                        self._loading.pop(key, None)
                    pending.set()
            while not pending.wait(0.05):
                if stop is not None and stop.is_set():
                    raise _Cancelled
            # Loaded (cached now) or failed (then this thread tries itself).

    def warm_up(self) -> threading.Thread:
        """Do the slow first-time work in a background thread (imports that the
        first optimizer and the landscape trigger, loading the configured data, one
        evaluation of a small version of the model), so the first Train shows points
        within about a second. Train cancels it; it never builds a model larger than
        :data:`WARM_UP_MAX_PARAMETERS`."""
        cancel = self._warm_cancel = threading.Event()
        config = self.config

        def work() -> None:
            try:
                # The first torch optimizer imports torch._dynamo: seconds, once.
                torch.optim.Adam([torch.zeros(1, requires_grad=True)])
                if cancel.is_set():
                    return
                from ..analysis import trajectory_pca

                # The first landscape's PCA imports sklearn.decomposition (and with it
                # much of sklearn.linear_model): seconds on a busy machine, paid here.
                trajectory_pca(torch.randn(3, 4, generator=torch.Generator().manual_seed(0)))
                if cancel.is_set() or not dataset_available(DATASETS[config.dataset]):
                    return
                data = self._load_data(config, cancel)
                small = warm_up_config(config)
                if cancel.is_set() or small is None:
                    return
                self._hook("warm_up")
                if cancel.is_set():
                    return
                # One evaluation (no training step) runs the first backward (autograd
                # starts its threads) and the rule's code paths.
                snapshots = train_iter(small, data, should_stop=cancel.is_set)
                try:
                    next(snapshots)
                finally:
                    snapshots.close()
            except _Cancelled:
                pass
            except Exception:  # noqa: BLE001 - the run itself will report it
                log.exception("warm-up failed")

        thread = threading.Thread(target=work, name="fx-warmup", daemon=True)
        self._threads.append(thread)
        thread.start()
        return thread

    def _should_stop(self, stop_event: threading.Event, resume_event: threading.Event) -> bool:
        """Called by ``train_iter`` before every step; blocks while paused (the
        time spent waiting is measured here, where training actually stands still)."""
        if not resume_event.is_set():
            with self._lock:
                if self._stop_event is stop_event:
                    self._waiting_since = time.perf_counter()
            self._hook("parked")
            resume_event.wait()
            with self._lock:
                if self._stop_event is stop_event and self._waiting_since is not None:
                    self._paused_total += time.perf_counter() - self._waiting_since
                    self._waiting_since = None
        return stop_event.is_set()

    def _between_steps(self, generation: int, stop_event: threading.Event,
                       resume_event: threading.Event) -> bool:
        self._apply_live(generation)
        answer = self._should_stop(stop_event, resume_event)
        if not answer:
            self._apply_live(generation)  # changed while paused
            self._steps_taken += 1
        return answer

    def _apply_live(self, generation: int) -> None:
        """Apply pending live settings to the run's optimizers (worker thread, between
        two steps). Only parameter groups that follow the run's setting change: a
        rule's group with its own learning rate (e.g. DKP's feedback) keeps it."""
        with self._lock:
            if generation != self.generation or not self._live_pending:
                return
            pending, self._live_pending = self._live_pending, {}
            view = self.view
        if view is None:
            return
        run = view.run
        optimizers = getattr(run, "optimizers", ())
        schedulers = getattr(run, "schedulers", ())
        changes = []
        for name, new in pending.items():
            old = self._live_values.get(name)
            if new is None or old == new:
                continue
            key = "lr" if name == "lr" else name
            for optimizer in optimizers:
                for index, group in enumerate(optimizer.param_groups):
                    base = group.get("initial_lr", group.get(key)) if name == "lr" else (
                        group.get(key))
                    if base is None or old is None or not math.isclose(base, old,
                                                                      rel_tol=1e-9):
                        continue
                    if name == "lr":
                        group["lr"] = group["lr"] * new / old if old else new
                        if "initial_lr" in group:
                            group["initial_lr"] = new
                        for scheduler in schedulers:
                            if scheduler.optimizer is optimizer:
                                scheduler.base_lrs[index] = new
                    else:
                        group[key] = new
            self._live_values[name] = new
            changes.append(LiveChange(self._steps_taken, name, old, new))
        if changes:
            with self._lock:
                if generation != self.generation:
                    return
                self._live_changes.extend(changes)
                if self.view is not None and self.view.generation == generation:
                    self.view = replace(self.view, live_changes=tuple(self._live_changes))
                self._emit(self.on_status, self)

    def _stream(self, cfg: RunConfig, data: Dataset, seeds: int,
                should_stop: Callable[[], bool]):
        """``(member 0's snapshot, every member's snapshot or None)`` after each
        evaluation: of ``train_iter``, or for ``seeds`` > 1 of ``train_many_iter``
        (closing it closes the training generator)."""
        if seeds == 1:
            inner = train_iter(cfg, data, should_stop=should_stop)
            try:
                for snapshot in inner:
                    yield snapshot, (snapshot,)
            finally:
                inner.close()
            return
        inner = train_many_iter(seed_configs(cfg, seeds), data, should_stop=should_stop)
        try:
            for latest in inner:
                if latest[0] is not None:  # member 0 always starts first
                    yield latest[0], tuple(latest)
        finally:
            inner.close()

    def _work(self, generation: int, cfg: RunConfig, stop_event: threading.Event,
              resume_event: threading.Event, previous: threading.Thread | None,
              seeds: int = 1) -> None:
        snapshots = None
        landscape_done = threading.Event()
        run = None
        try:
            if previous is not None and previous.is_alive():
                previous.join(self.PREVIOUS_TIMEOUT)
                if previous.is_alive():
                    # Stuck outside the training loop (e.g. a download): go ahead. It
                    # will stop at its next step; its events are of an old generation.
                    log.warning("training thread %s did not stop in %.0f s; going on "
                                "without it", previous.name, self.PREVIOUS_TIMEOUT)
            if stop_event.is_set():
                return
            data = self._load_data(cfg, stop_event)
            self._hook("loaded")
            if stop_event.is_set():
                return
            snapshots = self._stream(cfg, data, seeds, lambda: self._between_steps(
                generation, stop_event, resume_event))
            member_rows: tuple[tuple[dict[str, Any], ...], ...] = ((),) * seeds
            for snapshot, members in snapshots:
                # Copied here, where rows are appended (only members with new rows).
                member_rows = tuple(
                    () if m is None else old if len(old) == len(m.run.rows) else tuple(
                        m.run.rows) for m, old in zip(members, member_rows, strict=True))
                rows = member_rows[0]
                going = any(m is None or m.status == "running" for m in members)
                status = "running" if going else snapshot.status
                with self._lock:
                    if generation != self.generation or stop_event.is_set():
                        break
                    if run is None:
                        run = snapshot.run
                        # ETA counts training time only, not loading and building.
                        self._started_at = time.perf_counter()
                        self._live_values = {n: getattr(run.config, n) for n in LIVE_SETTINGS}
                        self._set_status(generation, "running", "training")
                        self._start_landscape(generation, run, data, landscape_done)
                    # Steps of every member (they all have member 0's total).
                    self._step = sum(m.step for m in members if m is not None)
                    self._total_steps = snapshot.total_steps * seeds
                    self.view = RunView(generation, run, self._request or cfg, rows,
                                        status, snapshot.step, snapshot.total_steps,
                                        tuple(self._live_changes), message=run.message,
                                        seeds=seeds,
                                        member_rows=member_rows if seeds > 1 else (),
                                        member_status=tuple(
                                            "waiting" if m is None else m.status
                                            for m in members) if seeds > 1 else ())
                    self.warning = chance_warning(rows, self.view.n_classes)
                    if self._step_pending and status == "running":
                        self._step_pending = False
                        resume_event.clear()
                        now = next((m.step for m in members if m is not None and m.row),
                                   snapshot.step)
                        self._set_status(generation, "paused",
                                         f"paused at step {now:,}: Step goes one "
                                         "evaluation further, Resume goes on")
                    self._emit(self.on_snapshot, self, snapshot)
                self._hook("snapshot")
            snapshots.close()
            self._hook("before_end")
            with self._lock:
                if generation == self.generation:
                    self._worker_done = True
                    if self.status in ACTIVE:  # not already stopped by stop()
                        self._freeze_clock()
                        status, message = self._outcome(generation, run, stop_event)
                        if self.view is not None and self.view.generation == generation:
                            self.view = replace(self.view, status=run.status if run else
                                                status, message=message)
                        self._set_status(generation, status, message)
        except _Cancelled:
            pass
        except Exception as exc:  # noqa: BLE001 - shown in plain words, logged in full
            log.exception("training run %d failed", generation)
            with self._lock:
                if generation == self.generation and self.status in ACTIVE:
                    self._freeze_clock()
                    self._set_status(generation, "error", plain_message(exc))
        finally:
            if snapshots is not None:
                snapshots.close()
            with self._lock:
                if generation == self.generation:
                    self._worker_done = True
                    if self._ended_at is None:
                        self._ended_at = time.perf_counter()
            landscape_done.set()

    def _outcome(self, generation: int, run: Run | None,
                 stop_event: threading.Event) -> tuple[str, str]:
        if run is None or stop_event.is_set() or run.status in ("stopped", "running"):
            return "stopped", self._stop_reason or "stopped"
        view = self.view
        seeds = "" if view is None else seeds_text(view)
        if run.status == "finished":
            acc = view.final.get("test_acc", math.nan) if view else math.nan
            what = (run.message if run.stop_reason == "target" else
                    f"{run.total_steps:,} steps")
            return "finished", (f"{what} in {format_seconds(self.progress().elapsed)}: test "
                                f"accuracy {acc:.1%}{seeds}")
        if run.status == "diverged" and view is not None:
            return "diverged", divergence_text(view) + seeds
        return "error", run.message or f"the run ended with status {run.status}"

    # -------------------------------------------------------------- landscape
    def _start_landscape(self, generation: int, run: Run, data: Dataset,
                         done: threading.Event) -> None:
        if self.landscape_interval is None or self.on_landscape is None:
            return
        thread = threading.Thread(target=self._landscape_loop,
                                  args=(generation, run, data, done),
                                  name=f"fx-landscape-{generation}", daemon=True)
        self._threads.append(thread)
        thread.start()

    def _landscape_loop(self, generation: int, run: Run, data: Dataset,
                        done: threading.Event) -> None:
        from ..analysis import loss_surface, trajectory_pca

        if run.threads is not None and torch.get_num_threads() != run.threads[0]:
            # OpenMP's thread count can be per thread: this one follows the run's.
            torch.set_num_threads(run.threads[0])
        generator = torch.Generator().manual_seed(0)
        keep = torch.randperm(len(data.y_train), generator=generator)[:self.landscape_batch]
        x, y = data.x_train[keep], data.y_train[keep]
        last_count = 0
        wait = self.landscape_first
        while True:
            finished = done.wait(wait)
            wait = self.landscape_interval
            if generation != self.generation:
                return
            steps, points = run.trajectory.snapshot()
            count = min(len(steps), len(points))
            if count >= 2 and count != last_count:
                try:
                    pca = trajectory_pca(torch.stack(points[:count]), steps=steps[:count])
                    surface = loss_surface(run.model, x, y, pca,
                                           resolution=self.landscape_resolution)
                except ValueError as exc:  # e.g. a diverged run's non-finite weights
                    log.info("no landscape for run %d: %s", generation, exc)
                except Exception:  # noqa: BLE001
                    log.exception("landscape of run %d failed", generation)
                else:
                    last_count = count
                    with self._lock:
                        if generation != self.generation:
                            return
                        self._emit(self.on_landscape, self, pca, surface)
            if finished:
                return


def _saved(view: RunView) -> Run:
    """The run to save for a view: its own rows (as shown), status and message."""
    run = view.run
    if len(run.rows) == len(view.rows) and run.status == view.status:
        return run
    copy = Run(run.config, run.model, run.rule)
    copy.rows = [dict(r) for r in view.rows]
    copy.status = view.status if view.status in ("running", "finished", "diverged",
                                                 "stopped", "failed") else run.status
    copy.message, copy.diverged_step = run.message, run.diverged_step
    copy.stop_reason = run.stop_reason or ("stopped" if copy.status == "stopped" else None)
    copy.total_steps = run.total_steps
    return copy


__all__ = ["ACTIVE", "STATUSES", "LiveChange", "PinnedEntry", "Progress", "RunView",
           "TrainingSession", "chance_warning", "divergence_text", "format_seconds",
           "seed_configs", "seeds_text", "warm_up_config"]
