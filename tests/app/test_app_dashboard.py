"""The dashboard's widget wiring (fa_explore.app.dashboard) driven from Python, as
the kernel sees it: no browser. The browser end-to-end tests live in
tests/browser/."""

import html
import json
import re
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
    """Number of points a trace of a plot view holds on the page now (its last whole
    figure plus the points appended since)."""
    return view.trace_lengths()[trace]


def figure_points(view, trace=0):
    """Number of x values in a trace of the last whole figure (the widget's state)."""
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
    assert wait_until(lambda: "no CUDA device" in status_text(dashboard))
    assert dashboard.session.status == "error"
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
    assert dashboard.panels["boundary"].box in dashboard.plots.children  # 2-D: regions
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
    # The last whole figure (what a page that connects now draws) holds every point.
    assert figure_points(dashboard.curves_plot) == len(dashboard.session.run.rows)
    n_layers = dashboard.session.run.model.n_layers
    assert points(dashboard.alignment_plot, n_layers) > 0  # gradient angle of layer 1
    assert f"step {total} / {total}" in dashboard.eta.value
    assert dashboard.progress.value == 1.0 and not dashboard.train.disabled


def test_the_progress_line_shows_the_thread_policys_choice(make_dashboard, monkeypatch):
    monkeypatch.setenv("FA_EXPLORE_THREADS", "1")
    dashboard = make_dashboard(QUICK)
    dashboard.train.click()
    assert wait_until(lambda: "finished" in status_text(dashboard))
    assert wait_until(lambda: "1 thread (FA_EXPLORE_THREADS=1)" in dashboard.eta.value)


def test_changing_a_control_mid_run_stops_it(make_dashboard):
    dashboard = make_dashboard(LONG)
    dashboard.train.click()
    assert wait_until(lambda: dashboard.session.run is not None)
    other = next(n for n in RULES if n != dashboard.rule.value)
    dashboard.rule.value = other
    text = status_text(dashboard)
    assert "stopped" in text and "press Train" in text
    assert wait_until(lambda: not [t for t in fx_threads() if t.name.startswith("fx-train")])
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


# ------------------------------------------------- controls from the schema
def test_every_setting_has_a_control_generated_from_its_declaration(make_dashboard):
    from fa_explore.settings import SETTINGS

    dashboard = make_dashboard()
    assert set(dashboard.fields) == {n for n, s in SETTINGS.items() if s.kind != "options"}
    for name, field in dashboard.fields.items():
        setting = SETTINGS[name]
        assert field.setting is setting and setting.label in field.main.description or (
            name == "hidden")
        assert setting.help[1:30] in field.tooltip  # the schema's help is the tooltip
    # Sliders take their range from the schema's ui_minimum / ui_maximum.
    noise = SETTINGS["label_noise"]
    assert (dashboard.fields["label_noise"].main.min, dashboard.fields["label_noise"].main.max
            ) == (0, noise.ui_maximum)
    assert dashboard.lr.min == -5 and dashboard.lr.max == 0  # 10^-5 .. 10^0
    # The settings the issue names are on the page.
    for name in ("n_classes", "label_noise", "train_size", "noise", "n_samples", "eval_every"):
        assert name in dashboard.fields


def test_a_setting_added_to_the_schema_gets_a_control():
    import ipywidgets as widgets

    from fa_explore.app.fields import LogSliderField, NumberField, SliderField, make_field
    from fa_explore.settings import Setting

    seen = []
    new = Setting("float", 0.5, "a brand-new knob", minimum=0, maximum=2, ui_maximum=1,
                  control="slider").named("knob", "run")
    field = make_field(new, lambda f, v, note: seen.append((v, note)), lambda: False)
    assert isinstance(field, SliderField) and (field.main.min, field.main.max) == (0, 1)
    assert "A brand-new knob" in field.tooltip and isinstance(field.box, widgets.VBox)
    field.main.value = 0.75
    assert seen == [(0.75, "")]
    count = Setting("int", None, "how many", optional=True, minimum=1, maximum=9,
                    control="number").named("count", "run")
    assert isinstance(make_field(count, lambda *a: None, lambda: False), NumberField)
    scale = Setting("float", 1.0, "a scale", minimum=0, maximum=10, exclusive_minimum=True,
                    ui_minimum=0.1, control="log_slider").named("scale", "run")
    assert isinstance(make_field(scale, lambda *a: None, lambda: False), LogSliderField)


def test_a_link_value_outside_a_slider_widens_it_and_trains_as_shown(make_dashboard):
    dashboard = make_dashboard("lr=10&optimizer=sgd&batch_size=3000")
    assert dashboard.session.config.lr == 10.0
    assert dashboard.lr.value == pytest.approx(10.0) and dashboard.lr.max >= 1  # 10^1
    assert dashboard.batch_size.value == 3000 and 2 ** dashboard.batch_size.max >= 3000
    assert dashboard.optimizer.value == "sgd"


def test_a_value_the_page_clamps_says_so(make_dashboard):
    dashboard = make_dashboard()
    dashboard.depth.value = 1
    dashboard.width.value = 5000
    assert dashboard.session.config.hidden == (4096,)
    assert dashboard.width.value == 4096
    assert "width 5,000 is out of range" in status_text(dashboard)
    # A number typed into a slider's readout: reported by the page before the slider
    # clamps it. Outside the slider but allowed: the slider widens and shows it.
    dashboard._on_typed("fx-lr", "10")
    dashboard.lr.value = 1.0  # what the slider sends after clamping the typed 10
    assert dashboard.session.config.lr == 10.0 and dashboard.lr.value == pytest.approx(10.0)
    # Outside the hard bounds: clamped, and said.
    dashboard._on_typed("fx-batch", "0")
    dashboard.batch_size.value = 1
    assert dashboard.session.config.batch_size == 1
    assert "batch 0 is out of range: using the smallest allowed, 1" in status_text(dashboard)


def test_number_boxes_take_empty_for_the_default(make_dashboard):
    dashboard = make_dashboard()
    box = dashboard.fields["n_classes"].main
    assert box.value == "" and box.placeholder == "all classes"
    box.value = "4"
    assert dashboard.session.config.n_classes == 4
    box.value = ""
    assert dashboard.session.config.n_classes is None
    box.value = "abc"
    assert "classes must be a number" in status_text(dashboard)
    assert dashboard.session.config.n_classes is None


def test_dataset_options_show_only_for_the_datasets_that_take_them(make_dashboard):
    two_d = next(n for n, s in DATASETS.items() if s.kind == "2d")
    dashboard = make_dashboard()
    noise = dashboard.fields["noise"]
    assert noise.box.layout.display == "none"
    dashboard.dataset.value = two_d
    assert noise.box.layout.display is None and not noise.default_box.disabled
    noise.default_box.value = False
    noise.main.value = 0.3
    assert dashboard.session.config.noise == 0.3


def test_rule_options_get_controls_from_their_declarations(make_dashboard):
    dashboard = make_dashboard("rule=dkp")
    assert set(dashboard.option_fields) == set(RULES["dkp"].options)
    dashboard.option_fields["feedback_optimizer"].main.value = "adam"
    assert dashboard.session.config.rule_options == {"feedback_optimizer": "adam"}
    dashboard.rule.value = "fa"
    assert dashboard.option_fields == {} or set(dashboard.option_fields) == set(
        RULES["fa"].options)


def test_dropdowns_get_tooltips_on_the_page(make_dashboard):
    dashboard = make_dashboard()
    tips = dashboard.tips.tips
    for css in ("fx-rule", "fx-dataset", "fx-model", "fx-optimizer", "fx-activation",
                "fx-train", "fx-layer"):
        assert tips.get(css), css
    assert "learning rule" in tips["fx-rule"].lower()


def test_a_bad_link_keeps_its_valid_fields_and_lists_every_invalid_one(make_dashboard):
    dashboard = make_dashboard("rule=nope&lr=10&width=abc")
    text = html.unescape(status_text(dashboard))
    assert "rule must be one of" in text and "unknown setting 'width'" in text
    assert dashboard.session.config.lr == 10.0 and dashboard.lr.value == pytest.approx(10)


# --------------------------------------------------------------- live runs
def test_live_settings_change_the_running_run_and_others_restart_it(make_dashboard):
    dashboard = make_dashboard(LONG + "&optimizer=sgd&lr=0.01")
    dashboard.train.click()
    assert wait_until(lambda: dashboard.session.status == "running")
    generation = dashboard.session.generation
    dashboard.lr.value = 0.002
    assert dashboard.session.status == "running" and dashboard.session.generation == generation
    assert "changed live" in status_text(dashboard)
    run = dashboard.session.run
    assert wait_until(lambda: run.optimizers[0].param_groups[0]["lr"] == 0.002)
    assert wait_until(lambda: "learning rate 0.01 → 0.002" in
                      dashboard.panels["curves"].caption.value)
    dashboard.seed.value = 3  # structural: the run stops
    assert "stopped" in status_text(dashboard)


def test_step_button_advances_one_evaluation_while_paused(make_dashboard):
    dashboard = make_dashboard(LONG)
    assert dashboard.step.disabled
    dashboard.train.click()
    assert wait_until(lambda: dashboard.session.status == "running")
    dashboard.pause.click()
    assert not dashboard.step.disabled
    rows = len(dashboard.session.view.rows)
    dashboard.step.click()
    assert wait_until(lambda: "paused at step" in dashboard.session.message)
    assert len(dashboard.session.view.rows) in (rows + 1, rows + 2)  # + one evaluation
    assert dashboard.session.status == "paused"
    dashboard.stop.click()


def test_buttons_are_enabled_only_when_they_can_act(make_dashboard):
    dashboard = make_dashboard(QUICK)
    assert dashboard.pin.disabled and dashboard.export.disabled and dashboard.unpin.disabled
    assert dashboard.reset.disabled
    dashboard.train.click()
    assert dashboard.pin.disabled and dashboard.export.disabled
    assert wait_until(lambda: "finished" in status_text(dashboard))
    assert not dashboard.pin.disabled and not dashboard.export.disabled
    dashboard.pin.click()
    assert dashboard.pin.disabled and not dashboard.unpin.disabled  # pinned once


def test_divergence_shows_a_red_badge_with_the_step_and_a_hint(make_dashboard):
    dashboard = make_dashboard(QUICK + "&optimizer=sgd&lr=100")
    dashboard.train.click()
    assert wait_until(lambda: "fx-state-diverged" in status_text(dashboard))
    text = html.unescape(status_text(dashboard))
    assert "at step" in text and "Lower the learning rate (now 100)" in text
    assert wait_until(lambda: "fx-bad" in dashboard.panels["curves"].caption.value)


def test_stale_plots_are_marked_and_captioned(make_dashboard):
    dashboard = make_dashboard(QUICK)
    panel = dashboard.panels["alignment"]
    assert "no run yet" in panel.caption.value
    dashboard.train.click()
    assert wait_until(lambda: "finished" in status_text(dashboard))
    assert wait_until(lambda: "fa · digits" in panel.caption.value and "finished" in
                      panel.caption.value)
    assert "fx-stale" not in panel.box._dom_classes
    dashboard.seed.value = 9
    assert wait_until(lambda: "fx-stale" in panel.box._dom_classes)
    assert "previous run" in panel.caption.value
    dashboard.seed.value = 0  # back to what the run was trained with
    assert wait_until(lambda: "fx-stale" not in panel.box._dom_classes)


def test_no_panel_mixes_runs_of_different_datasets(make_dashboard):
    two_d = next(n for n, s in DATASETS.items() if s.kind == "2d")
    dashboard = make_dashboard(f"dataset={two_d}&hidden=[8]&epochs=2")
    boundary = dashboard.panels["boundary"]
    dashboard.train.click()
    assert wait_until(lambda: "finished" in status_text(dashboard))
    dashboard.pin.click()
    dashboard.dataset.value = "digits"
    # The 2-D run is still what is shown (greyed): its regions stay, with it.
    assert wait_until(lambda: "fx-stale" in boundary.box._dom_classes)
    assert boundary.box in dashboard.plots.children
    dashboard.fields["train_size"].main.value = "200"
    dashboard.train.click()
    assert wait_until(lambda: "finished" in status_text(dashboard)
                      and dashboard.session.view.config.dataset == "digits")
    # Digits now: no decision regions, and the 2-D pin is left out of the curves.
    assert wait_until(lambda: boundary.box not in dashboard.plots.children)
    assert wait_until(lambda: len(json.loads(dashboard.curves_plot.figure_json)["data"]) == 4)
    assert "1 pin of other datasets not shown" in dashboard.panels["curves"].caption.value


# ------------------------------------------------- drawing at the page's pace
def page_connected(dashboard):
    """Pretend a page is connected: updates wait for its acknowledgement."""
    for panel in dashboard.panels.values():
        panel.plot._page_seen = True


def ack_all(dashboard):
    for panel in dashboard.panels.values():
        plot = panel.plot
        plot._handle_message(plot, {"type": "ack", "seq": plot.seq}, [])


def test_finished_shows_only_once_the_page_has_drawn_the_last_points(make_dashboard):
    dashboard = make_dashboard(QUICK)
    page_connected(dashboard)
    dashboard.train.click()
    assert wait_until(lambda: dashboard.session.status == "finished")
    # The page has acknowledged nothing: the badge waits.
    assert "drawing the last points" in status_text(dashboard)
    assert "fx-state-finished" not in status_text(dashboard)
    ack_all(dashboard)
    assert wait_until(lambda: "fx-state-finished" in status_text(dashboard))
    visible = re.sub(r"<[^>]+>", " ", status_text(dashboard))
    assert visible.count("finished") == 1  # no "finished | finished ..."


def test_a_busy_page_gets_no_new_update_until_it_acknowledges(make_dashboard):
    dashboard = make_dashboard(LONG)
    plot = dashboard.curves_plot
    page_connected(dashboard)
    sent = []
    original = plot.send
    plot.send = lambda message, *a, **k: (sent.append(message), original(message, *a, **k))
    dashboard.train.click()
    assert wait_until(lambda: dashboard.session.view is not None
                      and len(dashboard.session.view.rows) > 6)
    # Whole figure at the start; then nothing while the page has not drawn it.
    assert wait_until(lambda: plot.busy)
    count = len(sent)
    rows_now = len(dashboard.session.view.rows)
    assert wait_until(lambda: len(dashboard.session.view.rows) > rows_now + 3)
    assert len(sent) == count
    ack_all(dashboard)
    # One delta with every point since, appended to the live run's four traces.
    assert wait_until(lambda: len(sent) > count)
    delta = sent[count]
    assert delta["type"] == "extend" and delta["indices"] == [0, 1, 2, 3]
    assert len(delta["x"][0]) >= 3
    dashboard.stop.click()


def test_a_page_out_of_step_gets_the_whole_figure_again(make_dashboard):
    dashboard = make_dashboard()
    plot = dashboard.curves_plot
    revision = plot.revision
    plot._handle_message(plot, {"type": "hello", "revision": revision,
                                "lengths": plot.trace_lengths()}, [])
    assert not plot.needs_full  # in step: nothing to resend
    plot._handle_message(plot, {"type": "hello", "revision": revision - 1, "lengths": []}, [])
    assert wait_until(lambda: plot.revision > revision)  # redrawn whole


# ---------------------------------------------------- export, upload, links
def test_export_downloads_a_zip_and_load_run_shows_it(make_dashboard, tmp_path, monkeypatch):
    import io
    import zipfile

    monkeypatch.chdir(tmp_path)
    dashboard = make_dashboard(QUICK)
    downloads = []
    dashboard.downloader.download = lambda name, data, mime="application/zip": (
        downloads.append((name, data)))
    dashboard.train.click()
    assert wait_until(lambda: "finished" in status_text(dashboard))
    dashboard.export.click()
    (name, data), = downloads
    members = {m.split("/")[-1] for m in zipfile.ZipFile(io.BytesIO(data)).namelist()}
    assert {"run.json", "weights.safetensors", "curves.html", "alignment.html",
            "weights.html", "landscape.html"} <= members
    text = status_text(dashboard)
    assert name in text and str(tmp_path) not in text and "/tmp" not in text
    assert list(tmp_path.iterdir()) == []  # nothing written on the server
    dashboard.rule.value = "bp"
    # What the page's "Load run" button sends: the file's name, its bytes as a buffer.
    assert dashboard.upload.description == "Load run"  # a button, no "(0)" counter
    dashboard.upload._handle(None, {"type": "file", "name": name, "size": len(data)},
                             [memoryview(data)])
    assert "fx-state-loaded" in status_text(dashboard)
    assert dashboard.session.config.rule == "fa" and dashboard.rule.value == "fa"
    assert wait_until(lambda: "saved run" in dashboard.panels["curves"].caption.value)
    assert not dashboard.pin.disabled
    dashboard.pin.click()
    assert "pinned run 1" in status_text(dashboard)


def test_guided_experiments_preset_the_controls(make_dashboard):
    from fa_explore.app.dashboard import EXPERIMENTS

    dashboard = make_dashboard()
    assert len(dashboard.experiments.links) == 3
    label, query, guide = EXPERIMENTS[2]
    dashboard.experiments._handle(None, {"type": "open", "query": query}, [])
    assert dashboard.session.config.rule == "dfa" and len(dashboard.session.config.hidden) == 5
    assert guide[:40] in html.unescape(status_text(dashboard))
    assert "rule=dfa" in dashboard.link.query


def test_train_is_the_first_tab(make_dashboard):
    dashboard = make_dashboard()
    assert dashboard.tabs.titles[0] == "Train"


# ---------------------------------------------------------------- threads
def test_a_new_dashboard_closes_the_previous_one():
    before = set(threading.enumerate())
    first = Dashboard(query=LONG, landscape_interval=0.1)
    first.train.click()
    assert wait_until(lambda: first.session.run is not None)
    # Re-running the cell.
    second = Dashboard(warm_up=False, landscape_interval=None)
    try:
        assert first._closed and not first._renderer.is_alive()
        assert wait_until(lambda: not [t for t in first.session.threads()])
        assert second._renderer.is_alive()
    finally:
        second.close(timeout=None)
    assert wait_until(lambda: set(threading.enumerate()) - before == set())


def test_the_kernels_exit_stops_a_training_dashboards_threads_first(monkeypatch):
    """At exit (a kernel shut down mid-run) the dashboard's threads stop before
    zmq's exit handlers close the sockets they send on; the hook is registered once."""
    import atexit

    from fa_explore.app import dashboard as dashboard_module

    registered = []
    monkeypatch.setattr(atexit, "register", registered.append)
    monkeypatch.setattr(Dashboard, "_exit_hook", False)
    first = Dashboard(query=LONG, landscape_interval=None, warm_up=False)
    try:
        first.train.click()
        assert wait_until(lambda: first.session.run is not None)
        assert registered == [dashboard_module._stop_at_exit]
        dashboard_module._stop_at_exit()
        assert not first._renderer.is_alive() and not first.session.threads()
        assert fx_threads() == []
        assert not first._closed  # the widgets stay: the process is ending anyway
    finally:
        first.close(timeout=None)
    second = Dashboard(warm_up=False, landscape_interval=None)
    second.close(timeout=None)
    assert registered == [dashboard_module._stop_at_exit]  # not again


def test_a_user_change_is_never_hidden_by_another_threads_sync(make_dashboard):
    dashboard = make_dashboard()
    holding, release = threading.Event(), threading.Event()

    def renderer_like():
        with dashboard._writing():  # another thread syncing the controls
            holding.set()
            assert release.wait(60)

    other = threading.Thread(target=renderer_like)
    other.start()
    assert holding.wait(60)
    assert dashboard._syncing is False  # that thread's flag, not this one's
    changed = threading.Event()

    def user():
        dashboard.seed.value = 5  # a change from the page, on the kernel's thread
        changed.set()

    threading.Thread(target=user).start()
    release.set()
    other.join(60)
    assert changed.wait(60)
    assert dashboard.session.config.seed == 5 and dashboard._syncing is False
