"""Statistics over the seeds of an ensemble, for the curves' mean line and band.

Pure functions, no widgets: the figure builders in :mod:`.views` draw what these
compute, and the dashboard uses :func:`appendable` to decide whether new points
can be appended to the plot (they can when every new row lies after what is
drawn: the batched ensembles evaluate all their members at the same steps) or
the figure must be drawn again (members trained one after another change the
statistics of steps already drawn).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

MemberRows = Sequence[Sequence[Mapping[str, Any]]]  # history rows of each member


@dataclass(frozen=True)
class SeedBand:
    """One history column over seeds: at each ``step`` where at least one member
    has a finite value, the ``mean``, the ``low`` (min) and ``high`` (max) of those
    values and their ``count``."""

    steps: np.ndarray
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray
    count: np.ndarray

    def __len__(self) -> int:
        return len(self.steps)


@dataclass(frozen=True)
class SeedBands:
    """The bands of several columns of one ensemble of ``n_seeds`` members."""

    n_seeds: int
    columns: Mapping[str, SeedBand]

    def __getitem__(self, column: str) -> SeedBand:
        return self.columns.get(column) or _empty()

    @property
    def caption(self) -> str:
        """What the mean line and band show, for a legend or caption."""
        return f"mean of {self.n_seeds} seeds, band: min–max"


def _empty() -> SeedBand:
    nothing = np.empty(0)
    return SeedBand(nothing, nothing, nothing, nothing, np.empty(0, dtype=int))


def _number(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def seed_band(member_rows: MemberRows, column: str, after: float = -math.inf) -> SeedBand:
    """Mean, min and max of ``column`` over the members at each step after ``after``
    (rows are matched by their ``step``; non-finite values are left out)."""
    values: dict[float, list[float]] = {}
    for rows in member_rows:
        for row in rows:
            step, value = _number(row.get("step")), _number(row.get(column))
            if step is None or value is None or step <= after:
                continue
            values.setdefault(step, []).append(value)
    if not values:
        return _empty()
    steps = np.array(sorted(values))
    stacked = [np.asarray(values[s]) for s in steps]
    return SeedBand(steps, np.array([v.mean() for v in stacked]),
                    np.array([v.min() for v in stacked]), np.array([v.max() for v in stacked]),
                    np.array([len(v) for v in stacked]))


def seed_bands(member_rows: MemberRows, columns: Iterable[str],
               after: float = -math.inf) -> SeedBands:
    """:func:`seed_band` of each column."""
    return SeedBands(len(member_rows), {c: seed_band(member_rows, c, after) for c in columns})


def last_step(member_rows: MemberRows) -> float:
    """The largest step any member has a row for (-inf when none has)."""
    steps = [_number(rows[-1].get("step")) for rows in member_rows if rows]
    steps = [s for s in steps if s is not None]
    return max(steps) if steps else -math.inf


def appendable(member_rows: MemberRows, drawn: Sequence[int], frontier: float) -> bool:
    """Whether the rows added since ``drawn`` (rows per member already drawn) all lie
    after ``frontier`` (the last step drawn), so that the statistics drawn so far
    stay right and the new ones can be appended."""
    if len(drawn) != len(member_rows):
        return False
    for rows, count in zip(member_rows, drawn, strict=True):
        if count > len(rows):
            return False
        for row in rows[count:]:
            step = _number(row.get("step"))
            if step is not None and step <= frontier:
                return False
    return True


__all__ = ["SeedBand", "SeedBands", "appendable", "last_step", "seed_band", "seed_bands"]
