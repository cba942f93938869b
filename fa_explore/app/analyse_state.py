"""The dashboard's Analyse action without widgets: the curvature and robustness
of a finished or pinned run, computed in a worker thread.

:func:`analyse_run` does the work with the library's analyses (the Hessian's
top eigenvalues and trace, :mod:`fa_explore.analysis.hessian`, and the FGSM
accuracy curve, :func:`fa_explore.analysis.robustness_curve`), on the run's own
data, checking ``should_stop`` between the steps. :class:`AnalyseSession` runs
one analysis at a time off the UI thread and publishes an immutable tuple of
:class:`AnalysisResult` (one per run, newest last); the dashboard's renderer
draws it.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import pandas as pd

from .controls import plain_message
from .session import join_worker, log

# Small enough for a student's kernel (seconds for the dashboard's default MLP).
HESSIAN_EXAMPLES = 256  # training examples the loss Hessian is taken on
TOP_EIGENVALUES = 3
HESSIAN_TOL = 1e-3  # ARPACK's relative accuracy: three digits are what the table shows
TRACE_SAMPLES = 30  # Hutchinson's Rademacher probes
ATTACK_EXAMPLES = 500  # test examples attacked
FGSM_EPS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5)  # L∞ radii, in standardised-input units
MAX_RESULTS = 8  # analysed runs kept (the oldest goes)


class _Cancelled(Exception):
    """The analysis was stopped (never shown)."""


@dataclass(frozen=True, eq=False)
class AnalysisResult:
    """One run's analysis: ``key`` identifies the run (its generation), ``label``
    names it; ``status`` is ``running``, ``done``, ``stopped`` or ``failed`` (then
    ``message`` says why). ``robustness`` is robustness_curve's frame."""

    key: int
    label: str
    status: str
    eigenvalues: tuple[float, ...] = ()
    trace: float | None = None
    trace_stderr: float = math.nan
    robustness: pd.DataFrame | None = None
    message: str = ""
    seconds: float = math.nan


def analysis_batches(run) -> tuple[Any, Any, Any, Any]:
    """``(x_hessian, y_hessian, x_attack, y_attack)``: the first
    :data:`HESSIAN_EXAMPLES` training and :data:`ATTACK_EXAMPLES` test examples
    of the run's own data."""
    data = run.data
    return (data.x_train[:HESSIAN_EXAMPLES], data.y_train[:HESSIAN_EXAMPLES],
            data.x_test[:ATTACK_EXAMPLES], data.y_test[:ATTACK_EXAMPLES])


def analyse_run(run, label: str, key: int = 0, *, should_stop: Callable[[], bool] | None = None,
                on_progress: Callable[[AnalysisResult], None] | None = None,
                k: int = TOP_EIGENVALUES, tol: float = HESSIAN_TOL,
                trace_samples: int = TRACE_SAMPLES,
                eps: Sequence[float] = FGSM_EPS) -> AnalysisResult:
    """The Hessian's ``k`` top eigenvalues (to relative accuracy ``tol``) and its
    trace (``trace_samples``
    probes) on the run's training examples, and the FGSM (L∞) accuracy at each of
    ``eps`` on its test examples (:func:`analysis_batches`). ``on_progress`` gets
    the partial result after each step; ``should_stop`` is asked between steps
    (a stopped analysis returns what it has, status ``stopped``)."""
    from ..analysis import hessian_eigenvalues, hessian_trace, robustness_curve

    started = time.perf_counter()
    stop = should_stop or (lambda: False)
    result = AnalysisResult(key, label, "running")

    def step(**changes: Any) -> AnalysisResult:
        nonlocal result
        result = replace(result, **changes, seconds=time.perf_counter() - started)
        if on_progress is not None:
            on_progress(result)
        if stop():
            raise _Cancelled
        return result

    try:
        if stop():
            raise _Cancelled
        xh, yh, xa, ya = analysis_batches(run)
        model = run.model
        values = hessian_eigenvalues(model, xh, yh, k=min(k, _n_params(model) - 1), tol=tol)
        step(eigenvalues=tuple(float(v) for v in values))
        trace = hessian_trace(model, xh, yh, samples=trace_samples)
        step(trace=trace.mean, trace_stderr=trace.stderr)
        frames = []
        for e in eps:
            frames.append(robustness_curve({label: model}, xa, ya, [e], method="fgsm"))
            step(robustness=pd.concat(frames, ignore_index=True))
        return step(status="done")
    except _Cancelled:
        return replace(result, status="stopped", message="stopped before it finished")


def _n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


class AnalyseSession:
    """Analyses runs one at a time in a worker thread.

    ``results`` is an immutable tuple (newest last, one per run key); it and
    ``status`` (ready, running, then the last analysis's done, stopped or
    failed) and ``message`` are replaced under the lock, and ``on_change`` is called
    after each change (from the worker or the caller). :meth:`stop` returns at
    once; the analysis ends after its current step.
    """

    def __init__(self, *, on_change: Callable[[AnalyseSession], None] | None = None,
                 **options: Any):
        self.on_change = on_change
        self.options = options  # passed to analyse_run (tests make it smaller)
        self.results: tuple[AnalysisResult, ...] = ()
        self.status, self.message = "ready", ""
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self._generation = 0

    @property
    def active(self) -> bool:
        """An analysis is going."""
        return self.status == "running"

    def start(self, run, label: str, key: int) -> None:
        """Analyse ``run`` (named ``label``; ``key`` tells runs apart). ``ValueError``
        while another analysis is going or when the run cannot be analysed."""
        if run is None:
            raise ValueError("Nothing to analyse yet: train a run first.")
        with self._lock:
            if self.active:
                raise ValueError("An analysis is going: wait for it or press Stop.")
            self._generation += 1
            generation = self._generation
            self._stop = stop = threading.Event()
            self._set("running", f"analysing {label}: Hessian, then FGSM")
            worker = threading.Thread(target=self._work, args=(generation, run, label, key, stop),
                                      name=f"fx-analyse-{generation}", daemon=True)
            self._worker = worker
            worker.start()

    def stop(self) -> bool:
        """End the analysis after its current step (returns at once). False if none
        is going."""
        with self._lock:
            if not self.active:
                return False
            self._stop.set()
            self._set("running", "stopping after the current step")
            return True

    def forget(self, keep: Sequence[int]) -> None:
        """Drop the results of runs not in ``keep`` (unpinned, replaced)."""
        with self._lock:
            kept = tuple(r for r in self.results if r.key in keep)
            if kept != self.results:
                self.results = kept
                self._emit()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait for the worker to end (tests, closing). True if none is left."""
        return join_worker(self._worker, timeout)

    def close(self, timeout: float | None = 10.0) -> None:
        """Stop the analysis and join its thread (``timeout`` bounds the join)."""
        with self._lock:
            self._stop.set()
            self._generation += 1
        self.wait_idle(timeout)

    def _set(self, status: str, message: str) -> None:
        with self._lock:
            self.status, self.message = status, message
            self._emit()

    def _emit(self) -> None:
        if self.on_change is None:
            return
        try:
            self.on_change(self)
        except Exception:  # noqa: BLE001 - a drawing error must not end the analysis
            log.exception("analysis listener failed")

    def _put(self, generation: int, result: AnalysisResult) -> None:
        with self._lock:
            if generation != self._generation:
                return
            others = tuple(r for r in self.results if r.key != result.key)
            self.results = (others + (result,))[-MAX_RESULTS:]
            self._emit()

    def _work(self, generation: int, run, label: str, key: int, stop: threading.Event) -> None:
        try:
            result = analyse_run(run, label, key, should_stop=stop.is_set,
                                 on_progress=lambda r: self._put(generation, r), **self.options)
            self._put(generation, result)
            status = result.status
            text = (f"{label}: analysed in {result.seconds:.1f} s" if status == "done"
                    else f"{label}: {result.message}")
        except Exception as exc:  # noqa: BLE001 - shown in plain words, logged in full
            log.exception("analysis of %s failed", label)
            message = plain_message(exc)
            self._put(generation, AnalysisResult(key, label, "failed", message=message))
            status, text = "failed", f"{label}: the analysis failed: {message}"
        with self._lock:
            if generation == self._generation:
                self._set(status, text)


__all__ = ["AnalyseSession", "AnalysisResult", "analyse_run", "analysis_batches"]
