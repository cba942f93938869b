"""End-to-end: the dashboard's Sweep tab in Chromium against a real Voilà server.
A two-point sweep of a tiny network is run from the tab, and its plot fills in
with both points, with no traceback on the page."""

from __future__ import annotations

import shutil
import time

import pytest
from pages import POINTS_JS, TIMEOUT_MS, Timings, open_dashboard

pytestmark = pytest.mark.browser

# A few training steps per point: the tab is under test, not learning.
TINY = "?hidden=%5B4%5D&train_size=60&eval_size=32&batch_size=20"


def test_the_sweep_tab_runs_a_sweep_and_its_plot_fills(browser, voila_url, artifacts, capsys):
    # The page's kernel caches sweeps under $FA_EXPLORE_SWEEPS (set by conftest): empty
    # it, so the points are trained now rather than read back.
    shutil.rmtree(artifacts / "sweeps", ignore_errors=True)
    page, _, errors = open_dashboard(browser, voila_url + TINY)
    try:
        page.locator(".fx-tabs .lm-TabBar-tab", has_text="Sweep").click()
        page.wait_for_selector(".fx-sweep-run", state="visible", timeout=TIMEOUT_MS)
        # The default sweep: the rule, the controls' one and one more (two points).
        assert page.locator(".fx-sweep-tab select[multiple] option:checked").count() == 2
        started = time.perf_counter()
        page.click(".fx-sweep-run")
        page.wait_for_function(
            "() => document.querySelector('.fx-sweep-status .fx-state').textContent"
            " === 'finished'", timeout=TIMEOUT_MS)
        # Both points drawn: the min–max band goes out and back over both (4), the mean
        # line has both (2), no point failed.
        page.wait_for_function(
            f"() => {{ const k = ({POINTS_JS})('.fx-plot-sweep');"
            " return k && k[0] === 4 && k[1] === 2 && k[2] === 0; }", timeout=TIMEOUT_MS)
        Timings(artifacts / "browser-timings.txt").add(
            capsys, f"Sweep tab: Run sweep click to both points drawn (2 tiny runs): "
                    f"{time.perf_counter() - started:.1f} s")
        page.screenshot(path=str(artifacts / "sweep-tab.png"), full_page=True)
        body = page.locator("body").inner_text()
        assert "Traceback" not in body
        assert "2 runs in" in page.locator(".fx-sweep-status").inner_text()
        assert errors == []
    finally:
        page.close()
