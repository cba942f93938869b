"""The dashboard's state and threads, with no widgets (so it is testable alone).

:class:`TrainingSession` holds the current :class:`~fa_explore.RunConfig`, the
status shown in the status line, a generation counter, the pinned runs and the
threads: one training worker per run (``fa_explore.train_iter``) and one
landscape thread that recomputes the loss surface on the trajectory's PCA plane
every few seconds and once at the end. Listeners get events from those threads;
every event carries the generation it belongs to and events of an older
generation are dropped, so a run replaced by a newer one can never draw over it.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from ..config import RunConfig
from ..data import DATASETS, Dataset, dataset_from_config, dataset_options
from ..training import Run, Snapshot, train_iter
from .controls import dataset_available, difference_labels, plain_message

ACTIVE = ("running", "paused")

# A library only names its logger: where records go (the page's entry point sends
# them to the kernel's own stderr, i.e. the server's log) is the host's choice, and
# propagation stays on so hosts and pytest's caplog see them.
log = logging.getLogger(__name__)

StatusListener = Callable[["TrainingSession"], None]
SnapshotListener = Callable[["TrainingSession", Snapshot], None]
LandscapeListener = Callable[["TrainingSession", Any, Any], None]


@dataclass
class PinnedEntry:
    """A run kept for comparison: its config (for the legend) and its history."""

    config: RunConfig
    history: pd.DataFrame
    status: str
    generation: int  # of the run: a run is pinned once


@dataclass(frozen=True)
class Progress:
    step: int
    total_steps: int
    elapsed: float  # seconds of training, pauses excluded

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


class TrainingSession:
    """One dashboard's training state: config, status, generation, pinned runs and
    the worker threads. All methods are called from the UI (kernel) thread;
    listeners are called from the worker threads.

    ``landscape_interval`` (seconds) sets how often the loss surface is recomputed
    while a run trains; ``None`` turns the landscape off.
    """

    MAX_PINNED = 6
    STOP_TIMEOUT = 10.0  # seconds stop() waits for the worker (a download cannot be cut)

    def __init__(self, config: RunConfig | None = None, *,
                 on_status: StatusListener | None = None,
                 on_snapshot: SnapshotListener | None = None,
                 on_landscape: LandscapeListener | None = None,
                 landscape_interval: float | None = 3.0, landscape_first: float = 0.5,
                 landscape_batch: int = 256, landscape_resolution: int = 25):
        self.config = config or RunConfig()
        self.status = "ready"
        self.message = "pick a rule and press Train"
        self.generation = 0
        self.run: Run | None = None
        self._run_generation = 0  # the generation self.run belongs to
        # The config the last run was started with, as asked (rule defaults left
        # as None): pinned runs are labelled from it.
        self.run_request: RunConfig | None = None
        self.pinned: list[PinnedEntry] = []
        self.on_status, self.on_snapshot, self.on_landscape = on_status, on_snapshot, on_landscape
        self.landscape_interval = landscape_interval
        self.landscape_first = landscape_first
        self.landscape_batch = landscape_batch
        self.landscape_resolution = landscape_resolution
        self._emit_lock = threading.RLock()  # generation changes and listener calls
        self._control_lock = threading.RLock()  # start / stop / pause from the UI
        self._worker: threading.Thread | None = None
        self._threads: list[threading.Thread] = []
        self._stop_event = threading.Event()
        self._resume_event = threading.Event()
        self._stop_reason = ""
        self._dataset_cache: tuple[Any, Dataset] | None = None
        self._data_lock = threading.Lock()
        self._started_at = 0.0
        self._paused_total = 0.0
        self._paused_since: float | None = None
        self._ended_at: float | None = None
        self._step, self._total_steps = 0, 0

    # ------------------------------------------------------------------ state
    @property
    def active(self) -> bool:
        """A run is going (running or paused)."""
        return self.status in ACTIVE

    @property
    def run_generation(self) -> int:
        """The generation of :attr:`run` (a new number for every run)."""
        return self._run_generation

    def threads(self) -> list[threading.Thread]:
        """This session's threads that are still alive."""
        self._threads = [t for t in self._threads if t.is_alive()]
        return list(self._threads)

    def progress(self) -> Progress:
        now = self._ended_at or self._paused_since or time.perf_counter()
        elapsed = max(0.0, now - self._started_at - self._paused_total) if self._started_at else 0.0
        return Progress(self._step, self._total_steps, elapsed)

    def set_config(self, config: RunConfig, reason: str = "settings changed") -> bool:
        """Use a new config for the next run; a run going now is stopped cleanly
        (it no longer matches the controls). Returns whether a run was stopped."""
        stopped = False
        if config != self.config and self.active:
            stopped = self.stop(f"stopped: {reason}. Press Train to start a new run.")
        self.config = config
        return stopped

    # --------------------------------------------------------------- controls
    def start(self, config: RunConfig | None = None) -> int:
        """Start a run with ``config`` (default: the current one). A run already
        going is stopped and joined first: there is never more than one.
        Returns the new run's generation."""
        with self._control_lock:
            if config is not None:
                self.config = config
            self.stop("stopped: a new run was started")
            stop_event, resume_event = threading.Event(), threading.Event()
            resume_event.set()
            with self._emit_lock:
                self.generation += 1
                generation = self.generation
                self._stop_event, self._resume_event = stop_event, resume_event
                self._stop_reason = ""
                self.run = None
                self.run_request = self.config
                self._step, self._total_steps = 0, 0
                self._started_at, self._paused_total, self._paused_since = (
                    time.perf_counter(), 0.0, None)
                self._ended_at = None
                self._set_status(generation, "running", "loading data and building the model")
            worker = threading.Thread(
                target=self._work, args=(generation, self.config, stop_event, resume_event),
                name=f"fx-train-{generation}", daemon=True)
            self._worker = worker
            self._threads.append(worker)
            worker.start()
            return generation

    def stop(self, reason: str = "stopped by you") -> bool:
        """Stop the run going now (within one training step) and wait for its
        worker. Returns whether there was one to stop."""
        with self._control_lock:
            worker = self._worker
            if worker is None or not worker.is_alive():
                return False
            self._stop_reason = reason
            self._stop_event.set()
            self._resume_event.set()  # a paused worker must wake up to see the stop
        worker.join(self.STOP_TIMEOUT)
        if worker.is_alive():
            # Stuck outside the training loop (e.g. a download): abandon it. Its
            # late events belong to an old generation and are dropped.
            log.warning("training thread %s did not stop in %.0f s; abandoned",
                        worker.name, self.STOP_TIMEOUT)
            with self._emit_lock:
                self.generation += 1
                self._set_status(self.generation, "stopped", reason)
        return True

    def pause(self) -> bool:
        """Pause the run between two training steps."""
        with self._control_lock:
            if self.status != "running" or self.run is None:
                return False
            self._resume_event.clear()
            with self._emit_lock:
                self._paused_since = time.perf_counter()
                self._set_status(self.generation, "paused", "press Resume to go on")
            return True

    def resume(self) -> bool:
        with self._control_lock:
            if self.status != "paused":
                return False
            with self._emit_lock:
                if self._paused_since is not None:
                    self._paused_total += time.perf_counter() - self._paused_since
                    self._paused_since = None
                self._set_status(self.generation, "running", "training")
            self._resume_event.set()
            return True

    def reset(self) -> None:
        """Stop any run and forget it (pinned runs stay)."""
        with self._control_lock:
            self.stop("stopped: reset")
            with self._emit_lock:
                self.generation += 1
                self.run = None
                self._step, self._total_steps, self._started_at = 0, 0, 0.0
                self._set_status(self.generation, "ready", "pick a rule and press Train")

    def close(self, timeout: float | None = 10.0) -> None:
        """Stop everything and join every thread (for tests and kernel shutdown);
        ``timeout`` bounds each join (``None``: wait as long as it takes)."""
        self.stop("stopped: dashboard closed")
        with self._emit_lock:
            self.generation += 1
        for thread in self.threads():
            thread.join(timeout)

    # ------------------------------------------------------------ comparison
    def pin(self) -> str:
        """Keep the last run's curves for comparison. Raises ``ValueError`` in plain
        words when there is nothing to pin. Returns a note for the status line."""
        run = self.run
        if run is None or not run.rows:
            raise ValueError("Nothing to pin yet: train a run first.")
        if self.active:
            raise ValueError("Stop the run or let it finish before pinning it.")
        if any(entry.generation == self._run_generation for entry in self.pinned):
            raise ValueError("This run is already pinned.")
        asked = self.run_request if self.run_request is not None else run.config
        self.pinned.append(PinnedEntry(asked, run.history, run.status, self._run_generation))
        dropped = ""
        if len(self.pinned) > self.MAX_PINNED:
            self.pinned.pop(0)
            dropped = f" (only {self.MAX_PINNED} are kept: the oldest was unpinned)"
        return f"pinned run {len(self.pinned)}{dropped}; its curves stay as faint lines"

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

    # ----------------------------------------------------------------- export
    def export(self, folder: str | Path | None = None,
               figures: dict[str, Any] | None = None) -> Path:
        """Save the last run (config, history, weights) and ``figures`` (plotly
        figures, by file stem) as HTML into ``folder``. Returns the folder."""
        run = self.run
        if run is None or not run.rows:
            raise ValueError("Nothing to export yet: train a run first.")
        if self.active:
            raise ValueError("Stop the run or let it finish before exporting it.")
        if folder is None:
            root = Path(os.environ.get("FA_EXPLORE_RUNS", "runs"))
            stamp = time.strftime("%Y%m%d-%H%M%S")
            folder = root / f"{stamp}-{run.config.rule}-{run.config.dataset}"
        folder = Path(folder).resolve()
        run.save(folder)
        for stem, figure in (figures or {}).items():
            # One shared plotly.min.js in the folder: the pages open offline.
            figure.write_html(folder / f"{stem}.html", include_plotlyjs="directory")
        return folder

    # ---------------------------------------------------------------- threads
    def _set_status(self, generation: int, status: str, message: str) -> None:
        with self._emit_lock:
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

    def _load_data(self, cfg: RunConfig) -> Dataset:
        key = (cfg.dataset, tuple(sorted(dataset_options(cfg).items())))
        with self._data_lock:
            if self._dataset_cache is not None and self._dataset_cache[0] == key:
                return self._dataset_cache[1]
            data = dataset_from_config(cfg)
            self._dataset_cache = (key, data)
            return data

    def warm_up(self) -> threading.Thread:
        """Do the slow first-time work in a background thread (imports that the
        first optimizer and the landscape trigger, loading the configured data,
        one evaluation), so the first Train shows points within about a second."""

        def work() -> None:
            try:
                # The first torch optimizer imports torch._dynamo: seconds, once.
                torch.optim.Adam([torch.zeros(1, requires_grad=True)])
                from ..analysis import trajectory_pca  # noqa: F401 - imports sklearn

                if dataset_available(DATASETS[self.config.dataset]):
                    data = self._load_data(self.config)
                    # One evaluation (no training step) runs the first backward
                    # (autograd starts its threads) and the rule's code paths.
                    snapshots = train_iter(self.config, data)
                    next(snapshots)
                    snapshots.close()
            except Exception:  # noqa: BLE001 - the run itself will report it
                log.exception("warm-up failed")

        thread = threading.Thread(target=work, name="fx-warmup", daemon=True)
        self._threads.append(thread)
        thread.start()
        return thread

    def _should_stop(self, stop_event: threading.Event, resume_event: threading.Event) -> bool:
        """Called by ``train_iter`` before every step; blocks while paused."""
        if not resume_event.is_set():
            resume_event.wait()
        return stop_event.is_set()

    def _work(self, generation: int, cfg: RunConfig, stop_event: threading.Event,
              resume_event: threading.Event) -> None:
        snapshots = None
        landscape_done = threading.Event()
        run = None
        try:
            data = self._load_data(cfg)
            snapshots = train_iter(cfg, data, should_stop=lambda: self._should_stop(
                stop_event, resume_event))
            for snapshot in snapshots:
                if run is None:
                    run = snapshot.run
                    with self._emit_lock:
                        if generation != self.generation:
                            return
                        self.run, self._run_generation = run, generation
                        # ETA counts training time only, not loading and building.
                        self._started_at = time.perf_counter()
                        self._set_status(generation, "running", "training")
                    self._start_landscape(generation, run, data, landscape_done)
                with self._emit_lock:
                    if generation != self.generation:
                        return
                    self._step, self._total_steps = snapshot.step, snapshot.total_steps
                    self._emit(self.on_snapshot, self, snapshot)
                if stop_event.is_set():
                    break
            snapshots.close()
            with self._emit_lock:
                if generation == self.generation:  # freeze the clock of this run
                    self._ended_at = time.perf_counter()
                    if self._paused_since is not None:  # stopped while paused
                        self._paused_total += self._ended_at - self._paused_since
                        self._paused_since = None
            status, message = self._outcome(run, stop_event)
            self._set_status(generation, status, message)
        except Exception as exc:  # noqa: BLE001 - shown in plain words, logged in full
            log.exception("training run %d failed", generation)
            self._set_status(generation, "error", plain_message(exc))
        finally:
            if snapshots is not None:
                snapshots.close()
            if generation == self.generation and self._ended_at is None:
                self._ended_at = time.perf_counter()
            landscape_done.set()

    def _outcome(self, run: Run | None, stop_event: threading.Event) -> tuple[str, str]:
        if run is None or stop_event.is_set() or run.status in ("stopped", "running"):
            return "stopped", self._stop_reason or "stopped"
        if run.status == "finished":
            last = run.final
            acc = last.get("test_acc", math.nan)
            return "finished", (f"finished {run.total_steps} steps in "
                                f"{format_seconds(self.progress().elapsed)}: test accuracy "
                                f"{acc:.1%}")
        if run.status == "diverged":
            return "diverged", run.message or "the training loss became NaN"
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
            steps, points = list(run.trajectory.steps), list(run.trajectory.points)
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
                    with self._emit_lock:
                        if generation != self.generation:
                            return
                        self._emit(self.on_landscape, self, pca, surface)
            if finished:
                return
