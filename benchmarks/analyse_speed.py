"""Time of the dashboard's Analyse action on the dashboard's default network.

Trains one run (digits, the dashboard's default MLP ``--hidden 128 128``, rule
``--rule``, ``--epochs``), then times each step of
:func:`fa_explore.app.analyse_state.analyse_run` as the dashboard runs it (its
defaults: 3 top eigenvalues to relative accuracy 1e-3 and 30 Hutchinson probes on
256 training examples, FGSM at 6 radii on 500 test examples), ``--repeats``
times; prints the median and the range of each step, and the load average (the
numbers mean something only on a quiet machine).

    python benchmarks/analyse_speed.py                      # 3 repetitions
    python benchmarks/analyse_speed.py --hidden 8 --epochs 1 --repeats 1   # a dry run
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from fa_explore import RunConfig, train
from fa_explore.app.analyse_state import FGSM_EPS, analyse_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rule", default="fa")
    parser.add_argument("--hidden", type=int, nargs="*", default=[128, 128])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's own)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    run = train(RunConfig(rule=args.rule, hidden=tuple(args.hidden), epochs=args.epochs))
    n_params = sum(p.numel() for p in run.model.parameters())
    print(f"{args.rule} on digits, hidden {tuple(args.hidden)} ({n_params:,} parameters), "
          f"{torch.get_num_threads()} torch threads, load average "
          f"{' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    steps: dict[str, list[float]] = {}
    for _ in range(args.repeats):
        marks = [time.perf_counter()]
        names = []

        def progress(result, marks=marks, names=names):
            # Called after each step: the eigenvalues, the trace, each FGSM radius, done.
            marks.append(time.perf_counter())
            k = len(names)
            names.append("top eigenvalues" if k == 0 else "trace" if k == 1 else
                         f"FGSM eps {FGSM_EPS[k - 2]:g}" if k - 2 < len(FGSM_EPS) else "done")

        result = analyse_run(run, "bench", on_progress=progress)
        assert result.status == "done", result.message
        for name, start, end in zip(names, marks, marks[1:], strict=False):
            if name != "done":
                steps.setdefault(name, []).append(end - start)
        steps.setdefault("all", []).append(marks[-1] - marks[0])
    for name, seconds in steps.items():
        print(f"{name:>16}: median {statistics.median(seconds):6.2f} s "
              f"(min {min(seconds):.2f}, max {max(seconds):.2f})")


if __name__ == "__main__":
    main()
