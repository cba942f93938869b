"""The dashboard's widget wiring (fa_explore.app.dashboard) driven from Python, as
the kernel sees it: no browser. The browser end-to-end tests live in
tests/browser/."""

import json
import threading

import pytest

pytest.importorskip("ipywidgets")
pytest.importorskip("anywidget")

from fa_explore import DATASETS, RULES, RunConfig  # noqa: E402
from fa_explore.app import Dashboard  # noqa: E402
from fa_explore.app.dashboard import RedrawPacer  # noqa: E402

from waiting import wait_until

QUICK = "hidden=[16]&train_size=200&batch_size=20&epochs=2"
LONG = "hidden=[16]&train_size=200&batch_size=20&epochs=10000&eval_every=5"

ISSUE_CLASSES = ("fx-rule", "fx-dataset", "fx-width", "fx-depth", "fx-angle", "fx-sparsity",
                 "fx-lr", "fx-seed", "fx-train", "fx-pause", "fx-stop", "fx-reset", "fx-status",
                 "fx-progress", "fx-plot-curves", "fx-plot-alignment", "fx-plot-landscape",
                 "fx-plot-boundary", "fx-plot-weights")


def fx_threads():
    return [t for t in threading.enumerate() if t.name.startswith("fx-") and t.is_alive()]


def points(view, trace=0):
    """Number of x values in a trace of the figure a plot view holds now."""
    data = json.loads(view.figure_json)["data"][trace]
    x = data.get("x", [])
    if isinstance(x, dict):  # plotly's typed-array encoding {dtype, bdata}
        import base64

        import numpy as np

        return len(np.frombuffer(base64.b64decode(x["bdata"]), dtype=x["dtype"]))
    return len(x)


@pytest.fixture
def make_dashboard():
    """Dashboards without the background warm-up (test_closing_joins_every_thread
    keeps it); teardown joins every thread however long that takes, then checks
    that none is left."""
    made = []

    def make(query="", **kwargs):
        dashboard = Dashboard(query=query, landscape_interval=None,
                              **{"warm_up": False, **kwargs})
        made.append(dashboard)
        return dashboard

    yield make
    for dashboard in made:
        dashboard.close(timeout=None)
    assert fx_threads() == []


def status_text(dashboard):
    return dashboard.status.value


def walk(widget):
    yield widget
    for child in getattr(widget, "children", ()):
        yield from walk(child)


def test_every_issue_css_class_is_on_a_widget(make_dashboard):
    dashboard = make_dashboard()
    classes = {c for w in walk(dashboard) for c in getattr(w, "_dom_classes", ())}
    classes |= set(dashboard.boundary_plot._dom_classes)  # shown only for 2-D data
    missing = [c for c in ISSUE_CLASSES if c not in classes]
    assert missing == []
    assert "ready" in status_text(dashboard)


def test_a_link_presets_the_controls(make_dashboard):
    no_angle = next(n for n, c in RULES.items() if not c.uses_init_angle)
    dashboard = make_dashboard(f"rule={no_angle}&hidden=[48,48,48]&lr=0.01&seed=7")
    assert dashboard.rule.value == no_angle
    assert (dashboard.width.value, dashboard.depth.value) == (48, 3)
    assert dashboard.lr.value == pytest.approx(0.01) and dashboard.seed.value == 7
    assert dashboard.angle.disabled and dashboard.angle_random.disabled
    assert no_angle in dashboard.angle_hint.value  # the reason is shown, not just greyed
    assert "seed=7" in dashboard.link.query


def test_a_link_asking_for_an_absent_gpu_opens_and_explains_at_train(make_dashboard,
                                                                      monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    dashboard = make_dashboard(QUICK + "&device=cuda")
    assert dashboard.device.value == "cuda"
    assert "not available" in dict((v, k) for k, v in dashboard.device.options)["cuda"]
    dashboard.train.click()
    assert wait_until(lambda: "error" in dashboard.session.status)
    assert "no CUDA device" in status_text(dashboard)
    dashboard.device.value = "cpu"  # the dashboard stays usable
    dashboard.train.click()
    assert wait_until(lambda: "finished" in status_text(dashboard))


def test_a_bad_link_says_so_and_starts_from_defaults(make_dashboard):
    dashboard = make_dashboard("rule=no_such_rule")
    text = status_text(dashboard)
    assert "ready" in text and "cannot be used" in text and "Traceback" not in text
    assert dashboard.session.config == RunConfig()


def test_controls_change_the_config_and_the_link(make_dashboard):
    dashboard = make_dashboard()
    dashboard.width.value = 32
    dashboard.depth.value = 3
    assert dashboard.session.config.hidden == (32, 32, 32)
    dashboard.angle_random.value = False
    dashboard.angle.value = 45
    assert dashboard.session.config.init_angle == 45.0
    assert "init_angle=45.0" in dashboard.link.query
    dashboard.angle_random.value = True
    assert dashboard.session.config.init_angle is None
    dashboard.lr.value = 0.01
    assert dashboard.session.config.lr == 0.01
    assert not dashboard.rule_defaults.disabled
    dashboard.rule_defaults.click()
    assert dashboard.session.config.lr is None


def test_an_impossible_combination_is_refused_with_a_message(make_dashboard):
    two_d = next(n for n, s in DATASETS.items() if s.kind == "2d")
    dashboard = make_dashboard()
    dashboard.dataset.value = two_d
    assert dashboard.boundary_plot in dashboard.plots.children  # 2-D: decision regions
    dashboard.model.value = "cnn"
    text = status_text(dashboard)
    assert "Can&#x27;t use that" in text and "mlp" in text
    assert dashboard.model.value == "mlp" and dashboard.session.config.model == "mlp"


def test_invalid_actions_show_a_message(make_dashboard):
    dashboard = make_dashboard()
    dashboard.pin.click()
    assert "Nothing to pin yet" in status_text(dashboard)
    dashboard.export.click()
    assert "Nothing to export yet" in status_text(dashboard)
    dashboard.stop.click()  # disabled in the page; still safe from the kernel
    assert "Nothing to stop" in status_text(dashboard)


def test_train_draws_points_and_finishes(make_dashboard):
    dashboard = make_dashboard(QUICK)
    assert not dashboard.train.disabled and dashboard.stop.disabled
    dashboard.train.click()
    assert dashboard.train.disabled and not dashboard.stop.disabled
    assert wait_until(lambda: "finished" in status_text(dashboard))
    # The renderer thread draws the last points after the run ends.
    total = dashboard.session.run.total_steps
    assert wait_until(lambda: points(dashboard.curves_plot) == len(dashboard.session.run.rows))
    n_layers = dashboard.session.run.model.n_layers
    assert points(dashboard.alignment_plot, n_layers) > 0  # gradient angle of layer 1
    assert f"step {total} / {total}" in dashboard.eta.value
    assert dashboard.progress.value == 1.0 and not dashboard.train.disabled


def test_changing_a_control_mid_run_stops_it(make_dashboard):
    dashboard = make_dashboard(LONG)
    dashboard.train.click()
    assert wait_until(lambda: dashboard.session.run is not None)
    other = next(n for n in RULES if n != dashboard.rule.value)
    dashboard.rule.value = other
    text = status_text(dashboard)
    assert "stopped" in text and "press Train" in text
    assert [t.name for t in fx_threads() if t.name.startswith("fx-train")] == []
    assert not dashboard.train.disabled


def test_pause_resume_and_stop_buttons(make_dashboard):
    dashboard = make_dashboard(LONG)
    dashboard.train.click()
    assert wait_until(lambda: dashboard.session.run is not None)
    dashboard.pause.click()
    assert "paused" in status_text(dashboard) and dashboard.pause.description == "Resume"
    dashboard.pause.click()
    assert "running" in status_text(dashboard) and dashboard.pause.description == "Pause"
    dashboard.stop.click()
    assert "stopped" in status_text(dashboard) and dashboard.stop.disabled


def test_pinned_runs_stay_as_extra_traces(make_dashboard):
    dashboard = make_dashboard(QUICK)
    dashboard.train.click()
    assert wait_until(lambda: "finished" in status_text(dashboard))
    dashboard.pin.click()
    assert "pinned run 1" in status_text(dashboard)
    # Live run (4 traces) + the pinned run (4 faint traces).
    assert wait_until(lambda: len(json.loads(dashboard.curves_plot.figure_json)["data"]) == 8)
    dashboard.unpin.click()
    assert wait_until(lambda: len(json.loads(dashboard.curves_plot.figure_json)["data"]) == 4)


def test_closing_joins_every_thread():
    # Warm-up and landscape threads included; join without a deadline (a busy machine
    # may take long), then nothing of the dashboard may be left.
    before = set(threading.enumerate())
    dashboard = Dashboard(query=LONG, landscape_interval=0.1)
    dashboard.train.click()
    assert wait_until(lambda: dashboard.session.run is not None)
    dashboard.close(timeout=None)
    assert fx_threads() == []
    assert set(threading.enumerate()) - before == set()


class FakeClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self):
        self.now, self.calls = 0.0, 0

    def __call__(self):
        self.calls += 1
        return self.now


@pytest.mark.parametrize("spent, busy, pause", [
    (0.02, False, 0.08),  # a quick redraw: the next starts 0.1 s after this one did
    (0.02, True, 0.08),   # resting 2 x 0.02 is shorter than that
    (0.10, False, 0.0),
    (0.10, True, 0.2),    # training: a redraw of t seconds is followed by 2 t of rest
    (0.30, False, 0.0),   # idle (the last points of a run): no rest needed
    (0.30, True, 0.6),
    (0.0, False, 0.1),
])
def test_redraw_pacer_pause_after_a_redraw(spent, busy, pause):
    clock = FakeClock()
    pacer = RedrawPacer(interval=0.1, rest=2.0, clock=clock)
    clock.now = 5.0
    pacer.start()
    clock.now += spent
    assert pacer.pause(busy) == pytest.approx(pause, abs=1e-12)


@pytest.mark.parametrize("busy", [False, True])
def test_redraw_pacer_allows_at_most_ten_redraws_a_second(busy):
    """Redraws requested all the time, each taking a different time: in the fake
    clock's time, no second holds more than ten redraw starts, and while training the
    renderer draws at most a third of the time (a redraw of t, then a rest of 2 t)."""
    clock = FakeClock()
    pacer = RedrawPacer(clock=clock)  # the dashboard's own interval and rest
    starts, drawing = [], 0.0
    for k in range(400):
        spent = [0.001, 0.03, 0.08, 0.0, 0.15, 0.01][k % 6]
        starts.append(clock.now)
        pacer.start()
        clock.now += spent
        drawing += spent
        clock.now += pacer.pause(busy)
    assert all(b - a >= 0.1 - 1e-12 for a, b in zip(starts, starts[1:], strict=False))
    assert all(sum(1 for t in starts if s <= t < s + 1.0) <= 10 for s in starts)
    if busy:
        assert drawing <= clock.now / 3 + 1e-9
    assert clock.calls == 2 * len(starts)


def test_the_renderer_reads_the_injected_clock(make_dashboard):
    clock = FakeClock()
    dashboard = make_dashboard(QUICK, clock=clock)
    dashboard.train.click()
    assert wait_until(lambda: "finished" in status_text(dashboard))
    assert wait_until(lambda: clock.calls >= 2)  # start() and pause() of a redraw


def test_redraw_requests_during_a_redraw_coalesce_into_one(make_dashboard, monkeypatch):
    """The worker only flags new data: however many snapshots arrive while the
    renderer draws, one redraw follows (counted, with events, not timed)."""
    dashboard = make_dashboard()
    drawing, release, second = threading.Event(), threading.Event(), threading.Event()
    calls = []

    def render_now():
        calls.append(threading.current_thread().name)
        if len(calls) == 1:
            drawing.set()
            assert release.wait(60)
        else:
            second.set()

    monkeypatch.setattr(dashboard, "_render_now", render_now)
    dashboard._request_render()
    assert drawing.wait(60)
    for _ in range(50):  # fifty snapshots while the first redraw is under way
        dashboard._request_render()
    release.set()
    assert second.wait(60)
    assert calls == ["fx-render", "fx-render"]
    assert not dashboard._render_wanted.is_set()  # nothing left to draw: 51 requests, 2 redraws
