"""The dashboard's state logic (fa_explore.app.session) without widgets: one run at
a time in a worker thread, stop / pause within a step, generation counter, no
leaked threads, pinned runs, divergence and failure messages, export."""

import threading
from pathlib import Path

import pytest
import torch

from fa_explore import Run, RunConfig, train_iter
from fa_explore.app.session import (
    RunView,
    TrainingSession,
    chance_warning,
    divergence_text,
    warm_up_config,
)

from waiting import wait_until

# Tiny runs: 200 training examples, one hidden layer of 16.
QUICK = RunConfig(rule="fa", hidden=(16,), train_size=200, batch_size=20, epochs=2)
LONG = QUICK.replace(epochs=10_000, eval_every=5)  # never finishes within a test


def fx_threads():
    return [t for t in threading.enumerate() if t.name.startswith("fx-") and t.is_alive()]


class Recorder:
    """Collects what the session tells its listeners (from worker threads)."""

    def __init__(self):
        self.statuses, self.snapshots, self.landscapes = [], [], []
        self.first_snapshot = threading.Event()

    def status(self, session):
        self.statuses.append((session.generation, session.status, session.message))

    def snapshot(self, session, snapshot):
        self.snapshots.append((threading.current_thread().name, snapshot.step,
                               session.generation))
        self.first_snapshot.set()

    def landscape(self, session, pca, surface):
        self.landscapes.append((pca, surface))


@pytest.fixture
def recorder():
    return Recorder()


@pytest.fixture
def session(recorder):
    s = TrainingSession(QUICK, on_status=recorder.status, on_snapshot=recorder.snapshot,
                        on_landscape=recorder.landscape, landscape_interval=None)
    yield s
    s.close(timeout=None)  # join however long it takes, then nothing may be left
    assert fx_threads() == []


def test_a_run_trains_in_a_worker_and_finishes(session, recorder):
    assert session.status == "ready"
    generation = session.start()
    # "starting" while it loads data and builds the model, never "stopped".
    assert generation == 1 and session.status in ("starting", "running")
    assert wait_until(lambda: session.status == "finished")
    run = session.run
    assert isinstance(run, Run) and run.status == "finished"
    steps = [step for _, step, _ in recorder.snapshots]
    assert steps[0] == 0 and steps[-1] == run.total_steps == 20
    assert all(name == "fx-train-1" for name, _, _ in recorder.snapshots)
    assert "test accuracy" in session.message
    statuses = [s for _, s, _ in recorder.statuses]
    assert statuses[0] == "starting" and statuses[-1] == "finished" and "stopped" not in statuses
    assert not session.message.startswith("finished")  # the badge says it: no doubled word
    progress = session.progress()
    assert progress.step == progress.total_steps == 20 and progress.fraction == 1.0


class StepChecks:
    """Wraps the session's per-step check (asked by train_iter before every step):
    records each answer, and sets ``parked`` just as the worker blocks on a pause."""

    def __init__(self, session, monkeypatch):
        self.answers, self.asked_before = [], []
        self.parked = threading.Event()
        original = session._should_stop
        checks = self

        class WatchedResume:
            def __init__(self, event):
                self.event = event

            def is_set(self):
                return self.event.is_set()

            def wait(self, timeout=None):
                checks.parked.set()
                return self.event.wait(timeout)

        def should_stop(stop_event, resume_event):
            requested = stop_event.is_set()  # was the stop asked before this check?
            answer = original(stop_event, WatchedResume(resume_event))
            self.answers.append(answer)
            self.asked_before.append(requested)
            return answer

        monkeypatch.setattr(session, "_should_stop", should_stop)


def test_stop_takes_effect_within_a_step_and_joins_the_worker(session, recorder, monkeypatch):
    checks = StepChecks(session, monkeypatch)
    session.start(LONG)
    assert recorder.first_snapshot.wait(120)
    assert wait_until(lambda: session.progress().step > 0)
    assert session.stop() is True
    # The status says so at once; stop() does not wait for the worker.
    assert session.status == "stopped" and session.message == "stopped by you"
    assert session.view.status == "stopped"
    assert session.wait_idle(120)
    # Counted, not timed: no step starts once the stop is asked. The step under way
    # finishes; the worker then ends at the next check (which answers "stop") or right
    # after that step's snapshot, whichever comes first.
    after = [a for a, asked in zip(checks.answers, checks.asked_before, strict=True) if asked]
    assert after in ([], [True])
    assert checks.answers.count(True) <= 1
    assert session.run.status == "stopped"
    assert wait_until(lambda: fx_threads() == [])
    assert session.stop() is False  # nothing left to stop


def test_pause_freezes_training_and_resume_continues(session, recorder, monkeypatch):
    checks = StepChecks(session, monkeypatch)
    session.start(LONG)
    assert recorder.first_snapshot.wait(120)
    assert session.pause() and session.status == "paused"
    assert checks.parked.wait(60)  # the worker blocks at its next step's check
    # Parked inside the check: no step, no row and no progress until Resume (and the
    # clock of the run stands still: elapsed time excludes the pause).
    frozen = len(session.run.rows), len(checks.answers), session.progress()
    assert (len(session.run.rows), len(checks.answers), session.progress()) == frozen
    assert session.resume() and session.status == "running"
    assert wait_until(lambda: len(session.run.rows) > frozen[0] + 2)
    checks.parked.clear()
    assert session.pause()
    assert checks.parked.wait(60)
    rows = len(session.run.rows)
    assert session.stop()  # a paused run stops too: the worker wakes, sees the stop, ends
    assert session.status == "stopped" and session.wait_idle(120)
    assert len(session.run.rows) == rows and checks.answers[-1] is True


def test_train_twice_never_runs_two_and_drops_the_old_runs_events(session, recorder):
    session.start(LONG)
    assert recorder.first_snapshot.wait(120)
    first = session._worker
    session.start(LONG)  # returns at once: the new worker waits for the old one
    assert session.generation == 2 and session.status == "starting"
    count = len(recorder.snapshots)
    assert wait_until(lambda: any(n == "fx-train-2" for n, _, _ in recorder.snapshots))
    # The second trained only once the first had ended; nothing of the first came after.
    assert not first.is_alive()
    late = [n for n, _, _ in recorder.snapshots[count:] if n != "fx-train-2"]
    assert late == []
    # The badge went from running straight to starting: never "stopped" in between.
    assert [s for _, s, _ in recorder.statuses if s == "stopped"] == []
    session.stop()


def test_changing_the_config_mid_run_stops_it_cleanly(session, recorder):
    session.start(LONG)
    assert recorder.first_snapshot.wait(120)
    assert session.set_config(LONG.replace(rule="bp"), reason="rule changed") == "stopped"
    assert session.status == "stopped" and "rule changed" in session.message
    assert session.config.rule == "bp" and session.wait_idle(120)
    # Idle: a new config stops nothing.
    assert session.set_config(QUICK) == ""


def test_no_thread_leaks_over_many_runs(recorder):
    before = set(threading.enumerate())
    session = TrainingSession(QUICK, on_status=recorder.status,
                              on_snapshot=recorder.snapshot, on_landscape=recorder.landscape,
                              landscape_interval=0.05, landscape_first=0.0)
    for k in range(3):
        session.start(LONG.replace(seed=k))
        assert wait_until(lambda: session.run is not None and len(session.run.rows) > 2)
    session.start(QUICK)
    assert wait_until(lambda: session.status == "finished")
    session.close(timeout=None)
    assert fx_threads() == []
    assert set(threading.enumerate()) - before == set()


def test_landscape_is_recomputed_in_the_background_and_at_the_end(recorder):
    session = TrainingSession(QUICK.replace(epochs=4), on_status=recorder.status,
                              on_snapshot=recorder.snapshot, on_landscape=recorder.landscape,
                              landscape_interval=0.2, landscape_first=0.0, landscape_resolution=5)
    try:
        session.start()
        assert wait_until(lambda: session.status == "finished")
        assert wait_until(lambda: not [t for t in fx_threads()
                                       if t.name.startswith("fx-landscape")])
        assert recorder.landscapes
        pca, surface = recorder.landscapes[-1]
        # The last landscape covers the whole trajectory, end point included.
        assert pca.steps[-1] == session.run.total_steps
        assert pca.n_points == len(session.run.trajectory.steps)
        assert surface.loss.shape == (5, 5) and torch.isfinite(torch.as_tensor(surface.loss)).all()
    finally:
        session.close(timeout=None)


def test_divergence_is_reported_in_plain_words(session, recorder):
    session.start(QUICK.replace(optimizer="sgd", lr=100.0))
    assert wait_until(lambda: not session.active)
    assert session.status == "diverged"
    # The badge says diverged; the message gives the step and the hint, with the lr.
    assert session.message.startswith("at step ") and "Lower the learning rate (now 100)" in (
        session.message)
    assert session.view.run.diverged_step is not None


def test_a_failure_in_the_worker_shows_a_message_not_a_traceback(session, recorder, monkeypatch,
                                                                 caplog):
    def no_network(cfg, stop=None):
        raise OSError("could not reach the dataset server (offline?)")

    monkeypatch.setattr(session, "_load_data", no_network)
    session.start()
    assert wait_until(lambda: not session.active)
    assert session.status == "error"
    assert session.message == "could not reach the dataset server (offline?)"
    assert "Traceback" not in session.message
    # The traceback is logged (the page's entry point sends it to the server log).
    assert any(r.name.startswith("fa_explore.app") and r.exc_info
               and r.exc_info[0] is OSError for r in caplog.records)
    # The session stays usable.
    monkeypatch.undo()
    session.start(QUICK)
    assert wait_until(lambda: session.status == "finished")


def test_pin_keeps_runs_labelled_by_what_differs_up_to_the_limit(session):
    with pytest.raises(ValueError, match="Nothing to pin"):
        session.pin()
    total = TrainingSession.MAX_PINNED + 1
    for seed in range(total):
        session.start(QUICK.replace(epochs=1, eval_every=10, seed=seed))
        assert wait_until(lambda: session.status == "finished")
        note = session.pin()
        assert "pinned run" in note
        with pytest.raises(ValueError, match="already pinned"):
            session.pin()
    assert "oldest was unpinned" in note
    assert len(session.pinned) == TrainingSession.MAX_PINNED >= 4
    labels = [label for label, _ in session.pinned_labels()]
    # The current config (the last seed) is compared too: each label names its seed.
    assert labels == [f"seed={s}" for s in range(1, total)]
    histories = [h for _, h in session.pinned_labels()]
    assert all(len(h) > 0 and "test_acc" in h for h in histories)
    session.clear_pinned()
    assert session.pinned_labels() == []


def test_pin_refuses_a_run_that_is_still_going(session, recorder):
    session.start(LONG)
    assert recorder.first_snapshot.wait(120)
    with pytest.raises(ValueError, match="Stop the run"):
        session.pin()
    session.stop()
    session.pin()
    assert session.pinned[0].status == "stopped"


def test_reset_forgets_the_run_but_keeps_pins(session):
    session.start()
    assert wait_until(lambda: session.status == "finished")
    session.pin()
    session.reset()
    assert session.status == "ready" and session.run is None and len(session.pinned) == 1


def test_export_saves_the_run_and_the_figures(session, tmp_path):
    import plotly.graph_objects as go

    with pytest.raises(ValueError, match="Nothing to export"):
        session.export(tmp_path / "none")
    with pytest.raises(ValueError, match="Nothing to export"):
        session.export_zip()
    session.start()
    assert wait_until(lambda: session.status == "finished")
    figure = go.Figure(go.Scatter(x=[0, 1], y=[1, 0]))
    folder = session.export(tmp_path / "export", figures={"curves": figure})
    assert folder == (tmp_path / "export").resolve()
    assert (folder / "run.json").is_file() and (folder / "weights.safetensors").is_file()
    html = (folder / "curves.html").read_text()
    assert "plotly.min.js" in html and (folder / "plotly.min.js").is_file()
    loaded = Run.load(folder)
    assert loaded.config == session.run.config.replace(device="cpu")  # load() picks the cpu
    assert len(loaded.rows) == len(session.run.rows)


def test_train_iter_should_stop_ends_the_run_between_two_steps():
    calls = []

    def should_stop():
        calls.append(1)
        return len(calls) == 7  # asked before step 7: six steps were taken

    snapshots = list(train_iter(QUICK.replace(eval_every=4), should_stop=should_stop))
    last = snapshots[-1]
    assert last.status == last.run.status == "stopped" and last.row is None
    assert last.step == 6 and len(calls) == 7
    assert [s.step for s in snapshots[:-1]] == [0, 4]  # evaluations before the stop


# ------------------------------------------------------------ interleavings
class Gate:
    """A point the worker waits at until the test opens it (``reached`` says it
    got there). Installed as one of the session's hooks."""

    def __init__(self):
        self.reached, self.opened = threading.Event(), threading.Event()

    def __call__(self):
        self.reached.set()
        assert self.opened.wait(120)


def returns(call):
    """Run ``call`` in a helper thread; an Event set once it has returned (so a
    call that blocks on a worker shows as an Event that is never set)."""
    done = threading.Event()
    result = []

    def run():
        result.append(call())
        done.set()

    threading.Thread(target=run, daemon=True).start()
    done.result = result
    return done


def test_pause_racing_the_end_of_a_run_never_leaves_it_running(session, recorder):
    gate = Gate()
    session.hooks["before_end"] = gate
    session.start(QUICK)
    assert gate.reached.wait(120)  # training is over, the outcome not yet set
    # The worker has left the loop: a pause now must not leave "paused"/"running"
    # behind with no worker.
    paused = session.pause()
    gate.opened.set()
    assert session.wait_idle(120)
    assert session.status == "finished" and not session.active
    assert session.resume() is False and session.pause() is False
    # Either the pause lost the race (refused) or the end overrode it.
    assert paused in (True, False)


def test_pause_after_the_worker_finished_is_refused(session):
    session.hooks["snapshot"] = lambda: None
    session.start(QUICK)
    assert wait_until(lambda: session.status == "finished")
    assert session.pause() is False and session.status == "finished"


def test_stop_and_start_never_wait_for_a_stuck_worker(session, recorder, monkeypatch):
    stuck = threading.Event()
    calls = []

    def load(cfg, stop=None):
        calls.append(cfg.seed)
        if len(calls) == 1:  # the first run's data "download" hangs until released
            assert stuck.wait(120)
        return original(cfg, stop)

    original = session._load_data
    monkeypatch.setattr(session, "_load_data", load)
    session.start(QUICK)
    assert wait_until(lambda: calls == [0])
    stopped = returns(session.stop)
    assert stopped.wait(60) and stopped.result == [True]  # returned while the worker hangs
    assert session.status == "stopped"
    started = returns(lambda: session.start(QUICK.replace(seed=1)))
    assert started.wait(60) and session.status == "starting"
    again = returns(session.stop)
    assert again.wait(60) and session.status == "stopped"
    final = returns(lambda: session.start(QUICK.replace(seed=2)))
    assert final.wait(60)
    stuck.set()  # the "download" ends: the old workers end, the last run trains
    assert wait_until(lambda: session.status == "finished")
    assert session.view.config.seed == 2
    assert wait_until(lambda: not [t for t in fx_threads() if t.name.startswith("fx-train")])


def test_views_are_immutable_snapshots(session, recorder):
    session.start(LONG)
    assert wait_until(lambda: session.view is not None and len(session.view.rows) >= 3)
    view = session.view
    rows = view.rows
    assert isinstance(rows, tuple)
    frame = view.history
    assert len(frame) == len(rows)
    assert wait_until(lambda: len(session.run.rows) > len(rows) + 2)
    # The worker went on appending to the run; the view it published did not move.
    assert view.rows is rows and len(view.history) == len(rows)
    session.stop()


# ------------------------------------------------------------- live settings
def test_live_settings_change_the_optimizer_between_steps_without_a_restart(session, recorder):
    cfg = LONG.replace(optimizer="sgd", lr=0.01, momentum=0.5)
    session.start(cfg)
    assert recorder.first_snapshot.wait(120)
    generation = session.generation
    assert session.set_config(cfg.replace(lr=0.002, momentum=0.9)) == "live"
    groups = lambda: [g for o in session.run.optimizers for g in o.param_groups]  # noqa: E731
    assert wait_until(lambda: all(g["lr"] == 0.002 and g["momentum"] == 0.9
                                  for g in groups()))
    assert session.generation == generation and session.status == "running"
    changes = {c.name: (c.old, c.new) for c in session.view.live_changes}
    assert changes == {"lr": (0.01, 0.002), "momentum": (0.5, 0.9)}
    assert session.matches_controls()  # the run shown is what the controls say
    assert wait_until(lambda: session.view.rows[-1]["lr"] == 0.002)  # logged as it trains
    # A structural change restarts nothing silently: it stops the run.
    assert session.set_config(cfg.replace(lr=0.002, momentum=0.9, seed=5)) == "stopped"


def test_a_live_learning_rate_follows_the_schedule_and_spares_a_rules_own_group(session):
    cfg = RunConfig(rule="dkp", hidden=(16,), train_size=200, batch_size=20, epochs=10_000,
                    eval_every=5, lr_schedule="cosine",
                    rule_options={"feedback_optimizer": "adam"})
    session.start(cfg)
    assert wait_until(lambda: session.view is not None and session.status == "running")
    base = session.view.config.lr
    session.set_config(cfg.replace(lr=base / 10))
    run = session.run
    assert wait_until(lambda: run.schedulers[0].base_lrs == [base / 10])
    # D's own Adam (feedback_lr) keeps its learning rate.
    adam = [o for o in run.optimizers if isinstance(o, torch.optim.Adam)][0]
    assert adam.param_groups[0]["lr"] == pytest.approx(cfg.rule_option("feedback_lr"), rel=1e-3)
    session.stop()


def test_step_trains_one_evaluation_then_pauses_again(session, recorder, monkeypatch):
    checks = StepChecks(session, monkeypatch)
    session.start(LONG)
    assert recorder.first_snapshot.wait(120)
    assert session.pause() and checks.parked.wait(60)
    rows = len(session.view.rows)
    checks.parked.clear()
    assert session.step() is True
    assert checks.parked.wait(60)  # parked again after one evaluation
    assert len(session.view.rows) == rows + 1
    assert session.status == "paused" and "paused at step" in session.message
    frozen = session.progress()
    assert session.progress() == frozen  # the clock stands still while paused
    session.stop()


# ------------------------------------------------------------------ warm-up
def test_warm_up_builds_only_a_small_model_and_is_cancelled_by_train(recorder, monkeypatch):
    import fa_explore.app.session as session_module

    built = []
    real = session_module.train_iter

    def recording(cfg, data=None, should_stop=None):
        built.append((threading.current_thread().name, cfg))
        return real(cfg, data, should_stop=should_stop)

    monkeypatch.setattr(session_module, "train_iter", recording)
    big = RunConfig(hidden=(2048, 2048, 2048), train_size=200)
    assert big.parameter_count() > session_module.WARM_UP_MAX_PARAMETERS
    session = TrainingSession(big, on_status=recorder.status, landscape_interval=None)
    gate = Gate()
    session.hooks["warm_up"] = gate
    try:
        warm = session.warm_up()
        assert gate.reached.wait(120)
        session.start(QUICK)  # cancels the warm-up
        gate.opened.set()
        warm.join(120)
        assert not warm.is_alive()
        assert [t for t, _ in built if t == "fx-warmup"] == []  # cancelled before building
        assert wait_until(lambda: session.status == "finished")
    finally:
        session.close(timeout=None)
    # Not cancelled: the warm-up's model is the small version.
    session = TrainingSession(big, landscape_interval=None)
    try:
        session.warm_up().join(120)
    finally:
        session.close(timeout=None)
    warm_cfgs = [c for t, c in built if t == "fx-warmup"]
    assert len(warm_cfgs) == 1
    small = warm_cfgs[0]
    assert small.hidden == (32, 32) and small.parameter_count() <= (
        session_module.WARM_UP_MAX_PARAMETERS)
    assert (small.rule, small.dataset, small.train_size) == (big.rule, big.dataset, 200)


def test_warm_up_runs_the_landscapes_pca_before_the_first_run(monkeypatch):
    import fa_explore.analysis as analysis

    calls = []
    monkeypatch.setattr(analysis, "trajectory_pca",
                        lambda points, **kwargs: calls.append(tuple(points.shape)))
    session = TrainingSession(QUICK, landscape_interval=None)
    try:
        session.warm_up().join(120)
        assert calls == [(3, 4)]
    finally:
        session.close(timeout=None)


def test_the_first_run_reuses_the_data_the_warm_up_is_loading(recorder, monkeypatch):
    import fa_explore.app.session as session_module

    loads, release = [], threading.Event()
    real = session_module.dataset_from_config

    def slow_load(cfg):
        loads.append(threading.current_thread().name)
        assert release.wait(120)
        return real(cfg)

    monkeypatch.setattr(session_module, "dataset_from_config", slow_load)
    session = TrainingSession(QUICK, on_status=recorder.status, landscape_interval=None)
    try:
        session.warm_up()
        assert wait_until(lambda: loads == ["fx-warmup"])
        session.start()
        release.set()
        assert wait_until(lambda: session.status == "finished")
        assert loads == ["fx-warmup"]  # loaded once, by the warm-up
    finally:
        session.close(timeout=None)


# --------------------------------------------------------- export / upload
def test_export_zip_holds_the_run_and_figures_and_writes_nothing_here(session, tmp_path,
                                                                       monkeypatch):
    import io
    import zipfile

    import plotly.graph_objects as go

    monkeypatch.chdir(tmp_path)
    session.start()
    assert wait_until(lambda: session.status == "finished")
    name, data = session.export_zip({"curves": go.Figure(go.Scatter(x=[0, 1], y=[1, 0]))})
    assert name.startswith("fa-explore-fa-digits-") and name.endswith(".zip")
    members = {Path(m).name for m in zipfile.ZipFile(io.BytesIO(data)).namelist()}
    assert {"run.json", "weights.safetensors", "curves.html", "plotly.min.js"} <= members
    assert list(tmp_path.iterdir()) == []  # nothing written into the working folder
    # ... and it loads back: shown, pinnable, with its own config in the controls.
    other = TrainingSession(RunConfig(rule="bp"), landscape_interval=None)
    view = other.load_zip(data, name)
    assert other.status == "loaded" and view.source == "loaded"
    assert other.config == session.run.config.replace(device="cpu")
    assert len(view.rows) == len(session.view.rows) and "test accuracy" in other.message
    assert "pinned run 1" in other.pin()


def test_load_zip_refuses_bad_files_in_plain_words(session, tmp_path):
    import io
    import zipfile

    def archive(**members):
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as z:
            for member, payload in members.items():
                z.writestr(f"run/{member}", payload)
        return buffer.getvalue()

    with pytest.raises(ValueError, match="not a zip"):
        session.load_zip(b"hello", "notes.txt")
    with pytest.raises(ValueError, match="no weights.safetensors"):
        session.load_zip(archive(**{"run.json": "{}"}), "half.zip")
    session.start()
    assert wait_until(lambda: session.status == "finished")
    _, data = session.export_zip()
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        run_json = next(z.read(n) for n in z.namelist() if n.endswith("run.json"))
    corrupt = archive(**{"run.json": run_json, "weights.safetensors": b"0" * 64})
    with pytest.raises(ValueError) as error:
        session.load_zip(corrupt, "bad/../corrupt.zip")
    text = str(error.value)
    assert "checksum" in text and text.startswith("corrupt.zip")
    assert "/tmp" not in text and "fa-explore-upload" not in text  # no server paths
    assert session.status == "finished"  # the shown run is untouched


# ------------------------------------------------------------ status words
def test_chance_warning_closed_forms():
    def rows(accs):
        return [{"test_acc": a} for a in accs]

    # Digits (10 classes): chance 10%; 90% then 21% is a collapse (the review's case).
    warning = chance_warning(rows([0.1, 0.6, 0.9, 0.21]), 10)
    assert "fell to 21%" in warning and "chance (10% for 10 classes)" in warning
    assert "learning rate" in warning
    assert chance_warning(rows([0.1, 0.6, 0.9, 0.85]), 10) == ""  # still learning
    assert chance_warning(rows([0.1, 0.12, 0.11, 0.1]), 10) == ""  # never above chance
    # Two classes: chance 50%; 55% after 95% is back at chance, 62% is not.
    assert chance_warning(rows([0.5, 0.95, 0.55]), 2) != ""
    assert chance_warning(rows([0.5, 0.9, 0.62]), 2) == ""
    assert chance_warning(rows([0.9, float("nan"), 0.2]), 10) == ""  # too few points


def test_divergence_text_names_the_step_and_the_learning_rate():
    class FakeRun:
        diverged_step = 57
        config = RunConfig(optimizer="sgd", lr=1.0).resolve()

    rows = ({"step": 0, "train_loss": 2.3}, {"step": 57, "train_loss": 4.1e4})
    view = RunView(1, FakeRun(), FakeRun.config, rows, "diverged", 57, 100)
    assert divergence_text(view) == ("at step 57: the training loss reached 4.1e+04 (it "
                                     "started at 2.3). Lower the learning rate (now 1).")
    nan_view = RunView(1, FakeRun(), FakeRun.config, rows[:1], "diverged", 57, 100)
    assert "became infinite or NaN" in divergence_text(nan_view)


def test_warm_up_config_is_small_or_none():
    assert warm_up_config(RunConfig(hidden=(2048, 2048))).hidden == (32, 32)
    cnn = warm_up_config(RunConfig(model="cnn", channels=(512, 512), dataset="mnist1d"))
    assert cnn.channels == (8,)


def test_training_uses_the_thread_policy_and_reports_it(recorder):
    before = torch.get_num_threads()
    session = TrainingSession(QUICK.replace(threads=2), landscape_interval=None)
    seen = []
    session.hooks["snapshot"] = lambda: seen.append(torch.get_num_threads())
    try:
        session.start()
        assert wait_until(lambda: session.status == "finished")
        assert set(seen) == {2}  # in the worker, while it trains
        assert session.progress().threads == "2 threads (threads=2)"
    finally:
        session.close(timeout=None)
        torch.set_num_threads(before)
