"""Sweeps: many runs over a grid of settings, in parallel, cached on disk.

::

    from fa_explore import RunConfig, sweep
    table = sweep(RunConfig(dataset="digits", hidden=(64,), epochs=3),
                  {"rule": ["bp", "fa", "dfa", "kp"], "seed": [0, 1]})
    table.pivot_table("test_acc", index="rule", columns="seed")

A grid is a mapping of setting name to a list of values (their product is run)
or a list of mappings of changes (explicit points). Each point is
``base_config.replace(**changes)``; a combination the config rejects (say an
``init_angle`` for a rule without one) becomes a row with status ``invalid``
and the config's message, so a product over rules and rule-specific knobs
needs no filtering by hand.

Three backends run the points: ``sequential`` (this process, the reference),
``local`` (a process pool on this machine) and ``dask`` (Dask distributed: a
``LocalCluster`` or any scheduler, so a JupyterHub user can scale out to a
dask-gateway cluster with no change in code). All three give the same rows.

Finished points are cached on disk, keyed by the hash of the config's canonical
JSON and the package version (:func:`config_key`), so an interrupted sweep
re-run recomputes only what it had not finished. :func:`iter_sweep` yields each
row as it lands (for a live heatmap); closing it cancels the rest.

Parallel backends pay a start-up per worker process (torch import, the data,
the first optimizer step: 2-4 s on a small machine, included in the first
point's ``wall_time``), so they win for sweeps of runs that take seconds each,
on CPUs that are free; ``benchmarks/sweep_speed.py`` measures it. Passing a kept
``distributed.Client`` as ``address`` reuses warm workers between sweeps.

With the ``local`` and ``dask`` backends, a script must start its sweep under
``if __name__ == "__main__":``: their worker processes are spawned, never
forked (torch's threads and ``fork`` do not mix), and a spawned process imports
the main module again.
"""

from __future__ import annotations

import atexit
import concurrent.futures as cf
import hashlib
import inspect
import itertools
import json
import logging
import math
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import time
import types
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from .config import MAX_JSON_BYTES, RunConfig, field_names, parse_json
from .settings import SETTINGS, FrozenOptions, short_repr
from .training import Run, train_iter

BACKENDS = ("local", "dask", "sequential")
# Statuses of a row: the run's own (finished, stopped, diverged), failed (an
# exception in training), invalid (the config rejected the point), cancelled
# (the sweep was stopped before the point finished; only in sweep()'s table).
CACHE_ENV = "FA_EXPLORE_SWEEPS"
CACHE_FORMAT = 1
MAX_POINTS = 10_000  # a grid's product is checked before it is built
MAX_SWEEP_FILE = 1 << 20  # the CLI's grid file
MAX_WORKERS = 1024
POLL_SECONDS = 0.1  # how often the main loop looks at should_stop while waiting
JOIN_SECONDS = 10.0  # how long a cancelled worker may take to leave before it is terminated
DASK_STOP_CHECK_SECONDS = 0.5  # a remote worker asks the scheduler at most this often
# History columns that are bookkeeping, not metrics.
_NOT_METRICS = ("step", "epoch", "time")
_HEAD_METRICS = ("train_loss", "train_acc", "test_loss", "test_acc")
_TAIL = ("steps", "wall_time", "cached", "config", "key")

log = logging.getLogger(__name__)


# ------------------------------------------------------------------ grid
@dataclass(frozen=True)
class Point:
    """One point of a sweep: its position, its changes to the base config, and
    either the validated config or the reason the config rejected it."""

    index: int
    changes: dict[str, Any]
    config: RunConfig | None
    error: str = ""

    @property
    def valid(self) -> bool:
        return self.config is not None


@dataclass(frozen=True)
class SweepPlan:
    """The points of a grid (:func:`expand_grid`) and the settings it varies
    (the table's leading columns, in the grid's order)."""

    base: RunConfig
    varied: tuple[str, ...]
    points: tuple[Point, ...] = field(repr=False)

    @property
    def valid_points(self) -> list[Point]:
        return [p for p in self.points if p.valid]

    def shown(self, point: Point, name: str) -> Any:
        """A varied setting's value as the table shows it: the config's canonical
        value (tuples for layer widths, floats for numbers), the raw one for an
        invalid point."""
        if point.config is not None:
            value = getattr(point.config, name)
        else:
            value = point.changes.get(name, getattr(self.base, name))
            try:
                value = SETTINGS[name].coerce(value) if name != "rule_options" else value
            except (ValueError, TypeError):
                pass
        if isinstance(value, FrozenOptions):
            return value.to_dict()
        return tuple(value) if isinstance(value, list) else value


def _check_names(keys: Sequence[Any], where: str) -> None:
    names = field_names()
    for key in keys:
        if not isinstance(key, str) or key not in names:
            raise ValueError(f"{where} has unknown setting {short_repr(key)}; settings: "
                             f"{', '.join(names)}")


def _value_list(name: str, values: Any) -> list[Any]:
    # A string is a sequence too, but "fa" must not become the rules "f" and "a".
    if not isinstance(values, (list, tuple)):
        raise ValueError(f"sweep grid[{name!r}] must be a list of values; got "
                         f"{short_repr(values)}")
    if not values:
        raise ValueError(f"sweep grid[{name!r}] is empty: give at least one value")
    return list(values)


def expand_grid(base_config: RunConfig | Mapping[str, Any] | None,
                grid: Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Any]]) -> SweepPlan:
    """The points of ``grid`` over ``base_config`` (nothing is run).

    ``grid`` is a mapping of setting name to a list of values, whose product is
    taken in the mapping's order (the last setting varies fastest), or a list of
    mappings of changes. Unknown settings, values that are not lists and grids of
    more than :data:`MAX_POINTS` points raise ``ValueError``; so does a grid
    whose every point the config rejects. A point the config rejects is kept,
    with the config's message, as an invalid point.
    """
    base = _as_config(base_config)
    if isinstance(grid, Mapping):
        keys = list(grid)
        _check_names(keys, "sweep grid")
        values = [_value_list(k, grid[k]) for k in keys]
        size = math.prod(len(v) for v in values)
        if size > MAX_POINTS:
            raise ValueError(f"sweep grid has {size:,} points; at most {MAX_POINTS:,} are "
                             "allowed (split it into several sweeps)")
        all_changes = [dict(zip(keys, combo, strict=True))
                       for combo in itertools.product(*values)]
        varied = keys
    elif isinstance(grid, (list, tuple)):
        if not grid:
            raise ValueError("sweep grid is an empty list: give at least one point")
        if len(grid) > MAX_POINTS:
            raise ValueError(f"sweep grid has {len(grid):,} points; at most {MAX_POINTS:,} "
                             "are allowed (split it into several sweeps)")
        varied, all_changes = [], []
        for i, changes in enumerate(grid):
            if not isinstance(changes, Mapping):
                raise ValueError(f"sweep grid[{i}] must be a mapping of setting name to "
                                 f"value; got {short_repr(changes)}")
            _check_names(list(changes), f"sweep grid[{i}]")
            varied += [k for k in changes if k not in varied]
            all_changes.append(dict(changes))
    else:
        raise ValueError("sweep grid must be a mapping of setting name to a list of values, "
                         "or a list of mappings of changes; got "
                         f"{type(grid).__name__} {short_repr(grid)}")
    points = []
    for index, changes in enumerate(all_changes):
        try:
            points.append(Point(index, changes, base.replace(**changes)))
        except (ValueError, TypeError) as exc:
            points.append(Point(index, changes, None, str(exc)))
    if not any(p.valid for p in points):
        raise ValueError(f"every point of the sweep grid is invalid ({len(points)}); "
                         f"the first: {points[0].error}")
    return SweepPlan(base, tuple(varied), tuple(points))


def _as_config(base: RunConfig | Mapping[str, Any] | None) -> RunConfig:
    if base is None:
        return RunConfig()
    if isinstance(base, RunConfig):
        return base
    if isinstance(base, Mapping):
        return RunConfig.from_dict(base)
    raise ValueError(f"sweep base config must be a RunConfig or a mapping of its fields; "
                     f"got {type(base).__name__}")


# ----------------------------------------------------------------- cache
def config_json(cfg: RunConfig) -> str:
    """The config's canonical JSON (sorted keys): what travels to workers, what
    the ``config`` column holds and what the cache key hashes."""
    return cfg.to_json(sort_keys=True)


def config_key(cfg: RunConfig) -> str:
    """The cache key of a config: sha256 of the package version and the config's
    canonical JSON. A new version recomputes everything; within one version
    (a development checkout), clear the cache after changing the training code."""
    from . import __version__

    text = f"fa_explore {__version__}\n{config_json(cfg)}"
    return hashlib.sha256(text.encode()).hexdigest()


def default_cache_dir() -> Path:
    """``$FA_EXPLORE_SWEEPS``, else ``~/.cache/fa_explore/sweeps``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "fa_explore" / "sweeps")


def _nan_to_none(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def _atomic_write(path: Path, data: bytes) -> None:
    # Write next to the target, then rename: a killed sweep leaves either the
    # whole file or none, never a truncated one that a re-run would trust.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class SweepCache:
    """Finished points on disk: ``<dir>/<key>.json`` holds the result row (and
    ``<dir>/<key>/`` the saved run, with ``save_runs``)."""

    def __init__(self, directory: str | Path | None = None):
        self.directory = Path(directory) if directory is not None else default_cache_dir()
        self._warned = False

    def path(self, key: str) -> Path:
        return self.directory / f"{key}.json"

    def run_dir(self, key: str) -> Path:
        return self.directory / key

    def get(self, key: str, cfg_json: str, need_run: bool = False) -> dict[str, Any] | None:
        """The cached result of that config, or None (absent, unreadable, for
        another config, or without the saved run that ``need_run`` asks for)."""
        path = self.path(key)
        try:
            with path.open("rb") as f:
                data = parse_json(f.read(MAX_JSON_BYTES + 1), str(path))
        except (OSError, ValueError):
            return None
        if not (isinstance(data, dict) and data.get("format") == CACHE_FORMAT
                and data.get("config") == cfg_json and isinstance(data.get("result"), dict)):
            return None
        if need_run and not (self.run_dir(key) / "run.json").is_file():
            return None
        result = data["result"]
        metrics = result.get("metrics") or {}
        result["metrics"] = {k: (math.nan if v is None else v) for k, v in metrics.items()}
        return result

    def put(self, key: str, cfg_json: str, result: dict[str, Any]) -> None:
        """Store a result (and its saved run's files); a cache that cannot be
        written is a warning, never a failed sweep."""
        files = result.pop("files", None)
        stored = dict(result, metrics={k: _nan_to_none(v)
                                       for k, v in result.get("metrics", {}).items()})
        stored["wall_time"] = _nan_to_none(stored.get("wall_time"))
        record = {"format": CACHE_FORMAT, "key": key, "config": cfg_json, "result": stored}
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            if files:
                self._put_run(key, files)
            _atomic_write(self.path(key), json.dumps(record, allow_nan=False).encode())
        except OSError as exc:
            if not self._warned:
                warnings.warn(f"sweep cache {self.directory} cannot be written ({exc}); "
                              "results are not cached", RuntimeWarning, stacklevel=3)
                self._warned = True

    def _put_run(self, key: str, files: Mapping[str, bytes]) -> None:
        partial = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=self.directory))
        try:
            for name, data in files.items():
                (partial / Path(name).name).write_bytes(data)
            target = self.run_dir(key)
            shutil.rmtree(target, ignore_errors=True)
            os.replace(partial, target)
        finally:
            shutil.rmtree(partial, ignore_errors=True)


def load_run(row_or_key: Mapping[str, Any] | str, cache_dir: str | Path | None = None) -> Run:
    """The saved run of a sweep row (a sweep with ``save_runs=True``), e.g. the
    cell of a heatmap a user clicked: ``load_run(table.iloc[3])``."""
    key = row_or_key if isinstance(row_or_key, str) else row_or_key["key"]
    path = SweepCache(cache_dir).run_dir(str(key))
    if not path.is_dir():
        raise ValueError(f"no saved run for key {key} in {path.parent} (run the sweep "
                         "with save_runs=True)")
    return Run.load(path)


# ---------------------------------------------------------- running points
class Runner:
    """How a sweep's points become tasks and runs: the hook for batching.

    :meth:`group` splits the configs to run into tasks (lists of indices); each
    task is one unit of work on one worker. :meth:`run` trains a task's configs
    and returns, per config, ``(outcome, seconds)``: the finished :class:`Run`,
    the exception training raised, or None for a config not started because
    ``should_stop`` said so. The default trains every point alone; a subclass
    can group compatible points (same data and shapes) and train them together
    (``train_many``). A runner travels to the workers, so it must be picklable
    (a module-level class).
    """

    def group(self, configs: Sequence[RunConfig]) -> list[list[int]]:
        return [[i] for i in range(len(configs))]

    def run(self, configs: Sequence[RunConfig], should_stop: Callable[[], bool] | None = None
            ) -> list[tuple[Run | BaseException | None, float]]:
        out: list[tuple[Run | BaseException | None, float]] = []
        for cfg in configs:
            if should_stop is not None and should_stop():
                out.append((None, 0.0))
                continue
            started = time.perf_counter()
            try:
                run = None
                for snapshot in train_iter(cfg, should_stop=should_stop):
                    run = snapshot.run
                out.append((run, time.perf_counter() - started))
            except Exception as exc:  # noqa: BLE001 - a failing point is a row, the sweep goes on
                out.append((exc, time.perf_counter() - started))
        return out


class EnsembleRunner(Runner):
    """The default runner: compatible points (same data and architecture, batchable
    rules; :func:`fa_explore.ensemble.plan_ensembles`) train together as one batched
    ensemble (:func:`fa_explore.train_many`), at most ``max_members`` per task so
    that a sweep's workers still share the work; the others train alone. Each
    point's ``wall_time`` is its share of its task's time."""

    def __init__(self, max_members: int = 8):
        if isinstance(max_members, bool) or not isinstance(max_members, int) or max_members < 1:
            raise ValueError(f"EnsembleRunner max_members must be an integer >= 1; got "
                             f"{max_members!r}")
        self.max_members = max_members

    def group(self, configs: Sequence[RunConfig]) -> list[list[int]]:
        from .ensemble import plan_ensembles

        try:
            plan = plan_ensembles(configs)
        except Exception:  # noqa: BLE001 - a point whose data cannot load fails alone
            return super().group(configs)
        tasks = [list(group[start:start + self.max_members]) for group in plan.groups
                 for start in range(0, len(group), self.max_members)]
        return tasks + [[i] for i in plan.alone]

    def run(self, configs, should_stop=None):
        if len(configs) == 1:
            return super().run(configs, should_stop)
        from .ensemble import train_many_iter

        if should_stop is not None and should_stop():
            return [(None, 0.0) for _ in configs]
        started = time.perf_counter()
        latest: list = [None] * len(configs)
        try:
            for snapshots in train_many_iter(configs, should_stop=should_stop):
                latest = snapshots
        except Exception as exc:  # noqa: BLE001 - the task's points fail, the sweep goes on
            seconds = time.perf_counter() - started
            return [(exc, seconds) for _ in configs]
        share = (time.perf_counter() - started) / len(configs)
        return [(None, 0.0) if s is None else (s.run, share) for s in latest]


def _failure(exc: BaseException, seconds: float = math.nan) -> dict[str, Any]:
    return {"status": "failed", "message": f"{type(exc).__name__}: {exc}", "steps": 0,
            "wall_time": seconds, "metrics": {}}


def _run_files(run: Run) -> dict[str, bytes]:
    with tempfile.TemporaryDirectory(prefix="fa_explore-sweep-") as tmp:
        run.save(tmp)
        return {p.name: p.read_bytes() for p in Path(tmp).iterdir() if p.is_file()}


def run_task(config_jsons: Sequence[str], runner: Runner | None = None,
             should_stop: Callable[[], bool] | None = None,
             save_runs: bool = False) -> list[dict[str, Any]]:
    """Train one task's configs (given as JSON) and return one plain result dict
    per config: ``status, message, steps, wall_time, metrics`` (the final history
    row), ``cancelled`` when the sweep stopped it, ``files`` with ``save_runs``.
    What every backend's worker calls."""
    configs = [RunConfig.from_json(text) for text in config_jsons]
    outcomes = (runner or EnsembleRunner()).run(configs, should_stop)
    if len(outcomes) != len(configs):
        raise RuntimeError(f"the sweep runner returned {len(outcomes)} outcomes for "
                           f"{len(configs)} configs")
    results = []
    for outcome, seconds in outcomes:
        if outcome is None:
            results.append({"status": "cancelled", "cancelled": True})
        elif isinstance(outcome, BaseException):
            results.append(_failure(outcome, seconds))
        else:
            final = outcome.final
            steps = outcome.diverged_step if outcome.diverged_step is not None else (
                final.get("step", 0))
            result = {"status": outcome.status, "message": outcome.message,
                      "steps": int(steps), "wall_time": seconds,
                      "metrics": {k: v for k, v in final.items() if k not in _NOT_METRICS}}
            # Stopped by the sweep (not by a target): not a result to keep.
            if outcome.status == "stopped" and should_stop is not None and should_stop():
                result["cancelled"] = True
            elif save_runs:
                result["files"] = _run_files(outcome)
            results.append(result)
    return results


def _single_thread() -> None:
    # One torch thread per worker: N workers x 2 threads on 2 cores oversubscribe
    # and every run gets slower; parallelism comes from the workers. The thread
    # policy's variable keeps train_iter at one thread too (unless a config says).
    import torch

    from .threads import pin_threads

    pin_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set, or parallel work has started in this process
        pass


# Set in each local worker process by its initializer.
_STOP_EVENT = None


def _init_local_worker(stop_event) -> None:
    global _STOP_EVENT
    _STOP_EVENT = stop_event
    # Ctrl-C goes to the whole process group: the parent cancels the workers
    # itself, so they need not print a traceback each.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _single_thread()
    _exit_fast()


_FAST_EXIT = False


def _exit_fast() -> None:
    """Make this worker process skip the interpreter teardown when it ends.

    A spawned worker ends with ``sys.exit``: a full teardown that takes torch
    1-5 s per worker (more on a loaded machine), all spent in the sweep's
    shutdown. Its results are sent by then, so skip it, as forked children do.
    Only for workers the sweep started itself (atexit runs last-in first out).
    """
    global _FAST_EXIT
    if not _FAST_EXIT:
        _FAST_EXIT = True
        atexit.register(_exit_now)


def _exit_now() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001, S110 - a closed stream: nothing to flush
            pass
    os._exit(0)


def _local_task(config_jsons, runner, save_runs):
    stop = _STOP_EVENT.is_set if _STOP_EVENT is not None else None
    return run_task(config_jsons, runner, stop, save_runs)


class _DaskStop:
    """``should_stop`` on a Dask worker: the sweep's distributed Event, asked
    at most every :data:`DASK_STOP_CHECK_SECONDS` (a training step is much shorter
    than a round trip to the scheduler)."""

    def __init__(self, name: str):
        self.name, self._last, self._set = name, -math.inf, False

    def __call__(self) -> bool:
        now = time.monotonic()
        if not self._set and now - self._last >= DASK_STOP_CHECK_SECONDS:
            self._last = now
            try:
                from distributed import Event

                self._set = Event(self.name).is_set()
            except Exception:  # noqa: BLE001 - no scheduler to ask: keep training
                self._set = False
        return self._set


def _dask_task(config_jsons, runner, save_runs, event_name, own_cluster):
    _single_thread()
    if own_cluster:
        _exit_fast()
    return run_task(config_jsons, runner, _DaskStop(event_name), save_runs)


# --------------------------------------------------------------- backends
def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))  # the CPUs this process may use (containers)
    except AttributeError:
        return os.cpu_count() or 1


def _check_workers(workers: Any) -> int | None:
    if workers is None:
        return None
    if isinstance(workers, bool) or not isinstance(workers, int) or not (
            1 <= workers <= MAX_WORKERS):
        raise ValueError(f"sweep workers must be None (one per CPU) or an integer in "
                         f"[1, {MAX_WORKERS}]; got {short_repr(workers)}")
    return workers


def _n_workers(workers: int | None, n_tasks: int) -> int:
    # Never more processes than tasks: each costs a torch import and memory.
    return max(1, min(workers or _cpu_count(), n_tasks))


class _Sequential:
    """Runs each task in this process when asked for results (the reference)."""

    def __init__(self, runner, save_runs, should_stop):
        self.runner, self.save_runs = runner, save_runs
        self.should_stop = should_stop
        self.queue: list[tuple[int, list[str]]] = []

    def submit(self, task_id, config_jsons):
        self.queue.append((task_id, config_jsons))

    def wait(self, timeout):
        task_id, config_jsons = self.queue.pop(0)
        try:
            return [(task_id, run_task(config_jsons, self.runner, self.should_stop,
                                       self.save_runs))]
        except Exception as exc:  # noqa: BLE001 - a broken runner fails its task, not the sweep
            return [(task_id, exc)]

    def close(self, cancel):
        self.queue.clear()


class _Local:
    """A spawned process pool on this machine, one torch thread per worker."""

    def __init__(self, workers, n_tasks, runner, save_runs):
        # spawn, not fork: a forked child inherits torch's thread pools in an
        # undefined state (hangs); spawn costs one torch import per worker.
        ctx = multiprocessing.get_context("spawn")
        self.stop_event = ctx.Event()
        self.n_workers = _n_workers(workers, n_tasks)
        self.pool = cf.ProcessPoolExecutor(self.n_workers, mp_context=ctx,
                                           initializer=_init_local_worker,
                                           initargs=(self.stop_event,))
        self.runner, self.save_runs = runner, save_runs
        self.futures: dict[cf.Future, int] = {}

    def submit(self, task_id, config_jsons):
        future = self.pool.submit(_local_task, config_jsons, self.runner, self.save_runs)
        self.futures[future] = task_id

    def wait(self, timeout):
        done, _ = cf.wait(list(self.futures), timeout=timeout,
                          return_when=cf.FIRST_COMPLETED)
        out = []
        for future in done:
            task_id = self.futures.pop(future)
            try:
                out.append((task_id, future.result()))
            except Exception as exc:  # noqa: BLE001 - e.g. BrokenProcessPool: a worker died
                out.append((task_id, exc))
        return out

    def close(self, cancel):
        processes = list((getattr(self.pool, "_processes", None) or {}).values())
        if not cancel:
            self.pool.shutdown(wait=True)
            return
        # Running points stop at their next step; queued ones return at once.
        self.stop_event.set()
        self.pool.shutdown(wait=False, cancel_futures=True)
        deadline = time.monotonic() + JOIN_SECONDS
        for process in processes:
            process.join(max(0.0, deadline - time.monotonic()))
        for process in processes:  # stuck (say, in a download): no orphans left behind
            if process.is_alive():
                process.terminate()
                process.join(2.0)


class _Dask:
    """Dask distributed: our own LocalCluster, or the scheduler at ``address``."""

    def __init__(self, address, workers, n_tasks, runner, save_runs):
        try:
            import distributed
        except ImportError:
            raise ImportError("the dask backend needs dask.distributed: "
                              "pip install 'fa_explore[sweep]'") from None
        self.distributed = distributed
        self.cluster = None
        self.own_client = True
        if address is None:
            n = _n_workers(workers, n_tasks)
            # Processes with one thread each (torch holds the GIL in Python code);
            # only this machine's loopback; no dashboard port opened.
            self.cluster = distributed.LocalCluster(
                n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None,
                host="127.0.0.1", silence_logs=logging.ERROR)
            try:
                self.client = distributed.Client(self.cluster)
            except BaseException:
                self.cluster.close()
                raise
        elif isinstance(address, distributed.Client):
            self.client, self.own_client = address, False
        else:  # "tcp://host:8786", or a cluster object (dask-gateway's GatewayCluster)
            self.client = distributed.Client(address)
        self.event_name = f"fa-explore-sweep-stop-{uuid.uuid4().hex}"
        self.runner, self.save_runs = runner, save_runs
        self.completed = distributed.as_completed()
        self.futures: dict[str, tuple[Any, int]] = {}

    def submit(self, task_id, config_jsons):
        # Configs travel as JSON text, results come back as plain dicts: nothing
        # but the runner hook is pickled, so any worker with fa_explore can run it.
        future = self.client.submit(_dask_task, list(config_jsons), self.runner,
                                    self.save_runs, self.event_name,
                                    self.cluster is not None, pure=False,
                                    key=f"fa-explore-point-{uuid.uuid4().hex}")
        self.futures[future.key] = (future, task_id)
        self.completed.add(future)

    def wait(self, timeout):
        deadline = time.monotonic() + timeout
        batch = self.completed.next_batch(block=False)
        while not batch and time.monotonic() < deadline:
            time.sleep(0.02)
            batch = self.completed.next_batch(block=False)
        out = []
        for future in batch:
            _, task_id = self.futures.pop(future.key)
            try:
                out.append((task_id, future.result()))
            except Exception as exc:  # noqa: BLE001 - KilledWorker, a cancelled future, ...
                out.append((task_id, exc))
        return out

    def close(self, cancel):
        try:
            if cancel and self.futures:
                try:  # running points on a shared cluster stop at their next check
                    self.distributed.Event(self.event_name, client=self.client).set()
                except Exception:  # noqa: BLE001, S110 - the scheduler may be gone already
                    pass
                self.client.cancel([f for f, _ in self.futures.values()])
            self.completed.clear()
            self.futures.clear()
        finally:
            if self.own_client:
                self.client.close()
            if self.cluster is not None:
                self.cluster.close()  # our workers are processes: closing ends them


# ------------------------------------------------------------------ sweep
def _metric_filter(metrics: Sequence[str] | None) -> Callable[[str], bool]:
    """``metrics`` names columns (``test_acc``) or per-layer families
    (``grad_angle`` keeps ``grad_angle/1``, ``grad_angle/2``, ...)."""
    if metrics is None:
        return lambda name: True
    if isinstance(metrics, str) or not all(isinstance(m, str) for m in metrics):
        raise ValueError(f"sweep metrics must be a list of metric names; got "
                         f"{short_repr(metrics)}")
    wanted = set(metrics)
    return lambda name: name in wanted or name.partition("/")[0] in wanted


def _row(plan: SweepPlan, point: Point, result: Mapping[str, Any], keep: Callable,
         cached: bool, key: str | None) -> dict[str, Any]:
    row: dict[str, Any] = {"point": point.index}
    for name in plan.varied:
        row[name] = plan.shown(point, name)
    row["status"] = result["status"]
    row["message"] = result.get("message", "")
    for name, value in (result.get("metrics") or {}).items():
        if keep(name):
            row[name] = math.nan if value is None else value
    row["steps"] = result.get("steps", 0)
    wall = result.get("wall_time")
    row["wall_time"] = math.nan if wall is None else wall
    row["cached"] = cached
    row["config"] = config_json(point.config) if point.config is not None else None
    row["key"] = key
    return row


def iter_sweep(base_config: RunConfig | Mapping[str, Any] | None = None,
               grid: Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Any]] | None = None,
               *, backend: str = "local", address: Any = None, workers: int | None = None,
               cache_dir: str | Path | None = None, cache: bool = True,
               metrics: Sequence[str] | None = None, save_runs: bool = False,
               should_stop: Callable[[], bool] | None = None,
               runner: Runner | None = None) -> Iterator[dict[str, Any]]:
    """Run a sweep, yielding each point's result row (a dict) as it finishes.

    Rows come in completion order (``row["point"]`` is the point's index): invalid
    points first, then cached ones, then the rest as workers finish them. Each
    row has the varied settings, ``status`` and ``message``, the final metrics,
    ``steps``, ``wall_time`` (seconds of training), ``cached``, ``config`` (the
    config's JSON) and ``key`` (its cache key).

    Closing the iterator (``break`` in a ``for`` loop, ``.close()``) or
    ``should_stop`` returning True cancels the points not started and stops the
    running ones at their next step; no worker process is left behind. With the
    sequential backend ``should_stop`` is also called between training steps, so
    keep it cheap. The grid is checked at the call, before anything runs
    (``ValueError``). See :func:`sweep` for the arguments.
    """
    return _start(base_config, grid, backend, address, workers, cache_dir, cache, metrics,
                  save_runs, should_stop, runner)[1]


def _start(base_config, grid, backend, address, workers, cache_dir, cache, metrics, save_runs,
           should_stop, runner) -> tuple[SweepPlan, Iterator[dict[str, Any]]]:
    """Check everything now (a generator would only fail at its first row)."""
    if grid is None:
        raise ValueError("sweep needs a grid: a mapping of setting name to a list of "
                         "values, or a list of mappings of changes")
    plan = expand_grid(base_config, grid)
    if backend not in BACKENDS:
        raise ValueError(f"sweep backend must be one of {', '.join(BACKENDS)}; got "
                         f"{short_repr(backend)}")
    if address is not None and backend != "dask":
        raise ValueError(f"sweep address is for the dask backend; got backend {backend!r}")
    workers = _check_workers(workers)
    keep = _metric_filter(metrics)
    store = SweepCache(cache_dir) if cache else None
    return plan, _iterate(plan, backend, address, workers, store, keep, save_runs,
                          should_stop, runner or EnsembleRunner())


def _iterate(plan, backend, address, workers, store, keep, save_runs, should_stop, runner):
    for point in plan.points:
        if not point.valid:
            yield _row(plan, point, {"status": "invalid", "message": point.error}, keep,
                       False, None)
    # Points with the same config run once.
    by_key: dict[str, list[Point]] = {}
    for point in plan.valid_points:
        by_key.setdefault(config_key(point.config), []).append(point)
    todo: list[str] = []
    for key, points in by_key.items():
        hit = store.get(key, config_json(points[0].config), save_runs) if store else None
        if hit is None:
            todo.append(key)
            continue
        for point in points:
            yield _row(plan, point, hit, keep, True, key)
    if not todo:
        return
    configs = [by_key[key][0].config for key in todo]
    groups = runner.group(configs)
    if sorted(i for g in groups for i in g) != list(range(len(configs))):
        raise RuntimeError("the sweep runner's group() must put every config in exactly "
                           "one task")
    tasks = [[todo[i] for i in group] for group in groups if group]

    if backend == "sequential":
        # In this process the caller's should_stop can be asked at every step.
        executor = _Sequential(runner, save_runs, should_stop)
    elif backend == "local":
        executor = _Local(workers, len(tasks), runner, save_runs)
    else:
        executor = _Dask(address, workers, len(tasks), runner, save_runs)
    pending = set(range(len(tasks)))
    try:
        for task_id, keys in enumerate(tasks):
            executor.submit(task_id, [config_json(by_key[k][0].config) for k in keys])
        while pending:
            if should_stop is not None and should_stop():
                return
            for task_id, outcome in executor.wait(POLL_SECONDS):
                pending.discard(task_id)
                keys = tasks[task_id]
                if not isinstance(outcome, BaseException) and len(outcome) != len(keys):
                    outcome = RuntimeError(f"a worker returned {len(outcome)} results for "
                                           f"{len(keys)} points (another fa_explore version?)")
                if isinstance(outcome, BaseException):
                    results = [_failure(outcome) for _ in keys]
                else:
                    results = outcome
                for key, result in zip(keys, results, strict=True):
                    if result.get("cancelled"):
                        continue
                    if store is not None and result["status"] != "failed":
                        # Failures are not cached: a missing download or a lost
                        # worker may work next time.
                        store.put(key, config_json(by_key[key][0].config), dict(result))
                    result.pop("files", None)
                    for point in by_key[key]:
                        yield _row(plan, point, result, keep, False, key)
    finally:
        executor.close(cancel=bool(pending))


def sweep(base_config: RunConfig | Mapping[str, Any] | None = None,
          grid: Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Any]] | None = None,
          *, backend: str = "local", address: Any = None, workers: int | None = None,
          cache_dir: str | Path | None = None, cache: bool = True,
          metrics: Sequence[str] | None = None, save_runs: bool = False,
          should_stop: Callable[[], bool] | None = None, runner: Runner | None = None,
          progress: bool = False, iterate: bool = False) -> pd.DataFrame:
    """Run ``base_config`` over ``grid`` and return a tidy table, one row per point.

    ``grid``: a mapping of setting name to a list of values (the product is run,
    e.g. ``{"rule": ["bp", "fa"], "seed": [0, 1]}``) or a list of mappings of
    changes (explicit points). Every name must be a setting (``ValueError``
    otherwise, listing them). Points the config rejects are rows with status
    ``invalid`` and its message, unless all are (``ValueError``).

    Columns: ``point`` (the index in the grid), the varied settings (canonical
    values: tuples for ``hidden``), ``status`` (finished, stopped, diverged,
    failed, invalid, or cancelled when the sweep was stopped first),
    ``message``, the final history row's metrics (``train_loss``, ``train_acc``,
    ``test_loss``, ``test_acc`` and every per-layer column such as
    ``grad_angle/1``; ``metrics=["test_acc", "grad_angle"]`` keeps only those),
    ``steps``, ``wall_time`` (seconds), ``cached``, ``config`` (the JSON,
    ``RunConfig.from_json`` reads it) and ``key`` (the cache key).

    ``backend``: ``local`` (a spawned process pool, ``workers`` processes,
    default one per CPU up to the number of points), ``dask`` (a LocalCluster of
    ``workers`` processes, or the scheduler at ``address``: a ``tcp://`` address,
    a ``distributed.Client`` or a cluster object such as dask-gateway's) or
    ``sequential`` (this process). Workers train with one torch thread each.

    ``cache``: finished points are kept in ``cache_dir`` (default
    :func:`default_cache_dir`) and not recomputed; ``save_runs`` also keeps each
    run's weights (:func:`load_run`). ``should_stop`` is polled while waiting;
    True cancels the rest (their rows say ``cancelled``). ``runner`` is the
    batching hook (:class:`Runner`); the default, :class:`EnsembleRunner`, trains
    compatible points as batched ensembles (``train_many``), ``Runner()`` trains
    every point alone. ``progress`` shows a tqdm bar.
    ``iterate=True`` returns :func:`iter_sweep`'s iterator instead of a table.
    """
    plan, rows_iter = _start(base_config, grid, backend, address, workers, cache_dir, cache,
                             metrics, save_runs, should_stop, runner)
    if iterate:
        return rows_iter
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(plan.points), unit="point", desc="sweep")
    rows: list[dict[str, Any]] = []
    counts: dict[str, int] = {}
    try:
        for row in rows_iter:
            rows.append(row)
            counts[row["status"]] = counts.get(row["status"], 0) + 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(counts, refresh=False)
    finally:
        rows_iter.close()
        if bar is not None:
            bar.close()
    seen = {row["point"] for row in rows}
    keep = _metric_filter(metrics)
    for point in plan.points:
        if point.index not in seen:
            rows.append(_row(plan, point, {"status": "cancelled", "message": (
                "the sweep was stopped before this point finished"), "wall_time": None},
                keep, False, config_key(point.config) if point.valid else None))
    if metrics is not None:
        columns = {c for row in rows for c in row}
        missing = [m for m in metrics
                   if m not in columns and not any(c.startswith(m + "/") for c in columns)]
        if missing and any(row["status"] == "finished" for row in rows):
            warnings.warn(f"sweep metrics {missing} match no column of the results",
                          UserWarning, stacklevel=2)
    return results_frame(rows, plan.varied)


def results_frame(rows: Sequence[Mapping[str, Any]], varied: Sequence[str] = ()) -> pd.DataFrame:
    """Sweep rows (from :func:`iter_sweep`) as a table in grid order, columns as
    :func:`sweep` describes them."""
    head = ["point", *varied, "status", "message"]
    metrics: list[str] = [m for m in _HEAD_METRICS if any(m in row for row in rows)]
    for row in rows:
        metrics += [k for k in row if k not in head and k not in _TAIL and k not in metrics]
    frame = pd.DataFrame(list(rows), columns=head + metrics + list(_TAIL))
    if len(frame):
        frame = frame.sort_values("point", kind="stable").reset_index(drop=True)
    return frame


# -------------------------------------------------------------- sweep file
SWEEP_FILE_KEYS = ("base", "grid", "backend", "workers", "address", "metrics")


def _yaml_load(text: str, path: Path) -> Any:
    try:
        import yaml
    except ImportError:
        raise ValueError(f"{path}: reading YAML needs PyYAML (pip install "
                         "'fa_explore[sweep]'), or write the file as .json") from None

    class _NoAliases(yaml.SafeLoader):
        # Aliases let a tiny file describe an exponentially large value
        # (a "billion laughs" list); a grid never needs them.
        def fetch_alias(self):
            raise yaml.YAMLError("aliases (*name) are not allowed in a sweep file")

    try:
        return yaml.load(text, Loader=_NoAliases)  # a SafeLoader subclass: no objects built
    except RecursionError:
        raise ValueError(f"{path}: the YAML is nested too deeply") from None
    except yaml.YAMLError as exc:
        detail = " ".join(str(exc).split())[:300]
        raise ValueError(f"{path}: not valid YAML ({detail})") from None


def load_sweep_file(path: str | Path) -> dict[str, Any]:
    """Read a sweep file (YAML, or JSON for ``.json``) of at most 1 MiB::

        base: {dataset: digits, hidden: [64], epochs: 3}
        grid: {rule: [bp, fa, dfa, kp], seed: [0, 1]}
        backend: local        # optional: local, dask or sequential
        workers: 2            # optional
        address: null         # optional: a Dask scheduler
        metrics: [test_acc]   # optional

    Returns those keys with ``base`` as a :class:`RunConfig`. Every problem is a
    ``ValueError`` naming the file (the grid itself is checked by
    :func:`expand_grid`)."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_SWEEP_FILE + 1)
    except IsADirectoryError:
        raise ValueError(f"{path}: is a directory, not a sweep file") from None
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the file ({exc.strerror or exc})") from None
    if len(raw) > MAX_SWEEP_FILE:
        raise ValueError(f"{path}: the file is larger than {MAX_SWEEP_FILE // 2**20} MiB")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not UTF-8 text") from None
    if path.suffix.lower() == ".json":
        try:
            data = parse_json(text, str(path))
        except ValueError as exc:
            raise ValueError(str(exc)) from None
    else:
        data = _yaml_load(text, path)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: needs a mapping with a 'grid' (and optionally 'base', "
                         f"'backend', 'workers', 'address', 'metrics'); got "
                         f"{type(data).__name__}")
    unknown = [k for k in data if k not in SWEEP_FILE_KEYS]
    if unknown:
        raise ValueError(f"{path}: unknown key {short_repr(unknown[0])}; allowed: "
                         f"{', '.join(SWEEP_FILE_KEYS)}")
    if "grid" not in data:
        raise ValueError(f"{path}: has no 'grid' (setting: list of values)")
    out: dict[str, Any] = {"grid": data["grid"]}
    try:
        out["base"] = _as_config(data.get("base") or {})
        backend = data.get("backend", "local")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got "
                             f"{short_repr(backend)}")
        out["backend"] = backend
        out["workers"] = _check_workers(data.get("workers"))
        address = data.get("address")
        if address is not None and not isinstance(address, str):
            raise ValueError(f"address must be a scheduler address such as "
                             f"tcp://127.0.0.1:8786; got {short_repr(address)}")
        out["address"] = address
        metrics = data.get("metrics")
        if metrics is not None:
            _metric_filter(metrics)
        out["metrics"] = metrics
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    return out


# ------------------------------------------------------- a callable module
class _CallableModule(types.ModuleType):
    """``fa_explore.sweep(...)`` runs a sweep and ``fa_explore.sweep`` stays this
    module: a function of the same name exported by the package would hide the
    module, and ``import fa_explore.sweep as m`` would then give the function."""

    def __call__(self, *args: Any, **kwargs: Any) -> pd.DataFrame:
        return sweep(*args, **kwargs)


__signature__ = inspect.signature(sweep)  # what inspect and Jupyter show for the module
sys.modules[__name__].__class__ = _CallableModule
