"""Pure figure builders: data in, plotly ``go.Figure`` out.

No widgets and no training here, so notebooks reuse every view and the
dashboard redraws in place: each builder returns the same number and order of
traces whatever its data (missing or NaN columns give empty traces), and sets
``uirevision`` so a user's zoom survives updates.

Encodings shared by all views: colour tells runs apart in the curves (the live
run dark blue, pinned runs faint and coloured) and layers apart in the
alignment plot; a dotted line is training data, a solid one test data.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
from plotly.colors import sample_colorscale
from plotly.subplots import make_subplots

from ..analysis.landscape import DecisionGrid, LossSurface, TrajectoryPCA
from ..metrics import angle_between
from .bands import SeedBand, SeedBands

TEMPLATE = "plotly_white"
HEIGHT = 330
FONT = dict(family="Inter, 'Helvetica Neue', Arial, sans-serif", size=12, color="#2a3f5f")
# The live run: black, drawn on top of the pinned runs.
LIVE_COLOR = "#1a1a1a"
SPLIT_DASH = {"train": "dot", "test": "solid"}
# Okabe & Ito's colour-blind-safe palette (without black, the live run's), for pinned
# runs: saturated and distinct for every kind of colour vision. Yellow comes last.
PINNED_COLORS = ("#E69F00", "#56B4E9", "#009E73", "#D55E00", "#CC79A7", "#0072B2",
                 "#F0E442")
PINNED_OPACITY = 0.85
# Line styles telling layers apart when several runs share the alignment plot.
LAYER_DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")
PINNED_LAYER_DASHES = LAYER_DASHES
ANGLE_RANGE = (-4, 188)  # a little room around 0°-180°: the 180° tick clears the title
# Playground's orange and blue for two classes; Tableau 10 beyond.
TWO_CLASS_COLORS = ("#f59322", "#0877bd")
CLASS_COLORS = ("#4c78a8", "#f58518", "#e45756", "#72b7b2", "#54a24b", "#eeca3b",
                "#b279a2", "#ff9da6", "#9d755d", "#bab0ac")
NOTE_STYLE = dict(showarrow=False, font=dict(size=13, color="#6b7280"), align="center",
                  bgcolor="rgba(255,255,255,0.9)", borderpad=4)

NO_WEIGHT_ANGLE_NOTE = ("No weight angle for this rule: it sends no error back<br>"
                        "through feedback weights (the gradient is estimated<br>"
                        "forward, from perturbations).")
WEIGHT_ANGLE_TITLE = "Weight angle ∠(W, B)"
DIRECT_ANGLE_TITLE = "Feedback angle ∠(D, ∂y/∂h)"
GRADIENT_ANGLE_TITLE = "Gradient angle ∠(update, ∇L)"


@dataclass
class PinnedRun:
    """A finished run kept for comparison: its legend label (what differs from the
    others), its history and, optionally, its colour (stable while other pins come
    and go; by default the palette's, in order)."""

    label: str
    history: pd.DataFrame
    color: str | None = None


# ------------------------------------------------------------------ helpers
def _numpy(values) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu()
        values = values.double() if values.is_floating_point() else values
        return values.numpy()
    return np.asarray(values)


def _series(history: pd.DataFrame | None, column: str) -> tuple[np.ndarray, np.ndarray]:
    """Steps and values of ``column`` where the value is finite (empty when the
    history or the column is missing)."""
    if history is None or len(history) == 0 or column not in history or "step" not in history:
        return np.empty(0), np.empty(0)
    x = pd.to_numeric(history["step"], errors="coerce").to_numpy(dtype=float)
    y = pd.to_numeric(history[column], errors="coerce").to_numpy(dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    return x[keep], y[keep]


def rows_series(rows, column: str) -> tuple[list[float], list[float]]:
    """Steps and finite values of ``column`` in history rows (dicts): what
    :func:`_series` gives for a DataFrame, for appending points to a live plot."""
    xs, ys = [], []
    for row in rows:
        x, y = row.get("step"), row.get(column)
        if isinstance(y, (int, float)) and not isinstance(y, bool) and math.isfinite(y) and (
                isinstance(x, (int, float)) and math.isfinite(x)):
            xs.append(float(x))
            ys.append(float(y))
    return xs, ys


def _style(fig: go.Figure, title: str, uirevision: str, height: int = HEIGHT) -> go.Figure:
    fig.update_layout(
        template=TEMPLATE, height=height, font=FONT, uirevision=uirevision,
        title=dict(text=title, x=0.01, xanchor="left", y=0.97, yanchor="top",
                   font=dict(size=15)),
        margin=dict(l=60, r=20, t=64, b=40),
        # Below the plots: a legend that wraps (many pinned runs) then pushes the
        # margin instead of covering subplot titles.
        legend=dict(orientation="h", x=0, xanchor="left", y=-0.22, yanchor="top",
                    font=dict(size=11), bgcolor="rgba(255,255,255,0)"),
        hovermode="closest", showlegend=True,
    )
    fig.update_xaxes(visible=True)  # placeholders hide them; an update must show them
    fig.update_yaxes(visible=True)
    for annotation in fig.layout.annotations:  # subplot titles: smaller than the title
        annotation.font = dict(size=12, color="#2a3f5f")
    return fig


def panel_figure(fig: go.Figure, height: int) -> tuple[go.Figure, str]:
    """A figure for a dashboard panel, whose caption above the plot carries the title:
    the title taken out (returned), the top margin cut to what subplot titles need,
    a fixed ``height``."""
    title = fig.layout.title.text or ""
    subplot_titles = any(a.yref == "paper" and a.y == 1 for a in fig.layout.annotations)
    fig.update_layout(title=None, height=height,
                      margin=dict(t=26 if subplot_titles else 10))
    legend = fig.layout.legend
    if fig.layout.showlegend is not False and legend.orientation == "h":
        # At the foot of the figure, below the axis titles (not over them).
        fig.update_layout(legend=dict(yref="container", y=0, yanchor="bottom"),
                          margin=dict(b=64))
    return fig, title


def _note(fig: go.Figure, text: str, xref: str = "x domain", yref: str = "y domain") -> None:
    fig.add_annotation(text=text, x=0.5, y=0.5, xref=xref, yref=yref, **NOTE_STYLE)


def _placeholder(fig: go.Figure, text: str) -> None:
    """No data at all: hide the empty axes and say what will appear."""
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.update_layout(showlegend=False)
    _note(fig, text)


def _check_pinned(pinned: Sequence[PinnedRun]) -> list[PinnedRun]:
    pinned = list(pinned or ())
    for entry in pinned:
        if not isinstance(entry, PinnedRun):
            raise ValueError(f"pinned must hold PinnedRun entries; got {type(entry).__name__}")
    return pinned


def pinned_color(entry: PinnedRun, index: int) -> str:
    """A pinned run's colour: its own, else the palette's ``index``-th."""
    return entry.color or PINNED_COLORS[index % len(PINNED_COLORS)]


def layer_colors(n_layers: int) -> list[str]:
    """One colour per layer, from early (purple) to late (green) along Viridis."""
    if n_layers == 1:
        return [sample_colorscale("Viridis", [0.0])[0]]
    return sample_colorscale("Viridis", [0.8 * k / (n_layers - 1) for k in range(n_layers)])


def _two_panels(fig: go.Figure) -> None:
    """The right panel's step axis follows the left one (set on the second axis
    only: an axis matching itself is ignored, with a console warning per redraw)."""
    fig.update_xaxes(title_text="step", rangemode="tozero")
    fig.layout.xaxis2.matches = "x"


def _translucent(color: str, alpha: float) -> str:
    """``color`` (``#rrggbb`` or ``rgb(r, g, b)``) as ``rgba`` with ``alpha``."""
    if color.startswith("#"):
        r, g, b = (int(color[i:i + 2], 16) for i in (1, 3, 5))
    else:
        r, g, b = (round(float(v)) for v in color[color.index("(") + 1:-1].split(",")[:3])
    return f"rgba({r},{g},{b},{alpha})"


BAND_ALPHA = 0.13


def _add_band(fig: go.Figure, band: SeedBand, column: str, color: str, legend: str | None,
              row: int, col: int) -> None:
    """Two traces: the band's lower edge, then its upper edge filled down to it
    (both grow by appended points; ``meta`` is ``column:low`` / ``column:high``)."""
    common = dict(mode="lines", line=dict(width=0, color=color), hoverinfo="skip", zorder=0)
    fig.add_trace(go.Scatter(x=band.steps, y=band.low, meta=f"{column}:low", showlegend=False,
                             legendgroup="band", name="min", **common), row=row, col=col)
    fig.add_trace(go.Scatter(x=band.steps, y=band.high, meta=f"{column}:high", fill="tonexty",
                             fillcolor=_translucent(color, BAND_ALPHA), legendgroup="band",
                             name=legend or "max", showlegend=legend is not None, **common),
                  row=row, col=col)


def _live_series(history: pd.DataFrame | None, bands: SeedBands | None,
                 column: str) -> tuple[np.ndarray, np.ndarray]:
    """The live line: the run's own values, or with ``bands`` the mean over seeds."""
    if bands is None:
        return _series(history, column)
    band = bands[column]
    return band.steps, band.mean


# ------------------------------------------------------------------- curves
CURVE_COLUMNS = ("train_loss", "test_loss", "train_acc", "test_acc")


def curves_figure(history: pd.DataFrame | None, pinned: Sequence[PinnedRun] = (),
                  *, bands: SeedBands | None = None,
                  uirevision: str = "fx-curves") -> go.Figure:
    """Loss and accuracy (train dotted, test solid) over training steps.

    Traces: the live run's ``train_loss, test_loss, train_acc, test_acc`` (black,
    drawn on top), then the same four per pinned run, each in its own colour and
    labelled by ``PinnedRun.label``. With ``bands`` (an ensemble of seeds) the live
    lines are the mean over seeds, and a min–max band per column follows the pinned
    runs' traces (``low``, ``high`` each: :func:`_add_band`).
    """
    pinned = _check_pinned(pinned)
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Loss (cross-entropy)", "Accuracy"),
                        horizontal_spacing=0.12)
    runs = [("live", history, LIVE_COLOR, 1.0)] + [
        (p.label, p.history, pinned_color(p, k), PINNED_OPACITY) for k, p in enumerate(pinned)]
    for index, (label, frame, color, opacity) in enumerate(runs):
        live = index == 0
        for column in CURVE_COLUMNS:
            split, metric = column.split("_")
            x, y = _live_series(frame, bands, column) if live else _series(frame, column)
            value = "%{y:.1%}" if metric == "acc" else "%{y:.3f}"
            fig.add_trace(go.Scatter(
                x=x, y=y, mode="lines", meta=column,
                name=split if live else label,
                legendgroup=split if live else f"pinned-{index}",
                # One legend entry per live split and per pinned run.
                showlegend=metric == "loss" and (live or split == "test"),
                opacity=opacity, zorder=2 if live else 1,
                line=dict(color=color, dash=SPLIT_DASH[split], width=2.4 if live else 1.7),
                hovertemplate=f"{split} {'accuracy' if metric == 'acc' else 'loss'} "
                              f"{value}<br>step %{{x}}<extra>{label}</extra>"),
                row=1, col=1 if metric == "loss" else 2)
    if bands is not None:
        for column in CURVE_COLUMNS:
            _add_band(fig, bands[column], column, LIVE_COLOR,
                      bands.caption if column == "test_loss" else None, 1,
                      1 if column.endswith("loss") else 2)
    _two_panels(fig)
    fig.update_yaxes(title_text="loss", rangemode="tozero", row=1, col=1)
    # No title on the accuracy axis: the subplot title says it, and a title there
    # would crowd the tick labels of a narrow panel.
    fig.update_yaxes(range=[0, 1.04], tickformat=".0%", row=1, col=2)
    _style(fig, "Training curves", uirevision)
    if (history is None or not len(_live_series(history, bands, "train_loss")[0])) and (
            not pinned):
        _note(fig, "Press Train: loss and accuracy appear here as the run learns.",
              xref="paper", yref="paper")
    return fig


# ---------------------------------------------------------------- alignment
def alignment_figure(history: pd.DataFrame | None, n_layers: int,
                     pinned: Sequence[PinnedRun] = (), *,
                     weight_title: str = WEIGHT_ANGLE_TITLE, bands: SeedBands | None = None,
                     uirevision: str = "fx-alignment") -> go.Figure:
    """Per-layer weight angle ∠(W, B) (or, for direct feedback, ∠(D, ∂y/∂h):
    ``weight_title``) and gradient angle ∠(rule's update, true gradient), in
    degrees over training steps.

    Traces: ``weight_angle/1..L`` then ``grad_angle/1..L`` for the live run, then
    the same per pinned run. Alone, the live run has a colour per layer; with pinned
    runs, colour tells the runs apart (the live run black, on top, each pinned run
    its colour from the curves figure) and the line style the layers: the live run's
    legend entries ("layer 1" solid, "layer 2" dashed, ...) are the key. NaN columns
    give empty traces; when every weight angle is NaN a note says the rule has no
    feedback matrix. With ``bands`` (an ensemble of seeds) the live lines are the mean
    over seeds and a min–max band per line, in its colour, follows every other trace
    (``weight_angle/1..L`` then ``grad_angle/1..L``, ``low`` and ``high`` each).
    """
    if isinstance(n_layers, bool) or not isinstance(n_layers, int) or n_layers < 1:
        raise ValueError(f"n_layers must be an integer >= 1; got {n_layers!r}")
    pinned = _check_pinned(pinned)
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.12,
                        subplot_titles=(weight_title, GRADIENT_ANGLE_TITLE))
    colors = layer_colors(n_layers)
    compare = bool(pinned)
    runs = [("live", history, LIVE_COLOR)] + [(p.label, p.history, pinned_color(p, k))
                                              for k, p in enumerate(pinned)]
    for index, (label, frame, run_color) in enumerate(runs):
        live = index == 0
        for col, kind in ((1, "weight_angle"), (2, "grad_angle")):
            for layer in range(1, n_layers + 1):
                column = f"{kind}/{layer}"
                x, y = _live_series(frame, bands, column) if live else _series(frame, column)
                dash = LAYER_DASHES[(layer - 1) % len(LAYER_DASHES)] if compare else "solid"
                color = run_color if compare else colors[layer - 1]
                fig.add_trace(go.Scatter(
                    x=x, y=y, mode="lines", meta=column,
                    name=f"layer {layer}" if live else label,
                    legendgroup=f"layer-{layer}" if live else f"pinned-{index}",
                    # Legend from the gradient panel: every rule has gradient angles.
                    showlegend=col == 2 and (live or layer == 1),
                    opacity=1.0 if live else PINNED_OPACITY, zorder=2 if live else 1,
                    line=dict(color=color, dash=dash, width=2.4 if live else 1.6),
                    hovertemplate=f"layer {layer}: %{{y:.1f}}°<br>step %{{x}}"
                                  f"<extra>{label}</extra>"),
                    row=1, col=col)
    if bands is not None:
        for col, kind in ((1, "weight_angle"), (2, "grad_angle")):
            for layer in range(1, n_layers + 1):
                _add_band(fig, bands[f"{kind}/{layer}"], f"{kind}/{layer}",
                          LIVE_COLOR if compare else colors[layer - 1],
                          bands.caption if col == 2 and layer == 1 else None, 1, col)
    for col in (1, 2):
        # 90° is what two unrelated random directions give: no alignment.
        fig.add_hline(y=90, line=dict(color="#9ca3af", width=1, dash="dot"), row=1, col=col)
    _two_panels(fig)
    # Tick texts spelled out: plotly.js drops ticksuffix for explicit tick values.
    fig.update_yaxes(range=list(ANGLE_RANGE), tickvals=[0, 45, 90, 135, 180],
                     ticktext=["0°", "45°", "90°", "135°", "180°"])
    fig.update_yaxes(title_text="angle", row=1, col=1)
    _style(fig, "Alignment per layer", uirevision)
    has_rows = history is not None and len(history) > 0
    if has_rows and not any(len(_live_series(history, bands, f"weight_angle/{layer}")[1])
                            for layer in range(1, n_layers + 1)):
        _note(fig, NO_WEIGHT_ANGLE_NOTE)
    elif not has_rows and not pinned:
        _note(fig, "Press Train: the angle of each layer appears here.<br>"
                   "90° (dotted) is no alignment; 0° is backpropagation.",
              xref="paper", yref="paper")
    return fig


# ---------------------------------------------------------------- landscape
def _nice_ticks(low: float, high: float, max_ticks: int | None = None) -> list[float]:
    """1-2-5 values between ``low`` and ``high`` (for a log-scaled colour bar); with
    ``max_ticks``, thinned to powers of ten (then every other one) until at most that
    many remain, so that a short colour bar's labels never pile up."""
    ticks = []
    for exponent in range(math.floor(math.log10(low)) - 1, math.ceil(math.log10(high)) + 1):
        for mantissa in (1, 2, 5):
            value = mantissa * 10.0 ** exponent
            if low <= value <= high:
                ticks.append(value)
    if max_ticks is not None and len(ticks) > max_ticks:
        ticks = [t for t in ticks if f"{t:e}".startswith("1")] or ticks
        while len(ticks) > max_ticks:
            ticks = ticks[::2]
    if not ticks:
        return [low, high]
    if len(ticks) == 1 and max_ticks is not None and max_ticks >= 2:
        # Two more labels inside the range: the ends, rounded inwards to 2 digits.
        scale = 10.0 ** (math.floor(math.log10(low)) - 1)
        inner = {math.ceil(low / scale) * scale, math.floor(high / scale) * scale}
        ticks = sorted({float(f"{t:.2g}") for t in inner if low <= t <= high} | set(ticks))
    return ticks


LANDSCAPE_WAITING = ("The loss landscape appears after a few training steps: the path of<br>"
                     "the weights on its two main directions, over the loss on that plane.")


def landscape_figure(surface: LossSurface | None, pca: TrajectoryPCA | None, *,
                     empty_text: str = LANDSCAPE_WAITING,
                     uirevision: str = "fx-landscape") -> go.Figure:
    """Loss contour on the trajectory's PCA plane with the trajectory over it.

    Traces: loss contour, trajectory, start, end (empty when their data is
    missing). The colour scale is logarithmic in the loss, so both the valley
    and the far walls stay readable.
    """
    fig = go.Figure()
    contour = go.Contour(x=[], y=[], z=[], showscale=False, hoverinfo="skip",
                         name="loss", colorscale="Viridis")
    if surface is not None:
        loss = np.asarray(surface.loss, dtype=float)
        finite = loss[np.isfinite(loss)]
        if finite.size:
            floor = max(float(finite.min()), 1e-6)
            loss = np.clip(loss, floor, None)
            top = float(np.nanmax(np.where(np.isfinite(loss), loss, np.nan)))
            ticks = _nice_ticks(floor, max(top, floor * 1.0001), max_ticks=5)
            contour = go.Contour(
                x=_numpy(surface.xs), y=_numpy(surface.ys), z=np.log10(loss), customdata=loss,
                name="loss", colorscale="Viridis", ncontours=22,
                contours=dict(coloring="heatmap", showlines=True),
                line=dict(width=0.5, color="rgba(255,255,255,0.35)"),
                colorbar=dict(title=dict(text="loss (log)", side="right"), thickness=10,
                              len=0.9, tickvals=np.log10(ticks),
                              ticktext=[f"{t:g}" for t in ticks], tickfont=dict(size=10)),
                hovertemplate="loss %{customdata:.3f}<br>(%{x:.3g}, %{y:.3g})<extra></extra>")
    fig.add_trace(contour)

    path_x = path_y = np.empty(0)
    labels: np.ndarray = np.empty(0)
    word = "point"
    if pca is not None and pca.n_points:
        path_x, path_y = pca.coords[:, 0], pca.coords[:, 1]
        word = "step" if pca.steps is not None else "point"
        labels = np.asarray(pca.steps) if pca.steps is not None else np.arange(pca.n_points)
    common = dict(hovertemplate=f"{word} %{{customdata}}<extra>%{{fullData.name}}</extra>")
    fig.add_trace(go.Scatter(
        x=path_x, y=path_y, customdata=labels, mode="lines+markers", name="trajectory",
        line=dict(color="white", width=2),
        marker=dict(size=5, color="white", line=dict(color="#1f2937", width=1)), **common))
    fig.add_trace(go.Scatter(
        x=path_x[:1], y=path_y[:1], customdata=labels[:1], mode="markers", name="start",
        marker=dict(size=12, color="#f58518", symbol="circle",
                    line=dict(color="white", width=1.5)), **common))
    fig.add_trace(go.Scatter(
        x=path_x[-1:], y=path_y[-1:], customdata=labels[-1:], mode="markers", name="end",
        marker=dict(size=16, color="#e45756", symbol="star",
                    line=dict(color="white", width=1.5)), **common))

    if pca is not None:
        ratios = pca.explained_variance_ratio
        fig.update_xaxes(title_text=f"PC 1 ({ratios[0]:.0%} of the movement)")
        fig.update_yaxes(title_text=f"PC 2 ({ratios[1]:.0%})")
    else:
        fig.update_xaxes(title_text="PC 1")
        fig.update_yaxes(title_text="PC 2")
    fig.update_xaxes(showgrid=False, zeroline=False)
    fig.update_yaxes(showgrid=False, zeroline=False)
    _style(fig, "Loss landscape along the trajectory", uirevision)
    if surface is None and pca is None:
        _placeholder(fig, empty_text)
    return fig


# ----------------------------------------------------------------- boundary
def class_palette(n_classes: int) -> list[str]:
    base = TWO_CLASS_COLORS if n_classes <= 2 else CLASS_COLORS
    return [base[k % len(base)] for k in range(n_classes)]


def _tint(color: str, amount: float) -> str:
    """``color`` mixed with white (``amount`` = 1 is white)."""
    r, g, b = (int(color[i:i + 2], 16) for i in (1, 3, 5))
    mix = [round(c + (255 - c) * amount) for c in (r, g, b)]
    return f"rgb({mix[0]},{mix[1]},{mix[2]})"


def _region_colorscale(colors: list[str]) -> list[tuple[float, str]]:
    """Class k owns the band [k/K, (k+1)/K]: pale where the model is unsure,
    deeper where it is confident (no blending between classes)."""
    n = len(colors)
    scale = []
    for k, color in enumerate(colors):
        scale += [(k / n, _tint(color, 0.92)), ((k + 1) / n, _tint(color, 0.45))]
    return scale


def boundary_figure(grid: DecisionGrid | None, x2d, y, class_names: Sequence[str] | None,
                    *, max_points: int = 2000,
                    uirevision: str = "fx-boundary") -> go.Figure:
    """Playground-style decision regions of a 2-D model with the data over them.

    Traces: the regions (a heatmap: colour = predicted class, depth =
    confidence), then one scatter per class. ``x2d``/``y`` may be None (regions
    only); up to ``max_points`` points are drawn (a seeded subsample).
    """
    points = None if x2d is None else _numpy(x2d).astype(float)
    labels = None if y is None else _numpy(y).astype(int)
    if points is not None and (points.ndim != 2 or points.shape[1] != 2):
        raise ValueError(f"x2d must have shape (n, 2); got {points.shape}")
    if points is not None and (labels is None or len(labels) != len(points)):
        raise ValueError("y must give one class label per row of x2d")
    if class_names is not None:
        n_classes = len(class_names)
    elif grid is not None:
        n_classes = grid.probs.shape[-1]
    elif labels is not None and len(labels):
        n_classes = int(labels.max()) + 1
    else:
        n_classes = 0
    names = list(class_names or [])[:n_classes]
    names += [f"class {k}" for k in range(len(names), n_classes)]
    colors = class_palette(n_classes)

    fig = go.Figure()
    if grid is not None and n_classes:
        probs = np.asarray(grid.probs, dtype=float)
        winner = probs.argmax(-1)
        confidence = probs.max(-1)
        # 1/K is a coin toss among K classes: the palest shade.
        certainty = np.clip((confidence - 1 / n_classes) / (1 - 1 / n_classes), 0, 1)
        z = (winner + 0.001 + 0.998 * certainty) / n_classes
        # float32 halves what the page receives at every redraw; plenty for colours.
        fig.add_trace(go.Heatmap(x=_numpy(grid.xs), y=_numpy(grid.ys), z=z.astype(np.float32),
                                 zmin=0, zmax=1,
                                 colorscale=_region_colorscale(colors), showscale=False,
                                 hoverinfo="skip", name="decision regions"))
    else:
        fig.add_trace(go.Heatmap(x=[], y=[], z=[], showscale=False, hoverinfo="skip",
                                 name="decision regions"))
    if points is not None and len(points) > max_points:
        keep = np.sort(np.random.default_rng(0).choice(len(points), max_points, replace=False))
        points, labels = points[keep], labels[keep]
    for k in range(n_classes):
        mine = (points[labels == k] if points is not None else np.empty((0, 2)))
        mine = mine.astype(np.float32)
        fig.add_trace(go.Scatter(
            x=mine[:, 0], y=mine[:, 1], mode="markers", name=names[k],
            marker=dict(size=6, color=colors[k], line=dict(color="white", width=0.8)),
            hovertemplate=f"{names[k]}<br>(%{{x:.2f}}, %{{y:.2f}})<extra></extra>"))

    # Equal scales; the plot area shrinks to fit rather than padding the range.
    fig.update_xaxes(title_text="x₁", zeroline=False, showgrid=False, constrain="domain")
    fig.update_yaxes(title_text="x₂", zeroline=False, showgrid=False, constrain="domain",
                     scaleanchor="x", scaleratio=1)
    if grid is not None:
        fig.update_xaxes(range=[float(grid.xs[0]), float(grid.xs[-1])])
        fig.update_yaxes(range=[float(grid.ys[0]), float(grid.ys[-1])])
    _style(fig, "Decision regions", uirevision)
    # A square plot: the class legend goes beside it, not under it.
    fig.update_layout(legend=dict(orientation="v", x=1.02, xanchor="left", y=1,
                                  yanchor="top"), margin=dict(b=45))
    if grid is None and points is None:
        _placeholder(fig, "Decision regions are drawn for the 2-D datasets:<br>"
                   "pick one under “dataset”.")
    return fig


# ------------------------------------------------------------------ weights
WEIGHT_LABELS = ("forward weight W", "feedback weight B")
DIRECT_LABELS = ("Jacobian ∂y/∂h (probe-batch mean)", "direct feedback D")


def weights_figure(weight: np.ndarray | torch.Tensor | None,
                   feedback: np.ndarray | torch.Tensor | None, layer: int | None,
                   max_points: int = 2000, *, labels: tuple[str, str] = WEIGHT_LABELS,
                   uirevision: str | None = None) -> go.Figure:
    """Each entry of what the feedback should align with (the forward weight W, or
    for direct feedback the output-to-layer Jacobian: ``labels`` names the axes)
    against the feedback entry that stands in for it (a seeded subsample of
    ``max_points``), with the line y = x.

    Points along a line through the origin mean aligned feedback; a round
    cloud means none. ``layer`` is 1-based, as in the history columns (None: no
    layer chosen yet). Traces: the weights, the y = x line.
    """
    if layer is not None and (isinstance(layer, bool) or not isinstance(layer, int)
                              or layer < 1):
        raise ValueError(f"layer must be None or an integer >= 1 (1-based); got {layer!r}")
    w = None if weight is None else _numpy(weight).astype(float)
    b = None if feedback is None else _numpy(feedback).astype(float)
    if w is not None and b is not None and w.shape != b.shape:
        raise ValueError(f"feedback must have the weight's shape {w.shape}; got {b.shape}")
    what = "feedback vs forward weights" if labels == WEIGHT_LABELS else (
        f"{labels[1]} vs {labels[0].split(' (')[0]}")
    title = what[0].upper() + what[1:] if layer is None else f"Layer {layer}: {what}"
    xs = ys = np.empty(0)
    line = np.empty(0)
    if w is not None and b is not None:
        angle = angle_between(torch.as_tensor(w), torch.as_tensor(b))
        title += f" · angle {angle:.1f}°" if math.isfinite(angle) else ""
        xs, ys = w.ravel(), b.ravel()
        if xs.size > max_points:
            keep = np.sort(np.random.default_rng(0).choice(xs.size, max_points, replace=False))
            xs, ys = xs[keep], ys[keep]
        xs, ys = xs.astype(np.float32), ys.astype(np.float32)  # half the page update
        if xs.size:
            # Where both axes overlap, so the reference line never stretches them.
            low, high = max(xs.min(), ys.min()), min(xs.max(), ys.max())
            line = np.array([low, high]) if low < high else np.empty(0)
    short = labels[0].split(" ")[-1] if labels == WEIGHT_LABELS else "J"
    fig = go.Figure([
        go.Scatter(x=xs, y=ys, mode="markers", name="weights",
                   marker=dict(size=4, color=PINNED_COLORS[5], opacity=0.4),
                   hovertemplate=f"{short} %{{x:.3f}}<br>"
                                 f"{'B' if labels == WEIGHT_LABELS else 'D'} %{{y:.3f}}"
                                 "<extra></extra>"),
        go.Scatter(x=line, y=line, mode="lines", name="y = x", hoverinfo="skip",
                   line=dict(color="#D55E00", width=1.5, dash="dash")),
    ])
    fig.update_xaxes(title_text=labels[0], zeroline=True, zerolinecolor="#d1d5db")
    fig.update_yaxes(title_text=labels[1], zeroline=True, zerolinecolor="#d1d5db")
    _style(fig, title, uirevision or f"fx-weights-{layer}")
    fig.update_layout(showlegend=False)
    if w is None:
        _placeholder(fig, "Train a model to compare its forward and feedback weights.")
    elif b is None and layer == 1:
        _placeholder(fig, "Layer 1 has no feedback matrix: no error is sent back into the input.")
    elif b is None:
        which = "This layer" if layer is None else f"Layer {layer}"
        _placeholder(fig, f"{which} has no feedback matrix: this rule estimates<br>"
                          "the gradient forward, from perturbations.")
    return fig


# -------------------------------------------------------------- comparison
@dataclass
class TableRow:
    """One run in the comparison table under the plots."""

    label: str  # what differs from the other runs
    color: str
    status: str
    test_acc: float
    weight_angles: Sequence[float]  # final, per layer (NaN where undefined)
    grad_angles: Sequence[float]
    steps: int
    seconds: float
    live: bool = False


def _cell(value: float, unit: str = "°") -> str:
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return "–"
    return f"{value:.0f}{unit}"


def comparison_html(rows: Sequence[TableRow]) -> str:
    """The pins table: what differs, final test accuracy, final weight and gradient
    angle per layer (``layer 1 / layer 2 / …``), steps and training time."""
    import html as _html

    if not rows:
        return ""
    n = max(len(r.grad_angles) for r in rows)
    layers = " / ".join(str(k) for k in range(1, n + 1))
    head = ("<tr><th></th><th>run (what differs)</th><th>status</th><th>test acc.</th>"
            f"<th>weight angle, layers {layers}</th><th>gradient angle, layers {layers}</th>"
            "<th>steps</th><th>time</th></tr>")
    body = []
    for r in rows:
        swatch = (f'<span class="fx-swatch" style="background:{r.color}"></span>')
        acc = f"{r.test_acc:.1%}" if math.isfinite(r.test_acc) else "–"
        seconds = f"{r.seconds:.1f} s" if math.isfinite(r.seconds) else "–"
        body.append(
            f'<tr class="{"fx-live-row" if r.live else "fx-pin-row"}"><td>{swatch}</td>'
            f"<td>{_html.escape(r.label)}</td><td>{_html.escape(r.status)}</td>"
            f"<td>{acc}</td><td>{' / '.join(_cell(a) for a in r.weight_angles)}</td>"
            f"<td>{' / '.join(_cell(a) for a in r.grad_angles)}</td>"
            f"<td>{r.steps:,}</td><td>{seconds}</td></tr>")
    return f'<table class="fx-compare">{head}{"".join(body)}</table>'
