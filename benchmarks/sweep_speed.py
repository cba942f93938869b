"""Sweep speed-up of the ``local`` and ``dask`` backends over ``sequential``.

The grid: rule in bp, fa, dfa, kp x seed 0, 1 (8 runs) on digits, an MLP with
hidden (64,), 3 epochs (``--hidden``, ``--epochs`` make the runs bigger). Every
sweep is timed end to end, as a user waits for it: the pool or cluster start,
each worker's first imports and data load, the runs, the shutdown. Nothing is
cached (``cache=False``).

Backends are measured INTERLEAVED: each repetition runs every backend once, in
a rotated order, so a change in machine load hits all alike; the table shows
the medians and the median of the per-repetition speed-up over sequential.
``sequential/1`` trains in this process with one torch thread (the workers'
policy), ``sequential/N`` with torch's default thread count; this process is
warmed up first (imports, data), as a notebook is after its first run.
``dask/warm`` passes a Client of a LocalCluster started once, before the timing
(its start is reported apart): the steady state of a notebook that keeps its
cluster between sweeps.

The machine's own parallel capacity for torch is measured first: the same
single-threaded matmul loop in one process, then in ``workers`` processes at
once. Capacity = workers x (time alone / time together): N on N real cores, 1
where the CPUs share one core's vector units (SMT siblings, a busy host), in
which case no backend can beat sequential.

    python benchmarks/sweep_speed.py                 # 3 repetitions
    python benchmarks/sweep_speed.py --repeats 5 --epochs 10 --hidden 256
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from fa_explore import RunConfig  # noqa: E402
from fa_explore.cli import format_table  # noqa: E402
from fa_explore.sweep import sweep  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="repetitions (default 3)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--hidden", type=int, nargs="+", default=[64])
    parser.add_argument("--workers", type=int, default=None,
                        help="local and dask workers (default: one per CPU)")
    parser.add_argument("--backends", nargs="+",
                        default=["sequential/1", "sequential/N", "local", "dask",
                                 "dask/warm"])
    return parser.parse_args(argv)


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _matmul_loop(_=None) -> float:
    torch.set_num_threads(1)
    a, w = torch.randn(256, 512), torch.randn(512, 512)
    started = time.perf_counter()
    for _ in range(1500):
        a @ w
    return time.perf_counter() - started


def parallel_capacity(workers: int) -> float:
    """How many single-threaded torch processes' worth of work the CPUs do at once."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        pool.map(_matmul_loop, range(workers), chunksize=1)  # warm-up: imports
        alone = pool.map(_matmul_loop, [0])[0]
        together = pool.map(_matmul_loop, range(workers), chunksize=1)
    return workers * alone / statistics.median(together)


def time_backend(name: str, base: RunConfig, grid, workers, default_threads: int,
                 client=None):
    backend, _, variant = name.partition("/")
    torch.set_num_threads(1 if variant == "1" else default_threads)
    started = time.perf_counter()
    table = sweep(base, grid, backend=backend, cache=False,
                  workers=None if backend == "sequential" or variant == "warm" else workers,
                  address=client if variant == "warm" else None)
    elapsed = time.perf_counter() - started
    torch.set_num_threads(default_threads)
    if not (table["status"] == "finished").all():
        raise RuntimeError(f"{name}: not every run finished:\n{table[['rule', 'status']]}")
    return elapsed, float(table["wall_time"].sum()), table


def main(argv=None) -> int:
    args = parse_args(argv)
    default_threads = torch.get_num_threads()
    base = RunConfig(dataset="digits", hidden=tuple(args.hidden), epochs=args.epochs)
    grid = {"rule": ["bp", "fa", "dfa", "kp"], "seed": [0, 1]}
    times: dict[str, list[float]] = {b: [] for b in args.backends}
    train_time: dict[str, list[float]] = {b: [] for b in args.backends}
    reference = None
    n_workers = args.workers or cpus()
    capacity = parallel_capacity(n_workers)
    print(f"torch parallel capacity with {n_workers} processes: {capacity:.2f} "
          f"(ideal {n_workers})", flush=True)
    sweep(base.replace(epochs=1), {"seed": [0]}, backend="sequential", cache=False)  # warm-up
    client = cluster = None
    if "dask/warm" in args.backends:
        import distributed

        started = time.perf_counter()
        cluster = distributed.LocalCluster(n_workers=args.workers or cpus(),
                                           threads_per_worker=1, processes=True,
                                           dashboard_address=None, host="127.0.0.1",
                                           silence_logs=logging.ERROR)
        client = distributed.Client(cluster)
        sweep(base.replace(epochs=1), {"seed": list(range(len(client.nthreads())))},
              backend="dask", address=client, cache=False)  # every worker imports once
        print(f"dask/warm: cluster start and warm-up {time.perf_counter() - started:.2f} s "
              "(not counted)", flush=True)
    load_before = load_average()
    for rep in range(args.repeats):
        order = args.backends[rep % len(args.backends):] + args.backends[
            :rep % len(args.backends)]
        for name in order:
            elapsed, trained, table = time_backend(name, base, grid, args.workers,
                                                   default_threads, client)
            times[name].append(elapsed)
            train_time[name].append(trained)
            accuracy = table["test_acc"].round(6).tolist()
            if reference is None:
                reference = accuracy
            elif accuracy != reference and not name.endswith("/N"):
                print(f"note: {name} gave other accuracies than the first backend",
                      file=sys.stderr)
            print(f"rep {rep} {name:13s} {elapsed:7.2f} s", flush=True)
    if client is not None:
        client.close()
        cluster.close()
    seq = "sequential/1" if "sequential/1" in times else args.backends[0]
    rows = []
    for name in args.backends:
        ratios = [s / t for s, t in zip(times[seq], times[name], strict=True)]
        rows.append([name, statistics.median(times[name]), min(times[name]),
                     statistics.median(train_time[name]), statistics.median(ratios)])
    print()
    print(f"8 runs: rules bp fa dfa kp x seeds 0 1, digits, hidden {tuple(args.hidden)}, "
          f"{args.epochs} epochs; {args.repeats} interleaved repetitions; {cpus()} CPUs; "
          f"torch default threads {default_threads}; torch parallel capacity "
          f"{capacity:.2f} of {n_workers}; load average (1 5 15 min) before "
          f"{load_before}, after {load_average()}")
    print(format_table(["backend", "median_s", "min_s", "train_s (sum of runs)",
                        f"speed-up vs {seq}"], rows))
    return 0


if __name__ == "__main__":  # required: the local and dask workers are spawned
    sys.exit(main())
