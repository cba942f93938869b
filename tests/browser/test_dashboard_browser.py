"""End-to-end: the dashboard notebook served by a real Voilà server, driven in
Chromium. The page loads with no traceback; a rule and a width are picked, Train
puts points in the curve and alignment plots, Stop stops, switching rule mid-run
cancels cleanly, an impossible choice shows a message (a bad link: in
test_dashboard_layout.py), and screenshots are saved under test-artifacts/.

Timings (page load, Train to first points, Stop to "stopped") are printed and
written to test-artifacts/browser-timings.txt.
"""

from __future__ import annotations

import time

import pytest
from pages import (
    LONG_RUN,
    POINTS_JS,
    TIMEOUT_MS,
    Timings,
    open_dashboard,
    rule_label,
    state,
    status_text,
    wait_link,
    wait_points,
    wait_state,
)

from fa_explore import DATASETS, RULES, RunConfig

pytestmark = pytest.mark.browser

ISSUE_CLASSES = ("fx-rule", "fx-dataset", "fx-width", "fx-depth", "fx-angle", "fx-sparsity",
                 "fx-lr", "fx-seed", "fx-train", "fx-pause", "fx-stop", "fx-reset", "fx-status",
                 "fx-progress", "fx-plot-curves", "fx-plot-alignment", "fx-plot-landscape",
                 "fx-plot-weights")


@pytest.fixture(scope="module")
def timings(artifacts):
    return Timings(artifacts / "browser-timings.txt")


@pytest.fixture(scope="module")
def dashboard(browser, voila_url, artifacts, timings, request):
    page, seconds, errors = open_dashboard(browser, voila_url + LONG_RUN)
    page.dashboard_load_seconds = seconds
    page.page_errors = errors
    yield page
    page.close()


def test_page_loads_without_traceback(dashboard, timings, capsys, artifacts):
    page = dashboard
    timings.add(capsys, f"page load (navigation to widgets ready): "
                        f"{page.dashboard_load_seconds:.1f} s")
    body = page.locator("body").inner_text()
    assert "Traceback" not in body and "error when executing" not in body
    assert state(page) == "ready"
    for css in ISSUE_CLASSES:
        assert page.locator(f".{css}").count() >= 1, css
    # Buttons that do not apply are disabled until a run goes.
    assert page.locator(".fx-stop").is_disabled() and page.locator(".fx-pause").is_disabled()
    assert not page.locator(".fx-train").is_disabled()
    assert page.page_errors == []
    path = artifacts / "dashboard-ready.png"
    page.screenshot(path=str(path), full_page=True)
    with capsys.disabled():
        print(f"\n[browser] screenshot: {path}")


def test_pick_rule_and_width_train_then_stop(dashboard, timings, capsys, artifacts):
    page = dashboard
    page.select_option(".fx-rule select", label=rule_label("bp"))
    wait_link(page, "rule=bp")
    page.fill(".fx-width input", "24")
    page.press(".fx-width input", "Enter")
    wait_link(page, "hidden=%5B24%5D")

    page.click(".fx-train")
    started = time.perf_counter()
    curves = wait_points(page, ".fx-plot-curves")
    first_points = time.perf_counter() - started
    timings.add(capsys, f"Train click to first points: {first_points:.2f} s")
    assert state(page) == "running"
    assert curves[0] > 0 and curves[1] > 0  # train and test loss of the live run
    # Alignment: weight angles of layers 2.. and every gradient angle (BP: 0°).
    alignment = wait_points(page, ".fx-plot-alignment")
    assert sum(1 for n in alignment if n > 0) >= 3
    page.wait_for_function(
        f"() => ({POINTS_JS})('.fx-plot-curves')[0] >= 3", timeout=TIMEOUT_MS)

    page.click(".fx-stop")
    started = time.perf_counter()
    wait_state(page, "stopped")
    timings.add(capsys, f"Stop click to 'stopped': {time.perf_counter() - started:.2f} s")
    assert "stopped by you" in status_text(page)
    assert not page.locator(".fx-train").is_disabled()
    assert page.locator(".fx-stop").is_disabled()
    wait_points(page, ".fx-plot-landscape")  # drawn for the stopped run too
    path = artifacts / "dashboard-stopped.png"
    page.screenshot(path=str(path), full_page=True)
    with capsys.disabled():
        print(f"\n[browser] screenshot: {path}")


def test_switching_rule_mid_run_cancels_cleanly(dashboard):
    page = dashboard
    page.click(".fx-train")
    wait_state(page, "running")
    wait_points(page, ".fx-plot-curves")
    # A rule other than the default (the link names only non-default settings).
    other = next(n for n, c in RULES.items() if c.uses_init_angle and n != RunConfig().rule)
    page.select_option(".fx-rule select", label=rule_label(other))
    wait_state(page, "stopped")
    text = status_text(page)
    assert "rule changed" in text and "press train" in text.lower()
    wait_link(page, f"rule={other}")
    # The rule's own controls are enabled again, with nothing left running.
    assert not page.locator(".fx-angle-default input").is_disabled()
    page.click(".fx-train")
    wait_state(page, "running")
    page.click(".fx-stop")
    wait_state(page, "stopped")


def test_an_impossible_choice_shows_a_message(dashboard):
    page = dashboard
    two_d = next(n for n, s in DATASETS.items() if s.kind == "2d")
    page.select_option(".fx-dataset select", two_d)
    wait_link(page, f"dataset={two_d}")
    # The plots still show the digits run (greyed as a previous run): no decision
    # regions until a 2-D run is trained, so that no panel mixes datasets.
    page.wait_for_selector(".fx-panel-curves.fx-stale", timeout=30_000)
    assert page.locator(".fx-plot-boundary").count() == 0
    page.select_option(".fx-model select", "cnn")
    page.wait_for_function(
        "() => document.querySelector('.fx-status').textContent.includes(\"Can't use that\")",
        timeout=30_000)
    assert "mlp" in status_text(page)
    # The control went back: the settings never held the impossible pair.
    page.wait_for_function("() => document.querySelector('.fx-model select').value === 'mlp'",
                           timeout=30_000)
    assert "Traceback" not in page.locator("body").inner_text()


def test_a_2d_run_to_the_end_draws_the_decision_regions(dashboard, artifacts, capsys):
    page = dashboard
    page.fill(".fx-epochs input", "10")
    page.press(".fx-epochs input", "Enter")
    wait_link(page, "epochs=10")
    page.click(".fx-train")
    wait_state(page, "finished")
    regions = wait_points(page, ".fx-plot-boundary")
    assert sum(regions[1:]) > 0  # the data points over the regions
    page.wait_for_function(
        "() => { const g = document.querySelector('.fx-plot-boundary .js-plotly-plot');"
        " return g && g._fullData[0].z && g._fullData[0].z.length > 0; }", timeout=30_000)
    wait_points(page, ".fx-plot-landscape")  # the last landscape, at the end of the run
    assert "test accuracy" in status_text(page)
    # Pin it, train another rule: the pinned curves stay as faint extra traces.
    page.click(".fx-pin")
    page.wait_for_function(
        "() => document.querySelector('.fx-status').textContent.includes('pinned run 1')",
        timeout=30_000)
    page.select_option(".fx-rule select", label=rule_label("bp"))
    wait_link(page, "rule=bp")
    page.click(".fx-train")
    # 'finished' again, for the new run (the pin note is gone once it started).
    page.wait_for_function(
        "() => { const s = document.querySelector('.fx-status').textContent;"
        " return s.startsWith('finished') && !s.includes('pinned'); }", timeout=TIMEOUT_MS)
    page.wait_for_function(
        f"() => ({POINTS_JS})('.fx-plot-curves').length === 8", timeout=30_000)
    # The pinned run is labelled by what differs from the current settings.
    page.wait_for_function(
        "() => document.querySelector('.fx-plot-curves .legend').textContent.includes('rule=')",
        timeout=30_000)
    # The last redraw: the live run has as many points as the pinned one (same steps),
    # and the landscape of the new run is drawn.
    page.wait_for_function(
        f"() => {{ const n = ({POINTS_JS})('.fx-plot-curves'); return n[0] === n[4]; }}",
        timeout=30_000)
    wait_points(page, ".fx-plot-landscape")
    path = artifacts / "dashboard-2d-finished.png"
    page.screenshot(path=str(path), full_page=True)
    with capsys.disabled():
        print(f"\n[browser] screenshot: {path}")
    assert page.page_errors == []
