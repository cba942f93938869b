"""Trainability maps: where in a grid of settings a rule learns at all.

The soft-alignment paper ("One-time soft alignment enables highly efficient
learning without weight transport") maps the final training accuracy of FA and
its initial-alignment variants over the forward-init scale × the feedback-init
scale, over depth and over the training-set size. :func:`trainability_map` runs
such a grid with :func:`fa_explore.sweep` (so any backend, cache and resume
apply), averages over seeds and returns the tidy table and its pivot; the
figure builder is :func:`fa_explore.app.analysis_views.trainability_figure`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from ..config import RunConfig

# The paper's three maps, as (setting on x, setting on y); depth goes through hidden.
PAPER_MAPS = {"init_scales": ("init_gain", "feedback_init_gain"),
              "depth": ("hidden", None), "train_size": ("train_size", None)}


@dataclass(frozen=True)
class TrainabilityMap:
    """``runs``: one row per grid point and seed (the sweep's table); ``summary``:
    one row per grid point with the metric's ``mean``, ``std``, ``min``, ``max``
    over seeds and ``n`` finished seeds; ``x``/``y`` the settings varied (``y``
    None for a curve); ``metric`` the column averaged."""

    runs: pd.DataFrame
    summary: pd.DataFrame
    x: str
    y: str | None
    metric: str

    def pivot(self, stat: str = "mean") -> pd.DataFrame:
        """The summary as a matrix: rows ``y`` values, columns ``x`` values."""
        if self.y is None:
            return self.summary.set_index(self.x)[[stat]].T
        return self.summary.pivot(index=self.y, columns=self.x, values=stat)


def depth_grid(width: int, depths: Sequence[int]) -> list[tuple[int, ...]]:
    """``hidden`` values for a depth sweep: ``depth`` layers of ``width`` each."""
    return [(width,) * d for d in depths]


def trainability_map(base: RunConfig | None, x: str, x_values: Sequence[Any],
                     y: str | None = None, y_values: Sequence[Any] | None = None, *,
                     metric: str = "train_acc", seeds: Sequence[int] = (0,),
                     **sweep_options: Any) -> TrainabilityMap:
    """The final ``metric`` over ``x`` × ``y`` (or over ``x`` alone), for each seed.

    Every point is ``base.replace(x=…, y=…, seed=…)``, run by
    :func:`fa_explore.sweep` with ``sweep_options`` (``backend``, ``workers``,
    ``cache_dir`` …). A point that diverged counts as chance-level failure: its
    metric is taken as recorded in its last evaluation, or NaN when none exists;
    ``n`` in the summary counts the finished seeds.
    """
    from ..sweep import sweep

    if (y is None) != (y_values is None):
        raise ValueError("trainability_map needs both y and y_values, or neither")
    if not seeds:
        raise ValueError("trainability_map needs at least one seed")
    grid: dict[str, list[Any]] = {x: list(x_values)}
    if y is not None:
        grid[y] = list(y_values)
    grid["seed"] = list(seeds)
    runs = sweep(base or RunConfig(), grid, **sweep_options)
    if metric not in runs:
        raise ValueError(f"trainability_map: no column {metric!r} in the sweep's results; "
                         f"columns: {', '.join(map(str, runs.columns))}")
    keys = [x] if y is None else [x, y]
    values = runs.assign(_finished=runs["status"] == "finished")
    summary = (values.groupby(keys, sort=False, dropna=False)  # None is a grid value too
               .agg(mean=(metric, "mean"), std=(metric, "std"), min=(metric, "min"),
                    max=(metric, "max"), n=("_finished", "sum"))
               .reset_index())
    return TrainabilityMap(runs, summary, x, y, metric)
