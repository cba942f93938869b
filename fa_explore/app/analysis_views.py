"""Pure figure builders for the analysis toolkit: data in, plotly ``go.Figure`` out.

Each takes what an analysis function returns (:mod:`fa_explore.analysis`) and
draws it in the style of :mod:`fa_explore.app.views` (same template, fonts and
colours: the first run dark blue, the others in the pinned-run palette). No
widgets and no computation beyond presentation (smoothing an SLQ density on a
grid), so notebooks and a dashboard tab can share them.

* :func:`hessian_density_figure`: smoothed Hessian eigenvalue densities;
* :func:`top_eigenvalues_figure`: top eigenvalue and trace over training or runs;
* :func:`robustness_figure`: accuracy against attack or noise size, per run;
* :func:`interpolation_figure`: loss and accuracy between two solutions;
* :func:`slice_figure`: a 2-D loss slice (contour) or 1-D slices (lines);
* :func:`trainability_figure`: a trainability map (heatmap, or a line with a band).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..analysis.hessian import SpectralDensity, density_on_grid
from ..analysis.landscape import Interpolation, LossSlice1D, LossSurface, Sharpness
from .views import LIVE_COLOR, PINNED_COLORS, _nice_ticks, _numpy, _placeholder, _style

# Densities below this fraction of their peak are drawn at it on the log axis
# (the Gaussian tails underflow to 0, which a log axis cannot show).
DENSITY_FLOOR = 1e-8
NORM_WORDS = {"linf": "L∞", "l2": "L2"}


def run_colors(n: int) -> list[str]:
    """The first run dark blue, the others from the pinned-run palette."""
    return [LIVE_COLOR if k == 0 else PINNED_COLORS[(k - 1) % len(PINNED_COLORS)]
            for k in range(n)]


def _labelled(data, kind, name: str) -> list[tuple[str, object]]:
    """``[(label, item)]`` from one item, a mapping label → item, or None (empty)."""
    if data is None:
        return []
    if isinstance(data, kind):
        return [("", data)]
    if isinstance(data, Mapping):
        items = [(str(label), item) for label, item in data.items()]
        for label, item in items:
            if not isinstance(item, kind):
                raise ValueError(f"{name} must be a {kind.__name__} or a mapping label → "
                                 f"{kind.__name__}; got {type(item).__name__} for {label!r}")
        return items
    raise ValueError(f"{name} must be a {kind.__name__} or a mapping label → {kind.__name__}; "
                     f"got {type(data).__name__}")


# ------------------------------------------------------------------ density
def hessian_density_figure(density: SpectralDensity | Mapping[str, SpectralDensity] | None,
                           *, sigma: float | None = None, n_points: int = 1000,
                           log: bool = True,
                           uirevision: str = "fx-hessian-density") -> go.Figure:
    """Eigenvalue density of the loss Hessian (stochastic Lanczos quadrature,
    smoothed by :func:`~fa_explore.analysis.hessian.density_on_grid` with
    ``sigma``), one line per run, on a log axis as in PyHessian and Ghorbani et
    al. 2019 (values under :data:`DENSITY_FLOOR` times the peak drawn at it;
    ``customdata`` holds the unclipped values). A run given alone has trace name
    ``density``. With several runs all share one kernel width (the widest default).

    Traces: per run, the smoothed density, then its quadrature nodes (markers
    at their weights, on the right axis).
    """
    items = _labelled(density, SpectralDensity, "density")
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    if items and sigma is None:
        sigma = max(_default_sigma(d) for _, d in items)
    for (label, d), color in zip(items, run_colors(len(items)), strict=True):
        grid, values = density_on_grid(d, sigma=sigma, n_points=n_points)
        shown = np.maximum(values, DENSITY_FLOOR * values.max()) if log else values
        fig.add_trace(go.Scatter(
            x=grid, y=shown, customdata=values, mode="lines", name=label or "density",
            legendgroup=label, line=dict(color=color, width=2),
            hovertemplate="λ %{x:.4g}<br>density %{customdata:.3g}<extra>%{fullData.name}"
                          "</extra>"), secondary_y=False)
        fig.add_trace(go.Scatter(
            x=d.nodes, y=d.weights, mode="markers", name=f"{label} nodes" if label else "nodes",
            legendgroup=label, showlegend=False, marker=dict(color=color, size=5, opacity=0.6),
            hovertemplate="node λ %{x:.4g}<br>weight %{y:.3g}<extra>%{fullData.name}</extra>"),
            secondary_y=True)
    fig.update_xaxes(title_text="eigenvalue λ of the loss Hessian (loss / parameter²)")
    fig.update_yaxes(title_text="density (per unit λ)", type="log" if log else "linear",
                     secondary_y=False)
    fig.update_yaxes(title_text="quadrature weight", type="log" if log else "linear",
                     showgrid=False, secondary_y=True)
    _style(fig, "Hessian eigenvalue density", uirevision)
    if not items:
        _placeholder(fig, "The Hessian spectrum appears once a density is computed<br>"
                          "(fa_explore.analysis.hessian_density).")
    return fig


def _default_sigma(d: SpectralDensity) -> float:
    nodes = np.asarray(d.nodes, dtype=float)
    return max(0.01 * float(np.ptp(nodes)), 1e-6 * float(np.abs(nodes).max()), 1e-6)


# ----------------------------------------------------------- eigenvalues
def _sharpness_frame(data) -> pd.DataFrame:
    if data is None:
        return pd.DataFrame(columns=["run", "top_eigenvalue", "trace"])
    if isinstance(data, pd.DataFrame):
        return data
    if isinstance(data, Mapping):
        rows = []
        for label, value in data.items():
            if isinstance(value, Sharpness):
                rows.append({"run": str(label), **value.as_dict()})
            elif isinstance(value, pd.DataFrame):
                rows.extend({"run": str(label), **row} for row in value.to_dict("records"))
            else:
                raise ValueError("top_eigenvalues_figure takes a DataFrame or a mapping "
                                 "label → Sharpness or DataFrame; got "
                                 f"{type(value).__name__} for {label!r}")
        return pd.DataFrame(rows)
    raise ValueError(f"top_eigenvalues_figure takes a DataFrame or a mapping; got "
                     f"{type(data).__name__}")


def top_eigenvalues_figure(data, *, x: str | None = None,
                           uirevision: str = "fx-top-eigenvalues") -> go.Figure:
    """Largest Hessian eigenvalue (left) and Hessian trace (right), the paper's
    flatness numbers, over training or across runs.

    ``data``: a frame like :func:`~fa_explore.analysis.sharpness_over_training`'s
    (columns ``step``, ``top_eigenvalue``, ``trace``, optional ``trace_stderr``,
    optional ``run`` to tell runs apart), or a mapping label → such a frame
    (over training) or → :class:`~fa_explore.analysis.Sharpness` (across runs).
    ``x`` is the column on the x axis (default ``step`` when present, else
    ``run``, drawn as categories).

    Traces: per run, the top eigenvalue then the trace (with ±1 standard error
    bars when ``trace_stderr`` is given); across runs, one trace per panel.
    """
    frame = _sharpness_frame(data)
    if x is None:
        x = "step" if "step" in frame else "run"
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Top eigenvalue λ_max", "Trace tr(H)"),
                        horizontal_spacing=0.12)
    categorical = x == "run"
    if categorical or "run" not in frame:
        groups = [("", frame)]
    else:
        groups = [(str(label), part) for label, part in frame.groupby("run", sort=False)]
    colors = run_colors(len(groups))
    for (label, part), color in zip(groups, colors, strict=True):
        xs = part[x].astype(str).to_numpy() if categorical else part[x].to_numpy(dtype=float)
        mode = "markers" if categorical else "lines+markers"
        marker = dict(size=9 if categorical else 5,  # across runs: a colour per run
                      color=run_colors(len(xs)) if categorical and len(xs) else color)
        for col, column in ((1, "top_eigenvalue"), (2, "trace")):
            values = (part[column].to_numpy(dtype=float) if column in part
                      else np.full(len(part), np.nan))
            error = None
            if column == "trace" and "trace_stderr" in part:
                error = dict(type="data", array=part["trace_stderr"].to_numpy(dtype=float),
                             visible=True, thickness=1.2)
            fig.add_trace(go.Scatter(
                x=xs, y=values, mode=mode, name=label or column.replace("_", " "),
                legendgroup=label, showlegend=(col == 1) if label else True,
                error_y=error, marker=marker,
                line=dict(color=color, width=2)), row=1, col=col)
    xtitle = "training step" if x == "step" else ("run" if categorical else x)
    fig.update_xaxes(title_text=xtitle)
    if categorical:
        fig.update_xaxes(type="category")
    fig.update_yaxes(title_text="λ_max (loss / parameter²)", row=1, col=1)
    fig.update_yaxes(title_text="tr(H) (loss / parameter²)", row=1, col=2)
    _style(fig, "Sharpness: Hessian top eigenvalue and trace", uirevision)
    if len(frame) == 0:
        _placeholder(fig, "Sharpness appears once it is computed<br>"
                          "(fa_explore.analysis.sharpness).")
    return fig


# ------------------------------------------------------------ robustness
def _eps_title(frame: pd.DataFrame) -> str:
    methods = set(frame["method"]) if "method" in frame else set()
    norms = set(frame["norm"]) if "norm" in frame else set()
    if methods == {"noise"}:
        return "σ (Gaussian input noise, standardised-input units)"
    words = [NORM_WORDS.get(n, n) for n in sorted(norms - {"gaussian"})]
    kind = f"{'/'.join(words)} radius" if words else "perturbation size"
    return f"ε ({kind}, standardised-input units)"


def robustness_figure(frame: pd.DataFrame | None, *,
                      uirevision: str = "fx-robustness") -> go.Figure:
    """Accuracy against perturbation size, one line per run (and per method when
    the frame mixes them: FGSM solid, PGD dashed, noise dotted), from
    :func:`~fa_explore.analysis.robustness_curve`'s frame (``run``, ``eps``,
    ``accuracy``, ``method``, ``norm``).

    Traces: one per (run, method), in the frame's order.
    """
    fig = go.Figure()
    frame = pd.DataFrame(columns=["run", "eps", "accuracy"]) if frame is None else frame
    missing = {"run", "eps", "accuracy"} - set(frame.columns)
    if missing:
        raise ValueError(f"frame needs the columns run, eps, accuracy; missing {sorted(missing)}")
    runs = list(dict.fromkeys(frame["run"]))
    colors = dict(zip(runs, run_colors(len(runs)), strict=True))
    methods = list(dict.fromkeys(frame["method"])) if "method" in frame else [None]
    dashes = {"fgsm": "solid", "pgd": "dash", "noise": "dot"}
    for run in runs:
        for method in methods:
            part = frame[frame["run"] == run]
            if method is not None:
                part = part[part["method"] == method]
            if len(part) == 0:
                continue
            part = part.sort_values("eps")
            name = str(run) if len(methods) == 1 else f"{run} · {method}"
            fig.add_trace(go.Scatter(
                x=part["eps"].to_numpy(dtype=float), y=part["accuracy"].to_numpy(dtype=float),
                mode="lines+markers", name=name,
                line=dict(color=colors[run], width=2, dash=dashes.get(method, "solid")),
                marker=dict(size=5),
                hovertemplate="ε %{x:.3g}<br>accuracy %{y:.1%}<extra>%{fullData.name}</extra>"))
    fig.update_xaxes(title_text=_eps_title(frame) if len(frame) else "ε")
    fig.update_yaxes(title_text="accuracy (%)", tickformat=".0%", range=[0, 1.02])
    method_words = {"fgsm": "FGSM", "pgd": "PGD", "noise": "Gaussian noise"}
    title = ", ".join(method_words.get(m, str(m)) for m in methods if m is not None)
    _style(fig, f"Robustness{': ' + title if title else ''}", uirevision)
    if len(frame) == 0:
        _placeholder(fig, "Robustness curves appear once they are computed<br>"
                          "(fa_explore.analysis.robustness_curve).")
    return fig


# --------------------------------------------------------- interpolation
def interpolation_figure(interpolation: Interpolation | Mapping[str, Interpolation] | None,
                         *, labels: Sequence[str] = ("A", "B"),
                         uirevision: str = "fx-interpolation") -> go.Figure:
    """Loss (left) and accuracy (right) along ``(1 − α)·θ_A + α·θ_B``, from
    :func:`~fa_explore.analysis.interpolate`; ``labels`` name the endpoints on the
    axis (e.g. ``("BP", "FA")``). Several interpolations (a mapping) give one
    line each.

    Traces: per interpolation, loss then accuracy.
    """
    items = _labelled(interpolation, Interpolation, "interpolation")
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Loss", "Accuracy"),
                        horizontal_spacing=0.12)
    for (label, item), color in zip(items, run_colors(len(items)), strict=True):
        for col, values, word in ((1, item.loss, "loss"), (2, item.accuracy, "accuracy")):
            fig.add_trace(go.Scatter(
                x=_numpy(item.alphas), y=_numpy(values), mode="lines+markers",
                name=label or word, legendgroup=label or word,
                showlegend=col == 1 or not label, line=dict(color=color, width=2),
                marker=dict(size=4)), row=1, col=col)
    a, b = labels
    for col in (1, 2):
        fig.add_vline(x=0, line=dict(color="#9ca3af", width=1, dash="dot"), row=1, col=col)
        fig.add_vline(x=1, line=dict(color="#9ca3af", width=1, dash="dot"), row=1, col=col)
    fig.update_xaxes(title_text=f"α (0 = {a}, 1 = {b})")
    fig.update_yaxes(title_text="cross-entropy (nats)", row=1, col=1)
    fig.update_yaxes(title_text="accuracy (%)", tickformat=".0%", row=1, col=2)
    _style(fig, f"Linear interpolation {a} → {b}", uirevision)
    if not items:
        _placeholder(fig, "The interpolation appears once it is computed<br>"
                          "(fa_explore.analysis.interpolate).")
    return fig


# ---------------------------------------------------------------- slices
def _direction_word(kind: str) -> str:
    return {"random": "filter-normalised random direction",
            "hessian": "Hessian eigenvector, parameter-norm units"}.get(kind, "direction")


def slice_figure(data: LossSurface | LossSlice1D | Mapping[str, LossSlice1D] | None, *,
                 uirevision: str = "fx-slice") -> go.Figure:
    """A loss slice around a model.

    A 2-D slice (:func:`~fa_explore.analysis.loss_slice_2d`, or any
    :class:`LossSurface`): the loss as a contour with a logarithmic colour scale
    (as the trajectory landscape) and the model at the origin. Traces: contour,
    model.

    1-D slices (:func:`~fa_explore.analysis.loss_slice_1d`, alone or a mapping
    label → slice): the loss along ``α``, one line per slice. Traces: one per slice.
    """
    fig = go.Figure()
    if isinstance(data, LossSurface):
        loss = np.asarray(data.loss, dtype=float)
        finite = loss[np.isfinite(loss)]
        floor = max(float(finite.min()), 1e-6) if finite.size else 1e-6
        top = float(finite.max()) if finite.size else floor
        clipped = np.clip(loss, floor, None)
        ticks = _nice_ticks(floor, max(top, floor * 1.0001))
        fig.add_trace(go.Contour(
            x=_numpy(data.xs), y=_numpy(data.ys), z=np.log10(clipped), customdata=loss,
            name="loss", colorscale="Viridis", ncontours=22,
            contours=dict(coloring="heatmap", showlines=True),
            line=dict(width=0.5, color="rgba(255,255,255,0.35)"),
            colorbar=dict(title=dict(text="loss", side="right"), thickness=12,
                          tickvals=np.log10(ticks), ticktext=[f"{t:g}" for t in ticks]),
            hovertemplate="loss %{customdata:.3f}<br>(%{x:.3g}, %{y:.3g})<extra></extra>"))
        fig.add_trace(go.Scatter(
            x=[0.0], y=[0.0], mode="markers", name="model",
            marker=dict(size=14, color="#e45756", symbol="star",
                        line=dict(color="white", width=1.5)),
            hovertemplate="the model<extra></extra>"))
        kind = getattr(data, "kind", "given")
        word = _direction_word(kind)
        fig.update_xaxes(title_text=f"α ({word} 1)", showgrid=False, zeroline=False)
        fig.update_yaxes(title_text=f"β ({word} 2)", showgrid=False, zeroline=False)
        _style(fig, "Loss slice around the model", uirevision)
        return fig

    items = _labelled(data, LossSlice1D, "data")
    for (label, item), color in zip(items, run_colors(len(items)), strict=True):
        fig.add_trace(go.Scatter(
            x=_numpy(item.alphas), y=_numpy(item.loss), mode="lines", name=label or "loss",
            line=dict(color=color, width=2),
            hovertemplate="α %{x:.3g}<br>loss %{y:.4g}<extra>%{fullData.name}</extra>"))
    kinds = {item.kind for _, item in items}
    word = _direction_word(kinds.pop()) if len(kinds) == 1 else "direction"
    fig.add_vline(x=0, line=dict(color="#9ca3af", width=1, dash="dot"))
    fig.update_xaxes(title_text=f"α ({word})")
    fig.update_yaxes(title_text="cross-entropy (nats)")
    _style(fig, "Loss along a direction", uirevision)
    if not items:
        _placeholder(fig, "The loss slice appears once it is computed<br>"
                          "(fa_explore.analysis.loss_slice_1d / loss_slice_2d).")
    return fig


# ------------------------------------------------------------ trainability
def _tick_text(value) -> str:
    if isinstance(value, tuple):  # hidden widths: depth × width reads best
        return f"{len(value)}×{value[0]}" if value and len(set(value)) == 1 else (
            "×".join(map(str, value)) or "none")
    return f"{value:g}" if isinstance(value, float) else str(value)


def trainability_figure(tmap, *, uirevision: str = "fx-trainability") -> go.Figure:
    """A trainability map (:func:`fa_explore.analysis.trainability_map`): a heatmap
    of the mean metric over ``x`` × ``y`` (the number of finished seeds in the
    hover), or for one setting a line of the mean with a min–max band over seeds.
    Categorical axes, so log-spaced gains and layer tuples read as the grid."""
    fig = go.Figure()
    if tmap is None or len(tmap.summary) == 0:
        _style(fig, "Trainability", uirevision)
        _placeholder(fig, "The map fills in as the sweep's runs finish.")
        return fig
    s = tmap.summary
    percent = tmap.metric.endswith("_acc")
    fmt = ".1%" if percent else ".3g"
    if tmap.y is None:
        xs = [_tick_text(v) for v in s[tmap.x]]
        fig.add_trace(go.Scatter(x=xs + xs[::-1], y=list(s["max"]) + list(s["min"])[::-1],
                                 fill="toself", fillcolor="rgba(31,78,121,0.15)",
                                 line=dict(width=0), hoverinfo="skip", name="min–max"))
        fig.add_trace(go.Scatter(x=xs, y=s["mean"], mode="lines+markers", name="mean",
                                 line=dict(color=LIVE_COLOR, width=2),
                                 customdata=s["n"],
                                 hovertemplate=f"%{{x}}: %{{y:{fmt}}} "
                                               "(%{customdata} finished)<extra></extra>"))
        fig.update_xaxes(title_text=tmap.x, type="category")
        fig.update_yaxes(title_text=tmap.metric, tickformat=".0%" if percent else None)
    else:
        pivot = tmap.pivot("mean")
        counts = tmap.pivot("n")
        fig.add_trace(go.Heatmap(
            z=pivot.to_numpy(dtype=float), x=[_tick_text(v) for v in pivot.columns],
            y=[_tick_text(v) for v in pivot.index], customdata=counts.to_numpy(),
            colorscale="Viridis", zmin=0 if percent else None, zmax=1 if percent else None,
            colorbar=dict(title=tmap.metric, tickformat=".0%" if percent else None),
            hovertemplate=f"{tmap.x} %{{x}}, {tmap.y} %{{y}}: %{{z:{fmt}}} "
                          "(%{customdata} finished)<extra></extra>"))
        fig.update_xaxes(title_text=tmap.x, type="category")
        fig.update_yaxes(title_text=tmap.y, type="category")
    _style(fig, f"Trainability: final {tmap.metric}", uirevision)
    return fig


# ------------------------------------------------------------------ sweeps
FAILED_COLOR = "#dc2626"


def sweep_figure(summary, *, uirevision: str = "fx-sweep") -> go.Figure:
    """A dashboard sweep's results as they land, from
    :func:`fa_explore.app.sweep_state.summarize`: for one varied setting the mean
    of the metric over seeds as a line with a min–max band (a log x axis for a
    log-spaced setting, categories for choices); for two a heatmap of the mean.
    Points not done yet are gaps; failed ones are red crosses (a curve) or cells
    marked "failed" (a heatmap), their reason in the hover.

    Traces: a curve has the band, the mean, then the failed markers; a heatmap
    has the heatmap, then the failed markers.
    """
    fig = go.Figure()
    if summary is None:
        _style(fig, "Sweep", uirevision)
        _placeholder(fig, "Choose one or two settings to vary and press Run sweep:<br>"
                          "the plot fills in as the runs finish.")
        return fig
    cells = summary.cells
    percent = summary.metric.endswith("_acc")
    fmt = ".1%" if percent else ".3g"
    seeds = f"{summary.seeds} seeds" if summary.seeds > 1 else "1 seed"
    xs = [_tick_text(v) for v in summary.x_values]
    if summary.y is None:
        ordered = cells.sort_values("x_index")
        if summary.numeric_x:
            x = np.array([float(summary.x_values[i]) for i in ordered["x_index"]])
        else:
            x = np.array([xs[i] for i in ordered["x_index"]], dtype=object)
        has = ordered["n"].to_numpy() > 0
        low, high = ordered["min"].to_numpy(dtype=float), ordered["max"].to_numpy(dtype=float)
        fig.add_trace(go.Scatter(
            x=list(x[has]) + list(x[has][::-1]), y=list(high[has]) + list(low[has][::-1]),
            fill="toself", fillcolor="rgba(31,78,121,0.15)", line=dict(width=0),
            hoverinfo="skip", name="min–max over seeds", showlegend=summary.seeds > 1))
        fig.add_trace(go.Scatter(
            x=list(x), y=[m if n else None for m, n in zip(ordered["mean"], ordered["n"],
                                                             strict=True)],
            mode="lines+markers", name=f"mean over {seeds}", connectgaps=False,
            line=dict(color=LIVE_COLOR, width=2), marker=dict(size=7),
            customdata=np.stack([ordered["n"], ordered["pending"]], axis=1),
            hovertemplate=f"{summary.x} %{{x}}: %{{y:{fmt}}}<br>%{{customdata[0]}} done, "
                          "%{customdata[1]} to come<extra></extra>"))
        bad = ordered[ordered["failed"] > 0]
        finite = ordered["mean"][ordered["n"] > 0]
        level = float(finite.min()) if len(finite) else 0.0  # crosses at the lowest mean
        fig.add_trace(go.Scatter(
            x=[x[list(ordered["x_index"]).index(i)] for i in bad["x_index"]],
            y=[level] * len(bad), mode="markers", name="failed",
            marker=dict(symbol="x", size=11, color=FAILED_COLOR),
            customdata=np.array([[m] for m in bad["message"]], dtype=object),
            hovertemplate="failed: %{customdata[0]}<extra></extra>", showlegend=len(bad) > 0))
        fig.update_xaxes(title_text=summary.x, type=("log" if summary.log_x else "linear")
                         if summary.numeric_x else "category")
        fig.update_yaxes(title_text=f"final {summary.metric}",
                         tickformat=".0%" if percent else None,
                         range=[0, 1.02] if percent else None)
        title = f"Sweep: final {summary.metric} over {summary.x} ({seeds})"
    else:
        ys = [_tick_text(v) for v in summary.y_values]
        z = summary.grid("mean")
        n = summary.grid("n")
        failed = summary.grid("failed")
        pending = summary.grid("pending")
        text = np.where(failed > 0, "failed", "")
        fig.add_trace(go.Heatmap(
            z=z, x=xs, y=ys, colorscale="Viridis", zmin=0 if percent else None,
            zmax=1 if percent else None, text=text, texttemplate="%{text}",
            customdata=np.stack([n, pending], axis=-1),
            colorbar=dict(title=dict(text=summary.metric, side="right"), thickness=12,
                          tickformat=".0%" if percent else None),
            hovertemplate=f"{summary.x} %{{x}}, {summary.y} %{{y}}: %{{z:{fmt}}}<br>"
                          "%{customdata[0]} done, %{customdata[1]} to come<extra></extra>"))
        bad = cells[cells["failed"] > 0]
        fig.add_trace(go.Scatter(
            x=[xs[i] for i in bad["x_index"]], y=[ys[j] for j in bad["y_index"]],
            mode="markers", name="failed", marker=dict(symbol="x", size=12,
                                                       color=FAILED_COLOR),
            customdata=np.array([[m] for m in bad["message"]], dtype=object),
            hovertemplate="failed: %{customdata[0]}<extra></extra>", showlegend=len(bad) > 0))
        fig.update_xaxes(title_text=summary.x, type="category")
        fig.update_yaxes(title_text=summary.y, type="category")
        title = f"Sweep: final {summary.metric} (mean over {seeds})"
    _style(fig, title, uirevision)
    return fig


def analysis_table_html(results) -> str:
    """One small table per analysed run (its caption names the run): the Hessian's
    top eigenvalues and trace, and the accuracy at each FGSM size; a failed or
    cancelled analysis says so instead. ``results``: a sequence of
    :class:`fa_explore.app.analyse_state.AnalysisResult`."""
    import html

    parts = []
    for result in results:
        caption = html.escape(f"{result.label} · {result.status}"
                              + (f": {result.message}" if result.message else ""))
        body = []
        if result.eigenvalues:
            eig = ", ".join(f"{v:.4g}" for v in result.eigenvalues)
            body.append(f"<tr><th>Hessian top eigenvalues</th><td>{html.escape(eig)}</td></tr>")
        if result.trace is not None and np.isfinite(result.trace):
            body.append(f"<tr><th>Hessian trace</th><td>{result.trace:.4g} ± "
                        f"{result.trace_stderr:.2g}</td></tr>")
        frame = result.robustness
        if frame is not None and len(frame):
            cells = " ".join(f"ε={e:g}: {a:.1%}" for e, a in zip(frame["eps"],
                                                                 frame["accuracy"],
                                                                 strict=True))
            body.append(f"<tr><th>FGSM accuracy</th><td>{html.escape(cells)}</td></tr>")
        parts.append(f'<table class="fx-analysis"><caption>{caption}</caption>'
                     f"{''.join(body)}</table>")
    return "".join(parts)
