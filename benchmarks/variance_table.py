"""The FDFA paper's comparison at classroom scale: bias, variance and angle of each
rule's gradient estimate, per layer, at two widths (fresh draws on one batch).

    python benchmarks/variance_table.py [--widths 64 256] [--draws 32]
"""

from __future__ import annotations

import argparse

import pandas as pd

from fa_explore import RunConfig, build, load_dataset, train
from fa_explore.analysis import estimator_statistics
from fa_explore.threads import pin_threads

RULES = ("bp_noise", "fg_w", "fg_a", "dfa", "dkp", "fdfa")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--draws", type=int, default=32)
    parser.add_argument("--trained-epochs", type=int, default=2,
                        help="train each rule this long first (0: at initialisation)")
    args = parser.parse_args()
    pin_threads(1)  # the runs' thread policy too, not only torch's count
    data = load_dataset("digits")
    x, y = data.x_train[:256], data.y_train[:256]
    frames = []
    for width in args.widths:
        for name in RULES:
            cfg = RunConfig(rule=name, hidden=(width,) * args.depth,
                            epochs=max(args.trained_epochs, 1), eval_every=10**6)
            if args.trained_epochs:
                run = train(cfg, data=data)
                model, rule = run.model, run.rule
            else:
                model, rule = build(cfg, data.input_shape, data.n_classes)
            stats = estimator_statistics(model, rule, x, y, draws=args.draws)
            stats.insert(0, "width", width)
            frames.append(stats)
    table = pd.concat(frames, ignore_index=True)
    cols = ["width", "rule", "layer", "bias", "variance", "mean_angle", "angle_of_mean"]
    with pd.option_context("display.width", 120, "display.max_rows", 200):
        print(table[cols].round(3).to_string(index=False))


if __name__ == "__main__":
    main()
