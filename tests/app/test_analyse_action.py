"""The dashboard's Analyse action without a browser: the numbers are the library's
analyses on the run's own data, a stop ends it between steps, a failure is a
message, and in the Dashboard a finished and a pinned run are analysed."""

import threading

import numpy as np
import pytest

pytest.importorskip("ipywidgets")
pytest.importorskip("anywidget")

from fa_explore.analysis import attack_accuracy, hessian_eigenvalues, hessian_trace  # noqa: E402
from fa_explore.app.analyse_state import (  # noqa: E402
    AnalyseSession,
    analyse_run,
    analysis_batches,
)
from fa_explore.app.analysis_views import analysis_table_html  # noqa: E402

from waiting import wait_until

SMALL = {"k": 2, "trace_samples": 4, "eps": (0.0, 0.1)}


def test_analyse_gives_the_analysis_functions_numbers(fa_run_and_bp_copy):
    run, _ = fa_run_and_bp_copy
    result = analyse_run(run, "fa run", key=7, **SMALL)
    assert result.status == "done" and result.key == 7 and result.label == "fa run"
    xh, yh, xa, ya = analysis_batches(run)
    assert len(xh) == min(256, len(run.data.x_train))
    top = hessian_eigenvalues(run.model, xh, yh, k=2, tol=1e-3)
    np.testing.assert_allclose(result.eigenvalues, top, rtol=1e-6)
    trace = hessian_trace(run.model, xh, yh, samples=4)
    assert result.trace == pytest.approx(trace.mean) and result.trace_stderr == pytest.approx(
        trace.stderr)
    frame = result.robustness
    assert list(frame["eps"]) == [0.0, 0.1] and set(frame["run"]) == {"fa run"}
    for eps, accuracy in zip(frame["eps"], frame["accuracy"], strict=True):
        assert accuracy == pytest.approx(attack_accuracy(run.model, xa, ya, eps))
    table = analysis_table_html([result])
    assert "<caption>fa run · done</caption>" in table and "FGSM accuracy" in table


def test_a_stopped_analysis_keeps_what_it_has(fa_run_and_bp_copy):
    run, _ = fa_run_and_bp_copy
    seen = []
    result = analyse_run(run, "fa run", on_progress=seen.append,
                         should_stop=lambda: len(seen) >= 1, **SMALL)
    assert result.status == "stopped" and len(result.eigenvalues) == 2
    assert result.trace is None and result.robustness is None


class Broken:
    """A run whose data cannot be had (a loaded run offline, say)."""

    @property
    def data(self):
        raise ValueError("dataset mnist is not downloaded")


def test_a_failing_analysis_is_a_message():
    changes = threading.Event()
    session = AnalyseSession(on_change=lambda s: changes.set())
    with pytest.raises(ValueError, match="Nothing to analyse"):
        session.start(None, "none", 0)
    session.start(Broken(), "pin 1", 3)
    assert session.wait_idle(60)
    assert session.status == "failed" and changes.is_set()
    assert session.message == "pin 1: the analysis failed: dataset mnist is not downloaded"
    (result,) = session.results
    assert result.status == "failed" and result.key == 3
    assert "not downloaded" in analysis_table_html(session.results)
    session.forget([])  # the run is gone: so is its result
    assert session.results == ()
    session.close()


@pytest.fixture
def dashboard():
    from fa_explore.app import Dashboard

    made = Dashboard(query="hidden=[4]&train_size=60&eval_size=32&batch_size=20&epochs=1",
                     landscape_interval=None, warm_up=False,)
    made.analyse_panel.session.options = dict(SMALL)
    yield made
    made.close(timeout=None)
    assert not [t for t in threading.enumerate() if t.name.startswith("fx-") and t.is_alive()]


def test_analyse_a_finished_then_a_pinned_run_in_the_dashboard(dashboard):
    panel = dashboard.analyse_panel
    assert panel.analyse.disabled and "Let a run finish" in panel.status.value
    dashboard.train.click()
    assert wait_until(lambda: dashboard.session.status == "finished")
    assert wait_until(lambda: not panel.analyse.disabled)
    assert [label for label, _ in panel.which.options] == ["this run: fa on digits"]
    panel.analyse.click()
    assert wait_until(lambda: "analysed in" in panel.status.value)
    assert "<caption>this run: fa on digits · done</caption>" in panel.table.value
    assert wait_until(lambda: panel.plot.layout.display == "" and panel.plot.trace_lengths()
                      == [2])
    sent = panel.plot.seq
    assert panel.render() is False and panel.plot.seq == sent  # nothing new: nothing sent
    dashboard.pin.click()
    # Pinned, the run and its analysis are named "pin 1".
    assert wait_until(lambda: "<caption>pin 1: fa on digits · done</caption>"
                      in panel.table.value)
    assert [label for label, _ in panel.which.options] == ["pin 1: fa on digits"]
    dashboard.unpin.click()  # still the run shown
    assert wait_until(lambda: "<caption>this run: fa on digits" in panel.table.value)
    dashboard.reset.click()  # gone: so is its analysis
    assert wait_until(lambda: panel.table.value == "" and panel.analyse.disabled)
