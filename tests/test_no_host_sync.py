"""The training hot loop never makes the host wait for the device.

Between two evaluations a training step must not read a tensor back on the host:
on a GPU every ``.item()``, ``bool(tensor)`` (an ``if`` on a tensor), ``.cpu()`` …
blocks until the device has finished all queued work, so a per-step read makes
the CPU and the GPU take turns instead of overlapping.

Without CUDA the reads are counted: the tensor methods that copy a value to the
host are wrapped (``item``, ``cpu``, ``tolist``, ``numpy``, ``__bool__``,
``__int__``, ``__float__``, ``__index__``), and a dispatch mode sees the aten
operators that read back from inside torch (``_local_scalar_dense``, behind every
scalar read, and the data-dependent shapes: ``nonzero``, ``masked_select``, boolean
indexing …). With CUDA, ``torch.cuda.set_sync_debug_mode("error")`` raises on any
synchronising call. Either way only the steps count: a window opens when the loop
asks ``should_stop`` before a step and closes when the step ends in an evaluation
(its divergence check, ``evaluate``), a trajectory point is taken or an
epoch starts, so evaluations and epoch
starts may read back (once each), steps may not.

The optimizers' own step counters are host tensors by design (torch keeps
``state["step"]`` on the CPU unless ``capturable``/``fused``), so reading them
is no device sync and is not counted.
"""

from __future__ import annotations

import contextlib
import math
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from fa_explore import RULES, RunConfig, load_dataset, train_iter, training
from fa_explore.rules.fa import FA

SYNC_METHODS = ("item", "cpu", "tolist", "numpy", "__bool__", "__int__", "__float__",
                "__index__")
aten = torch.ops.aten
SYNC_OPS = {aten._local_scalar_dense.default, aten.nonzero.default, aten.nonzero_static.default,
            aten.masked_select.default, aten.unique_consecutive.default,
            aten._unique2.default, aten.unique_dim.default, aten.bincount.default,
            aten.repeat_interleave.Tensor, aten.equal.default}
TENSOR_INDEXING = {aten.index.Tensor, aten.index_put.default, aten.index_put_.default,
                   aten._index_put_impl_.default}
REPO = Path(__file__).resolve().parents[1]

# 96 training examples, batch 16: 6 steps per epoch; 3 epochs, an evaluation every
# 5 steps: 18 steps, of which 12 are neither an evaluation step nor an epoch's last.
TINY = dict(hidden=(12, 10), channels=(2, 3), batch_size=16, eval_size=32, epochs=3,
            eval_every=5)
MIN_WINDOWS = 10


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", train_size=96, seed=0)


WATCH_FRAMES = {"where", "read", "counted", "__torch_dispatch__"}


def where(depth: int = 2) -> str:
    """The first frame outside torch and the watch: the code that asked for the read."""
    frame = sys._getframe(depth)
    while frame is not None:
        name = frame.f_code.co_filename
        if "/torch/" not in name and frame.f_code.co_name not in WATCH_FRAMES:
            return f"{Path(name).name}:{frame.f_lineno} ({frame.f_code.co_name})"
        frame = frame.f_back
    return "?"


class SyncWatch:
    """Windows over training steps; counts (or, on CUDA, forbids) host reads in them."""

    def __init__(self, cuda: bool):
        self.cuda = cuda
        self.open = False
        self.windows = 0
        self.reads: Counter[str] = Counter()
        self.optimizers: list[torch.optim.Optimizer] = []

    # -------------------------------------------------------------- windows
    def start_window(self) -> None:
        self.end_window()
        self.open = True
        self.windows += 1
        if self.cuda:
            torch.cuda.set_sync_debug_mode("error")

    def end_window(self) -> None:
        if self.cuda:
            torch.cuda.set_sync_debug_mode("default")
        self.open = False

    # ------------------------------------------------------------- counting
    def host_counter(self, tensor) -> bool:
        """Whether ``tensor`` is an optimizer's step counter (kept on the host)."""
        return any(tensor is state.get("step") for opt in self.optimizers
                   for state in opt.state.values())

    def read(self, what: str, tensor=None) -> None:
        if self.open and not (tensor is not None and self.host_counter(tensor)):
            self.reads[f"{what} at {where(3)}"] += 1


class ReadBackOps(TorchDispatchMode):
    """Counts the aten operators that read a value back to the host."""

    def __init__(self, watch: SyncWatch):
        super().__init__()
        self.watch = watch

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in SYNC_OPS:
            self.watch.read(f"aten.{func.__name__}", args[0] if args else None)
        elif func in TENSOR_INDEXING:
            indices = args[1] if len(args) > 1 else kwargs.get("indices", ())
            if any(i is not None and i.dtype == torch.bool for i in indices):
                self.watch.read(f"aten.{func.__name__} with a boolean mask")
        return func(*args, **kwargs)


@pytest.fixture
def watch(monkeypatch):
    """A :class:`SyncWatch` hooked into ``train_iter`` (evaluations, epoch starts, the
    optimizers) and, without CUDA, into the tensor methods that read back."""
    cuda = torch.cuda.is_available()
    watch = SyncWatch(cuda)

    def closing(function):
        def wrapped(*args, **kwargs):
            watch.end_window()
            return function(*args, **kwargs)
        return wrapped

    real_build, real_make_optimizers = training.build, training.make_optimizers

    def build(*args, **kwargs):
        model, rule = real_build(*args, **kwargs)
        rule.on_epoch_start = closing(rule.on_epoch_start)  # this instance only
        return model, rule

    def make_optimizers(*args, **kwargs):
        watch.optimizers = real_make_optimizers(*args, **kwargs)
        return watch.optimizers

    monkeypatch.setattr(training, "build", build)
    monkeypatch.setattr(training, "make_optimizers", make_optimizers)
    monkeypatch.setattr(training, "evaluate", closing(training.evaluate))
    monkeypatch.setattr(training.LossCheck, "first_non_finite",
                        closing(training.LossCheck.first_non_finite))
    # A trajectory point copies the parameters to the host (at evaluations, or every
    # trajectory_every steps): not a per-step read either.
    monkeypatch.setattr(training.Trajectory, "record", closing(training.Trajectory.record))
    if not cuda:
        for name in SYNC_METHODS:
            original = getattr(torch.Tensor, name)

            def counted(self, *args, _original=original, _name=name, **kwargs):
                watch.read(f"Tensor.{_name}", self)
                return _original(self, *args, **kwargs)

            monkeypatch.setattr(torch.Tensor, name, counted)
    yield watch
    watch.end_window()


def train_watched(cfg: RunConfig, data, watch: SyncWatch):
    """Run ``cfg`` to the end with every step inside a window; the final snapshot."""
    with ReadBackOps(watch) if not watch.cuda else contextlib.nullcontext():
        snapshots = list(train_iter(cfg, data=data, should_stop=watch.start_window))
    watch.end_window()
    return snapshots[-1]


CASES = [(name, model) for name in RULES for model in ("mlp", "cnn")
         if model in RULES[name].models]


@pytest.mark.parametrize(("name", "model"), CASES, ids=[f"{n}-{m}" for n, m in CASES])
def test_training_steps_never_read_back_from_the_device(name, model, digits, watch):
    cfg = RunConfig(rule=name, model=model, **TINY)
    last = train_watched(cfg, digits, watch)
    assert last.status == "finished", last.run.message
    assert watch.windows >= MIN_WINDOWS  # the windows did open: the check is not vacuous
    assert not watch.reads, (f"{name} ({model}): host reads in {watch.windows} training "
                             f"steps: {dict(watch.reads)}")


# ------------------------------------------------- the watch sees what it must
class ReadsTheLoss(FA):
    """FA, plus the per-step divergence check train_iter used to do."""

    name = "fa"

    def compute_grads(self, model, x, y):
        loss = super().compute_grads(model, x, y)
        if not torch.isfinite(loss):  # Tensor.__bool__: a sync every step
            raise RuntimeError("unreachable")
        return loss


class MasksTheGradient(FA):
    """FA, plus a boolean-mask read (data-dependent shape, so a sync)."""

    name = "fa"

    def compute_grads(self, model, x, y):
        loss = super().compute_grads(model, x, y)
        weight = model.layers[0].weight
        weight.grad[weight.grad > 0].sum()
        return loss


@pytest.mark.parametrize("rule_class", [ReadsTheLoss, MasksTheGradient])
def test_the_watch_catches_a_read_in_a_step(rule_class, digits, watch, monkeypatch):
    monkeypatch.setitem(RULES, "fa", rule_class)
    cfg = RunConfig(rule="fa", **TINY)
    if watch.cuda:
        with pytest.raises(RuntimeError, match="synchroniz"):
            train_watched(cfg, digits, watch)
        return
    train_watched(cfg, digits, watch)
    # At least one read per step (a boolean mask may count as more than one operator).
    assert sum(watch.reads.values()) >= watch.windows >= MIN_WINDOWS, dict(watch.reads)
    assert all("compute_grads" in where_ for where_ in watch.reads), dict(watch.reads)


def test_only_the_evaluations_read_back(digits, watch, monkeypatch):
    # Windows that never close also see the evaluations' reads (losses, accuracies,
    # angles): the windows are what keeps those out of the step counts.
    if watch.cuda:
        pytest.skip("counting mode only")
    monkeypatch.setattr(watch, "end_window", lambda: None)
    train_watched(RunConfig(rule="fa", **TINY), digits, watch)
    assert any("metrics.py" in where_ for where_ in watch.reads), dict(watch.reads)
    assert not any("compute_grads" in where_ for where_ in watch.reads), dict(watch.reads)


# ------------------------------------------- the deferred divergence check
@pytest.mark.parametrize("chunk", [1024, 3])
def test_loss_check_names_the_first_non_finite_step(chunk, monkeypatch):
    monkeypatch.setattr(training.LossCheck, "CHUNK", chunk)
    check = training.LossCheck()
    for value in [1.0, 2.0, 0.5, 0.25]:
        check.add(torch.tensor(value))
    assert check.first_non_finite() is None  # steps 1-4
    for value in [1.0, 1.0, math.inf, math.nan, 3.0, 4.0, 5.0]:  # steps 5-11
        check.add(torch.tensor(value))
    assert check.first_non_finite() == (7, math.inf)
    assert check.first_non_finite() is None  # nothing held any more
    check.add(torch.tensor(math.nan))  # step 12
    step, value = check.first_non_finite()
    assert step == 12 and math.isnan(value)


def poison_losses(monkeypatch, bad_steps, value):
    """The batch losses of ``bad_steps`` (1-based) become ``value`` as train_iter
    hands them to its LossCheck."""
    real_add, steps = training.LossCheck.add, []

    def add(self, loss):
        steps.append(1)
        real_add(self, loss * value if len(steps) in bad_steps else loss)

    monkeypatch.setattr(training.LossCheck, "add", add)


def test_a_nan_loss_between_evaluations_ends_the_run_at_its_step(digits, monkeypatch):
    # The loss of step 7 is NaN; evaluations every 5 steps: the run ends at the
    # evaluation of step 10, as diverged at step 7, with no row after step 5.
    poison_losses(monkeypatch, {7}, math.nan)
    snapshots = list(train_iter(RunConfig(rule="fa", **TINY), data=digits))
    run = snapshots[-1].run
    assert (run.status, run.stop_reason, run.diverged_step) == ("diverged", "diverged", 7)
    assert snapshots[-1].row is None and snapshots[-1].step == 10
    assert "diverged at step 7" in run.message and "nan" in run.message
    assert run.history["step"].tolist() == [0, 5]


def test_a_stop_after_a_nan_loss_reports_the_divergence(digits, monkeypatch):
    poison_losses(monkeypatch, set(range(2, 100)), math.inf)
    asked = []
    snapshots = list(train_iter(RunConfig(rule="fa", **TINY), data=digits,
                                should_stop=lambda: asked.append(1) or len(asked) > 3))
    run = snapshots[-1].run
    assert (run.status, run.diverged_step, snapshots[-1].step) == ("diverged", 2, 3)
    assert "diverged at step 2" in run.message and "inf" in run.message


def test_ensemble_steps_never_read_back_from_the_device(digits, watch, monkeypatch):
    """train_many's batched steps read nothing back either: its evaluations hand
    their values to the host in one transfer (``ensemble._to_host``), where the
    window closes."""
    from fa_explore import ensemble

    real = ensemble._to_host

    def to_host(tensor):
        watch.end_window()
        return real(tensor)

    monkeypatch.setattr(ensemble, "_to_host", to_host)
    configs = [RunConfig(rule=name, seed=seed, **TINY)
               for seed, name in enumerate(n for n in RULES if RULES[n].batchable)]
    with ReadBackOps(watch) if not watch.cuda else contextlib.nullcontext():
        snapshots = list(ensemble.train_many_iter(configs, data=digits,
                                                  should_stop=watch.start_window))[-1]
    watch.end_window()
    assert len(ensemble.plan_ensembles(configs, digits).groups) == 1
    assert [s.status for s in snapshots] == ["finished"] * len(configs)
    assert watch.windows >= MIN_WINDOWS
    assert not watch.reads, f"host reads in {watch.windows} ensemble steps: {dict(watch.reads)}"
