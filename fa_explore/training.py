"""Training runs: ``build``, ``train_iter`` (a stoppable stream of snapshots),
``train`` and the :class:`Run` they produce.

A run is seeded and deterministic on the CPU: model init, feedback draws, batch
order and every random perturbation come from their own generators derived from
``cfg.seed``. A NaN or infinite loss ends the run with status ``diverged``.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pandas as pd
import torch

from .config import RunConfig
from .data import DATASETS, Dataset, dataset_from_config
from .metrics import ConservationTracker, evaluate, layer_metrics
from .models import FeedforwardNet, build_model
from .rules import RULES, Rule

FORMAT_VERSION = 1
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
    """The model and the rule that trains it, seeded from ``cfg.seed``."""
    cfg = cfg.resolve()
    device = resolve_device(cfg.device) if device is None else torch.device(device)
    if input_shape is None or n_classes is None:
        spec = DATASETS[cfg.dataset]
        input_shape = spec.input_shape if input_shape is None else input_shape
        n_classes = (cfg.n_classes or spec.n_classes) if n_classes is None else n_classes
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


class Trajectory:
    """A bounded, downsampled record of the flattened model parameters.

    When full it drops every other point, so it always spans the whole run with
    roughly even spacing (for the loss-landscape view).
    """

    def __init__(self, n_params: int):
        self.max_points = max(8, min(TRAJECTORY_POINTS, TRAJECTORY_BYTES // (4 * n_params)))
        self.steps: list[int] = []
        self.points: list[torch.Tensor] = []
        self._stride, self._seen = 1, 0

    def record(self, step: int, model: torch.nn.Module, force: bool = False) -> None:
        keep = self._seen % self._stride == 0
        self._seen += 1
        if not (keep or force):
            return
        if force and self.steps and self.steps[-1] == step:
            return
        vector = torch.cat([p.detach().flatten() for p in model.parameters()]).float().cpu()
        self.steps.append(step)
        self.points.append(vector)
        if len(self.points) > self.max_points:
            self.steps, self.points = self.steps[::2], self.points[::2]
            self._stride *= 2

    def matrix(self) -> torch.Tensor:
        """Points as rows, shape ``(n_points, n_params)``."""
        return torch.stack(self.points) if self.points else torch.empty(0)


@dataclass
class Snapshot:
    """What ``train_iter`` yields: the live run, the newest history row (None when
    the run ended without one), the step and the run's status."""

    run: "Run"
    row: dict[str, Any] | None
    step: int
    total_steps: int
    status: str


class Run:
    """A training run: its config, model, rule, data, status and history."""

    def __init__(self, config: RunConfig, model: FeedforwardNet, rule: Rule,
                 data: Dataset | None = None):
        self.config = config
        self.model = model
        self.rule = rule
        self._data = data
        self.status = "running"
        self.message = ""
        self.diverged_step: int | None = None
        self.rows: list[dict[str, Any]] = []
        self.trajectory = Trajectory(sum(p.numel() for p in model.parameters()))
        self.total_steps = 0

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
        (model and rule state) into the directory ``path``."""
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
            "total_steps": self.total_steps,
            "history": [{k: (None if isinstance(v, float) and math.isnan(v) else v)
                         for k, v in row.items()} for row in self.rows],
            "weights_sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
        }
        (path / "run.json").write_text(json.dumps(meta, indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path, device: str | None = "cpu") -> Run:
        """Read a run written by :meth:`save`. Raises ``ValueError`` saying what is
        wrong with a missing, truncated or corrupted file."""
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
        required = {"format_version", "config", "status", "history", "weights_sha256"}
        if not isinstance(meta, dict) or not required <= set(meta):
            raise ValueError(f"saved run {path}: run.json lacks "
                             f"{', '.join(sorted(required - set(meta or {})))}")
        if meta["format_version"] != FORMAT_VERSION:
            raise ValueError(f"saved run {path}: format version {meta['format_version']} "
                             f"is not supported (this version reads {FORMAT_VERSION})")
        raw = weights_file.read_bytes()
        if hashlib.sha256(raw).hexdigest() != meta["weights_sha256"]:
            raise ValueError(f"saved run {path}: weights.safetensors does not match the "
                             "checksum in run.json (truncated or corrupted)")
        try:
            tensors = load(raw)
        except (SafetensorError, Exception) as exc:  # noqa: BLE001 - report any decode error
            raise ValueError(f"saved run {path}: weights.safetensors cannot be read: {exc}")
        config = RunConfig.from_dict(meta["config"])
        if device is not None:
            config = config.replace(device=device)
        model, rule = build(config)
        try:
            model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
            rule.load_state_dict({k[5:]: v for k, v in tensors.items() if k.startswith("rule.")})
        except RuntimeError as exc:
            raise ValueError(f"saved run {path}: weights do not fit the saved config: {exc}")
        run = cls(config, model, rule)
        run.status = meta["status"]
        run.message = meta.get("message", "")
        run.diverged_step = meta.get("diverged_step")
        run.total_steps = meta.get("total_steps", 0)
        run.rows = [{k: (math.nan if v is None else v) for k, v in row.items()}
                    for row in meta["history"]]
        return run


def _fixed_subset(n: int, size: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randperm(n, generator=generator)[:min(size, n)]


def train_iter(cfg: RunConfig, data: Dataset | None = None,
               should_stop: Callable[[], bool] | None = None) -> Iterator[Snapshot]:
    """Train step by step, yielding a :class:`Snapshot` at every evaluation.

    The first snapshot is step 0, before any update. The caller may stop at any
    time (``break`` or ``.close()``): the run's status becomes ``stopped``. The last
    snapshot has status ``finished`` or ``diverged``.

    ``should_stop``, when given, is called before every training step; when it
    returns True the run ends with status ``stopped`` and a last snapshot (row
    None). It lets a caller in another thread (the dashboard) stop a run between
    two steps rather than between two evaluations; it may also block (pause).
    """
    cfg = cfg.resolve()
    device = resolve_device(cfg.device)
    data = dataset_from_config(cfg) if data is None else data
    model, rule = build(cfg, data.input_shape, data.n_classes, device)
    optimizers = make_optimizers(cfg, model, rule)
    run = Run(cfg, model, rule, data)

    x_train, y_train = data.x_train.to(device), data.y_train.to(device)
    x_test, y_test = data.x_test.to(device), data.y_test.to(device)
    n_train = len(y_train)
    steps_per_epoch = math.ceil(n_train / cfg.batch_size)
    total_steps = run.total_steps = steps_per_epoch * cfg.epochs
    eval_every = cfg.eval_every or max(1, total_steps // 50)
    if cfg.eval_every is None:
        run.config = cfg = cfg.replace(eval_every=eval_every)

    subset_gen = torch.Generator().manual_seed(cfg.seed + 3)
    train_eval = _fixed_subset(n_train, cfg.eval_size, subset_gen).to(device)
    test_eval = _fixed_subset(len(y_test), cfg.eval_size, subset_gen).to(device)
    probe = train_eval[:PROBE_BATCH]
    shuffle_gen = torch.Generator().manual_seed(cfg.seed + 2)
    tracker = ConservationTracker(model, rule)
    started = time.perf_counter()

    def record(step: int, epoch: float) -> dict[str, Any]:
        train_loss, train_acc = evaluate(model, x_train[train_eval], y_train[train_eval])
        test_loss, test_acc = evaluate(model, x_test[test_eval], y_test[test_eval])
        row = {"step": step, "epoch": epoch, "train_loss": train_loss, "train_acc": train_acc,
               "test_loss": test_loss, "test_acc": test_acc,
               "time": time.perf_counter() - started}
        row.update(layer_metrics(model, rule, x_train[probe], y_train[probe], tracker))
        run.rows.append(row)
        run.trajectory.record(step, model, force=step in (0, total_steps))
        return row

    try:
        yield Snapshot(run, record(0, 0.0), 0, total_steps, run.status)
        step = 0
        for epoch in range(cfg.epochs):
            rule.on_epoch_start(epoch, optimizers)
            order = torch.randperm(n_train, generator=shuffle_gen).to(device)
            for start in range(0, n_train, cfg.batch_size):
                if should_stop is not None and should_stop():
                    run.status, run.message = "stopped", f"stopped by the user at step {step}"
                    yield Snapshot(run, None, step, total_steps, run.status)
                    return
                batch = order[start:start + cfg.batch_size]
                for opt in optimizers:
                    opt.zero_grad(set_to_none=True)
                loss = rule.compute_grads(model, x_train[batch], y_train[batch])
                step += 1
                if not torch.isfinite(loss):
                    run.status, run.diverged_step = "diverged", step
                    run.message = (f"diverged at step {step}: the training loss became "
                                   f"{loss.item()}; try a smaller learning rate")
                    yield Snapshot(run, None, step, total_steps, run.status)
                    return
                for opt in optimizers:
                    opt.step()
                if step % eval_every == 0 or step == total_steps:
                    row = record(step, step / steps_per_epoch)
                    loss_now, loss_start = row["train_loss"], run.rows[0]["train_loss"]
                    # A batch loss can stay finite while the weights blow up, and an
                    # exploding loss (Adam at lr 1: ~5e5) may never reach inf.
                    if not math.isfinite(loss_now) or (
                            loss_now > cfg.divergence_factor * loss_start):
                        run.status, run.diverged_step = "diverged", step
                        run.message = (f"diverged at step {step}: the evaluated training "
                                       f"loss is {loss_now:.4g} (it started at "
                                       f"{loss_start:.4g}; divergence_factor is "
                                       f"{cfg.divergence_factor:g}); try a smaller "
                                       "learning rate")
                        yield Snapshot(run, row, step, total_steps, run.status)
                        return
                    if step == total_steps:
                        run.status = "finished"
                        run.message = f"finished {total_steps} steps"
                    yield Snapshot(run, row, step, total_steps, run.status)
    except GeneratorExit:
        run.status, run.message = "stopped", "stopped by the user"
        raise
    except Exception as exc:
        run.status, run.message = "failed", f"{type(exc).__name__}: {exc}"
        raise


def train(cfg: RunConfig, progress: bool = False, data: Dataset | None = None) -> Run:
    """Run a whole training run and return it (``progress`` shows a tqdm bar)."""
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=None, unit="step", desc=cfg.rule)
    snapshot = None
    try:
        for snapshot in train_iter(cfg, data):
            if bar is not None:
                bar.total = snapshot.total_steps
                bar.n = snapshot.step
                if snapshot.row:
                    bar.set_postfix(test_acc=f"{snapshot.row['test_acc']:.3f}",
                                    loss=f"{snapshot.row['train_loss']:.3f}")
                bar.refresh()
    finally:
        if bar is not None:
            bar.close()
    return snapshot.run
