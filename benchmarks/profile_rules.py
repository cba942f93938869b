"""Where a rule's step goes: torch.profiler's operator table for a few steps.

    python benchmarks/profile_rules.py usf frsf            # MLP 784-512-512-10, 1 thread
    python benchmarks/profile_rules.py fg_a --model cnn --rows 25
    python benchmarks/profile_rules.py wm --python          # cProfile instead (Python side)
    python benchmarks/profile_rules.py usf kp --diff        # the operators a rule adds to bp's

``--diff`` counts, per step, the operators called from Python (not those inside
another operator) with their input shapes, and prints where a rule's count
differs from ``bp``'s: counts, unlike times, hold on a busy machine.

The step is the one ``benchmarks/bench.py`` times (zero grads, ``compute_grads``,
SGD step), after a warm-up; self CPU time per operator, sorted.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
from collections import Counter
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench import MODELS, ReferenceStepper, RuleStepper  # noqa: E402


def operator_counts(stepper, steps: int) -> Counter:
    """Per step: ``(operator, input shapes)`` -> calls, for the top-level aten
    operators of ``stepper.run()`` (after a warm-up)."""
    for _ in range(3):
        stepper.run()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(steps):
            stepper.run()
    counts: Counter = Counter()
    for event in prof.events():
        parent = event.cpu_parent
        if event.name.startswith("aten::") and (
                parent is None or not parent.name.startswith("aten::")):
            counts[(event.name, str(event.input_shapes))] += 1
    return Counter({key: n / steps for key, n in counts.items()})


def print_diff(name: str, counts: Counter, base: Counter) -> None:
    print(f"=== {name}: operators per step added (+) or removed (-) against bp")
    for key in sorted(set(counts) | set(base)):
        change = counts.get(key, 0) - base.get(key, 0)
        if change:
            print(f"  {change:+6.1f}  {key[0]:30s} {key[1][:100]}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("rules", nargs="+")
    parser.add_argument("--model", choices=tuple(MODELS), default="mlp")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rows", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--python", action="store_true", help="cProfile the Python side")
    parser.add_argument("--diff", action="store_true",
                        help="operator counts per step against bp's (robust under load)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    spec = MODELS[args.model]
    if args.diff:
        base = operator_counts(RuleStepper("bp", spec, args.batch_size, "cpu"), args.steps)
        for name in args.rules:
            stepper = RuleStepper(name, spec, args.batch_size, "cpu")
            print_diff(name, operator_counts(stepper, args.steps), base)
        return 0
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
