"""The classroom load test: N students on one Voilà server, each a real Chromium
page (a browser context of its own), arriving together; each presses Train with a
different rule, and Stop ``LOAD_SECONDS`` later.

Run it with ``make load-test`` (``LOAD_N``, default 8; ``LOAD_SECONDS``, default 60)
or ``pytest tests/browser/test_classroom_load.py --load-test``; the default run
deselects it (marker ``load``). ``FA_EXPLORE_LOAD_N``, ``FA_EXPLORE_LOAD_SECONDS``
and ``FA_EXPLORE_LOAD_POOL`` (preheated kernels; default voila.json's) set it up.
The kernels use the thread policy's ``auto`` (the test run's own pinned
``FA_EXPLORE_THREADS`` is not passed on).

Reported per page (a markdown table and JSON in benchmarks/results/, e.g.
``load_test_N8.md`` and ``.json``): page ready, Train -> first points, Stop ->
stopped, steps done in LOAD_SECONDS, the kernel's memory (RSS and USS, psutil) and
the thread choice the page shows. Asserted: only what must hold however busy the
machine is: every page becomes ready, draws its first points, makes progress and
stops, and no page's kernel is left once the pages are closed. The issue's number
targets (median Stop <= 1 s, first points <= 10 s, memory <= 600 MB per kernel on
2 cores with N = 8) are reported against, in the table's header, not asserted.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from unittest import mock

import pytest
from load_report import TARGETS, markdown, rules_for, steps_of, summary
from pages import POINTS_JS, TIMEOUT_MS, loadavg

from fa_explore.threads import ENV

pytestmark = [pytest.mark.browser, pytest.mark.load]

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "benchmarks" / "results"
N = int(os.environ.get("FA_EXPLORE_LOAD_N", "8"))
SECONDS = float(os.environ.get("FA_EXPLORE_LOAD_SECONDS", "60"))
POOL = os.environ.get("FA_EXPLORE_LOAD_POOL", "")
# A run that outlasts the test, evaluated every 50 steps (points keep coming).
RUN_QUERY = "?rule={rule}&epochs=2000&eval_every=50"
GONE_WITHIN = 120.0  # seconds for a closed page's kernel to go: sanity, not a budget
# Seconds a stage may take on any page before the test calls it broken: many kernels
# starting at once on 2 cores are slow, and what counts here is that they get there.
STAGE_TIMEOUT = float(os.environ.get("FA_EXPLORE_LOAD_STAGE_TIMEOUT", "600"))
POLL = 0.1  # seconds between two rounds of checking every page

READY_JS = """() => {
  const s = document.querySelector('.fx-status .fx-state');
  const g = document.querySelector('.fx-plot-curves .js-plotly-plot');
  return !!(s && s.textContent === 'ready' && g && g._fullData);
}"""
STATE_JS = """(word) => {
  const s = document.querySelector('.fx-status .fx-state');
  return !!s && s.textContent === word;
}"""
FIRST_POINTS_JS = f"() => {{ const k = ({POINTS_JS})('.fx-plot-curves');" \
                  " return !!k && k.some(m => m >= 1); }"
PROGRESS_JS = "() => (document.querySelector('.fx-eta') || {}).textContent || ''"


def kernel_id(page) -> str:
    config = page.evaluate("() => document.getElementById('jupyter-config-data').textContent")
    return json.loads(config)["kernelId"]


def wait_all(pages, js: str, since: dict, arg=None, timeout: float = STAGE_TIMEOUT) -> dict:
    """Poll every page until ``js`` holds on it; seconds from ``since[page]`` to the
    first poll that saw it (None for pages where it never held within ``timeout``)."""
    seen: dict = {}
    deadline = time.perf_counter() + timeout
    while len(seen) < len(pages) and time.perf_counter() < deadline:
        for page in pages:
            if page in seen:
                continue
            try:
                held = page.evaluate(js, arg)
            except Exception:  # noqa: BLE001 - a page still navigating: try again
                held = False
            if held:
                seen[page] = time.perf_counter() - since[page]
        time.sleep(POLL)
    return {page: seen.get(page) for page in pages}


def kernel_memory(server) -> dict[str, dict[str, float]]:
    """RSS and USS (MB) of each kernel process, by kernel id (from its connection file)."""
    import psutil

    out = {}
    for pid in server.kernel_pids():
        try:
            process = psutil.Process(pid)
            match = re.search(r"kernel-([0-9a-f-]+)\.json", " ".join(process.cmdline()))
            info = process.memory_full_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        if match:
            out[match.group(1)] = {"rss_mb": info.rss / 2**20,
                                   "uss_mb": getattr(info, "uss", info.rss) / 2**20}
    return out


def server_memory_mb(server) -> float | None:
    import psutil

    try:
        return psutil.Process(server.process.pid).memory_info().rss / 2**20
    except psutil.NoSuchProcess:
        return None


def stuck(pages, times: dict, stage: str, artifacts: Path) -> str:
    """What the pages a stage never reached show (status line, a screenshot each)."""
    lines = []
    for index, page in enumerate(pages):
        if times[page] is not None:
            continue
        shot = artifacts / f"load-stuck-{stage}-{index}.png"
        try:
            text = page.evaluate(
                "() => (document.querySelector('.fx-status') || document.body).innerText")
            page.screenshot(path=str(shot))
        except Exception as exc:  # noqa: BLE001 - report what can be read
            text = f"<unreadable: {exc}>"
        lines.append(f"page {index}: {text[:300]!r} (screenshot {shot.name})")
    return f"{stage}: " + "; ".join(lines)


@pytest.fixture(scope="module")
def load_server(voila_starter):
    args = (f"--VoilaConfiguration.default_pool_size={POOL}",) if POOL else ()
    # The kernels get the thread policy's auto, as in a classroom.
    with mock.patch.dict(os.environ):
        os.environ.pop(ENV, None)
        with voila_starter(f"voila-server-load-N{N}.log", args) as server:
            yield server


@pytest.mark.timeout(1800 + 2 * SECONDS)
def test_classroom_load(browser, load_server, artifacts, capsys):
    server = load_server
    rules = rules_for(N)
    contexts = [browser.new_context(viewport={"width": 1400, "height": 900}) for _ in rules]
    pages = [context.new_page() for context in contexts]
    errors = {page: [] for page in pages}
    for page in pages:
        page.on("pageerror", lambda error, page=page: errors[page].append(str(error)))
    load_before = loadavg()
    kernels: dict = {}
    try:
        # Everyone arrives at once.
        opened = {}
        for page, rule in zip(pages, rules, strict=True):
            opened[page] = time.perf_counter()
            page.goto(server.url + RUN_QUERY.format(rule=rule), wait_until="commit",
                      timeout=TIMEOUT_MS)
        ready = wait_all(pages, READY_JS, opened)
        assert all(v is not None for v in ready.values()), stuck(pages, ready, "ready", artifacts)
        kernels = {page: kernel_id(page) for page in pages}

        trained = {}
        for page in pages:
            trained[page] = time.perf_counter()
            page.click(".fx-train", force=True, timeout=STAGE_TIMEOUT * 1000)
        first = wait_all(pages, FIRST_POINTS_JS, trained)
        assert all(v is not None for v in first.values()), stuck(pages, first, "first-points",
                                                                 artifacts)

        time.sleep(max(0.0, max(trained.values()) + SECONDS - time.perf_counter()))
        load_during = loadavg()
        memory = kernel_memory(server)
        progress = {page: page.evaluate(PROGRESS_JS) for page in pages}

        stopped = {}
        for page in pages:
            stopped[page] = time.perf_counter()
            # force: a student's click lands whether or not the starved page has
            # painted two stable frames (Playwright's actionability wait, which at
            # N = 8 on 2 cores timed out); what is measured is the page's answer.
            page.click(".fx-stop", force=True, timeout=STAGE_TIMEOUT * 1000)
        stop = wait_all(pages, STATE_JS, stopped, arg="stopped")
        not_stopped = stuck(pages, stop, "stop", artifacts) if None in stop.values() else ""
        server_rss = server_memory_mb(server)
    finally:
        for context in contexts:
            for page in context.pages:
                page.close(run_before_unload=True)  # as closing the tab
    closed = time.perf_counter()
    left = [k for k in kernels.values() if server.kernel_exists(k)]
    while left and time.perf_counter() - closed < GONE_WITHIN:
        time.sleep(0.5)
        left = [k for k in left if server.kernel_exists(k)]
    for context in contexts:
        context.close()

    rows = []
    for index, (page, rule) in enumerate(zip(pages, rules, strict=True)):
        mem = memory.get(kernels[page], {})
        threads = re.search(r"\d+ threads? \([^)]*\)", progress[page])
        rows.append({"index": index, "rule": rule, "kernel": kernels[page],
                     "page_ready_s": ready[page], "first_points_s": first[page],
                     "stop_s": stop[page], "steps": steps_of(progress[page]),
                     "rss_mb": mem.get("rss_mb"), "uss_mb": mem.get("uss_mb"),
                     "threads": threads.group(0) if threads else None,
                     "page_errors": errors[page]})
    result = {"n": N, "seconds": SECONDS, "pool": server.pool_size,
              "cpus": len(os.sched_getaffinity(0)), "load_before": load_before,
              "load_during": load_during, "load_after": loadavg(),
              "server_rss_mb": server_rss, "pages": rows, "summary": summary(rows),
              "targets": TARGETS, "kernels_left": left,
              "kernels_left_after_s": round(time.perf_counter() - closed, 1),
              "kernel_processes_after": len(server.kernel_pids())}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"load_test_N{N}.json").write_text(json.dumps(result, indent=2))
    text = markdown(result)
    (RESULTS / f"load_test_N{N}.md").write_text(text)
    with capsys.disabled():
        print("\n" + text)

    assert all(r["steps"] for r in rows), f"a page made no progress: {rows}"
    assert not_stopped == "", not_stopped
    assert left == [], f"kernels of closed pages still there: {left}"
