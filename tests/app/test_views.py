"""fa_explore.app.views: pure figure builders with stable traces for in-place updates."""

import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
import torch

from fa_explore.analysis import DecisionGrid, LossSurface, trajectory_pca
from fa_explore.app import views
from fa_explore.app.views import PinnedRun

N_LAYERS = 3


def history(n_rows=5, weight_angle_layers=(2, 3), scale=1.0):
    steps = np.arange(n_rows) * 10
    frame = {"step": steps, "epoch": steps / 20,
             "train_loss": scale * np.linspace(2.3, 0.3, n_rows),
             "test_loss": scale * np.linspace(2.3, 0.4, n_rows),
             "train_acc": np.linspace(0.1, 0.95, n_rows),
             "test_acc": np.linspace(0.1, 0.9, n_rows)}
    for layer in range(1, N_LAYERS + 1):
        frame[f"weight_angle/{layer}"] = (np.linspace(90, 30 + layer, n_rows)
                                          if layer in weight_angle_layers else np.nan)
        frame[f"grad_angle/{layer}"] = np.linspace(80, 20 + layer, n_rows)
    return pd.DataFrame(frame)


def check_serialises(fig):
    assert isinstance(fig, go.Figure)
    data = json.loads(fig.to_json())
    assert len(data["data"]) == len(fig.data)
    assert fig.layout.uirevision
    assert 300 <= fig.layout.height <= 360
    return data


def annotation_texts(fig):
    return [a.text for a in fig.layout.annotations]


def legend_names(fig):
    return [t.name for t in fig.data if t.showlegend is not False]


# -------------------------------------------------------------------- curves
def test_curves_plot_the_history_columns_in_a_fixed_order():
    frame = history()
    fig = views.curves_figure(frame)
    check_serialises(fig)
    assert [t.meta for t in fig.data] == list(views.CURVE_COLUMNS)
    assert [t.name for t in fig.data] == ["train", "test", "train", "test"]
    for trace in fig.data:
        np.testing.assert_array_equal(trace.x, frame["step"])
        np.testing.assert_array_equal(trace.y, frame[trace.meta])
    # Losses on the left panel, accuracies on the right.
    assert [t.xaxis for t in fig.data] == ["x", "x", "x2", "x2"]
    assert [t.line.dash for t in fig.data] == ["dot", "solid", "dot", "solid"]
    assert legend_names(fig) == ["train", "test"]


@pytest.mark.parametrize("frame", [None, pd.DataFrame(), pd.DataFrame({"step": [0, 1]})])
def test_curves_without_data_keep_their_four_traces(frame):
    fig = views.curves_figure(frame)
    check_serialises(fig)
    assert [t.meta for t in fig.data] == list(views.CURVE_COLUMNS)
    assert all(len(t.x) == 0 and len(t.y) == 0 for t in fig.data)


def test_curves_drop_nan_points():
    frame = history()
    frame.loc[[1, 3], "test_loss"] = np.nan
    fig = views.curves_figure(frame)
    test_loss = fig.data[1]
    np.testing.assert_array_equal(test_loss.x, [0, 20, 40])
    assert np.isfinite(test_loss.y).all()


def test_pinned_runs_follow_as_faint_traces_labelled_by_what_differs():
    pinned = [PinnedRun("lr=0.01", history(scale=0.5)), PinnedRun("rule=bp", history(scale=0.8)),
              PinnedRun("rule=kp", history()), PinnedRun("seed=3", history())]
    fig = views.curves_figure(history(), pinned)
    check_serialises(fig)
    assert len(fig.data) == 4 * (1 + len(pinned))
    for k, entry in enumerate(pinned, start=1):
        traces = fig.data[4 * k:4 * k + 4]
        assert [t.meta for t in traces] == list(views.CURVE_COLUMNS)
        assert {t.name for t in traces} == {entry.label}
        assert all(t.opacity < 1 for t in traces)
        np.testing.assert_allclose(traces[0].y, entry.history["train_loss"])
    # One legend entry per pinned run, after the live run's two.
    assert legend_names(fig) == ["train", "test", "lr=0.01", "rule=bp", "rule=kp", "seed=3"]
    # Pinned runs are told apart by colour.
    assert len({fig.data[4 * k].line.color for k in range(1, 5)}) == 4


def test_pinned_entries_must_be_pinned_runs():
    with pytest.raises(ValueError, match="PinnedRun"):
        views.curves_figure(None, [history()])


# ----------------------------------------------------------------- alignment
def alignment_columns(n_layers):
    return ([f"weight_angle/{l}" for l in range(1, n_layers + 1)]
            + [f"grad_angle/{l}" for l in range(1, n_layers + 1)])


def test_alignment_has_one_trace_per_layer_and_angle():
    frame = history()
    fig = views.alignment_figure(frame, N_LAYERS)
    check_serialises(fig)
    assert [t.meta for t in fig.data] == alignment_columns(N_LAYERS)
    assert [t.name for t in fig.data] == [f"layer {l}" for l in (1, 2, 3)] * 2
    # Layer 1 has no feedback matrix: its weight angle column is NaN, its trace empty.
    assert len(fig.data[0].x) == 0
    np.testing.assert_array_equal(fig.data[1].y, frame["weight_angle/2"])
    np.testing.assert_array_equal(fig.data[5].y, frame["grad_angle/3"])
    # 0°-180° with room to spare: the 180° tick clears the subplot title.
    assert list(fig.layout.yaxis.range) == list(fig.layout.yaxis2.range) == list(views.ANGLE_RANGE)
    assert views.ANGLE_RANGE[0] < 0 and views.ANGLE_RANGE[1] >= 185
    assert not any("No weight angle" in t for t in annotation_texts(fig))
    # Every layer in the legend, even layer 1 whose weight angle is missing.
    assert legend_names(fig) == ["layer 1", "layer 2", "layer 3"]


def test_alignment_keeps_its_traces_when_every_weight_angle_is_nan():
    direct = views.alignment_figure(history(weight_angle_layers=()), N_LAYERS)
    layered = views.alignment_figure(history(), N_LAYERS)
    check_serialises(direct)
    assert len(direct.data) == len(layered.data) == 2 * N_LAYERS
    assert all(len(t.x) == 0 for t in direct.data[:N_LAYERS])
    assert any("No weight angle" in t for t in annotation_texts(direct))


@pytest.mark.parametrize("frame", [None, pd.DataFrame(), history()[["step", "train_loss"]]])
def test_alignment_without_angle_columns_keeps_its_traces(frame):
    fig = views.alignment_figure(frame, 2)
    check_serialises(fig)
    assert [t.meta for t in fig.data] == alignment_columns(2)
    assert all(len(t.x) == 0 for t in fig.data)


def test_alignment_with_pinned_runs():
    pinned = [PinnedRun("rule=bp", history()),
              PinnedRun("rule=dfa", history(weight_angle_layers=()))]
    fig = views.alignment_figure(history(), N_LAYERS, pinned)
    check_serialises(fig)
    per_run = 2 * N_LAYERS
    assert len(fig.data) == per_run * 3
    for k, entry in enumerate(pinned, start=1):
        traces = fig.data[k * per_run:(k + 1) * per_run]
        assert [t.meta for t in traces] == alignment_columns(N_LAYERS)
        assert {t.name for t in traces} == {entry.label}
        assert all(t.opacity < 1 for t in traces)
    assert legend_names(fig) == ["layer 1", "layer 2", "layer 3", "rule=bp", "rule=dfa"]


def test_alignment_rejects_a_bad_layer_count():
    with pytest.raises(ValueError, match="n_layers"):
        views.alignment_figure(None, 0)


# ----------------------------------------------------------------- landscape
def synthetic_landscape():
    rng = np.random.default_rng(0)
    points = rng.standard_normal((8, 20)).cumsum(0)
    pca = trajectory_pca(points, steps=np.arange(8) * 5)
    xs, ys = np.linspace(-3, 3, 6), np.linspace(-2, 2, 5)
    loss = 0.1 + (xs[None, :] ** 2 + ys[:, None] ** 2)
    return pca, LossSurface(xs=xs, ys=ys, loss=loss)


def test_landscape_draws_the_contour_and_the_trajectory():
    pca, surface = synthetic_landscape()
    fig = views.landscape_figure(surface, pca)
    check_serialises(fig)
    assert [t.type for t in fig.data] == ["contour", "scatter", "scatter", "scatter"]
    assert [t.name for t in fig.data] == ["loss", "trajectory", "start", "end"]
    contour, path, start, end = fig.data
    # Colours follow log10(loss); hover shows the loss itself.
    np.testing.assert_allclose(contour.z, np.log10(surface.loss))
    np.testing.assert_allclose(contour.customdata, surface.loss)
    np.testing.assert_array_equal(contour.x, surface.xs)
    np.testing.assert_array_equal(contour.y, surface.ys)
    np.testing.assert_array_equal(path.x, pca.coords[:, 0])
    np.testing.assert_array_equal(path.customdata, pca.steps)
    assert (start.x[0], start.y[0]) == tuple(pca.coords[0])
    assert (end.x[0], end.y[0]) == tuple(pca.coords[-1])
    assert f"{pca.explained_variance_ratio[0]:.0%}" in fig.layout.xaxis.title.text


def test_landscape_placeholders_keep_four_traces():
    pca, surface = synthetic_landscape()
    empty = views.landscape_figure(None, None)
    check_serialises(empty)
    assert len(empty.data) == 4 and all(len(t.x) == 0 for t in empty.data)
    assert empty.layout.annotations and empty.layout.xaxis.visible is False
    # The trajectory shows while its loss surface is still being computed.
    waiting = views.landscape_figure(None, pca)
    assert len(waiting.data) == 4 and len(waiting.data[0].x) == 0
    np.testing.assert_array_equal(waiting.data[1].y, pca.coords[:, 1])
    assert waiting.layout.xaxis.visible is True


def test_landscape_survives_non_finite_losses():
    pca, surface = synthetic_landscape()
    loss = surface.loss.copy()
    loss[0, 0], loss[1, 1], loss[2, 2] = np.inf, np.nan, 0.0
    fig = views.landscape_figure(LossSurface(surface.xs, surface.ys, loss), pca)
    check_serialises(fig)
    z = np.asarray(fig.data[0].z, dtype=float)
    assert np.isnan(z[1, 1]) and np.isfinite(z[2, 2])


# ------------------------------------------------------------------ boundary
def three_class_grid():
    xs, ys = np.linspace(-2, 2, 5), np.linspace(-1, 1, 4)
    probs = np.zeros((4, 5, 3))
    winner = (np.arange(5)[None, :] + np.arange(4)[:, None]) % 3
    probs[np.arange(4)[:, None], np.arange(5)[None, :], winner] = 0.8
    probs += (1 - probs.sum(-1, keepdims=True)) / 3
    return DecisionGrid(xs=xs, ys=ys, probs=probs), winner


def test_boundary_colours_the_predicted_class_and_draws_each_class():
    grid, winner = three_class_grid()
    x2d = torch.tensor([[0.0, 0.0], [1.0, 0.5], [-1.0, -0.5], [0.5, 0.1], [1.5, -1.0]])
    y = torch.tensor([0, 1, 2, 1, 1])
    fig = views.boundary_figure(grid, x2d, y, ["a", "b", "c"])
    check_serialises(fig)
    assert [t.type for t in fig.data] == ["heatmap", "scatter", "scatter", "scatter"]
    assert [t.name for t in fig.data[1:]] == ["a", "b", "c"]
    assert [len(t.x) for t in fig.data[1:]] == [1, 3, 1]
    # Class k owns the colour band [k/3, (k+1)/3].
    z = np.asarray(fig.data[0].z)
    assert ((z >= winner / 3) & (z <= (winner + 1) / 3)).all()
    # Equal scales: a circle in the data looks round.
    assert fig.layout.yaxis.scaleanchor == "x"


def test_boundary_without_a_dataset_is_a_placeholder():
    fig = views.boundary_figure(None, None, None, None)
    check_serialises(fig)
    assert len(fig.data) == 1 and len(fig.data[0].x) == 0
    assert any("2-D" in t for t in annotation_texts(fig))


def test_boundary_subsamples_large_datasets():
    rng = np.random.default_rng(0)
    x2d, y = rng.standard_normal((3000, 2)), rng.integers(0, 2, 3000)
    fig = views.boundary_figure(None, x2d, y, ["left", "right"], max_points=500)
    assert sum(len(t.x) for t in fig.data[1:]) == 500
    drawn = np.column_stack([fig.data[1].x, fig.data[1].y])
    original = x2d[y == 0]
    assert all(np.isclose(original, p).all(1).any() for p in drawn[:20])


def test_boundary_rejects_mismatched_labels():
    with pytest.raises(ValueError, match="y"):
        views.boundary_figure(None, np.zeros((4, 2)), np.zeros(3), None)


# ------------------------------------------------------------------- weights
def test_weights_scatter_pairs_each_weight_with_its_feedback():
    weight = torch.randn(100, 120, generator=torch.Generator().manual_seed(0))
    fig = views.weights_figure(weight, 2 * weight, layer=2)
    check_serialises(fig)
    assert [t.name for t in fig.data] == ["weights", "y = x"]
    scatter, line = fig.data
    assert len(scatter.x) == 2000  # a subsample of the 12,000 weights: cheap to redraw
    np.testing.assert_allclose(scatter.y, 2 * np.asarray(scatter.x), rtol=1e-6)
    assert np.isin(scatter.x, weight.flatten().numpy().astype(float)).all()
    np.testing.assert_array_equal(line.x, line.y)
    assert "angle 0.0°" in fig.layout.title.text and "Layer 2" in fig.layout.title.text
    # Seeded: the same weights give the same points.
    again = views.weights_figure(weight, 2 * weight, layer=2)
    np.testing.assert_array_equal(again.data[0].x, scatter.x)


def test_weights_title_gives_the_angle():
    weight = np.array([[1.0, 0.0], [0.0, 0.0]])
    feedback = np.array([[1.0, 1.0], [0.0, 0.0]])
    fig = views.weights_figure(weight, feedback, layer=3)
    assert "angle 45.0°" in fig.layout.title.text


@pytest.mark.parametrize("layer, weight, expected", [
    (1, np.ones((3, 2)), "no error is sent back"),
    (3, np.ones((3, 2)), "no feedback matrix"),
    (2, None, "Train a model"),
    (None, None, "Train a model"),  # no layer chosen yet
])
def test_weights_without_feedback_explain_why(layer, weight, expected):
    fig = views.weights_figure(weight, None, layer)
    check_serialises(fig)
    assert len(fig.data) == 2 and all(len(t.x) == 0 for t in fig.data)
    assert any(expected in t for t in annotation_texts(fig))


def test_weights_reject_bad_input():
    with pytest.raises(ValueError, match="shape"):
        views.weights_figure(np.ones((2, 3)), np.ones((3, 2)), 2)
    for layer in (0, 1.5, True):
        with pytest.raises(ValueError, match="layer"):
            views.weights_figure(np.ones((2, 3)), np.ones((2, 3)), layer)


# --------------------------------------------------------------------- all
def test_every_view_shares_one_look():
    pca, surface = synthetic_landscape()
    grid, _ = three_class_grid()
    figures = [views.curves_figure(history()), views.alignment_figure(history(), N_LAYERS),
               views.landscape_figure(surface, pca), views.boundary_figure(grid, None, None, None),
               views.weights_figure(np.eye(3), np.eye(3), 2)]
    assert len({f.layout.uirevision for f in figures}) == len(figures)
    for fig in figures:
        check_serialises(fig)
        assert fig.layout.title.text
        assert fig.layout.template.layout.paper_bgcolor == "white"


def test_views_need_no_widgets():
    code = ("import sys, fa_explore.app.views; "
            "print(any(m.split('.')[0] in ('ipywidgets', 'anywidget') for m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "False"


def test_the_right_step_axis_follows_the_left_without_matching_itself():
    # plotly.js warns "ignored xaxis.matches" (once per redraw) for an axis matching itself.
    for fig in (views.curves_figure(history()), views.alignment_figure(history(), N_LAYERS)):
        assert fig.layout.xaxis.matches is None and fig.layout.xaxis2.matches == "x"


def test_pinned_runs_get_distinct_colour_blind_safe_colours_and_the_live_run_is_on_top():
    pinned = [PinnedRun(f"seed={k}", history()) for k in range(6)]
    curves = views.curves_figure(history(), pinned)
    colors = [curves.data[4 * k].line.color for k in range(1, 7)]
    assert len(set(colors)) == 6 and set(colors) <= set(views.PINNED_COLORS)
    assert curves.data[0].line.color == views.LIVE_COLOR not in colors
    assert all(t.zorder == 2 for t in curves.data[:4]) and all(t.zorder == 1
                                                              for t in curves.data[4:])
    # A pin keeps its own colour when others are left out.
    alone = views.curves_figure(history(), [PinnedRun("x", history(), color=colors[3])])
    assert alone.data[4].line.color == colors[3]
    # Alignment with pins: colour is the run, line style the layer (the live run's
    # legend entries show the styles).
    align = views.alignment_figure(history(), N_LAYERS, pinned[:2])
    live = align.data[:N_LAYERS]
    assert [t.line.dash for t in live] == list(views.LAYER_DASHES[:N_LAYERS])
    assert {t.line.color for t in align.data[:2 * N_LAYERS]} == {views.LIVE_COLOR}
    # The live run's legend entries are the key: "layer k" in black, in its style.
    assert [t.name for t in align.data[N_LAYERS:2 * N_LAYERS]] == [
        f"layer {k}" for k in range(1, N_LAYERS + 1)]
    assert all(t.showlegend for t in align.data[N_LAYERS:2 * N_LAYERS])
    alone = views.alignment_figure(history(), N_LAYERS)
    assert len({t.line.color for t in alone.data[:N_LAYERS]}) == N_LAYERS


def test_the_colour_bar_of_the_landscape_has_few_readable_ticks():
    assert views._nice_ticks(0.05, 50) == [0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50]
    thinned = views._nice_ticks(0.05, 50, max_ticks=5)
    assert thinned == [0.1, 1, 10] and len(views._nice_ticks(1e-4, 1e6, max_ticks=5)) <= 5
    assert len(views._nice_ticks(1.2, 1.9, max_ticks=5)) >= 2
    pca, surface = synthetic_landscape()
    fig = views.landscape_figure(surface, pca)
    assert 2 <= len(fig.data[0].colorbar.tickvals) <= 5


def test_a_panel_figure_moves_its_title_to_the_caption():
    fig, title = views.panel_figure(views.alignment_figure(history(), N_LAYERS), 280)
    assert title == "Alignment per layer" and not fig.layout.title.text
    assert fig.layout.height == 280 and fig.layout.margin.t == 26  # room for subplot titles
    fig, title = views.panel_figure(views.weights_figure(np.eye(3), np.eye(3), 2), 280)
    assert title.startswith("Layer 2") and fig.layout.margin.t == 10


def test_direct_feedback_scatter_names_d_and_the_jacobian():
    fig = views.weights_figure(np.eye(3), 2 * np.eye(3), 2, labels=views.DIRECT_LABELS)
    assert "Jacobian" in fig.layout.xaxis.title.text and "D" in fig.layout.yaxis.title.text
    assert "direct feedback D" in fig.layout.title.text and "angle 0.0°" in fig.layout.title.text


def test_empty_plots_say_what_will_appear():
    assert any("Press Train" in t for t in annotation_texts(views.curves_figure(None)))
    assert any("90°" in t for t in annotation_texts(views.alignment_figure(None, 3)))
    assert "no trajectory" in annotation_texts(
        views.landscape_figure(None, None, empty_text="no trajectory"))[0]


def test_comparison_table_lists_each_run():
    rows = [views.TableRow("live", views.LIVE_COLOR, "finished", 0.953, [math.nan, 40.2, 12.0],
                           [30.0, 20.0, 0.0], 300, 4.2, live=True),
            views.TableRow("rule=bp", views.PINNED_COLORS[0], "finished", 0.97,
                           [math.nan, 0.0, 0.0], [0.0, 0.0, 0.0], 300, 3.0)]
    table = views.comparison_html(rows)
    assert table.count("<tr") == 3 and "95.3%" in table and "– / 40° / 12°" in table
    assert "layers 1 / 2 / 3" in table and "rule=bp" in table and "4.2 s" in table
    assert views.comparison_html([]) == ""
