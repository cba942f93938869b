"""End-to-end: how the Voilà server serves the dashboard (voila.json) — preheated
kernels, kernels that go when their page goes, and a page that needs no internet.

- A shared link served from a preheated kernel shows the link's settings (the
  notebook reads QUERY_STRING only once the request has arrived).
- The page requests nothing from any host but the server, and Font Awesome (the
  buttons' icons) comes from the server too.
- Reloading a page five times leaves one kernel for it: each reload's beacon shuts
  the old kernel down (the server hands the page the ``_xsrf`` cookie the beacon
  needs; before, every beacon got ``403 '_xsrf' argument missing``).
- A closed page's kernel goes at once; a page that vanished without saying goodbye
  (a crash, a lost network) and a page fetched without a browser (curl, a health
  check) have their kernels culled: this module's server culls after 15 s
  instead of voila.json's minutes, to keep the test short, and the two are left
  at the same moment so that one wait covers both.
- Its kernels import fa_explore from this checkout (the fixtures set PYTHONPATH).

Timings (with the load average) go to test-artifacts/browser-timings.txt and are
printed; the bounds asserted are sanity bounds, not budgets.
"""

from __future__ import annotations

import json
import re
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from pages import LONG_RUN, TIMEOUT_MS, Timings, loadavg, wait_state

pytestmark = pytest.mark.browser

CULL_AFTER = 15  # seconds, this module's server (voila.json: 300 and 60)
CULL_INTERVAL = 2
SERVER_ARGS = (f"--MappingKernelManager.cull_idle_timeout={CULL_AFTER}",
               f"--MappingKernelManager.cull_interval={CULL_INTERVAL}",
               f"--ClassroomKernelManager.cull_unconnected_timeout={CULL_AFTER}",
               # The pool refills at once (voila.json waits 5 s), so that the reloads
               # below wait less for a warm kernel.
               "--VoilaKernelManager.fill_delay=0")
GONE_WITHIN = 60  # seconds: sanity bound for a kernel to go
SHARED_LINK = "?" + urllib.parse.urlencode(
    {"rule": "dfa", "hidden": "[64,64]", "lr": "0.0005"})
LOCAL_HOSTS = {"127.0.0.1"}


@pytest.fixture(scope="module")
def timings(artifacts):
    return Timings(artifacts / "browser-timings.txt")


@pytest.fixture(scope="module")
def server(voila_starter):
    with voila_starter("voila-server-kernels.log", SERVER_ARGS) as server:
        yield server


@pytest.fixture(scope="module")
def context(browser, server):
    """One browser profile for the module, as a student's browser: closing a page
    leaves the rest running (a page of its own context would take its beacon along)."""
    context = browser.new_context(viewport={"width": 1500, "height": 1400})
    yield context
    context.close()


def report(timings, capsys, text):
    timings.add(capsys, f"{text} (load average {loadavg()})")


def wait_ready(page):
    page.wait_for_selector(".fx-status .fx-state:text-is('ready')", timeout=TIMEOUT_MS)
    page.wait_for_function(
        "() => { const g = document.querySelector('.fx-plot-curves .js-plotly-plot');"
        " return g && g._fullData; }", timeout=TIMEOUT_MS)


def kernel_id(page) -> str:
    config = page.evaluate(
        "() => document.getElementById('jupyter-config-data').textContent")
    return json.loads(config)["kernelId"]


def open_page(context, url, errors=None):
    """A page on the dashboard once its widgets are ready; (page, seconds)."""
    page = context.new_page()
    if errors is not None:
        page.on("pageerror", lambda error: errors.append(str(error)))
    started = time.perf_counter()
    page.goto(url, wait_until="domcontentloaded", timeout=TIMEOUT_MS)
    wait_ready(page)
    return page, time.perf_counter() - started


def wait_gone(server, kernel: str, timeout: float = GONE_WITHIN) -> float | None:
    """Seconds until the server no longer holds ``kernel``; None if it still does."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if not server.kernel_exists(kernel):
            return time.monotonic() - started
        time.sleep(0.25)
    return None


@pytest.fixture(scope="module")
def shared_link_page(context, server):
    """The module's first page: the shared link, from a warm pool, with every request
    the page makes recorded (those to other hosts are refused, as offline)."""
    warm = server.warm_kernels()
    requests, errors = [], []

    def route(route):
        requests.append(route.request.url)
        if urllib.parse.urlsplit(route.request.url).hostname in LOCAL_HOSTS:
            route.continue_()
        else:
            route.abort()

    context.route("**/*", route)
    # Routes see every request but websockets (the kernel's, the query's): recorded too.
    def record_websockets(page):
        page.on("websocket", lambda websocket: requests.append(websocket.url))

    context.on("page", record_websockets)
    try:
        page, seconds = open_page(context, server.url + SHARED_LINK, errors)
        page.evaluate("() => document.fonts.ready.then(() => null)")
    finally:
        context.unroute("**/*")
        context.remove_listener("page", record_websockets)
    page.requests, page.page_errors = requests, errors
    page.load_seconds, page.warm_before = seconds, warm
    yield page
    page.close(run_before_unload=True)


def test_a_shared_link_from_a_preheated_kernel_shows_its_settings(shared_link_page, server,
                                                                   timings, capsys):
    page = shared_link_page
    report(timings, capsys, f"page ready (navigation to widgets ready), preheated kernel "
           f"({page.warm_before} warmed up so far): {page.load_seconds:.1f} s")
    assert f"Using pre-heated kernel: {kernel_id(page)}" in server.log()
    assert page.locator(".fx-rule select").input_value().split()[0] == "dfa"  # "dfa — ..."
    assert page.locator(".fx-width input").input_value() == "64"
    assert page.locator(".fx-depth .widget-readout").inner_text().strip() == "2"
    lr = float(page.locator(".fx-lr .widget-readout").inner_text().strip())
    assert lr == pytest.approx(0.0005, rel=0.01)
    link = page.locator(".fx-link-text").input_value()
    assert "rule=dfa" in link and "lr=0.0005" in link
    assert "cannot be used" not in page.locator(".fx-status").inner_text()
    assert page.page_errors == []


def test_the_page_loads_nothing_from_another_host(shared_link_page):
    page = shared_link_page
    assert page.requests, "no request was recorded"
    assert any(url.startswith("ws://") for url in page.requests), "no websocket recorded"
    elsewhere = [url for url in page.requests
                 if urllib.parse.urlsplit(url).hostname not in LOCAL_HOSTS]
    assert elsewhere == [], elsewhere
    # The buttons' icons: Font Awesome, from the server, loaded and drawn.
    fonts = page.evaluate(
        "() => [...document.fonts].filter(f => f.family.includes('Font Awesome'))"
        ".map(f => f.status)")
    assert "loaded" in fonts, fonts
    icon = page.evaluate(
        "() => { const i = document.querySelector('.fx-train i.fa');"
        " if (!i) return null; const s = getComputedStyle(i, '::before');"
        " return [s.fontFamily, s.content]; }")
    assert icon is not None and "Font Awesome" in icon[0] and icon[1] not in ("", "none"), icon


def test_reloading_five_times_leaves_one_kernel_for_the_page(context, server, shared_link_page,
                                                             timings, capsys):
    page, first_seconds = open_page(context, server.url + LONG_RUN)
    kernels, seconds = [kernel_id(page)], [first_seconds]
    try:
        # The first reload comes while a run trains: the kernel is sending updates
        # as the page's websocket closes (this used to log a WebSocketClosedError
        # traceback; the server's whole log is checked when it stops).
        page.click(".fx-train")
        wait_state(page, "running")
        for _ in range(5):
            started = time.perf_counter()
            page.reload(wait_until="domcontentloaded", timeout=TIMEOUT_MS)
            wait_ready(page)
            seconds.append(time.perf_counter() - started)
            kernels.append(kernel_id(page))
        assert len(set(kernels)) == 6  # every load had a kernel of its own
        for old in kernels[:-1]:
            assert wait_gone(server, old) is not None, f"kernel {old} of a reloaded page stayed"
        assert server.kernel_exists(kernels[-1])
        # Two pages are open (this one and the shared link's): one kernel each, plus
        # the pool (full, or refilling).
        live = server.kernel_pids()
        report(timings, capsys, f"after 5 reloads: {len(live)} kernel processes "
               f"(2 open pages, pool of {server.pool_size}); page loads "
               + ", ".join(f"{s:.1f}" for s in seconds) + " s")
        assert len(live) <= 2 + server.pool_size, live
        assert "'_xsrf' argument missing" not in server.log()
        assert not re.search(r"40\d POST /voila/api/shutdown", server.log())
    finally:
        page.close(run_before_unload=True)


def test_a_closed_page_takes_its_kernel_along(context, server, timings, capsys):
    page, _ = open_page(context, server.url)
    kernel = kernel_id(page)
    assert server.kernel_exists(kernel)
    page.close(run_before_unload=True)  # as closing the tab: beforeunload runs
    gone = wait_gone(server, kernel)
    assert gone is not None, f"the closed page's kernel {kernel} is still there"
    report(timings, capsys, f"closed page: its kernel gone after {gone:.1f} s")


@pytest.fixture(scope="module")
def abandoned(context, server):
    """Two kernels left behind at the same moment, so that their culls are waited for
    together: a page's that vanished without its beacon, and a plain GET's (no browser).
    Returns (vanished page's kernel, GET's kernel, when both were left)."""
    with urllib.request.urlopen(server.url + "?rule=fa", timeout=TIMEOUT_MS / 1000) as reply:
        assert reply.status == 200
        body = reply.read().decode()
    fetched = re.search(r'"kernelId":\s*"([0-9a-f-]+)"', body).group(1)
    page, _ = open_page(context, server.url)
    vanished = kernel_id(page)
    page.close()  # no beforeunload, no beacon: like a crashed browser or a lost network
    return vanished, fetched, time.monotonic()


def test_a_page_gone_without_goodbye_has_its_kernel_culled(abandoned, server, timings, capsys):
    kernel, _, left = abandoned
    gone = wait_gone(server, kernel, timeout=CULL_AFTER + GONE_WITHIN)
    assert gone is not None, f"the vanished page's kernel {kernel} was never culled"
    report(timings, capsys, f"vanished page (no beacon): its kernel culled after "
           f"{time.monotonic() - left:.1f} s "
           f"(cull_idle_timeout {CULL_AFTER} s, interval {CULL_INTERVAL} s)")


def test_a_plain_get_leaves_no_kernel_behind(abandoned, server, timings, capsys):
    _, kernel, left = abandoned
    gone = wait_gone(server, kernel, timeout=CULL_AFTER + GONE_WITHIN)
    assert gone is not None, f"the kernel {kernel} of a GET without a browser stayed"
    assert f"Culling kernel {kernel}: no browser connected" in server.log()
    report(timings, capsys, f"plain GET (no browser): its kernel culled after "
           f"{time.monotonic() - left:.1f} s or less (cull_unconnected_timeout {CULL_AFTER} s)")


def test_the_kernels_run_this_checkout(server):
    # The pool's kernels log where fa_explore came from (the notebook's warm-up).
    package = str(Path(__file__).resolve().parents[2] / "fa_explore")
    lines = server.warm_kernel_lines()
    assert lines and all(f"(fa_explore from {package})" in line for line in lines), lines
