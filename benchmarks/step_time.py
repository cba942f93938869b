"""Per-step cost of every registered rule relative to backpropagation.

(``make bench`` runs benchmarks/bench.py, the full performance benchmark; this script
is its quick single-table cousin and the accuracy table of ``make bench-accuracy``.)

Timing mode (default): a 784-512-512-10 MLP, batch 128, random data, on the CPU
with 2 threads. One step is what training does: zero the grads, the rule's
``compute_grads``, the optimizer step. Rules are measured INTERLEAVED in one
process: after a warm-up, every repetition times one step of each rule in turn
(round robin, starting point rotating), so a change in machine load hits all
rules alike; the table shows medians and the median of the per-repetition
ratio to BP.

Accuracy mode (``--accuracy``): trains every rule with its defaults on digits
(or ``--dataset``) and prints the final test accuracy and wall time, against the
accuracy floors of ``benchmarks/floors.py`` (the ones tests/test_learning.py asserts).

    python benchmarks/step_time.py                  # timing table
    python benchmarks/step_time.py --repeats 5      # quick check
    python benchmarks/step_time.py --accuracy       # accuracy and wall time
    python benchmarks/step_time.py --rules bp fa dfa --model cnn
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from benchmarks.floors import ACCURACY_FLOORS  # noqa: E402
from benchmarks.floors import DATASET as FLOORS_DATASET  # noqa: E402
from fa_explore import RULES, RunConfig, build, train  # noqa: E402
from fa_explore.cli import format_table  # noqa: E402
from fa_explore.data import dataset_from_config  # noqa: E402
from fa_explore.threads import pin_threads  # noqa: E402
from fa_explore.training import make_optimizers  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accuracy", action="store_true",
                        help="train each rule with its defaults and report accuracy and time")
    parser.add_argument("--rules", nargs="+", metavar="RULE", default=None,
                        help="rules to include (default: all registered; bp is always "
                             "timed as the reference)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--repeats", type=int, default=200,
                        help="timed steps per rule (default 200)")
    parser.add_argument("--warmup", type=int, default=10,
                        help="untimed steps per rule first (default 10)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--hidden", type=int, nargs="+", default=[512, 512])
    parser.add_argument("--model", choices=("mlp", "cnn"), default="mlp",
                        help="mlp on 784 inputs, or cnn (channels 16 32) on 1x28x28")
    parser.add_argument("--optimizer", choices=("sgd", "rule"), default="sgd",
                        help="sgd: the same plain SGD step for every rule, so the table "
                             "shows the rule's own cost; rule: each rule's default optimizer")
    parser.add_argument("--dataset", default="digits", help="accuracy mode's dataset")
    parser.add_argument("--epochs", type=int, default=None,
                        help="accuracy mode: override the rules' default epochs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    unknown = set(args.rules or ()) - set(RULES)
    if unknown:
        parser.error(f"unknown rule(s) {', '.join(sorted(unknown))}; "
                     f"registered: {', '.join(RULES)}")
    return args


def chosen_rules(args) -> list[str]:
    names = args.rules or list(RULES)
    return [n for n in RULES if n in names]  # registry order


# ------------------------------------------------------------------- timing
class Stepper:
    """One rule's model, optimizers and a pool of random batches."""

    def __init__(self, name: str, args, input_shape, n_classes: int):
        fields = dict(rule=name, model=args.model, hidden=tuple(args.hidden),
                      channels=(16, 32), batch_size=args.batch_size, seed=args.seed)
        if args.optimizer == "sgd":
            fields.update(optimizer="sgd", lr=1e-3, momentum=0.0, weight_decay=0.0)
        cfg = RunConfig(**fields).resolve()
        self.model, self.rule = build(cfg, input_shape, n_classes, device="cpu")
        self.optimizers = make_optimizers(cfg, self.model, self.rule)
        self.rule.on_epoch_start(0, self.optimizers)
        if args.optimizer == "sgd":  # the same plain SGD: no schedule's first-epoch decay
            for optimizer in self.optimizers:
                for group in optimizer.param_groups:
                    group["weight_decay"] = 0.0
        generator = torch.Generator().manual_seed(args.seed)
        self.batches = [(torch.randn(args.batch_size, *input_shape, generator=generator),
                         torch.randint(0, n_classes, (args.batch_size,), generator=generator))
                        for _ in range(4)]
        self.count = 0

    def step(self) -> float:
        """Seconds for one training step."""
        x, y = self.batches[self.count % len(self.batches)]
        self.count += 1
        start = time.perf_counter()
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)
        self.rule.compute_grads(self.model, x, y)
        for opt in self.optimizers:
            opt.step()
        return time.perf_counter() - start


def time_rules(args) -> str:
    torch.manual_seed(args.seed)
    input_shape = (784,) if args.model == "mlp" else (1, 28, 28)
    names = chosen_rules(args)
    if "bp" not in names:
        names.insert(0, "bp")
    steppers, notes = {}, []
    for name in names:
        if args.model not in RULES[name].models:
            notes.append(f"{name}: skipped, supports only {', '.join(RULES[name].models)}")
            continue
        try:
            stepper = Stepper(name, args, input_shape, 10)
            for _ in range(args.warmup):
                stepper.step()
        except Exception as exc:  # noqa: BLE001 - one broken rule must not stop the table
            notes.append(f"{name}: skipped, {type(exc).__name__}: {exc}")
            continue
        steppers[name] = stepper
    if "bp" not in steppers:
        raise SystemExit("bp could not be timed: " + "; ".join(notes))

    times: dict[str, list[float]] = {name: [] for name in steppers}
    order = list(steppers)
    for rep in range(args.repeats):
        shift = rep % len(order)  # rotate who goes first, against order effects
        for name in order[shift:] + order[:shift]:
            times[name].append(steppers[name].step())

    rows = []
    for name, samples in times.items():
        ms = [1e3 * s for s in samples]
        q1, _, q3 = (statistics.quantiles(ms, n=4, method="inclusive") if len(ms) > 1
                     else (ms[0],) * 3)
        ratios = [t / b for t, b in zip(samples, times["bp"], strict=True)]
        rows.append([name, statistics.median(ms), f"{q1:.2f}-{q3:.2f}",
                     statistics.median(ratios)])
    shape = "-".join(str(w) for w in (*input_shape, *args.hidden, 10)) if args.model == "mlp" \
        else f"cnn 1x28x28 channels 16-32, hidden {'-'.join(map(str, args.hidden))}"
    header = (f"{shape}, batch {args.batch_size}, CPU, {torch.get_num_threads()} threads, "
              f"{args.optimizer} optimizer, {args.repeats} interleaved repetitions after "
              f"{args.warmup} warm-up steps")
    table = format_table(["rule", "ms/step (median)", "IQR ms", "x BP (median)"], rows)
    return "\n".join([header, "", table, *[""] * bool(notes), *notes])


# ----------------------------------------------------------------- accuracy
def target(name: str, dataset: str) -> float | None:
    """The accuracy floor tests/test_learning.py asserts (floors hold for digits only)."""
    return ACCURACY_FLOORS.get(name) if dataset == FLOORS_DATASET else None


def accuracy_table(args) -> str:
    rows, notes = [], []
    # Loaded once, outside the timings: every default config asks for the same data.
    data = dataset_from_config(RunConfig(dataset=args.dataset, seed=args.seed))
    # Torch imports a lot on the first optimizer step (seconds): pay that untimed.
    train(RunConfig(rule="bp", dataset=args.dataset, epochs=1, seed=args.seed), data=data)
    for name in chosen_rules(args):
        try:
            cfg = RunConfig(rule=name, dataset=args.dataset, epochs=args.epochs,
                            seed=args.seed)
            start = time.perf_counter()
            run = train(cfg, data=data)
            wall = time.perf_counter() - start
        except Exception as exc:  # noqa: BLE001
            notes.append(f"{name}: skipped, {type(exc).__name__}: {exc}")
            continue
        acc = run.final.get("test_acc", math.nan)
        # Floors are for the rule's defaults: none when --epochs overrides them.
        goal = target(name, args.dataset) if args.epochs is None else None
        met = "-" if goal is None else ("yes" if acc >= goal else "NO")
        resolved = run.config
        rows.append([name, run.status, acc, goal, met, wall, run.total_steps,
                     f"{resolved.optimizer} lr={resolved.lr:g}, {resolved.epochs} ep"])
    header = (f"{args.dataset}, default config but the rule, seed {args.seed}, CPU, "
              f"{torch.get_num_threads()} threads")
    table = format_table(["rule", "status", "test_acc", "floor", "met", "wall_s", "steps",
                          "defaults"], rows)
    return "\n".join([header, "", table, *[""] * bool(notes), *notes])


def main(argv=None) -> int:
    args = parse_args(argv)
    pin_threads(args.threads)  # the runs' thread policy too, not only torch's count
    print(accuracy_table(args) if args.accuracy else time_rules(args), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
