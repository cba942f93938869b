"""Batched ensembles: ``train_many`` against sequential ``train`` and the compute bound.

The issue's case: 16 seeds of a 64-hidden FA MLP on digits, 2 epochs, default
settings otherwise. Three timings, interleaved (each repetition runs all three in
turn, the starting point rotating), medians:

- ``sequential``: ``[fa_explore.train(c) for c in configs]``;
- ``train_many``: ``fa_explore.train_many(configs)``;
- ``bound``: the batched arithmetic alone, hand-written in plain PyTorch: the same
  stacked weights, the same number of steps on the same batch shapes (``baddbmm``
  forward, autograd backward, the configs' optimizer from ``torch.optim``), plus the
  evaluations' arithmetic (a forward over each member's train and test evaluation
  subsets and two probe backward passes per evaluation), with none of the library's
  bookkeeping.
  ``train_many`` cannot be faster than this; the issue asks for within 1.5x.

    python benchmarks/ensemble_speed.py [--members 16] [--repeats 5] [--threads 1]

Writes ``benchmarks/results/ensemble.json`` and prints a table with the load average.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import fa_explore as fx  # noqa: E402
from fa_explore.ensemble import member_losses, plan_ensembles, stacked_forward  # noqa: E402
from fa_explore.training import PROBE_BATCH, eval_interval  # noqa: E402


def configs(members: int, eval_every: int | None = None) -> list[fx.RunConfig]:
    return [fx.RunConfig(rule="fa", hidden=(64,), epochs=2, seed=s, eval_every=eval_every)
            for s in range(members)]


def bound_seconds(cfgs: list[fx.RunConfig]) -> float:
    """The batched arithmetic of ``train_many(cfgs)`` with no bookkeeping (see the
    module docstring)."""
    started = time.perf_counter()
    first = cfgs[0].resolve()
    data = fx.load_dataset(first.dataset)
    x, y = data.x_train.flatten(1), data.y_train
    x_test, y_test = data.x_test.flatten(1), data.y_test
    members, n_train = len(cfgs), len(y)
    widths = [x.shape[1], *first.hidden, data.n_classes]
    weights = [torch.randn(members, b, a).mul_(a ** -0.5).requires_grad_()
               for a, b in zip(widths, widths[1:], strict=False)]
    biases = [torch.zeros(members, b).requires_grad_() for b in widths[1:]]
    feedbacks = [None] + [torch.randn_like(w) for w in weights[1:]]
    steps_per_epoch = math.ceil(n_train / first.batch_size)
    total = steps_per_epoch * first.epochs
    every = eval_interval(first, total)
    generator = torch.Generator().manual_seed(0)
    n_eval = min(first.eval_size, n_train)
    train_eval = torch.stack([torch.randperm(n_train, generator=generator)[:n_eval]
                              for _ in range(members)])
    test_eval = torch.stack([torch.randperm(len(y_test), generator=generator)
                             for _ in range(members)])

    def evaluation():
        with torch.no_grad():
            for xs, ys, subset in ((x, y, train_eval), (x_test, y_test, test_eval)):
                logits = stacked_forward(weights, biases, torch.relu, xs[subset])
                F.cross_entropy(logits.flatten(0, 1), ys[subset].flatten())
        probe = train_eval[:, :PROBE_BATCH]
        for fb in (feedbacks, [None] + weights[1:]):
            logits = stacked_forward(weights, biases, torch.relu, x[probe], fb)
            torch.autograd.grad(member_losses(logits, y[probe]).sum(), weights)

    # The configs' optimizer, as torch.optim implements it (one lr for all members).
    optimizer = (torch.optim.Adam if first.optimizer == "adam" else torch.optim.SGD)(
        [*weights, *biases], lr=first.lr)
    evaluation()
    step = 0
    for _ in range(first.epochs):
        order = torch.stack([torch.randperm(n_train, generator=generator)
                             for _ in range(members)])
        for start in range(0, n_train, first.batch_size):
            batch = order[:, start:start + first.batch_size]
            logits = stacked_forward(weights, biases, torch.relu, x[batch], feedbacks)
            member_losses(logits, y[batch]).sum().backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            if step % every == 0 or step == total:
                evaluation()
    return time.perf_counter() - started


def measure(members: int, repeats: int, eval_every: int | None = None) -> dict:
    cfgs = configs(members, eval_every)
    plan = plan_ensembles(cfgs)
    assert plan.groups == (tuple(range(members)),), plan  # one ensemble, or it is no test
    runners = {
        "sequential": lambda: [fx.train(c) for c in cfgs],
        "train_many": lambda: fx.train_many(cfgs),
        "bound": lambda: bound_seconds(cfgs),
    }
    for run in runners.values():  # warm-up: imports, caches, first allocations
        run()
    times: dict[str, list[float]] = {name: [] for name in runners}
    names = list(runners)
    for repeat in range(repeats):
        for name in names[repeat % 3:] + names[:repeat % 3]:
            started = time.perf_counter()
            runners[name]()
            times[name].append(time.perf_counter() - started)
    median = {name: statistics.median(values) for name, values in times.items()}
    steps = fx.train(cfgs[0]).total_steps
    return {
        "members": members, "repeats": repeats, "threads": torch.get_num_threads(),
        "steps": steps, "eval_every": eval_interval(cfgs[0].resolve(), steps),
        "seconds": times, "median_s": median,
        "speedup_vs_sequential": median["sequential"] / median["train_many"],
        "ratio_to_bound": median["train_many"] / median["bound"],
        "load_average": os.getloadavg(),
    }


def format_result(result: dict) -> str:
    m = result["median_s"]
    return "\n".join([
        f"train_many: {result['members']} seeds of a 64-hidden FA MLP on digits, 2 epochs "
        f"({result['steps']} steps, eval every {result['eval_every']}), "
        f"{result['threads']} thread(s), medians of {result['repeats']}, load average "
        + " ".join(f"{v:.2f}" for v in result["load_average"]),
        f"  sequential train  {m['sequential']:8.3f} s",
        f"  train_many        {m['train_many']:8.3f} s   "
        f"{result['speedup_vs_sequential']:.1f}x faster (target >= 8x)",
        f"  compute bound     {m['bound']:8.3f} s   train_many at "
        f"{result['ratio_to_bound']:.2f}x the bound (target <= 1.5x)",
    ])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--eval-every", type=int, default=None,
                        help="steps between evaluations (default: the library's default)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    result = measure(args.members, args.repeats, args.eval_every)
    print(format_result(result))
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "ensemble.json").write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
