"""The dashboard's state logic (fa_explore.app.session) without widgets: one run at
a time in a worker thread, stop / pause within a step, generation counter, no
leaked threads, pinned runs, divergence and failure messages, export."""

import threading

import pytest
import torch

from fa_explore import Run, RunConfig, train_iter
from fa_explore.app.session import TrainingSession

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
    assert generation == 1 and session.status == "running"
    assert wait_until(lambda: session.status == "finished")
    run = session.run
    assert isinstance(run, Run) and run.status == "finished"
    steps = [step for _, step, _ in recorder.snapshots]
    assert steps[0] == 0 and steps[-1] == run.total_steps == 20
    assert all(name == "fx-train-1" for name, _, _ in recorder.snapshots)
    assert "test accuracy" in session.message
    assert [s for _, s, _ in recorder.statuses][-1] == "finished"
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
    # Counted, not timed: no step starts once the stop is asked. The step under way
    # finishes; the worker then ends at the next check (which answers "stop") or right
    # after that step's snapshot, whichever comes first.
    after = [a for a, asked in zip(checks.answers, checks.asked_before, strict=True) if asked]
    assert after in ([], [True])
    assert checks.answers.count(True) <= 1
    assert session.status == "stopped" and session.message == "stopped by you"
    assert session.run.status == "stopped"
    assert fx_threads() == []  # stop() joined the worker
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
    assert fx_threads() == [] and session.status == "stopped"
    assert len(session.run.rows) == rows and checks.answers[-1] is True


def test_train_twice_never_runs_two_and_drops_the_old_runs_events(session, recorder):
    session.start(LONG)
    assert recorder.first_snapshot.wait(120)
    session.start(LONG)
    assert session.generation == 2
    # The first worker was joined before the second started.
    assert [t.name for t in fx_threads() if t.name.startswith("fx-train")] == ["fx-train-2"]
    count = len(recorder.snapshots)
    assert wait_until(lambda: any(n == "fx-train-2" for n, _, _ in recorder.snapshots))
    late = [n for n, _, _ in recorder.snapshots[count:] if n != "fx-train-2"]
    assert late == []
    assert (1, "stopped", "stopped: a new run was started") in recorder.statuses
    session.stop()


def test_changing_the_config_mid_run_stops_it_cleanly(session, recorder):
    session.start(LONG)
    assert recorder.first_snapshot.wait(120)
    assert session.set_config(LONG.replace(rule="bp"), reason="rule changed") is True
    assert session.status == "stopped" and "rule changed" in session.message
    assert session.config.rule == "bp" and fx_threads() == []
    # Idle: a new config stops nothing.
    assert session.set_config(QUICK) is False


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
    assert "diverged at step" in session.message and "learning rate" in session.message


def test_a_failure_in_the_worker_shows_a_message_not_a_traceback(session, recorder, monkeypatch,
                                                                 caplog):
    def no_network(cfg):
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
