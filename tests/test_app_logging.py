"""Logging: the library only names its loggers (records propagate to the host and
to pytest's caplog); the page's entry point decides where they go."""

import json
import logging
import sys
from pathlib import Path

from fa_explore import RunConfig
from fa_explore.app.session import TrainingSession
from fa_explore.app.session import log as session_log

NOTEBOOK = Path(__file__).parent.parent / "apps" / "alignment_dashboard.ipynb"


def fa_explore_loggers():
    return [logger for name, logger in logging.Logger.manager.loggerDict.items()
            if name.split(".")[0] == "fa_explore" and isinstance(logger, logging.Logger)]


def test_library_loggers_set_up_no_handlers_and_propagate():
    import fa_explore.app.dashboard  # noqa: F401 - every app module imported

    assert session_log.name == "fa_explore.app.session"
    for logger in fa_explore_loggers():
        assert logger.propagate, logger.name
        assert not [h for h in logger.handlers
                    if not getattr(h, "fa_explore_page", False)], logger.name


def test_a_failing_listener_is_logged_where_caplog_sees_it(caplog):
    def broken(session):
        raise RuntimeError("drawing failed")

    session = TrainingSession(RunConfig(rule="bp", hidden=(4,)), on_status=broken,
                              landscape_interval=None)
    with caplog.at_level(logging.ERROR, logger="fa_explore"):
        session._set_status(session.generation, "ready", "a status no one can draw")
    records = [r for r in caplog.records if r.name == "fa_explore.app.session"]
    assert [r.getMessage() for r in records] == ["dashboard listener failed"]
    assert records[0].exc_info[0] is RuntimeError


def test_the_page_sends_records_to_the_kernels_stderr_once():
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    setup = "".join(cells[0]["source"])
    logger = logging.getLogger("fa_explore")
    before, level = list(logger.handlers), logger.level
    try:
        for _ in range(2):  # the cell may be run again in JupyterLab
            exec(compile(setup, str(NOTEBOOK), "exec"), {})
        added = [h for h in logger.handlers if h not in before]
        assert len(added) == 1 and added[0].stream is sys.__stderr__
        assert logger.propagate and logger.getEffectiveLevel() <= logging.INFO
    finally:
        logger.handlers[:] = before
        logger.setLevel(level)
    assert "Dashboard(" in "".join(cells[-1]["source"])
