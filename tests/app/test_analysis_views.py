"""fa_explore.app.analysis_views: each builder draws what the analysis functions
return on a tiny net, and its traces hold those numbers."""

import json

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
import torch

from fa_explore import MLP
from fa_explore.analysis import (
    density_on_grid,
    hessian_density,
    interpolate,
    loss_slice_1d,
    loss_slice_2d,
    robustness_curve,
    sharpness,
    sharpness_over_training,
)
from fa_explore.app import analysis_views as av
from fa_explore.app.views import LIVE_COLOR, PINNED_COLORS


def tiny(seed):
    model = MLP((4,), (6,), 3, generator=torch.Generator().manual_seed(seed)).double()
    gen = torch.Generator().manual_seed(11)
    x = torch.randn(40, 4, dtype=torch.float64, generator=gen)
    y = torch.randint(0, 3, (40,), generator=gen)
    return model, x, y


@pytest.fixture(scope="module")
def nets():
    model_a, x, y = tiny(1)
    model_b, _, _ = tiny(2)
    return model_a, model_b, x, y


def check(fig):
    assert isinstance(fig, go.Figure)
    data = json.loads(fig.to_json())
    assert len(data["data"]) == len(fig.data)
    assert fig.layout.uirevision
    return data


def test_density_figure_draws_the_smoothed_slq_density(nets):
    model_a, model_b, x, y = nets
    density = hessian_density(model_a, x, y, n_steps=12)
    fig = av.hessian_density_figure(density)
    check(fig)
    assert [t.name for t in fig.data] == ["density", "nodes"]
    grid, values = density_on_grid(density)
    np.testing.assert_allclose(fig.data[0].x, grid)
    np.testing.assert_allclose(fig.data[0].customdata, values)
    np.testing.assert_allclose(fig.data[0].y, np.maximum(values, av.DENSITY_FLOOR * values.max()))
    np.testing.assert_allclose(fig.data[1].x, density.nodes)
    np.testing.assert_allclose(fig.data[1].y, density.weights)
    assert "λ" in fig.layout.xaxis.title.text and fig.layout.yaxis.type == "log"
    both = av.hessian_density_figure({"bp": density,
                                      "fa": hessian_density(model_b, x, y, n_steps=12)},
                                     log=False)
    assert [t.name for t in both.data] == ["bp", "bp nodes", "fa", "fa nodes"]
    assert both.data[0].line.color == LIVE_COLOR and both.data[2].line.color == PINNED_COLORS[0]
    assert len(av.hessian_density_figure(None).data) == 0


def test_top_eigenvalues_figure_over_training_and_over_runs(nets):
    model_a, model_b, x, y = nets
    points = torch.stack([torch.cat([p.detach().flatten() for p in m.parameters()])
                          for m in (model_a, model_b)])
    frame = sharpness_over_training(model_a, points, x, y, steps=[0, 50], trace_samples=10)
    fig = av.top_eigenvalues_figure(frame)
    check(fig)
    assert len(fig.data) == 2
    np.testing.assert_allclose(fig.data[0].x, [0, 50])
    np.testing.assert_allclose(fig.data[0].y, frame["top_eigenvalue"])
    np.testing.assert_allclose(fig.data[1].y, frame["trace"])
    np.testing.assert_allclose(fig.data[1].error_y.array, frame["trace_stderr"])
    assert fig.layout.xaxis.title.text == "training step"
    runs = {"bp": sharpness(model_a, x, y, trace_samples=10),
            "fa": sharpness(model_b, x, y, trace_samples=10)}
    fig = av.top_eigenvalues_figure(runs)
    check(fig)
    assert list(fig.data[0].x) == ["bp", "fa"]
    assert list(fig.data[0].marker.color) == [LIVE_COLOR, PINNED_COLORS[0]]
    np.testing.assert_allclose(fig.data[0].y, [runs["bp"].top_eigenvalue,
                                               runs["fa"].top_eigenvalue])
    by_run = av.top_eigenvalues_figure({"bp": frame, "fa": frame})
    assert [t.name for t in by_run.data] == ["bp", "bp", "fa", "fa"]
    check(av.top_eigenvalues_figure(None))


def test_robustness_figure_draws_one_line_per_run(nets):
    model_a, model_b, x, y = nets
    frame = robustness_curve({"bp": model_a, "fa": model_b}, x, y, [0.0, 0.1, 0.3])
    fig = av.robustness_figure(frame)
    check(fig)
    assert [t.name for t in fig.data] == ["bp", "fa"]
    np.testing.assert_allclose(fig.data[1].x, [0.0, 0.1, 0.3])
    np.testing.assert_allclose(fig.data[1].y, frame[frame["run"] == "fa"]["accuracy"])
    assert fig.layout.xaxis.title.text.startswith("ε (L∞ radius")
    noise = robustness_curve([model_a], x, y, [0.0, 1.0], method="noise")
    assert av.robustness_figure(noise).layout.xaxis.title.text.startswith("σ")
    mixed = pd.concat([frame, robustness_curve({"bp": model_a}, x, y, [0.1], method="pgd",
                                               steps=2)])
    assert [t.name for t in av.robustness_figure(mixed).data] == ["bp · fgsm", "bp · pgd",
                                                                  "fa · fgsm"]
    check(av.robustness_figure(None))
    with pytest.raises(ValueError, match="columns"):
        av.robustness_figure(pd.DataFrame({"eps": [0.1]}))


def test_interpolation_figure_holds_loss_and_accuracy(nets):
    model_a, model_b, x, y = nets
    path = interpolate(model_a, model_b, x, y, alphas=np.linspace(0, 1, 5))
    fig = av.interpolation_figure(path, labels=("BP", "FA"))
    check(fig)
    assert len(fig.data) == 2
    np.testing.assert_allclose(fig.data[0].y, path.loss)
    np.testing.assert_allclose(fig.data[1].y, path.accuracy)
    np.testing.assert_allclose(fig.data[0].x, path.alphas)
    assert fig.layout.xaxis.title.text == "α (0 = BP, 1 = FA)"
    assert len(av.interpolation_figure({"seed 0": path, "seed 1": path}).data) == 4
    check(av.interpolation_figure(None))


def test_slice_figure_draws_2d_and_1d_slices(nets):
    model_a, model_b, x, y = nets
    plane = loss_slice_2d(model_a, x, y, steps=5)
    fig = av.slice_figure(plane)
    check(fig)
    assert [t.name for t in fig.data] == ["loss", "model"]
    np.testing.assert_allclose(fig.data[0].customdata, plane.loss)
    np.testing.assert_allclose(fig.data[0].z, np.log10(plane.loss))
    np.testing.assert_allclose(fig.data[0].x, plane.xs)
    assert "filter-normalised" in fig.layout.xaxis.title.text
    line = loss_slice_1d(model_a, x, y, steps=7)
    fig = av.slice_figure({"bp": line, "fa": loss_slice_1d(model_b, x, y, steps=7)})
    check(fig)
    assert [t.name for t in fig.data] == ["bp", "fa"]
    np.testing.assert_allclose(fig.data[0].y, line.loss)
    np.testing.assert_allclose(fig.data[0].x, line.alphas)
    assert fig.layout.xaxis.title.text.startswith("α")
    check(av.slice_figure(None))
    with pytest.raises(ValueError):
        av.slice_figure({"bp": plane})
