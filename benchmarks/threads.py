"""Thread policy benchmark: training-step time at 1 and 2 torch threads while 0, 2
and 6 CPU-bound processes compete for the cores.

Two steps (BP, the library's rule): a digits-size MLP (64-128-128-10, batch 32, the
dashboard's default) and a 784-512-512-10 MLP (batch 128). The script spawns the
competing processes itself (busy loops). Every round visits each load level
(rotated order); within a level, every (step, threads) pair is timed as one block
of steps, in an order rotated per round, so drift of the machine's own load falls
on all cells alike. A cell's time is the median of its blocks' medians.

    python benchmarks/threads.py                     # the full run, a few minutes
    python benchmarks/threads.py --rounds 1 --steps 3 --settle 0.2   # a dry run

Writes a table to stdout and ``benchmarks/results/threads-<time>.json`` (and
``threads-latest.json``) with every block, the load average and what the
``auto`` thread policy chose at each level.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from fa_explore import RunConfig, build  # noqa: E402
from fa_explore.cli import format_table  # noqa: E402
from fa_explore.threads import cpu_info, describe, resolve_threads  # noqa: E402
from fa_explore.training import make_optimizers  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
STEPS = {
    "digits 64-128-128-10, batch 32": dict(input_shape=(64,), hidden=(128, 128), batch=32),
    "784-512-512-10, batch 128": dict(input_shape=(784,), hidden=(512, 512), batch=128),
}


def _busy(stop) -> None:
    # A competing CPU-bound process: pure Python arithmetic, checking the event rarely.
    x = 0
    while not stop.is_set():
        for i in range(200_000):
            x = (x + i) % 1_000_003


class Competitors:
    """``count`` spawned busy-loop processes while the ``with`` block runs."""

    def __init__(self, count: int, settle: float):
        self.count, self.settle = count, settle
        self.context = mp.get_context("spawn")
        self.stop = self.context.Event()
        self.processes: list = []

    def __enter__(self) -> Competitors:
        for _ in range(self.count):
            process = self.context.Process(target=_busy, args=(self.stop,), daemon=True)
            process.start()
            self.processes.append(process)
        time.sleep(self.settle)  # the spawned interpreters start before timing
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for process in self.processes:
            process.join(5)
            if process.is_alive():
                process.terminate()
                process.join()


class Stepper:
    """One BP training step of an MLP on random data."""

    def __init__(self, input_shape, hidden, batch):
        cfg = RunConfig(rule="bp", hidden=hidden, batch_size=batch).resolve()
        self.model, self.rule = build(cfg, input_shape, 10)
        self.optimizers = make_optimizers(cfg, self.model, self.rule)
        generator = torch.Generator().manual_seed(0)
        self.x = torch.randn(batch, *input_shape, generator=generator)
        self.y = torch.randint(0, 10, (batch,), generator=generator)

    def __call__(self) -> None:
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=True)
        self.rule.compute_grads(self.model, self.x, self.y)
        for optimizer in self.optimizers:
            optimizer.step()


def time_block(step: Stepper, threads: int, steps: int, warmup: int) -> float:
    """Median seconds per step of one block at ``threads`` threads."""
    torch.set_num_threads(threads)
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def rotate(items: list, by: int) -> list:
    by %= len(items) or 1
    return items[by:] + items[:by]


def load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def run(args) -> dict:
    steppers = {name: Stepper(**spec) for name, spec in STEPS.items()}
    cells = [(name, t) for name in steppers for t in args.threads]
    blocks: dict[str, list[float]] = {}
    levels: dict[int, dict] = {n: {"load": [], "auto": []} for n in args.competitors}
    for round_index in range(args.rounds):
        for count in rotate(list(args.competitors), round_index):
            with Competitors(count, args.settle):
                levels[count]["load"].append(load_average())
                levels[count]["auto"].append(describe(*resolve_threads(None, environ={})))
                for name, threads in rotate(cells, round_index):
                    key = f"{count}|{name}|{threads}"
                    blocks.setdefault(key, []).append(
                        time_block(steppers[name], threads, args.steps, args.warmup))
    info = cpu_info()
    result = {
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "torch": torch.__version__, "affinity": info.affinity,
                    "cgroup_quota": info.quota},
        "settings": {**vars(args), "out": str(args.out)},
        "levels": {str(n): v for n, v in levels.items()},
        "cells": [],
    }
    for count in args.competitors:
        for name in steppers:
            base = None
            for threads in args.threads:
                values = blocks[f"{count}|{name}|{threads}"]
                ms = statistics.median(values) * 1e3
                base = ms if base is None else base
                result["cells"].append({
                    "competitors": count, "step": name, "threads": threads,
                    "median_ms": ms, "block_medians_ms": [v * 1e3 for v in values],
                    "vs_first_threads": ms / base})
    return result


def table(result: dict) -> str:
    first = result["settings"]["threads"][0]
    rows = [[c["competitors"], c["step"], c["threads"], c["median_ms"],
             min(c["block_medians_ms"]), max(c["block_medians_ms"]), c["vs_first_threads"]]
            for c in result["cells"]]
    picks = [f"{n} competitors: load {v['load'][-1]}, auto chose {v['auto'][-1]}"
             for n, v in result["levels"].items()]
    return "\n".join([
        f"Step time, median of {result['settings']['rounds']} rounds x "
        f"{result['settings']['steps']} steps; affinity {result['machine']['affinity']} "
        f"CPUs, quota {result['machine']['cgroup_quota']}", "",
        format_table(["competitors", "step", "threads", "median ms", "min ms", "max ms",
                      f"vs {first} thread(s)"], rows), "", *picks])


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds")
    parser.add_argument("--steps", type=int, default=40, help="timed steps per block")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per block")
    parser.add_argument("--settle", type=float, default=1.0,
                        help="seconds between starting the competitors and timing")
    parser.add_argument("--competitors", type=int, nargs="+", default=[0, 2, 6])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--out", type=Path, default=RESULTS)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    result = run(args)
    print(table(result), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    text = json.dumps(result, indent=2)
    (args.out / f"threads-{stamp}.json").write_text(text)
    (args.out / "threads-latest.json").write_text(text)
    print(f"wrote {args.out / f'threads-{stamp}.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
