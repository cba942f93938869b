"""End-to-end: a link with ``seeds=3`` trains three seeds and the page draws every
curve as a mean line over a filled min–max band."""

from __future__ import annotations

import pytest
from pages import POINTS_JS, TIMEOUT_MS, open_dashboard, wait_state

pytestmark = pytest.mark.browser

SEEDS_RUN = "?seeds=3&epochs=3&hidden=%5B16%5D&train_size=300"

# Plotly draws a trace's fill as a path in the plot's "fills" layer ("M0,0Z" when empty).
FILLS_JS = """(selector) => Array.from(document.querySelectorAll(
  selector + ' .js-plotly-plot g.fills path')).filter(p => (p.getAttribute('d') || '').length > 10)
  .length"""


def test_seeds_draw_the_mean_and_a_filled_band(browser, voila_url, artifacts):
    page, _, errors = open_dashboard(browser, voila_url + SEEDS_RUN)
    try:
        page.click(".fx-train")
        wait_state(page, "finished")
        # 4 mean lines, then the lower and upper edge of each of their 4 bands.
        page.wait_for_function(
            f"() => {{ const n = ({POINTS_JS})('.fx-plot-curves');"
            " return n && n.length === 12 && n.every(k => k > 1); }", timeout=TIMEOUT_MS)
        assert page.evaluate(FILLS_JS, ".fx-plot-curves") >= 4
        caption = page.locator(".fx-panel-curves .fx-caption").inner_text()
        assert "mean of 3 seeds, band: min–max" in caption
        page.locator(".fx-panel-curves").screenshot(path=str(artifacts / "dashboard-seeds.png"))
        assert "Traceback" not in page.locator("body").inner_text()
        assert errors == []
    finally:
        page.close()
