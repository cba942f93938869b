"""Where a rule's step goes: torch.profiler's operator table for a few steps.

    python benchmarks/profile_rules.py usf frsf            # MLP 784-512-512-10, 1 thread
    python benchmarks/profile_rules.py fg_a --model cnn --rows 25
    python benchmarks/profile_rules.py wm --python          # cProfile instead (Python side)

The step is the one ``benchmarks/bench.py`` times (zero grads, ``compute_grads``,
SGD step), after a warm-up; self CPU time per operator, sorted.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench import MODELS, ReferenceStepper, RuleStepper  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("rules", nargs="+")
    parser.add_argument("--model", choices=tuple(MODELS), default="mlp")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rows", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--python", action="store_true", help="cProfile the Python side")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    spec = MODELS[args.model]
    for name in args.rules:
        stepper = (ReferenceStepper(spec, args.batch_size, "cpu") if name == "torch"
                   else RuleStepper(name, spec, args.batch_size, "cpu"))
        for _ in range(5):
            stepper.run()
        if args.python:
            profiler = cProfile.Profile()
            profiler.enable()
            for _ in range(args.steps):
                stepper.run()
            profiler.disable()
            print(f"=== {name} ({args.steps} steps)")
            pstats.Stats(profiler).sort_stats("tottime").print_stats(args.rows)
            continue
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(args.steps):
                stepper.run()
        print(f"=== {name} ({args.steps} steps, {args.model}, {args.threads} thread(s))")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
