"""The dashboard's "seeds" setting: its declaration and link round trip, the band
statistics, and a session training an ensemble of seeds (all members finish, the
run shown is member 0, stop / pause / step work, live settings restart)."""

import math
import threading

import numpy as np
import pytest

from fa_explore import RunConfig, train
from fa_explore.app.appsettings import AppSettings, app_settings_from_query, join_query
from fa_explore.app.bands import appendable, last_step, seed_band, seed_bands
from fa_explore.app.controls import config_from_query, help_text
from fa_explore.app.fields import SliderField, make_field
from fa_explore.app.session import TrainingSession, seed_configs, seeds_text
from fa_explore.settings import APP_SETTINGS, MAX_SEED, SETTINGS, settings_markdown

from waiting import wait_until

QUICK = RunConfig(rule="fa", hidden=(16,), train_size=200, batch_size=20, epochs=2)
LONG = QUICK.replace(epochs=10_000, eval_every=5)  # never finishes within a test


def fx_threads():
    return [t for t in threading.enumerate() if t.name.startswith("fx-") and t.is_alive()]


# ------------------------------------------------------------- declaration
def test_seeds_is_declared_once_as_a_dashboard_setting_not_a_run_field():
    seeds = APP_SETTINGS["seeds"]
    assert (seeds.kind, seeds.default, seeds.minimum, seeds.maximum) == ("int", 1, 1, 16)
    assert "seeds" not in SETTINGS and "seeds" not in RunConfig().to_dict()
    assert "Allowed: [1, 16]" in help_text(seeds)
    assert "`seeds`" in settings_markdown()
    field = make_field(seeds, lambda *a: None, lambda: False)
    assert isinstance(field, SliderField)
    assert (field.main.min, field.main.max) == (1, 16)
    field.show(AppSettings(seeds=5))
    assert field.main.value == 5


@pytest.mark.parametrize("bad", [0, 17, 2.5, "four", True])
def test_bad_seeds_name_the_setting_and_what_is_allowed(bad):
    with pytest.raises(ValueError, match=r"dashboard\.seeds must be an integer in \[1, 16\]"):
        AppSettings(seeds=bad)
    with pytest.raises(ValueError, match="unknown dashboard setting"):
        AppSettings(seed=3)


def test_seeds_round_trips_through_the_link():
    app = AppSettings(seeds=4)
    assert app.to_query() == "seeds=4" and AppSettings().to_query() == ""
    query = join_query(RunConfig(rule="usf").to_query(), app.to_query())
    assert app_settings_from_query("?" + query) == (app, [])
    config, problem = config_from_query(query)  # seeds is not a run setting: no complaint
    assert config == RunConfig(rule="usf") and problem == ""
    values, problems = app_settings_from_query("seeds=99")
    assert values == AppSettings() and "seeds must be an integer in [1, 16]" in problems[0]
    assert "seeds" in config_from_query("seeds=99")[1]


def test_seed_configs_share_the_data_and_count_up_from_the_seed():
    configs = seed_configs(QUICK.replace(seed=7), 3)
    assert configs[0] == QUICK.replace(seed=7)
    assert [c.seed for c in configs] == [7, 8, 9]
    assert {c.data_seed for c in configs[1:]} == {7}
    assert seed_configs(QUICK, 1) == [QUICK]
    with pytest.raises(ValueError, match="largest seed"):
        seed_configs(QUICK.replace(seed=MAX_SEED), 2)


# ---------------------------------------------------------------- statistics
def test_band_statistics_match_numpy_and_skip_missing_values():
    members = [
        [{"step": 0, "loss": 1.0}, {"step": 10, "loss": 0.5}, {"step": 20, "loss": 0.2}],
        [{"step": 0, "loss": 3.0}, {"step": 10, "loss": math.nan}],  # ended early
        [{"step": 0, "loss": 2.0}, {"step": 10, "loss": 0.9}, {"step": 20, "loss": 0.4}],
    ]
    band = seed_band(members, "loss")
    np.testing.assert_array_equal(band.steps, [0, 10, 20])
    np.testing.assert_allclose(band.mean, [2.0, 0.7, 0.3])
    np.testing.assert_allclose(band.low, [1.0, 0.5, 0.2])
    np.testing.assert_allclose(band.high, [3.0, 0.9, 0.4])
    np.testing.assert_array_equal(band.count, [3, 2, 2])
    later = seed_band(members, "loss", after=10)
    np.testing.assert_array_equal(later.steps, [20])
    assert len(seed_band(members, "missing")) == 0
    bands = seed_bands(members, ["loss", "other"])
    assert bands.n_seeds == 3 and len(bands["other"]) == 0 and len(bands["never asked"]) == 0
    assert bands.caption == "mean of 3 seeds, band: min–max"
    assert last_step(members) == 20 and last_step([[], []]) == -math.inf


def test_appendable_only_when_every_new_row_lies_after_what_is_drawn():
    a = [{"step": 0}, {"step": 10}, {"step": 20}]
    b = [{"step": 0}, {"step": 10}]
    # Batched members evaluate together: new rows come after the drawn step 10.
    assert appendable([a, a], [2, 2], 10)
    # A member trained later fills in steps already drawn: draw it all again.
    assert not appendable([a, b], [3, 0], 20)
    assert not appendable([a, b], [2], 10)  # another ensemble
    assert not appendable([b], [3], 10)  # fewer rows than drawn


# ------------------------------------------------------------------- session
@pytest.fixture
def session():
    s = TrainingSession(QUICK, landscape_interval=None, seeds=3)
    yield s
    s.close(timeout=None)
    assert fx_threads() == []


def test_an_ensemble_of_seeds_trains_and_member_0_is_the_run(session):
    assert session.seeds == 3
    session.start()
    assert wait_until(lambda: session.status == "finished")
    view = session.view
    assert view.seeds == 3 and len(view.member_rows) == 3
    assert view.member_status == ("finished",) * 3
    assert view.rows == view.member_rows[0] and view.run.config.seed == QUICK.seed
    assert view.status == "finished" and view.run.status == "finished"
    # Member k is seed + k trained alone (within float tolerance).
    alone = train(seed_configs(QUICK, 3)[2])
    got = [r["test_loss"] for r in view.member_rows[2]]
    assert got == pytest.approx([r["test_loss"] for r in alone.rows], rel=1e-4, abs=1e-6)
    assert [r["step"] for r in view.member_rows[1]] == [r["step"] for r in view.rows]
    progress = session.progress()
    assert progress.seeds == 3 and progress.step == progress.total_steps == 3 * 20
    assert "mean of 3 seeds" in session.message
    assert session.matches_controls()
    session.set_seeds(1)
    assert not session.matches_controls()  # the controls now ask for one run


def test_an_ensemble_stops_pauses_and_steps(session):
    session.start(LONG)
    assert wait_until(lambda: session.status == "running" and len(session.view.rows) >= 2)
    parked = threading.Event()
    session.hooks["parked"] = parked.set
    assert session.pause() and parked.wait(60)
    rows = len(session.view.rows)
    parked.clear()
    assert session.step() and parked.wait(60)
    assert len(session.view.rows) == rows + 1
    assert all(len(m) == rows + 1 for m in session.view.member_rows)
    assert session.resume()
    assert session.stop() and session.status == "stopped"
    assert session.wait_idle(120)
    assert session.run.status == "stopped"


def test_a_live_setting_restarts_an_ensemble_and_seeds_stop_it(session):
    session.start(LONG)
    assert wait_until(lambda: session.status == "running")
    generation = session.generation
    assert session.set_config(LONG.replace(lr=0.002)) == "restarted"
    assert session.generation == generation + 1
    assert wait_until(lambda: session.view is not None and session.view.generation
                      == session.generation and session.view.config.lr == 0.002)
    assert session.set_seeds(2) == "stopped" and session.status == "stopped"
    with pytest.raises(ValueError, match="seeds must be"):
        session.set_seeds(0)


def test_a_rule_that_cannot_batch_trains_its_seeds_one_after_another(session):
    cfg = QUICK.replace(rule="dfa")
    session.start(cfg)
    assert wait_until(lambda: session.status == "finished")
    view = session.view
    assert view.member_status == ("finished",) * 3
    assert [len(rows) for rows in view.member_rows] == [len(view.rows)] * 3
    assert view.config.rule == "dfa" and view.member_rows[0] != view.member_rows[1]
    assert "seed 0" in seeds_text(view)


# ------------------------------------------------------------------- figures
def test_figures_draw_the_mean_and_a_filled_band_per_curve():
    from fa_explore.app import views

    rows = [[{"step": s, "train_loss": 2.0 / (s + 1) + k, "test_loss": 1.0 + k,
              "train_acc": 0.5, "test_acc": 0.1 * k, "weight_angle/2": 80.0 - k,
              "grad_angle/1": 10.0, "grad_angle/2": 20.0 + k} for s in (0, 5, 10)]
            for k in range(3)]
    bands = seed_bands(rows, views.CURVE_COLUMNS)
    plain = views.curves_figure(None)
    fig = views.curves_figure(None, bands=bands)
    assert len(fig.data) == len(plain.data) + 2 * len(views.CURVE_COLUMNS)
    np.testing.assert_allclose(fig.data[0].y, [2 / (s + 1) + 1 for s in (0, 5, 10)])  # mean
    low, high = fig.data[4], fig.data[5]
    assert (low.meta, high.meta) == ("train_loss:low", "train_loss:high")
    np.testing.assert_allclose(low.y, bands["train_loss"].low)
    np.testing.assert_allclose(high.y, bands["train_loss"].high)
    assert high.fill == "tonexty" and low.fill is None and high.fillcolor.startswith("rgba(")
    names = [t.name for t in fig.data if t.showlegend]
    assert "mean of 3 seeds, band: min–max" in names
    columns = ["weight_angle/1", "weight_angle/2", "grad_angle/1", "grad_angle/2"]
    align = views.alignment_figure(None, 2, bands=seed_bands(rows, columns))
    metas = [t.meta for t in align.data]
    assert metas[:4] == columns and metas[4:] == [f"{c}:{p}" for c in columns
                                                  for p in ("low", "high")]
    np.testing.assert_allclose(align.data[3].y, [21.0] * 3)
    # Each band has its line's colour (one per layer).
    assert align.data[5].fillcolor.startswith("rgba(") and align.data[5].fillcolor != (
        align.data[7].fillcolor)


# ----------------------------------------------------------------- dashboard
@pytest.fixture
def make_dashboard():
    pytest.importorskip("anywidget")
    from fa_explore.app import Dashboard

    made = []

    def make(query="", **kwargs):
        dashboard = Dashboard(query=query, landscape_interval=None, warm_up=False, **kwargs)
        made.append(dashboard)
        return dashboard

    yield make
    for dashboard in made:
        dashboard.close(timeout=None)
    assert fx_threads() == []


def test_the_seeds_control_follows_the_link_and_changes_the_session(make_dashboard):
    dashboard = make_dashboard("rule=usf&seeds=3")
    field = dashboard.app_fields["seeds"]
    assert dashboard.session.seeds == 3 and field.main.value == 3
    assert "seeds=3" in dashboard.link.query and "rule=usf" in dashboard.link.query
    assert "fx-seeds" in field.main._dom_classes
    field.main.value = 5
    assert dashboard.session.seeds == 5 and "seeds=5" in dashboard.link.query
    field.main.value = 1
    assert "seeds" not in dashboard.link.query
    assert make_dashboard(seeds=2, close_previous=False).session.seeds == 2
    with pytest.raises(ValueError, match=r"dashboard\.seeds must be"):
        make_dashboard(seeds=0, close_previous=False)
    bad = make_dashboard("seeds=40", close_previous=False)
    assert bad.session.seeds == 1 and "seeds must be an integer in [1, 16]" in (
        html_text(bad.status.value))


def html_text(value):
    import html

    return html.unescape(value)


def test_training_seeds_draws_a_band_live_and_every_point(make_dashboard):
    dashboard = make_dashboard("hidden=[16]&train_size=200&batch_size=20&epochs=4&seeds=3")
    plot = dashboard.curves_plot
    sent = []
    original = plot.send
    plot.send = lambda message, *a, **k: (sent.append(message), original(message, *a, **k))
    dashboard.train.click()
    assert wait_until(lambda: "finished" in dashboard.status.value)
    view = dashboard.session.view
    n = len(view.rows)
    # Mean lines and both edges of every band hold every evaluation.
    traces = dashboard.panels["curves"].band_traces
    assert sorted(set(traces.values())) == sorted(
        (c, p) for c in ("train_loss", "test_loss", "train_acc", "test_acc")
        for p in ("mean", "low", "high"))
    assert wait_until(lambda: all(plot.trace_lengths()[i] == n for i in traces))
    assert "mean of 3 seeds, band: min–max" in html_text(
        dashboard.panels["curves"].caption.value)
    assert "first of 3 seeds" in html_text(dashboard.panels["weights"].caption.value)
    assert "(all 3 seeds)" in dashboard.eta.value
    # While a batched ensemble trains, new points are appended to the means and bands.
    sent.clear()
    dashboard.session.start(dashboard.session.config.replace(epochs=10_000, eval_every=5))
    deltas = lambda: [m for m in sent if m.get("type") == "extend"]  # noqa: E731
    assert wait_until(lambda: len(deltas()) >= 2)
    traces = dashboard.panels["curves"].band_traces
    for delta in deltas():
        assert set(delta["indices"]) == set(traces)  # 4 means, 4 lower and 4 upper edges
    # A live setting cannot change an ensemble: the status line says why.
    dashboard.lr.value = 0.002
    assert "started again" in html_text(dashboard.status.value)
    dashboard.stop.click()
