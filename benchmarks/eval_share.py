"""Share of a training run spent in evaluation (``record``: evaluate, metrics,
trajectory), from cProfile's cumulative times: robust to a busy machine, since
only a ratio of two wall times of the same run is reported.

    python benchmarks/eval_share.py                     # RunConfig() and a 2-epoch run
    python benchmarks/eval_share.py --epochs 5 --rows 25
    python benchmarks/eval_share.py --set rule=dfa --set hidden=[64]

Prints, per configuration, the run's steps and evaluations, ``record``'s share of
``train`` and the functions under it that cost most (cumulative).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fa_explore import RunConfig, load_dataset, train  # noqa: E402
from fa_explore.training import Trajectory  # noqa: E402

# Functions under record() worth naming in the breakdown (file suffix, name).
PARTS = (("training.py", "record"), ("metrics.py", "evaluate"),
         ("metrics.py", "layer_metrics"),
         ("base.py", "probe_grads"), ("metrics.py", "true_grads"),
         ("metrics.py", "ratios"))


def cumulative(stats: pstats.Stats, suffix: str, name: str) -> tuple[float, int]:
    """Cumulative seconds and primitive calls of the functions ``name`` in files
    ending in ``suffix`` (summed when several match; Trajectory.record is not
    train_iter's record)."""
    seconds, calls = 0.0, 0
    skip = Trajectory.record.__code__.co_firstlineno
    for (filename, line, function), (cc, _, _, ct, _) in stats.stats.items():
        if function == name and filename.endswith(suffix) and not (
                name == "record" and line == skip):
            seconds += ct
            calls += cc
    return seconds, calls


def profile_run(cfg: RunConfig, data, rows: int) -> dict:
    """Train ``cfg`` under cProfile; the shares of record and its parts."""
    train(cfg.replace(epochs=1), data=data)  # warm-up: first-call costs out of the way
    profiler = cProfile.Profile()
    profiler.enable()
    run = train(cfg, data=data)
    profiler.disable()
    stats = pstats.Stats(profiler)
    total, _ = cumulative(stats, "training.py", "train")
    parts = {}
    for suffix, name in PARTS:
        seconds, calls = cumulative(stats, suffix, name)
        if calls:
            parts[name] = {"seconds": seconds, "calls": calls, "share": seconds / total}
    if rows:
        stats.sort_stats("cumulative").print_stats(rows)
    return {"steps": run.total_steps, "eval_every": run.config.eval_every,
            "evaluations": len(run.rows), "train_s": total, "parts": parts}


def parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, nargs="*", default=None,
                        help="epochs of the runs (default: the config's, then 2; the flag "
                             "alone: the config's only)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="a RunConfig field (JSON value), e.g. hidden=[64]")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rows", type=int, default=0, help="cProfile rows to print")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    fields = dict(item.split("=", 1) for item in args.set)
    base = RunConfig(**{k: parse_value(v) for k, v in fields.items()})
    data = load_dataset(base.dataset)
    epochs = [None, 2] if args.epochs is None else args.epochs or [None]
    for count in epochs:
        cfg = base if count is None else base.replace(epochs=count)
        result = profile_run(cfg, None if fields else data, args.rows)
        print(f"epochs {cfg.resolve().epochs}: {result['steps']} steps, eval_every "
              f"{result['eval_every']}, {result['evaluations']} evaluations, train "
              f"{result['train_s']:.2f} s (under cProfile)")
        for name, part in result["parts"].items():
            print(f"  {name:18s} {part['seconds']:7.3f} s  {part['calls']:5d} calls  "
                  f"{part['share']:6.1%} of the run")
    return 0


if __name__ == "__main__":
    sys.exit(main())
