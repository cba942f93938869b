"""The dashboard's Sweep tab without a browser: the axes from the schema, the
points, the session's worker (a real 3-point sweep, stopped after the first),
the summary a heatmap and a band are drawn from, and the tab in a Dashboard."""

import math
import threading

import numpy as np
import pytest

pytest.importorskip("ipywidgets")
pytest.importorskip("anywidget")

from fa_explore import RULES, RunConfig  # noqa: E402
from fa_explore.app.analysis_views import sweep_figure  # noqa: E402
from fa_explore.app.sweep_state import (  # noqa: E402
    MAX_SWEEP_RUNS,
    SweepSession,
    SweepSpec,
    axis_values,
    summarize,
    sweep_axes,
)
from fa_explore.settings import SETTINGS  # noqa: E402

from waiting import wait_until

# A few steps each: the sweep's machinery is under test, not learning.
TINY = RunConfig(rule="fa", hidden=(4,), train_size=60, eval_size=32, batch_size=20)


def test_axes_are_the_schemas_bounded_numbers_and_choices():
    axes = sweep_axes()
    assert "seed" not in axes  # the band's field
    for name, setting in SETTINGS.items():
        numeric = setting.kind in ("int", "float") and None not in (setting.minimum,
                                                                    setting.maximum)
        choices = setting.kind == "bool" or (setting.kind == "str"
                                             and setting.allowed_choices() is not None)
        assert (name in axes) == ((numeric or choices) and name != "seed"), name
    assert axes["rule"].choices == tuple(RULES)
    assert axes["lr"].numeric and axes["lr"].log and not axes["init_angle"].log


def test_axis_values_ranges_choices_and_errors():
    assert axis_values("init_angle", 0, 90, 4) == (0.0, 30.0, 60.0, 90.0)
    assert axis_values("lr", 1e-4, 1e-2, 3) == pytest.approx((1e-4, 1e-3, 1e-2))
    assert axis_values("batch_size", 8, 10, 5) == (8, 9, 10)  # rounded, repeats dropped
    assert axis_values("rule", choices=["bp", "fa", "bp"]) == ("bp", "fa")
    with pytest.raises(ValueError, match=r"sweep\.init_angle must be .*\[0, 180\]"):
        axis_values("init_angle", 0, 400, 3)
    with pytest.raises(ValueError, match="sweep.rule must be one of"):
        axis_values("rule", choices=["no_such_rule"])
    with pytest.raises(ValueError, match="log scale"):
        axis_values("init_angle", 0, 90, 3, log=True)
    with pytest.raises(ValueError, match="must be one of .*rule"):
        axis_values("seed", 0, 3, 3)
    with pytest.raises(ValueError, match=f"points of lr must be an integer in \\[1, "
                                         f"{MAX_SWEEP_RUNS}\\]"):
        axis_values("lr", 1e-3, 1e-2, 0)


def test_spec_checks_its_size_metric_and_backend():
    with pytest.raises(ValueError, match=f"at most {MAX_SWEEP_RUNS} run"):
        SweepSpec.make(TINY, "init_angle", axis_values("init_angle", 0, 180, 13), seeds=2)
    with pytest.raises(ValueError, match="metric must be one of"):
        SweepSpec.make(TINY, "rule", ["bp"], metric="accuracy")
    with pytest.raises(ValueError, match="backend must be one of"):
        SweepSpec.make(TINY, "rule", ["bp"], backend="cloud")
    with pytest.raises(ValueError, match="setting 2 must differ"):
        SweepSpec.make(TINY, "rule", ["bp"], "rule", ["fa"])
    spec = SweepSpec.make(TINY, "rule", ["bp", "fa"], seeds=3, epochs=1)
    assert spec.n_runs == 6 and spec.seeds == (0, 1, 2) and spec.base.epochs == 1
    assert "grad_angle/2" in SweepSpec.make(TINY, "rule", ["bp"], metric="grad_angle/2").metric


def test_a_rule_sweep_clears_what_a_rule_does_not_use():
    base = TINY.replace(init_angle=45.0)
    spec = SweepSpec.make(base, "rule", ["bp", "fa"])
    points = spec.points()
    assert points[0] == {"rule": "bp", "seed": 0, "init_angle": None}
    assert points[1] == {"rule": "fa", "seed": 0}
    for changes in points:
        base.replace(**changes)  # every point is a valid config


def rows_for(spec, values):
    """Sweep-like rows: ``values[point]`` is a metric value, or a status string."""
    rows = []
    for point, value in values.items():
        if isinstance(value, str):
            rows.append({"point": point, "status": value, "message": f"broken {point}"})
        else:
            rows.append({"point": point, "status": "finished", "message": "",
                         spec.metric: value})
    return rows


def test_the_heatmap_summary_puts_each_mean_in_its_cell():
    spec = SweepSpec.make(TINY, "init_angle", [0.0, 90.0], "lr", [1e-3, 1e-2, 1e-1], seeds=2)
    assert spec.n_runs == 12
    # cells order: x outer, y, then seeds.
    values = {0: 0.5, 1: 0.7, 2: 0.2, 3: 0.4, 4: "failed", 6: 0.9, 7: 0.8, 11: 0.3}
    summary = summarize(spec, rows_for(spec, values))
    mean = summary.grid("mean")
    assert mean.shape == (3, 2)  # rows: lr, columns: init_angle
    assert mean[0, 0] == pytest.approx(0.6) and mean[1, 0] == pytest.approx(0.3)
    assert math.isnan(mean[2, 0])  # its one landed seed failed
    assert mean[0, 1] == pytest.approx(0.85) and mean[2, 1] == pytest.approx(0.3)
    assert math.isnan(mean[1, 1])  # nothing landed yet
    assert summary.grid("failed")[2, 0] == 1 and summary.grid("pending")[2, 0] == 1
    assert summary.grid("pending")[1, 1] == 2
    cell = summary.cells[(summary.cells.x_index == 0) & (summary.cells.y_index == 2)].iloc[0]
    assert cell["message"] == "broken 4"

    fig = sweep_figure(summary)
    heatmap, failed = fig.data
    np.testing.assert_allclose(np.asarray(heatmap.z, dtype=float), mean)
    assert list(heatmap.x) == ["0", "90"] and list(heatmap.y) == ["0.001", "0.01", "0.1"]
    assert heatmap.text[2][0] == "failed"
    assert list(failed.x) == ["0"] and list(failed.y) == ["0.1"]
    assert failed.customdata[0][0] == "broken 4"


def test_the_curve_summary_has_a_band_over_seeds():
    spec = SweepSpec.make(TINY, "lr", [1e-3, 1e-2, 1e-1], seeds=2, metric="train_loss")
    summary = summarize(spec, rows_for(spec, {0: 1.0, 1: 3.0, 2: 2.0, 4: "invalid"}))
    band, mean, failed = sweep_figure(summary).data
    assert list(mean.y) == [2.0, 2.0, None]  # the last point has no value (yet)
    assert list(band.y) == [3.0, 2.0, 2.0, 1.0]  # max out, min back
    assert fig_axis_type(summary) == "log"
    assert list(failed.x) == [pytest.approx(1e-1)]
    assert sweep_figure(None).layout.annotations  # the placeholder says what comes


def fig_axis_type(summary):
    return sweep_figure(summary).layout.xaxis.type


def test_a_sweep_stopped_after_its_first_point_cancels_the_rest(tmp_path):
    landed = threading.Event()
    go_on = threading.Event()
    session = SweepSession(cache_dir=tmp_path)

    def park():  # the worker, after publishing a row
        landed.set()
        go_on.wait(60)

    session.hooks["row"] = park
    spec = SweepSpec.make(TINY, "init_angle", [0.0, 45.0, 90.0], epochs=1)
    session.start(spec)
    with pytest.raises(ValueError, match="A sweep is going"):
        session.start(spec)
    assert landed.wait(120)
    assert session.stop()
    go_on.set()
    assert session.wait_idle(120)
    view = session.view
    assert view.status == "stopped" and "1 of 3 runs done" in view.message
    assert len(view.rows) == 1 and view.rows[0]["status"] == "finished"
    with pytest.raises(TypeError):
        view.rows[0]["status"] = "changed"  # published rows are read-only
    cells = view.summary().cells
    assert list(cells["n"]) == [1, 0, 0] and list(cells["pending"]) == [0, 1, 1]
    assert not session.stop()  # nothing is going any more
    session.close()


def test_an_impossible_point_shows_as_failed_and_the_sweep_goes_on(tmp_path):
    session = SweepSession(cache_dir=tmp_path)
    users = [n for n, c in RULES.items() if c.uses_expansion_ratio]
    # Only some rules take an expansion ratio: for fa the point is invalid.
    spec = SweepSpec.make(TINY.replace(rule=users[0]), "rule", [users[0], "fa"], epochs=1)
    session.start(spec)
    assert session.wait_idle(120)
    view = session.view
    assert view.status == "finished" and view.failed == 0
    spec = SweepSpec.make(TINY.replace(rule=users[0], expansion_ratio=2), "expansion_ratio",
                          [2, 4], "rule", [users[0], "fa"], epochs=1)
    assert any(c.get("expansion_ratio") == 2 for c in spec.points())
    session.start(spec)
    assert session.wait_idle(120)
    view = session.view
    assert view.status == "finished" and view.failed == 2 and "2 failed" in view.message
    summary = view.summary()
    assert summary.grid("failed")[1].tolist() == [1, 1]  # the fa row
    assert "expansion" in summary.cells.loc[summary.cells.failed > 0, "message"].iloc[0]
    session.close()


# ---------------------------------------------------------------- the tab
@pytest.fixture
def dashboard(tmp_path):
    from fa_explore.app import Dashboard

    made = Dashboard(query="hidden=[4]&train_size=60&eval_size=32&batch_size=20",
                     landscape_interval=None, warm_up=False,
                     sweep_options={"cache_dir": tmp_path})
    yield made
    made.close(timeout=None)
    assert not [t for t in threading.enumerate() if t.name.startswith("fx-") and t.is_alive()]


def test_the_sweep_tab_runs_a_sweep_and_fills_its_plot(dashboard):
    assert dashboard.tabs.titles == ("Train", "Sweep")
    panel = dashboard.sweep_panel
    assert panel.x.name.value == "rule" and len(panel.x.choices.value) == 2
    panel.x.name.value = "init_angle"
    # The renderer thread shows the range controls with the schema's range.
    assert wait_until(lambda: panel.x.synced == "init_angle")
    assert (panel.x.start.value, panel.x.stop.value) == (0.0, 180.0)
    assert panel.x.choices.layout.display == "none"
    panel.x.points.value = 2
    panel.epochs.value = 1
    panel.run.click()
    assert wait_until(lambda: panel.session.view.status == "finished")
    assert wait_until(lambda: "finished" in panel.status.value and not panel.run.disabled)
    # The band, the mean line (both points), the failed markers (none).
    assert wait_until(lambda: panel.plot.trace_lengths() == [4, 2, 0])
    assert panel.stop.disabled


def test_bad_sweep_input_is_a_message_not_a_traceback(dashboard):
    panel = dashboard.sweep_panel
    panel.x.name.value = "init_angle"
    assert wait_until(lambda: panel.x.synced == "init_angle")
    panel.x.stop.value = 500.0
    panel.run.click()
    assert wait_until(lambda: "sweep.init_angle must be" in panel.status.value)
    assert "fx-sweep-message-problem" in panel.status.value
    assert "Traceback" not in panel.status.value
    assert panel.session.view.status == "ready"
    panel.stop.click()  # nothing going: said so
    assert wait_until(lambda: "Nothing to stop" in panel.status.value)


def test_stop_in_the_tab_cancels_the_point_in_flight_and_the_rest(dashboard):
    panel = dashboard.sweep_panel
    panel.x.name.value = "init_angle"
    assert wait_until(lambda: panel.x.synced == "init_angle")
    panel.epochs.value = 1000  # far longer than the test: only Stop ends it
    panel.run.click()
    assert wait_until(lambda: not panel.stop.disabled)
    panel.stop.click()
    assert panel.session.wait_idle(120)
    view = panel.session.view
    assert view.status == "stopped" and view.rows == ()  # the point in flight was stopped too
    assert wait_until(lambda: "stopped: 0 of 3 runs done" in panel.status.value
                      and panel.stop.disabled and not panel.run.disabled)
