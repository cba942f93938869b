"""Training runs: ``build``, ``train_iter`` (a stoppable stream of snapshots),
``train`` and the :class:`Run` they produce.

A run is seeded and deterministic on the CPU: model init, feedback draws, batch
order and every random perturbation come from their own generators derived from
``cfg.seed``; the data draws (class subset, label noise, subsample, generated
sets) and the fixed evaluation subset follow ``cfg.data_seed`` (``seed`` when
None), so runs that differ only in ``seed`` see the same data. A NaN or infinite
loss, or an evaluated training loss above ``divergence_factor`` times the initial
one, ends the run with status ``diverged``.

A run's status is one of :data:`STATUSES`: ``running`` while it trains, then
``finished`` (every step done, or a target reached), ``diverged`` (the loss blew
up), ``stopped`` (the caller stopped a running run) or ``failed`` (an exception).
Its ``stop_reason`` (one of :data:`STOP_REASONS`) says why it ended.

The training steps never wait for the device: the batch losses stay on it and are
checked for NaN/inf at the next evaluation (:class:`LossCheck`).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from .config import RunConfig
from .data import Dataset, check_dataset, dataset_from_config, dataset_shape
from .metrics import ConservationTracker, evaluate, layer_metrics
from .models import FeedforwardNet, build_model
from .rules import RULES, Rule
from .settings import EVALUATIONS_PER_RUN
from .threads import apply_threads

FORMAT_VERSION = 1
# Every status a Run can have; the only list of them (the dashboard's own states,
# such as "ready" or "paused", are its session's, not a run's).
STATUSES = ("running", "finished", "diverged", "stopped", "failed")
# Why a run ended (Run.stop_reason; None while it runs): every step done, a
# target_loss / target_acc reached, diverged, stopped by the caller, an exception.
STOP_REASONS = ("completed", "target", "diverged", "stopped", "failed")
_REASON_OF_STATUS = {"finished": "completed", "diverged": "diverged", "stopped": "stopped",
                     "failed": "failed", "running": None}
PROBE_BATCH = 256  # examples in the fixed batch the gradient angle is measured on
TRAJECTORY_POINTS = 128  # bound on the stored parameter trajectory
TRAJECTORY_BYTES = 256 * 2**20


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present; asking for an absent CUDA is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("RunConfig.device is 'cuda' but no CUDA device is available; "
                         "use 'auto' or 'cpu'")
    return torch.device(name)


def build(cfg: RunConfig, input_shape=None, n_classes=None,
          device: torch.device | str | None = None) -> tuple[FeedforwardNet, Rule]:
    """The model and the rule that trains it, seeded from ``cfg.seed``.

    ``input_shape`` and ``n_classes`` default to the dataset's, from its registry
    entry (nothing is loaded); models never look datasets up themselves.
    """
    cfg = cfg.resolve()
    device = resolve_device(cfg.device) if device is None else torch.device(device)
    if input_shape is None or n_classes is None:
        shape, classes = dataset_shape(cfg)
        input_shape = shape if input_shape is None else input_shape
        n_classes = classes if n_classes is None else n_classes
    model = build_model(cfg, input_shape, n_classes).to(device)
    rule_generator = torch.Generator(device=device).manual_seed(cfg.seed + 1)
    rule = RULES[cfg.rule](model, cfg, rule_generator).to(device)
    return model, rule


def make_optimizers(cfg: RunConfig, model: FeedforwardNet,
                    rule: Rule) -> list[torch.optim.Optimizer]:
    """One optimizer per kind named in the rule's parameter groups (``cfg.optimizer``
    by default), each group keeping the hyperparameters the rule gives it."""
    by_kind: dict[str, list[dict]] = {}
    for group in rule.param_groups(model):
        group = dict(group)
        kind = group.pop("optimizer", cfg.optimizer)
        group["params"] = [p for p in group["params"] if p.requires_grad]
        if group["params"]:
            by_kind.setdefault(kind, []).append(group)
    optimizers = []
    for kind, groups in by_kind.items():
        if kind == "sgd":
            optimizers.append(torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum,
                                              weight_decay=cfg.weight_decay))
        elif kind == "adam":
            optimizers.append(torch.optim.Adam(groups, lr=cfg.lr,
                                               weight_decay=cfg.weight_decay))
        else:
            raise ValueError(f"optimizer must be sgd or adam; got {kind!r}")
    return optimizers


def lr_factor_at(cfg: RunConfig, updates_done: int, steps_per_epoch: int,
                 total_steps: int) -> float:
    """What ``cfg.lr_schedule`` multiplies every base learning rate by for the next
    update, after ``updates_done`` updates.

    ``constant``: 1. ``step``: ``lr_factor`` to the number of ``lr_milestones``
    reached, a milestone ``m`` counting from the first update of epoch ``m``
    (epochs from 0, as ``torch.optim.lr_scheduler.MultiStepLR`` stepped per
    epoch): lr 0.01, milestones (20, 30), factor 0.5 trains epochs 0-19 at 0.01,
    20-29 at 0.005 and the rest at 0.0025. ``cosine``: ``(1 + cos(π k / T)) / 2``
    for ``k`` updates done of ``T``, from 1 at the first update to 0 after the last.
    """
    if cfg.lr_schedule == "constant":
        return 1.0
    if cfg.lr_schedule == "step":
        epoch = updates_done // steps_per_epoch  # the epoch of the next update
        return cfg.lr_factor ** sum(1 for m in cfg.lr_milestones if epoch >= m)
    if cfg.lr_schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(updates_done, total_steps) / total_steps))
    raise ValueError(f"RunConfig.lr_schedule must be one of constant, step, cosine; "
                     f"got {cfg.lr_schedule!r}")


def make_schedulers(cfg: RunConfig, optimizers: list[torch.optim.Optimizer],
                    steps_per_epoch: int, total_steps: int
                    ) -> list[torch.optim.lr_scheduler.LRScheduler]:
    """One ``LambdaLR`` per optimizer, stepped after every update, applying
    :func:`lr_factor_at` to each parameter group's own base learning rate (so a
    rule's group with its own lr, such as DKP's feedback, keeps its ratio to the
    rest). None for the constant schedule."""
    if cfg.lr_schedule == "constant":
        return []
    return [torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda k: lr_factor_at(cfg, k, steps_per_epoch, total_steps))
        for optimizer in optimizers]


class Trajectory:
    """A bounded, downsampled record of the flattened model parameters.

    It always holds the first and the most recent recorded point, so it spans the
    whole run, with roughly even spacing in between (for the loss-landscape view):
    the points at every ``stride``-th record form a grid of at most
    ``max_points - 1`` points, and when the grid is full every other point is
    dropped and the stride doubles. The newest point is kept beside the grid
    whenever it is not on it. ``steps`` and ``points`` are new lists after every
    record (never changed in place), so another thread may read them; use
    :meth:`snapshot` for a consistent pair.

    ``max_points`` defaults to ``TRAJECTORY_POINTS``, lowered so that the points
    fit in ``TRAJECTORY_BYTES`` of float32 (and never below 8).
    """

    def __init__(self, n_params: int, max_points: int | None = None):
        if max_points is None:
            max_points = max(8, min(TRAJECTORY_POINTS, TRAJECTORY_BYTES // (4 * n_params)))
        if isinstance(max_points, bool) or not isinstance(max_points, int) or max_points < 2:
            raise ValueError(f"Trajectory max_points must be an integer >= 2 (the first and "
                             f"the last point); got {max_points!r}")
        self.max_points = max_points
        self._grid: list[tuple[int, torch.Tensor]] = []
        self._latest: tuple[int, torch.Tensor] | None = None
        self._stride, self._seen = 1, 0
        self._view: tuple[list[int], list[torch.Tensor]] = ([], [])

    def record(self, step: int, model: torch.nn.Module) -> None:
        """Record the model's parameters at ``step`` (steps must increase; a second
        record of the same step is ignored)."""
        if self._latest is not None and self._latest[0] == step:
            return
        vector = torch.cat([p.detach().flatten() for p in model.parameters()]).float().cpu()
        point = (step, vector)
        if self._seen % self._stride == 0:
            self._grid.append(point)
            if len(self._grid) > self.max_points - 1:
                # grid[::2] keeps the first point and every 2·stride-th record after it.
                self._grid = self._grid[::2]
                self._stride *= 2
        self._seen += 1
        self._latest = point
        kept = list(self._grid)
        if kept[-1][0] != step:  # the newest point fell between grid points
            kept.append(point)
        self._view = ([s for s, _ in kept], [v for _, v in kept])

    @property
    def steps(self) -> list[int]:
        """Training steps of the kept points, increasing; first and last included."""
        return self._view[0]

    @property
    def points(self) -> list[torch.Tensor]:
        """The kept flattened parameter vectors (float32, CPU), one per step."""
        return self._view[1]

    def snapshot(self) -> tuple[list[int], list[torch.Tensor]]:
        """``(steps, points)`` from the same moment (safe while training goes on)."""
        return self._view

    def matrix(self) -> torch.Tensor:
        """Points as rows, shape ``(n_points, n_params)``."""
        points = self.points
        return torch.stack(points) if points else torch.empty(0)


@dataclass
class Snapshot:
    """What ``train_iter`` yields: the live run, the newest history row (None when
    the run ended without one), the step and the run's status."""

    run: Run
    row: dict[str, Any] | None
    step: int
    total_steps: int
    status: str


class Run:
    """A training run: its config, model, rule, data, status and history.

    ``rows`` (``history`` as a DataFrame) holds one row per evaluation: ``step``,
    ``epoch``, the evaluated losses and accuracies, ``lr`` (the learning rate the
    next update uses, schedule applied, of the rule's first parameter group: the
    model's), ``time`` and the per-layer metrics. ``stop_reason`` says why the run
    ended (:data:`STOP_REASONS`; None while it runs). ``threads`` is the thread
    policy's choice for a CPU run trained here: ``(count, reason)``
    (:mod:`fa_explore.threads`).
    """

    def __init__(self, config: RunConfig, model: FeedforwardNet, rule: Rule,
                 data: Dataset | None = None):
        self.config = config
        self.model = model
        self.rule = rule
        self._data = data
        self._status = "running"
        self.message = ""
        self.diverged_step: int | None = None
        self.stop_reason: str | None = None  # one of STOP_REASONS once the run ended
        self.rows: list[dict[str, Any]] = []
        self.trajectory = Trajectory(sum(p.numel() for p in model.parameters()))
        self.total_steps = 0
        # (count, reason) from the thread policy for a CPU run that trained here.
        self.threads: tuple[int, str] | None = None

    @property
    def status(self) -> str:
        """One of :data:`STATUSES`."""
        return self._status

    @status.setter
    def status(self, value: str) -> None:
        if value not in STATUSES:
            raise ValueError(f"Run.status must be one of {', '.join(STATUSES)}; got {value!r}")
        self._status = value

    @property
    def data(self) -> Dataset:
        if self._data is None:  # loaded runs fetch their data on first use
            self._data = dataset_from_config(self.config)
        return self._data

    @property
    def history(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows)

    @property
    def final(self) -> dict[str, Any]:
        return dict(self.rows[-1]) if self.rows else {}

    def __repr__(self) -> str:
        last = self.final
        acc = f", test_acc={last['test_acc']:.3f}" if "test_acc" in last else ""
        return f"Run(rule={self.config.rule!r}, status={self.status!r}{acc})"

    # ------------------------------------------------------------ save / load
    def save(self, path: str | Path) -> Path:
        """Write ``run.json`` (config, status, history) and ``weights.safetensors``
        (model and rule state) into the directory ``path``.

        ``run.json`` is strict JSON: a history value that is NaN or infinite is
        written as ``null``, so a ``null`` metric means "not defined or not finite"
        (e.g. layer 1's weight angle, or a diverged run's last loss); it loads as NaN.
        """
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        tensors.update({f"rule.{k}": v for k, v in self.rule.state_dict().items()})
        tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        weights = path / "weights.safetensors"
        save_file(tensors, str(weights), metadata={"format_version": str(FORMAT_VERSION)})
        meta = {
            "format_version": FORMAT_VERSION,
            "config": self.config.to_dict(),
            "status": self.status,
            "message": self.message,
            "diverged_step": self.diverged_step,
            "stop_reason": self.stop_reason,
            "total_steps": self.total_steps,
            "history": [{k: _json_number(v) for k, v in row.items()} for row in self.rows],
            "weights_sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
        }
        # allow_nan=False: a non-finite float that slipped past _json_number is an
        # error here, never an ``Infinity`` that other JSON readers refuse.
        (path / "run.json").write_text(json.dumps(meta, indent=1, allow_nan=False))
        return path

    @classmethod
    def load(cls, path: str | Path, device: str | None = "cpu") -> Run:
        """Read a run written by :meth:`save`. Raises ``ValueError`` naming the file
        and what is wrong with it: missing, truncated or corrupted, or a key of
        ``run.json`` that is missing or holds the wrong kind of value (keys it does
        not know are ignored). Only JSON and safetensors are read, never pickle."""
        from safetensors import SafetensorError
        from safetensors.torch import load

        path = Path(path)
        meta_file, weights_file = path / "run.json", path / "weights.safetensors"
        for f in (meta_file, weights_file):
            if not f.is_file():
                raise ValueError(f"saved run {path}: missing {f.name}")
        try:
            meta = json.loads(meta_file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"saved run {path}: run.json is not valid JSON "
                             f"(truncated or corrupted?): {exc}") from None
        _check_meta(meta, meta_file)
        raw = weights_file.read_bytes()
        if hashlib.sha256(raw).hexdigest() != meta["weights_sha256"]:
            raise ValueError(f"saved run {path}: weights.safetensors does not match the "
                             "checksum in run.json (truncated or corrupted)")
        try:
            tensors = load(raw)
        except (SafetensorError, Exception) as exc:  # noqa: BLE001 - report any decode error
            raise ValueError(f"saved run {path}: weights.safetensors cannot be read: "
                             f"{exc}") from None
        try:
            config = RunConfig.from_dict(meta["config"])
            if device is not None:
                config = config.replace(device=device)
        except ValueError as exc:
            raise ValueError(f"saved run {path}: run.json key config is not a valid "
                             f"RunConfig: {exc}") from None
        model, rule = build(config)
        try:
            model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
            rule.load_state_dict({k[5:]: v for k, v in tensors.items() if k.startswith("rule.")})
        except RuntimeError as exc:
            raise ValueError(f"saved run {path}: weights do not fit the saved config: "
                             f"{exc}") from None
        run = cls(config, model, rule)
        run.status = meta["status"]
        run.message = meta["message"]
        run.diverged_step = meta["diverged_step"]
        # Runs saved before stop_reason existed: what their status implies.
        run.stop_reason = meta.get("stop_reason", _REASON_OF_STATUS[meta["status"]])
        run.total_steps = meta["total_steps"]
        run.rows = [{k: (math.nan if v is None else v) for k, v in row.items()}
                    for row in meta["history"]]
        return run


def _json_number(value: Any) -> Any:
    """A history value as JSON holds it: non-finite floats become None (null)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# What run.json holds: key -> (check, what is allowed), in the order save writes it.
_META_KEYS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "format_version": (lambda v: _is_int(v) and v == FORMAT_VERSION,
                       f"{FORMAT_VERSION}, the only format version this version reads"),
    "config": (lambda v: isinstance(v, dict), "an object of RunConfig fields"),
    "status": (lambda v: v in STATUSES, "one of " + ", ".join(STATUSES)),
    "message": (lambda v: isinstance(v, str), "a string"),
    "diverged_step": (lambda v: v is None or _is_int(v), "null or an integer"),
    "total_steps": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "history": (lambda v: isinstance(v, list) and all(isinstance(r, dict) for r in v),
                "a list of rows (objects of metric name to number or null)"),
    "weights_sha256": (lambda v: isinstance(v, str), "a string (hex SHA-256)"),
}


def _check_meta(meta: Any, meta_file: Path) -> None:
    """Raise ValueError naming ``meta_file`` and the key when run.json's structure is
    not what :meth:`Run.save` writes (a wrong value, not only a missing key, would
    otherwise surface later as a confusing TypeError)."""
    where = f"saved run {meta_file.parent}: run.json"
    if not isinstance(meta, dict):
        raise ValueError(f"{where} must hold a JSON object of run fields; got "
                         f"{type(meta).__name__} {meta!r:.60}")
    missing = [key for key in _META_KEYS if key not in meta]
    if missing:
        raise ValueError(f"{where} lacks {', '.join(missing)} (a file written by "
                         f"Run.save has {', '.join(_META_KEYS)})")
    for key, (ok, allowed) in _META_KEYS.items():
        if not ok(meta[key]):
            raise ValueError(f"{where} key {key} must be {allowed}; got {meta[key]!r:.60}")
    reason = meta.get("stop_reason")
    if reason is not None and reason not in STOP_REASONS:
        raise ValueError(f"{where} key stop_reason must be null or one of "
                         f"{', '.join(STOP_REASONS)}; got {reason!r:.60}")
    for index, row in enumerate(meta["history"]):
        for name, value in row.items():
            if value is not None and (isinstance(value, bool)
                                      or not isinstance(value, (int, float))):
                raise ValueError(f"{where} key history row {index} column {name!r} must be "
                                 f"a number or null; got {value!r:.60}")


class LossCheck:
    """The batch losses since the last check, kept on the device: ``if not
    torch.isfinite(loss)`` at every step would make the host wait for the device
    (a CUDA sync) every step. :meth:`first_non_finite` looks once, at an
    evaluation; the run then ends there as diverged, naming the first bad step
    and its loss (the steps in between ran on, with non-finite weights).
    Every ``CHUNK`` losses are stacked into one tensor (no sync), so memory stays
    small for any ``eval_every``."""

    CHUNK = 1024

    def __init__(self):
        self._first_step = 1  # step of the first loss held
        self._pending: list[torch.Tensor] = []
        self._chunks: list[torch.Tensor] = []

    def add(self, loss: torch.Tensor) -> None:
        self._pending.append(loss.reshape(()))
        if len(self._pending) == self.CHUNK:
            self._chunks.append(torch.stack(self._pending))
            self._pending = []

    def first_non_finite(self) -> tuple[int, float] | None:
        """``(step, loss)`` of the first non-finite loss since the last call, or None
        (one host sync); the losses held are then dropped."""
        if self._pending:
            self._chunks.append(torch.stack(self._pending))
        losses = torch.cat(self._chunks) if self._chunks else None
        first = self._first_step
        self._first_step += 0 if losses is None else len(losses)
        self._pending, self._chunks = [], []
        if losses is None:
            return None
        bad = ~torch.isfinite(losses)
        if not bad.any():
            return None
        index = int(bad.nonzero()[0, 0])
        return first + index, losses[index].item()


def eval_interval(cfg: RunConfig, total_steps: int) -> int:
    """Steps between evaluations: ``cfg.eval_every``, or the default for a run of
    ``total_steps`` steps when it is None."""
    return cfg.eval_every or max(1, total_steps // EVALUATIONS_PER_RUN)


def target_message(cfg: RunConfig, row: dict[str, Any]) -> str | None:
    """What an evaluated row says about ``cfg``'s targets: the message of a reached
    ``target_loss`` / ``target_acc``, or None."""
    if cfg.target_loss is not None and row["train_loss"] <= cfg.target_loss:
        return (f"reached the target at step {row['step']}: evaluated training loss "
                f"{row['train_loss']:.4g} <= target_loss {cfg.target_loss:g}")
    if cfg.target_acc is not None and row["train_acc"] >= cfg.target_acc:
        return (f"reached the target at step {row['step']}: evaluated training "
                f"accuracy {row['train_acc']:.4g} >= target_acc {cfg.target_acc:g}")
    return None


def divergence_message(cfg: RunConfig, row: dict[str, Any], first: dict[str, Any]
                       ) -> str | None:
    """The message when an evaluated row shows the run diverged (its training loss is
    not finite, or above ``divergence_factor`` times the first row's), else None. A
    batch loss can stay finite while the weights blow up, and an exploding loss
    (Adam at lr 1: ~5e5) may never reach inf."""
    loss_now, loss_start = row["train_loss"], first["train_loss"]
    if math.isfinite(loss_now) and loss_now <= cfg.divergence_factor * loss_start:
        return None
    return (f"diverged at step {row['step']}: the evaluated training loss is "
            f"{loss_now:.4g} (it started at {loss_start:.4g}; divergence_factor is "
            f"{cfg.divergence_factor:g}); lower the learning rate")


def _fixed_subset(n: int, size: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randperm(n, generator=generator)[:min(size, n)]


HESSIAN_TRACE_PROBES = 20  # Hutchinson probes per logged trace


def hessian_row(model, x: torch.Tensor, y: torch.Tensor, due: bool, seed: int
                ) -> dict[str, float]:
    """``hessian_top`` (largest eigenvalue, Lanczos) and ``hessian_trace``
    (Hutchinson) of the plain forward's loss on ``(x, y)`` when ``due``, else NaN:
    properties of the function, whatever rule trains it. Seeded by ``seed`` alone,
    so they never touch the rule's or the run's random streams."""
    if not due:
        return {"hessian_top": math.nan, "hessian_trace": math.nan}
    from .analysis.hessian import hessian_eigenvalues, hessian_trace

    top = hessian_eigenvalues(model, x, y, k=1, seed=seed)
    trace = hessian_trace(model, x, y, samples=HESSIAN_TRACE_PROBES, seed=seed)
    return {"hessian_top": float(np.asarray(top).ravel()[0]), "hessian_trace": trace.mean}


def train_iter(cfg: RunConfig, data: Dataset | None = None,
               should_stop: Callable[[], bool] | None = None) -> Iterator[Snapshot]:
    """Train step by step, yielding a :class:`Snapshot` at every evaluation.

    The first snapshot is step 0, before any update. The caller may stop at any
    time (``break`` or ``.close()``): a running run's status becomes ``stopped``.
    The last snapshot has status ``finished`` (all steps done, or at the first
    evaluation that reaches ``target_loss`` / ``target_acc``) or ``diverged``.

    ``should_stop``, when given, is called before every training step; when it
    returns True the run ends with status ``stopped`` and a last snapshot (row
    None). It lets a caller in another thread (the dashboard) stop a run between
    two steps rather than between two evaluations; it may also block (pause).

    The parameter trajectory is recorded at every evaluation, or every
    ``trajectory_every`` steps when set (always with step 0 and the last step),
    bounded as :class:`Trajectory` says.

    ``data``, when given, is trained on as given; a ``ValueError`` names any
    data-shaping setting of ``cfg`` (``train_size``, ``n_classes``, ...) that it
    contradicts (:func:`~fa_explore.data.check_dataset`).

    On the CPU, the thread policy (``cfg.threads``, :mod:`fa_explore.threads`) sets
    torch's thread count first; ``run.threads`` records the choice.
    """
    cfg = cfg.resolve()
    device = resolve_device(cfg.device)
    # Before anything computes: torch's thread count is process-wide (thread policy).
    threads = apply_threads(cfg.threads) if device.type == "cpu" else None
    if data is None:
        data = dataset_from_config(cfg)
    else:
        check_dataset(cfg, data)
    model, rule = build(cfg, data.input_shape, data.n_classes, device)
    optimizers = make_optimizers(cfg, model, rule)
    run = Run(cfg, model, rule, data)
    run.threads = threads

    x_train, y_train = data.x_train.to(device), data.y_train.to(device)
    x_test, y_test = data.x_test.to(device), data.y_test.to(device)
    n_train = len(y_train)
    steps_per_epoch = math.ceil(n_train / cfg.batch_size)
    total_steps = run.total_steps = steps_per_epoch * cfg.epochs
    eval_every = eval_interval(cfg, total_steps)
    if cfg.eval_every is None:
        run.config = cfg = cfg.replace(eval_every=eval_every)
    schedulers = make_schedulers(cfg, optimizers, steps_per_epoch, total_steps)
    run.optimizers, run.schedulers = optimizers, schedulers  # the dashboard's live settings

    # The evaluation subset is part of the data: runs that differ only in seed are
    # measured on the same examples.
    data_seed = cfg.seed if cfg.data_seed is None else cfg.data_seed
    subset_gen = torch.Generator().manual_seed(data_seed + 3)
    train_eval = _fixed_subset(n_train, cfg.eval_size, subset_gen).to(device)
    test_eval = _fixed_subset(len(y_test), cfg.eval_size, subset_gen).to(device)
    # Gathered once: the subsets never change, and indexing them at every
    # evaluation copied them again each time.
    x_train_eval, y_train_eval = x_train[train_eval], y_train[train_eval]
    x_test_eval, y_test_eval = x_test[test_eval], y_test[test_eval]
    probe_x, probe_y = x_train_eval[:PROBE_BATCH], y_train_eval[:PROBE_BATCH]
    shuffle_gen = torch.Generator().manual_seed(cfg.seed + 2)
    tracker = ConservationTracker(model, rule)
    loss_check = LossCheck()
    started = time.perf_counter()

    def record(step: int, epoch: float) -> dict[str, Any]:
        train_loss, train_acc = evaluate(model, x_train_eval, y_train_eval)
        test_loss, test_acc = evaluate(model, x_test_eval, y_test_eval)
        row = {"step": step, "epoch": epoch, "train_loss": train_loss, "train_acc": train_acc,
               "test_loss": test_loss, "test_acc": test_acc,
               # What the optimizer will use next (the schedule applied), read back
               # from it rather than recomputed.
               "lr": optimizers[0].param_groups[0]["lr"],
               "time": time.perf_counter() - started}
        row.update(layer_metrics(model, rule, probe_x, probe_y, tracker))
        if cfg.hessian_every is not None:
            row.update(hessian_row(model, probe_x, probe_y,
                                   len(run.rows) % cfg.hessian_every == 0, cfg.seed))
        run.rows.append(row)
        if cfg.trajectory_every is None:
            run.trajectory.record(step, model)
        return row

    def end(status: str, reason: str, message: str) -> None:
        run.status, run.stop_reason, run.message = status, reason, message

    def non_finite_loss() -> bool:
        """Whether a batch loss since the last check was NaN/inf (the run then ends as
        diverged at the first such step)."""
        found = loss_check.first_non_finite()
        if found is not None:
            run.diverged_step, bad_loss = found
            end("diverged", "diverged", f"diverged at step {run.diverged_step}: the "
                f"training loss became {bad_loss}; lower the learning rate")
        return found is not None

    try:
        first = record(0, 0.0)
        run.trajectory.record(0, model)
        reached = target_message(cfg, first)
        if reached:
            end("finished", "target", reached)
        yield Snapshot(run, first, 0, total_steps, run.status)
        if reached:
            return
        step = 0
        for epoch in range(cfg.epochs):
            rule.on_epoch_start(epoch, optimizers)
            order = torch.randperm(n_train, generator=shuffle_gen).to(device)
            for start in range(0, n_train, cfg.batch_size):
                if should_stop is not None and should_stop():
                    if not non_finite_loss():
                        end("stopped", "stopped", f"stopped by the user at step {step}")
                    yield Snapshot(run, None, step, total_steps, run.status)
                    return
                batch = order[start:start + cfg.batch_size]
                for opt in optimizers:
                    opt.zero_grad(set_to_none=True)
                loss = rule.compute_grads(model, x_train[batch], y_train[batch])
                step += 1
                loss_check.add(loss)  # no sync: checked at the next evaluation
                for opt in optimizers:
                    opt.step()
                for scheduler in schedulers:
                    scheduler.step()
                if cfg.trajectory_every is not None and (
                        step % cfg.trajectory_every == 0 or step == total_steps):
                    run.trajectory.record(step, model)
                if step % eval_every == 0 or step == total_steps:
                    if non_finite_loss():
                        yield Snapshot(run, None, step, total_steps, run.status)
                        return
                    row = record(step, step / steps_per_epoch)
                    blown_up = divergence_message(cfg, row, run.rows[0])
                    if blown_up:
                        run.diverged_step = step
                        end("diverged", "diverged", blown_up)
                        yield Snapshot(run, row, step, total_steps, run.status)
                        return
                    reached = target_message(cfg, row)
                    if reached:
                        # The landscape's end point is where the run ended.
                        run.trajectory.record(step, model)
                        end("finished", "target", reached)
                        yield Snapshot(run, row, step, total_steps, run.status)
                        return
                    if step == total_steps:
                        end("finished", "completed", f"finished {total_steps} steps")
                    yield Snapshot(run, row, step, total_steps, run.status)
    except GeneratorExit:
        # The caller left (break, close, garbage collection). Only a running run
        # becomes stopped: leaving on the final finished or diverged snapshot ends
        # nothing that had not already ended.
        if run.status == "running":
            end("stopped", "stopped", "stopped by the user")
        raise
    except Exception as exc:
        end("failed", "failed", f"{type(exc).__name__}: {exc}")
        raise


def show_progress(bar, snapshot: Snapshot) -> None:
    """Move a tqdm bar to a snapshot's step, with its accuracy and loss (train and
    the CLI share it)."""
    bar.total = snapshot.total_steps
    bar.n = snapshot.step
    if snapshot.row:
        bar.set_postfix(test_acc=f"{snapshot.row['test_acc']:.3f}",
                        loss=f"{snapshot.row['train_loss']:.3f}")
    bar.refresh()


def train(cfg: RunConfig, progress: bool = False, data: Dataset | None = None) -> Run:
    """Run a whole training run and return it (``progress`` shows a tqdm bar).
    ``data`` as in :func:`train_iter`: the config's data when None."""
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=None, unit="step", desc=cfg.rule)
    snapshot = None
    try:
        for snapshot in train_iter(cfg, data):
            if bar is not None:
                show_progress(bar, snapshot)
    finally:
        if bar is not None:
            bar.close()
    return snapshot.run
