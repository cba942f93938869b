"""Performance benchmark of fa_explore: ``make bench`` (one process, a few minutes).

Sections (``--sections``, default all):

- ``steps``: per-step time of every registered rule, relative to the library's
  ``bp`` and to a minimal hand-written PyTorch BP step (``nn.Sequential``,
  ``F.cross_entropy``, ``loss.backward()``, ``optimizer.step()``: the physical
  reference), for the 784-512-512-10 MLP and a CNN (1x28x28, channels 16-32,
  hidden 128-128), batch 128, random data; on the CPU with 1 and 2 threads, and on
  CUDA when present. One step is what training does: zero the grads, the rule's
  ``compute_grads``, the optimizer step (plain SGD for every rule, so that the
  table shows the rule's own cost). Measured INTERLEAVED: after a warm-up, every
  repetition times one step of each rule in turn (round robin, the starting point
  rotating), so a change of machine load hits all rules alike; ratios are medians
  of the per-repetition ratios, with a distribution-free 95% interval.
- ``macs``: next to pfa, pfa_o, fdfa, fg_w, fg_a and lg_fg_a, the ratio of their
  multiply-adds to BP's from the shapes (``benchmarks/macs.py``) and the measured
  ratio (1 thread).
- ``overhead``: the share of a default ``fa_explore.train(RunConfig())`` run spent
  outside the training steps (evaluation, metrics, trajectory, data), timed by
  wrapping those functions (results are checked to be identical to an unwrapped run).
- ``imports``: ``import fa_explore`` and ``import fa_explore.app`` in fresh
  interpreters (medians of several).
- ``scaling``: bp and fa (and the hand-written step) against width (64 … 2048, two
  hidden layers) and depth (2 … 8 hidden layers of 512), 1 thread.
- ``ensemble``: ``train_many`` on 16 seeds against 16 sequential ``train`` calls and
  the hand-written batched compute bound (``benchmarks/ensemble_speed.py``).

Output: tables on stdout, ``benchmarks/results/bench-<time>.json`` (and
``latest.json``), and ``benchmarks/results/bench-<time>.html`` (plotly) when
plotly is installed. Every table carries the load average it was measured under.

    python benchmarks/bench.py                     # everything (a few minutes)
    python benchmarks/bench.py --quick             # a fast pass, fewer repetitions
    python benchmarks/bench.py --sections steps --models mlp --threads 1
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout

from benchmarks import macs as mac_formulas  # noqa: E402
from fa_explore import RULES, RunConfig, build  # noqa: E402
from fa_explore.cli import format_table  # noqa: E402
from fa_explore.threads import pin_threads  # noqa: E402
from fa_explore.training import make_optimizers  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
SECTIONS = ("steps", "macs", "overhead", "imports", "scaling", "ensemble")
REFERENCE = "torch"  # the hand-written BP step's name in the tables

# Targets of the Performance issue: median ratio to the library's BP (MLP, CPU).
RATIO_TARGETS = {"fa": 1.03, "usf": 1.03, "frsf": 1.03, "kp": 1.10, "wm": 1.10,
                 "brsf": 1.20, "dfa": 0.95}
BP_VS_REFERENCE = 1.03   # library bp within 3% of the hand-written step
MAC_TOLERANCE = 0.15     # pfa, pfa_o, fdfa, FG rules: within 15% of their MAC ratio
OVERHEAD_TARGET = 0.10   # evaluation + metrics <= 10% of a default run

MODELS = {
    "mlp": dict(model="mlp", input_shape=(784,), hidden=(512, 512)),
    "cnn": dict(model="cnn", input_shape=(1, 28, 28), hidden=(128, 128), channels=(16, 32)),
}


def load_numbers() -> list[float] | None:
    try:
        return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def median_interval(values: list[float], z: float = 1.96) -> tuple[float, float]:
    """A distribution-free ~95% interval of the median: the order statistics
    ``n/2 ± z·sqrt(n)/2`` (binomial normal approximation)."""
    ordered = sorted(values)
    n = len(ordered)
    if n < 3:
        return ordered[0], ordered[-1]
    half = z * math.sqrt(n) / 2
    lo = max(0, int(math.floor(n / 2 - half)))
    hi = min(n - 1, int(math.ceil(n / 2 + half)))
    return ordered[lo], ordered[hi]


def summary(samples: list[float]) -> dict:
    lo, hi = median_interval(samples)
    return {"median": statistics.median(samples), "ci95": [lo, hi], "n": len(samples)}


# ------------------------------------------------------------------ steppers
class Stepper:
    """One timed training step, on its own model and batches."""

    name: str

    def run(self) -> None:
        raise NotImplementedError


def random_batches(input_shape, batch: int, device, seed: int, count: int = 4):
    generator = torch.Generator().manual_seed(seed)
    return [(torch.randn(batch, *input_shape, generator=generator).to(device),
             torch.randint(0, 10, (batch,), generator=generator).to(device))
            for _ in range(count)]


class RuleStepper(Stepper):
    """A library rule's step: zero the grads, ``compute_grads``, the optimizer step."""

    def __init__(self, name: str, spec: dict, batch: int, device, seed: int = 0,
                 lr: float = 1e-3):
        self.name = name
        cfg = RunConfig(rule=name, model=spec["model"], hidden=tuple(spec["hidden"]),
                        channels=tuple(spec.get("channels", (16, 32))), batch_size=batch,
                        seed=seed, optimizer="sgd", lr=lr, momentum=0.0,
                        weight_decay=0.0).resolve()
        self.model, self.rule = build(cfg, spec["input_shape"], 10, device=device)
        self.optimizers = make_optimizers(cfg, self.model, self.rule)
        self.rule.on_epoch_start(0, self.optimizers)
        for optimizer in self.optimizers:  # PFA's schedule sets a first-epoch decay
            for group in optimizer.param_groups:
                group["weight_decay"] = 0.0
        self.batches = random_batches(spec["input_shape"], batch, device, seed)
        self.count = 0

    def run(self) -> None:
        x, y = self.batches[self.count % len(self.batches)]
        self.count += 1
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)
        self.rule.compute_grads(self.model, x, y)
        for opt in self.optimizers:
            opt.step()


def reference_net(spec: dict) -> nn.Sequential:
    """The same architecture as the library's MLP / CNN, as a plain nn.Sequential."""
    layers: list[nn.Module] = []
    if spec["model"] == "mlp":
        widths = [math.prod(spec["input_shape"]), *spec["hidden"], 10]
    else:
        c_in, size = spec["input_shape"][0], list(spec["input_shape"][1:])
        for c_out in spec["channels"]:
            layers += [nn.Conv2d(c_in, c_out, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2)]
            c_in, size = c_out, [s // 2 for s in size]
        layers.append(nn.Flatten())
        widths = [c_in * math.prod(size), *spec["hidden"], 10]
    for index, (a, b) in enumerate(zip(widths, widths[1:], strict=False)):
        layers.append(nn.Linear(a, b))
        if index < len(widths) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class ReferenceStepper(Stepper):
    """The hand-written BP step: nn.Sequential, F.cross_entropy, backward, SGD."""

    def __init__(self, spec: dict, batch: int, device, seed: int = 0, lr: float = 1e-3):
        self.name = REFERENCE
        torch.manual_seed(seed)
        self.net = reference_net(spec).to(device)
        self.optimizer = torch.optim.SGD(self.net.parameters(), lr=lr)
        self.batches = random_batches(spec["input_shape"], batch, device, seed)
        self.count = 0

    def run(self) -> None:
        x, y = self.batches[self.count % len(self.batches)]
        self.count += 1
        self.optimizer.zero_grad(set_to_none=True)
        if x.dim() == 2:
            x = x.flatten(1)
        loss = F.cross_entropy(self.net(x), y)
        loss.backward()
        self.optimizer.step()


BLOCK = 3  # steps per stepper and round: one to warm its caches, the rest timed


def interleaved(steppers: list[Stepper], repeats: int, warmup: int, device,
                budget_s: float | None = None, block: int = BLOCK) -> dict[str, list[float]]:
    """Seconds per step of every stepper: ``warmup`` untimed rounds, then up to
    ``repeats`` round-robin rounds (starting point rotating), stopping early after
    ``budget_s`` seconds (at least 5 rounds). GC is off while timing.

    In a round each stepper runs ``block`` consecutive steps: the first brings its
    model back into the caches (the other steppers evicted it) and is not timed,
    the rest are, and their mean is the round's sample. Training runs one model
    step after step, so warm caches are what it sees; a cold first step would charge
    every extra matrix a rule reads (FA's B) with a trip to memory. ``block=1``
    times single cold steps."""
    cuda = torch.device(device).type == "cuda"
    for _ in range(warmup):
        for stepper in steppers:
            stepper.run()
    if cuda:
        torch.cuda.synchronize()
    times: dict[str, list[float]] = {s.name: [] for s in steppers}
    gc.collect()
    gc.disable()
    started = time.perf_counter()
    try:
        for rep in range(repeats):
            shift = rep % len(steppers)
            for stepper in steppers[shift:] + steppers[:shift]:
                if block > 1:
                    stepper.run()
                if cuda:
                    torch.cuda.synchronize()
                start = time.perf_counter()
                for _ in range(max(1, block - 1)):
                    stepper.run()
                if cuda:
                    torch.cuda.synchronize()
                times[stepper.name].append((time.perf_counter() - start) / max(1, block - 1))
            if budget_s is not None and rep >= 4 and time.perf_counter() - started > budget_s:
                break
    finally:
        gc.enable()
    return times


def ratio_samples(times: dict[str, list[float]], name: str, base: str) -> list[float]:
    return [t / b for t, b in zip(times[name], times[base], strict=True)]


# --------------------------------------------------------------------- steps
@dataclass
class StepTable:
    model: str
    device: str
    threads: int
    batch: int
    load_before: list[float] | None
    block: int = BLOCK
    load_after: list[float] | None = None
    rows: dict[str, dict] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def step_table(model: str, device: str, threads: int, rules: list[str], batch: int,
               repeats: int, warmup: int, budget_s: float, block: int = BLOCK) -> StepTable:
    torch.set_num_threads(threads)
    spec = MODELS[model]
    table = StepTable(model, device, threads, batch, load_numbers(), block)
    steppers: list[Stepper] = [ReferenceStepper(spec, batch, device)]
    for name in ["bp", *[r for r in rules if r != "bp"]]:
        if model not in RULES[name].models:
            table.notes.append(f"{name}: skipped, supports only {', '.join(RULES[name].models)}")
            continue
        try:
            steppers.append(RuleStepper(name, spec, batch, device))
        except Exception as exc:  # noqa: BLE001 - one broken rule must not stop the table
            table.notes.append(f"{name}: skipped, {type(exc).__name__}: {exc}")
    times = interleaved(steppers, repeats, warmup, device, budget_s, block)
    table.load_after = load_numbers()
    for stepper in steppers:
        ms = [1e3 * t for t in times[stepper.name]]
        table.rows[stepper.name] = {
            "ms": summary(ms),
            "x_bp": summary(ratio_samples(times, stepper.name, "bp")),
            "x_torch": summary(ratio_samples(times, stepper.name, REFERENCE)),
        }
    return table


def target_of(name: str, table: StepTable, mac: dict[str, float]) -> tuple[str, bool | None]:
    """The target column: what the issue asks of this rule here, and whether it holds
    (None: no target for this table)."""
    if table.model != "mlp" or table.device != "cpu":
        return "", None
    x_bp = table.rows[name]["x_bp"]["median"]
    if name == "bp":
        x_ref = table.rows[name]["x_torch"]["median"]
        return f"<= {BP_VS_REFERENCE} x torch", x_ref <= BP_VS_REFERENCE
    if name in RATIO_TARGETS:
        return f"<= {RATIO_TARGETS[name]}", x_bp <= RATIO_TARGETS[name]
    if name in mac:
        return (f"{mac[name]:.2f} ±{MAC_TOLERANCE:.0%} (MACs)",
                abs(x_bp / mac[name] - 1) <= MAC_TOLERANCE)
    return "", None


def format_step_table(table: StepTable, mac: dict[str, float]) -> str:
    header = (f"{table.model} ({describe(table.model)}), batch {table.batch}, "
              f"{table.device}, {table.threads} thread(s), SGD; "
              f"{table.rows['bp']['ms']['n']} interleaved rounds of {table.block} steps "
              f"(the first untimed); "
              f"load average {table.load_before} -> {table.load_after}")
    rows = []
    for name, row in table.rows.items():
        goal, met = target_of(name, table, mac)
        lo, hi = row["x_bp"]["ci95"]
        rows.append([name, row["ms"]["median"], row["x_torch"]["median"],
                     row["x_bp"]["median"], f"{lo:.3f}-{hi:.3f}", goal,
                     {None: "", True: "yes", False: "NO"}[met]])
    body = format_table(["rule", "ms/step", "x torch", "x bp", "x bp 95%", "target", "met"],
                        rows)
    return "\n".join([header, "", body, *[""] * bool(table.notes), *table.notes])


def describe(model: str) -> str:
    spec = MODELS[model]
    if model == "mlp":
        return "-".join(map(str, [math.prod(spec["input_shape"]), *spec["hidden"], 10]))
    return (f"{'x'.join(map(str, spec['input_shape']))}, channels "
            f"{'-'.join(map(str, spec['channels']))}, hidden {'-'.join(map(str, spec['hidden']))}")


# ---------------------------------------------------------------------- MACs
def model_shapes(model: str) -> list:
    spec = MODELS[model]
    cfg = RunConfig(rule="bp", model=spec["model"], hidden=tuple(spec["hidden"]),
                    channels=tuple(spec.get("channels", (16, 32))))
    net, _ = build(cfg, spec["input_shape"], 10, device="cpu")
    return mac_formulas.layer_shapes(net, spec["input_shape"])


def mac_ratios(model: str, batch: int) -> dict[str, float]:
    """MAC ratio to BP of every rule with a formula, for this benchmark's model."""
    shapes = model_shapes(model)
    return {name: mac_formulas.mac_ratio(name, shapes, batch)
            for name in mac_formulas.MAC_FORMULAS}


def draw_seconds(threads: int, n: int = 1 << 20, repeats: int = 7) -> dict[str, float]:
    """Seconds per random number of ``torch.randn`` and ``uniform_`` (a generator of
    its own, as the rules use), median of a few fills of ``n`` numbers."""
    torch.set_num_threads(threads)
    generator = torch.Generator().manual_seed(0)
    buffer = torch.empty(n)
    out = {}
    for kind in ("normal", "uniform"):
        fill = getattr(buffer, f"{kind}_")
        fill(generator=generator)
        samples = []
        for _ in range(repeats):
            start = time.perf_counter()
            fill(generator=generator)
            samples.append((time.perf_counter() - start) / n)
        out[kind] = statistics.median(samples)
    return out


MAC_RULES = ("pfa", "pfa_o", "fdfa", "fg_w", "fg_a", "lg_fg_a")


def mac_rows(tables: list[StepTable], macs: dict[str, dict[str, float]], batch: int,
             draw_s: dict[str, float]) -> list[dict]:
    """Per (1-thread CPU table, rule with a formula): MAC ratio, measured ratio, and
    the MAC + random-number model ``MAC ratio + draws · s_per_draw / bp step``."""
    rows = []
    for table in tables:
        if table.device != "cpu" or table.threads != 1:
            continue
        shapes = model_shapes(table.model)
        bp_s = table.rows["bp"]["ms"]["median"] / 1e3
        for name in (*MAC_RULES, "brsf", "wm", "bp_noise"):
            if name not in table.rows:
                continue
            normal, uniform = mac_formulas.random_draws(name, shapes, batch)
            expected = macs[table.model].get(name) or 1.0
            rng = (normal * draw_s["normal"] + uniform * draw_s["uniform"]) / bp_s
            measured = table.rows[name]["x_bp"]["median"]
            rows.append({"model": table.model, "rule": name, "mac_ratio": expected,
                         "measured": measured, "draws": normal + uniform,
                         "mac_rng_ratio": expected + rng,
                         "target": name in MAC_RULES})
    return rows


def format_macs(rows: list[dict], draw_s: dict[str, float]) -> str:
    out = []
    for r in rows:
        off = r["measured"] / r["mac_ratio"] - 1
        off_rng = r["measured"] / r["mac_rng_ratio"] - 1
        met = ("yes" if abs(off) <= MAC_TOLERANCE else "NO") if r["target"] else ""
        out.append([r["model"], r["rule"], r["mac_ratio"], r["measured"], f"{off:+.1%}", met,
                    r["draws"], r["mac_rng_ratio"], f"{off_rng:+.1%}"])
    return ("Multiply-adds vs measured time, ratio to bp (CPU, 1 thread; formulas in "
            f"benchmarks/macs.py). Random numbers: {1e9 * draw_s['normal']:.2f} ns per "
            f"normal, {1e9 * draw_s['uniform']:.2f} ns per uniform\n\n" + format_table(
                ["model", "rule", "MAC ratio", "measured", "vs MAC", f"within {MAC_TOLERANCE:.0%}",
                 "draws/step", "MAC+RNG", "vs MAC+RNG"], out))


# ------------------------------------------------------------------ overhead
class Timers:
    """Inclusive wall time per name, by wrapping functions (nothing else changes)."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self._undo: list[Callable[[], None]] = []

    def wrap(self, owner, attribute: str, name: str) -> None:
        """Time ``owner.attribute`` (a module's function, a class's method or
        staticmethod) under ``name``; :meth:`restore` puts it back."""
        is_class = isinstance(owner, type)
        own = owner.__dict__.get(attribute) if is_class else None
        original = getattr(owner, attribute)

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
                self.calls[name] = self.calls.get(name, 0) + 1

        setattr(owner, attribute, staticmethod(timed) if isinstance(own, staticmethod)
                else timed)
        if not is_class:
            self._undo.append(lambda: setattr(owner, attribute, original))
        elif own is not None:
            self._undo.append(lambda: setattr(owner, attribute, own))
        else:  # inherited: remove the wrapper again
            self._undo.append(lambda: delattr(owner, attribute))

    def restore(self) -> None:
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()


def instrumented_run(cfg: RunConfig) -> tuple[object, Timers, float]:
    from fa_explore import metrics, training
    from fa_explore.rules.base import Rule

    timers = Timers()
    timers.wrap(training, "dataset_from_config", "data")
    timers.wrap(training, "build", "build")
    timers.wrap(training, "make_optimizers", "optimizers")
    timers.wrap(training, "evaluate", "evaluate")
    timers.wrap(training, "layer_metrics", "metrics")
    timers.wrap(training.Trajectory, "record", "trajectory")
    timers.wrap(training.LossCheck, "first_non_finite", "loss check")
    timers.wrap(metrics, "gradient_angles", "metrics: gradient angles")
    timers.wrap(Rule, "probe_grads", "metrics: probe_grads")
    timers.wrap(metrics, "true_grads", "metrics: true_grads")
    timers.wrap(metrics.ConservationTracker, "ratios", "metrics: conservation")
    start = time.perf_counter()
    try:
        run = training.train(cfg)
    finally:
        wall = time.perf_counter() - start
        timers.restore()
    return run, timers, wall


EVAL_PARTS = ("evaluate", "metrics", "trajectory", "loss check")
SETUP_PARTS = ("data", "build", "optimizers")


def shares(sample: dict) -> dict:
    """Evaluation and setup seconds and shares of one instrumented run."""
    eval_s = sum(sample["seconds"].get(k, 0.0) for k in EVAL_PARTS)
    setup_s = sum(sample["seconds"].get(k, 0.0) for k in SETUP_PARTS)
    return {"eval_s": eval_s, "setup_s": setup_s, "eval_share": eval_s / sample["wall"],
            "evaluations": sample["calls"].get("metrics", 0)}


def median_sample(samples: list[dict]) -> dict:
    order = sorted(range(len(samples)), key=lambda i: samples[i]["wall"])
    return samples[order[len(order) // 2]]


# Variants of the default run: what a cheaper evaluation policy would give.
OVERHEAD_VARIANTS = {
    "default": {},
    "eval_every x2": {"eval_every_factor": 2},
    "eval_every x3": {"eval_every_factor": 3},
    "eval_every x4": {"eval_every_factor": 4},
    "eval_size 500": {"eval_size": 500},
    "eval_size 500, eval_every x2": {"eval_size": 500, "eval_every_factor": 2},
}


def overhead_section(repeats: int, threads: int) -> dict:
    """A default run (``RunConfig()``): cold once (imports paid inside), then
    ``repeats`` warm rounds of instrumented runs of the default and of each
    :data:`OVERHEAD_VARIANTS` (interleaved); the instrumented default is checked
    identical to the plain one."""
    from fa_explore import training

    pin_threads(threads)  # the runs' thread policy too, not only torch's count
    cfg = RunConfig()
    load_before = load_numbers()
    start = time.perf_counter()
    plain = training.train(cfg)
    cold = time.perf_counter() - start
    default_every = plain.config.eval_every
    configs = {}
    for name, change in OVERHEAD_VARIANTS.items():
        change = dict(change)
        factor = change.pop("eval_every_factor", None)
        if factor:
            change["eval_every"] = default_every * factor
        configs[name] = cfg.replace(**change)
    samples: dict[str, list[dict]] = {name: [] for name in configs}
    for _ in range(repeats):
        for name, variant in configs.items():
            run, timers, wall = instrumented_run(variant)
            if name == "default" and not run.history.drop(columns=["time"]).equals(
                    plain.history.drop(columns=["time"])):
                raise SystemExit("the instrumented default run differs from the plain one")
            samples[name].append({"wall": wall, "seconds": dict(timers.seconds),
                                  "calls": dict(timers.calls),
                                  "test_acc": run.final.get("test_acc")})
    best = median_sample(samples["default"])
    part = shares(best)
    resolved = plain.config
    steps = plain.total_steps
    steps_s = best["wall"] - part["eval_s"] - part["setup_s"]
    per_eval = part["eval_s"] / max(part["evaluations"], 1)
    per_step = steps_s / max(steps, 1)
    # share(n) = n·per_eval / (steps·per_step + n·per_eval + setup) <= target
    max_evals = OVERHEAD_TARGET * (steps * per_step + part["setup_s"]) / (
        (1 - OVERHEAD_TARGET) * per_eval)
    variants = {}
    for name, runs in samples.items():
        middle = median_sample(runs)
        variants[name] = {**shares(middle), "wall_s": middle["wall"],
                          "eval_every": configs[name].eval_every or default_every,
                          "eval_size": configs[name].eval_size,
                          "test_acc": middle["test_acc"]}
    return {
        "config": f"RunConfig() -> rule {resolved.rule}, {resolved.dataset}, "
                  f"hidden {resolved.hidden}, batch {resolved.batch_size}, "
                  f"{resolved.epochs} epochs, eval_every {resolved.eval_every}, "
                  f"eval_size {resolved.eval_size}",
        "threads": threads, "steps": steps, "evaluations": part["evaluations"],
        "cold_wall_s": cold, "warm_wall_s": summary([r["wall"] for r in samples["default"]]),
        "median_run": best, "eval_s": part["eval_s"], "setup_s": part["setup_s"],
        "steps_s": steps_s, "eval_share": part["eval_share"],
        "outside_share": (part["eval_s"] + part["setup_s"]) / best["wall"],
        "per_eval_ms": 1e3 * per_eval, "per_step_ms": 1e3 * per_step,
        "max_evals_for_target": max_evals,
        "recommended_eval_every": math.ceil(steps / max(max_evals, 1)),
        "variants": variants,
        "load_before": load_before, "load_after": load_numbers(),
    }


def format_overhead(result: dict) -> str:
    best = result["median_run"]
    wall = best["wall"]
    rows = [[k, best["seconds"].get(k, 0.0), best["calls"].get(k, 0),
             best["seconds"].get(k, 0.0) / wall] for k in
            ("data", "build", "optimizers", "evaluate", "metrics", "metrics: gradient angles",
             "metrics: probe_grads", "metrics: true_grads", "metrics: conservation",
             "trajectory", "loss check")]
    rows.append(["training steps (the rest)", result["steps_s"], result["steps"],
                 result["steps_s"] / wall])
    verdict = "yes" if result["eval_share"] <= OVERHEAD_TARGET else "NO"
    return "\n".join([
        f"Default run: {result['config']}; CPU, {result['threads']} thread(s); "
        f"load average {result['load_before']} -> {result['load_after']}",
        f"cold first run {result['cold_wall_s']:.2f} s (imports inside); warm runs "
        f"{result['warm_wall_s']['median']:.3f} s median of {result['warm_wall_s']['n']}",
        "",
        format_table(["part (inclusive)", "seconds", "calls", "share of run"], rows),
        "",
        f"evaluation + metrics + trajectory: {result['eval_share']:.1%} of the run "
        f"(target <= {OVERHEAD_TARGET:.0%}: {verdict}); with data and setup "
        f"{result['outside_share']:.1%}",
        f"per evaluation {result['per_eval_ms']:.2f} ms = "
        f"{result['per_eval_ms'] / result['per_step_ms']:.1f} training steps of "
        f"{result['per_step_ms']:.3f} ms; <= {OVERHEAD_TARGET:.0%} needs at most "
        f"{result['max_evals_for_target']:.0f} evaluations in {result['steps']} steps "
        f"(eval_every >= {result['recommended_eval_every']})",
        "",
        "Evaluation policies (median of the rounds; the same run otherwise):",
        "",
        format_table(["variant", "eval_every", "eval_size", "evaluations", "wall s",
                      "eval share", f"<= {OVERHEAD_TARGET:.0%}", "final test_acc"],
                     [[name, v["eval_every"], v["eval_size"], v["evaluations"], v["wall_s"],
                       f"{v['eval_share']:.1%}",
                       "yes" if v["eval_share"] <= OVERHEAD_TARGET else "NO", v["test_acc"]]
                      for name, v in result["variants"].items()]),
    ])


# ------------------------------------------------------------------- imports
IMPORT_SNIPPET = ("import time; t = time.perf_counter(); import {module}; "
                  "print(time.perf_counter() - t)")


def import_section(repeats: int) -> dict:
    """In-process import time of each module in a fresh interpreter, interleaved."""
    modules = ("torch", "fa_explore", "fa_explore.app")
    samples: dict[str, list[float]] = {m: [] for m in modules}
    walls: dict[str, list[float]] = {m: [] for m in modules}
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    load_before = load_numbers()
    for _ in range(repeats):
        for module in modules:
            start = time.perf_counter()
            out = subprocess.run([sys.executable, "-c", IMPORT_SNIPPET.format(module=module)],
                                 capture_output=True, text=True, env=env, cwd=ROOT, check=True)
            walls[module].append(time.perf_counter() - start)
            samples[module].append(float(out.stdout.strip().splitlines()[-1]))
    return {"import_s": {m: summary(v) for m, v in samples.items()},
            "process_s": {m: summary(v) for m, v in walls.items()},
            "repeats": repeats, "load_before": load_before, "load_after": load_numbers()}


def format_imports(result: dict) -> str:
    rows = [[m, result["import_s"][m]["median"], result["process_s"][m]["median"]]
            for m in result["import_s"]]
    return (f"Import time in a fresh interpreter, median of {result['repeats']}; load average "
            f"{result['load_before']} -> {result['load_after']}\n\n"
            + format_table(["import", "import s", "whole process s"], rows))


# ------------------------------------------------------------------- scaling
def scaling_section(widths, depths, batch: int, threads: int, budget_s: float,
                    device: str) -> dict:
    torch.set_num_threads(threads)
    points = []
    shapes = ([("width", w, (w, w)) for w in widths]
              + [("depth", d, (512,) * d) for d in depths])
    load_before = load_numbers()
    for axis, value, hidden in shapes:
        spec = dict(model="mlp", input_shape=(784,), hidden=hidden)
        steppers = [ReferenceStepper(spec, batch, device), RuleStepper("bp", spec, batch, device),
                    RuleStepper("fa", spec, batch, device)]
        times = interleaved(steppers, 400, 2, device, budget_s)
        points.append({
            "axis": axis, "value": value, "hidden": list(hidden),
            "ms": {s.name: summary([1e3 * t for t in times[s.name]]) for s in steppers},
            "fa_x_bp": summary(ratio_samples(times, "fa", "bp")),
            "bp_x_torch": summary(ratio_samples(times, "bp", REFERENCE)),
        })
    return {"batch": batch, "threads": threads, "device": device, "points": points,
            "load_before": load_before, "load_after": load_numbers()}


def format_scaling(result: dict) -> str:
    rows = [[p["axis"], p["value"], "-".join(map(str, p["hidden"])) if p["axis"] == "width"
             else f"{len(p['hidden'])}x512", p["ms"][REFERENCE]["median"],
             p["ms"]["bp"]["median"], p["ms"]["fa"]["median"], p["bp_x_torch"]["median"],
             p["fa_x_bp"]["median"], p["ms"]["bp"]["n"]] for p in result["points"]]
    return (f"Scaling, MLP 784-...-10, batch {result['batch']}, {result['device']}, "
            f"{result['threads']} thread(s); load average {result['load_before']} -> "
            f"{result['load_after']}\n\n"
            + format_table(["axis", "value", "hidden", "torch ms", "bp ms", "fa ms",
                            "bp x torch", "fa x bp", "reps"], rows))


# ------------------------------------------------------------------- targets
def format_targets(report: dict) -> str:
    """Every target of the issue with its measurement (MLP, CPU, 1 thread)."""
    rows = []
    for table in report.get("steps", []):
        if table["model"] != "mlp" or table["device"] != "cpu" or table["threads"] != 1:
            continue
        got = {name: row["x_bp"]["median"] for name, row in table["rows"].items()}
        if "bp" in table["rows"]:
            value = table["rows"]["bp"]["x_torch"]["median"]
            rows.append(["bp vs hand-written", f"<= {BP_VS_REFERENCE}", value,
                         value <= BP_VS_REFERENCE])
        for name, goal in RATIO_TARGETS.items():
            if name in got:
                rows.append([f"{name} x bp", f"<= {goal}", got[name], got[name] <= goal])
        for row in report.get("mac_table", {}).get("rows", []):
            if row["model"] == "mlp" and row["target"]:
                off = row["measured"] / row["mac_ratio"] - 1
                rows.append([f"{row['rule']} x bp vs MAC ratio {row['mac_ratio']:.3f}",
                             f"within {MAC_TOLERANCE:.0%}", f"{off:+.1%}",
                             abs(off) <= MAC_TOLERANCE])
    if "overhead" in report:
        share = report["overhead"]["eval_share"]
        rows.append(["evaluation share of a default run", f"<= {OVERHEAD_TARGET:.0%}",
                     f"{share:.1%}", share <= OVERHEAD_TARGET])
    if not rows:
        return ""
    return "Targets (MLP, CPU, 1 thread)\n\n" + format_table(
        ["target", "goal", "measured", "met"],
        [[a, b, c, "yes" if ok else "NO"] for a, b, c, ok in rows])


# ---------------------------------------------------------------------- plot
def write_plot(report: dict, path: Path) -> bool:
    try:
        import plotly.graph_objects as go
    except ImportError:
        return False
    figures = []
    tables = report.get("steps", [])
    if tables:
        fig = go.Figure()
        for table in tables:
            names = list(table["rows"])
            fig.add_bar(name=f"{table['model']} {table['device']} {table['threads']}t",
                        x=names, y=[table["rows"][n]["x_bp"]["median"] for n in names],
                        error_y=dict(type="data", symmetric=False,
                                     array=[table["rows"][n]["x_bp"]["ci95"][1]
                                            - table["rows"][n]["x_bp"]["median"]
                                            for n in names],
                                     arrayminus=[table["rows"][n]["x_bp"]["median"]
                                                 - table["rows"][n]["x_bp"]["ci95"][0]
                                                 for n in names]))
        mac = report.get("macs", {}).get("mlp", {})
        fig.add_scatter(name="MLP target / MAC ratio", mode="markers",
                        marker=dict(symbol="line-ew-open", size=18, color="black"),
                        x=[*RATIO_TARGETS, *MAC_RULES],
                        y=[*RATIO_TARGETS.values(), *[mac.get(n) for n in MAC_RULES]])
        fig.update_layout(title="Step time relative to the library's bp (median, 95% CI)",
                          barmode="group", yaxis_title="x bp", yaxis_type="log")
        figures.append(fig)
    scaling = report.get("scaling")
    if scaling:
        for axis in ("width", "depth"):
            points = [p for p in scaling["points"] if p["axis"] == axis]
            fig = go.Figure()
            for name in (REFERENCE, "bp", "fa"):
                fig.add_scatter(name=name, mode="lines+markers", x=[p["value"] for p in points],
                                y=[p["ms"][name]["median"] for p in points])
            fig.update_layout(title=f"ms per step against {axis} (MLP, batch "
                                    f"{scaling['batch']}, {scaling['threads']} thread)",
                              xaxis_title=axis, yaxis_title="ms/step", yaxis_type="log",
                              xaxis_type="log" if axis == "width" else "linear")
            figures.append(fig)
    if not figures:
        return False
    html = [fig.to_html(full_html=False, include_plotlyjs=(i == 0))
            for i, fig in enumerate(figures)]
    path.write_text("<html><head><meta charset='utf-8'><title>fa_explore bench</title>"
                    "</head><body>" + "\n".join(html) + "</body></html>")
    return True


# ---------------------------------------------------------------------- main
def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--quick", action="store_true", help="fewer repetitions everywhere")
    parser.add_argument("--rules", nargs="+", default=None, metavar="RULE",
                        help="rules of the step tables (default all; bp always)")
    parser.add_argument("--models", nargs="+", choices=tuple(MODELS), default=list(MODELS))
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="auto: CPU tables, plus CUDA ones when CUDA is present")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=None,
                        help="max interleaved rounds per step table (default 60 MLP, "
                             "20 CNN; --quick a quarter)")
    parser.add_argument("--block", type=int, default=BLOCK,
                        help=f"consecutive steps per stepper and round, the first untimed "
                             f"(default {BLOCK}; 1: single cold steps)")
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds per step table before stopping early (default 40)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--no-save", action="store_true", help="print only")
    args = parser.parse_args(argv)
    unknown = set(args.rules or ()) - set(RULES)
    if unknown:
        parser.error(f"unknown rule(s) {', '.join(sorted(unknown))}")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    rules = [n for n in RULES if args.rules is None or n in args.rules]
    devices = {"auto": ["cpu"] + (["cuda"] if torch.cuda.is_available() else []),
               "cpu": ["cpu"], "cuda": ["cuda"]}[args.device]
    report: dict = {"started": time.strftime("%Y-%m-%dT%H:%M:%S"),
                    "python": platform.python_version(), "torch": torch.__version__,
                    "machine": platform.machine(), "cpus": os.cpu_count(),
                    "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
                    "load_start": load_numbers(), "args": {k: str(v) for k, v in
                                                           vars(args).items()}}
    print(f"fa_explore bench: torch {torch.__version__}, {os.cpu_count()} CPUs, CUDA "
          f"{report['cuda'] or 'absent'}; load average {report['load_start']}\n", flush=True)
    macs = {model: mac_ratios(model, args.batch_size) for model in args.models}
    report["macs"] = macs
    if "steps" in args.sections or "macs" in args.sections:
        tables = []
        for device in devices:
            for model in args.models:
                repeats = args.repeats or {"mlp": 60, "cnn": 20}[model] // (4 if args.quick
                                                                          else 1)
                budget = args.budget or (10.0 if args.quick else 40.0)
                for threads in (args.threads if device == "cpu" else [args.threads[0]]):
                    table = step_table(model, device, threads, rules, args.batch_size,
                                       repeats, 2, budget, args.block)
                    tables.append(table)
                    print(format_step_table(table, macs[model]), "\n", flush=True)
        report["steps"] = [vars(t) for t in tables]
        if "macs" in args.sections:
            draw_s = draw_seconds(1)
            rows = mac_rows(tables, macs, args.batch_size, draw_s)
            report["mac_table"] = {"draw_seconds": draw_s, "rows": rows}
            print(format_macs(rows, draw_s), "\n", flush=True)
    if "overhead" in args.sections:
        result = overhead_section(2 if args.quick else 3, threads=args.threads[0])
        report["overhead"] = result
        print(format_overhead(result), "\n", flush=True)
    if "imports" in args.sections:
        result = import_section(3 if args.quick else 5)
        report["imports"] = result
        print(format_imports(result), "\n", flush=True)
    if "scaling" in args.sections:
        result = scaling_section((64, 128, 256, 512, 1024, 2048), (2, 3, 4, 6, 8),
                                 args.batch_size, 1, 2.0 if args.quick else 4.0, devices[0])
        report["scaling"] = result
        print(format_scaling(result), "\n", flush=True)
    if "ensemble" in args.sections:
        from benchmarks import ensemble_speed

        torch.set_num_threads(args.threads[0])
        result = ensemble_speed.measure(16, 3 if args.quick else 5)
        report["ensemble"] = result
        print(ensemble_speed.format_result(result), "\n", flush=True)
    report["load_end"] = load_numbers()
    summary_text = format_targets(report)
    if summary_text:
        print(summary_text, "\n", flush=True)
    if not args.no_save:
        args.out.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = args.out / f"bench-{stamp}.json"
        text = json.dumps(report, indent=1, default=str)
        path.write_text(text)
        (args.out / "latest.json").write_text(text)
        plot = args.out / f"bench-{stamp}.html"
        print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}"
              + (f" and {plot.name}" if write_plot(report, plot) else " (no plotly: no plot)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
