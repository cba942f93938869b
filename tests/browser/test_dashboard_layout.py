"""The dashboard's layout in Chromium after a finished run: the four main panels fit
a 1400 x 900 window, the page reflows at 1000 px, figures keep their height on
resize and after being hidden, titles, ticks and legends never overlap, no plotly
console warnings, tooltips on dropdowns, "?" help, the address bar following the
controls (reload restores them), a bad link listing every invalid part, Export
downloading a zip and Load run showing it.

The header takes two lines at 1400 and 1000 px (dashboard-header-<width>.png).

Screenshots: test-artifacts/dashboard-1400x900.png and dashboard-1000.png.
"""

from __future__ import annotations

import io
import zipfile

import pytest
from pages import (
    TIMEOUT_MS,
    Timings,
    open_dashboard,
    set_text,
    status_text,
    wait_link,
    wait_points,
    wait_ready,
    wait_state,
    wait_status_contains,
)

pytestmark = pytest.mark.browser

QUICK_RUN = "?epochs=4&hidden=%5B32%2C32%5D"
PANEL_HEIGHT = 280  # fa_explore.app.dashboard.PANEL_HEIGHT

# Text boxes in each plot that must not overlap: subplot titles, axis titles, tick
# labels, colour-bar ticks and the legend.
BOXES_JS = """() => [...document.querySelectorAll('.fx-panel')].filter(p => p.offsetParent)
  .map(panel => {
    const graph = panel.querySelector('.js-plotly-plot');
    if (!graph) return null;
    const rect = (el) => { const r = el.getBoundingClientRect();
                           return [r.left, r.top, r.right, r.bottom]; };
    const texts = (sel) => [...graph.querySelectorAll(sel)]
      .filter(el => (el.textContent || '').trim() && el.getBoundingClientRect().width > 0)
      .map(el => [el.textContent.trim(), rect(el)]);
    return {
      panel: [...panel.classList].find(c => c.startsWith('fx-panel-')),
      annotations: texts('.infolayer .annotation-text'),
      ticks: texts('.xtick text, .ytick text'),
      titles: texts('.g-xtitle text, .g-ytitle text, .g-x2title text, .g-y2title text'),
      colorbar: texts('.colorbar .cbaxis text, .colorbar text.cbtitle'),
      legend: [...graph.querySelectorAll('.legend')].map(el => ['legend', rect(el)]),
      modebar: [...graph.querySelectorAll('.modebar')].filter(m => m.offsetParent).length,
    };
  }).filter(x => x)"""


def overlap(a, b, slack=1.0):
    return (min(a[2], b[2]) - max(a[0], b[0]) > slack
            and min(a[3], b[3]) - max(a[1], b[1]) > slack)


def collisions(panels):
    """Pairs of text boxes that overlap, per panel."""
    found = []
    for p in panels:
        groups = {"annotation": p["annotations"], "tick": p["ticks"], "title": p["titles"],
                  "colorbar": p["colorbar"], "legend": p["legend"]}
        items = [(kind, text, box) for kind, entries in groups.items() for text, box in entries]
        for i, (kind_a, text_a, box_a) in enumerate(items):
            for kind_b, text_b, box_b in items[i + 1:]:
                if kind_a == kind_b == "tick":
                    continue  # plotly spaces its own tick labels
                if {kind_a, kind_b} == {"legend"}:
                    continue
                if overlap(box_a, box_b):
                    found.append((p["panel"], f"{kind_a} {text_a!r}", f"{kind_b} {text_b!r}"))
    return found


# The header's pieces, each as its boxes' rounded tops: a piece that wraps has two.
HEADER_JS = """() => {
  const pieces = [...document.querySelectorAll('.fx-header h2, .fx-header .fx-tagline,'
    + ' .fx-lectures summary, .fx-experiments-label, .fx-experiment')];
  return pieces.map(el => [el.textContent.trim().slice(0, 30),
    [...el.getClientRects()].filter(r => r.width > 0).map(r => Math.round(r.top)),
    Math.round(el.getBoundingClientRect().width)]);
}"""


def plot_sizes(page):
    return page.evaluate("""() => [...document.querySelectorAll('.fx-panel')]
      .filter(p => p.offsetParent).map(p => {
        const g = p.querySelector('.js-plotly-plot');
        const r = g.getBoundingClientRect();
        return [Math.round(r.width), Math.round(r.height)];
      })""")


@pytest.fixture(scope="module")
def timings(artifacts):
    return Timings(artifacts / "browser-timings.txt")


@pytest.fixture(scope="module")
def finished(browser, voila_url):
    """A page at 1400 x 900 with a finished run (every panel drawn)."""
    page, _, errors = open_dashboard(browser, voila_url + QUICK_RUN, viewport=(1400, 900))
    page.page_errors = errors
    page.click(".fx-train")
    wait_state(page, "finished")
    wait_points(page, ".fx-plot-landscape")
    wait_points(page, ".fx-plot-weights")
    page.wait_for_timeout(800)  # the last paint
    yield page
    page.close()


def test_the_four_main_panels_fit_1400x900(finished, artifacts, capsys):
    page = finished
    page.evaluate("() => window.scrollTo(0, 0)")
    bottoms = page.evaluate("""() => [...document.querySelectorAll('.fx-panel')]
      .filter(p => p.offsetParent).map(p => p.getBoundingClientRect().bottom)""")
    assert len(bottoms) == 4
    assert max(bottoms) <= 900, bottoms
    assert all(h == PANEL_HEIGHT for _, h in plot_sizes(page))
    path = artifacts / "dashboard-1400x900.png"
    page.screenshot(path=str(path))
    with capsys.disabled():
        print(f"\n[browser] screenshot: {path}")
    assert page.page_errors == []


@pytest.mark.parametrize("width", [1400, 1000])
def test_titles_ticks_and_legends_never_overlap(finished, width):
    page = finished
    page.set_viewport_size({"width": width, "height": 900})
    page.wait_for_timeout(600)
    panels = page.evaluate(BOXES_JS)
    assert len(panels) == 4
    assert collisions(panels) == []
    assert all(p["modebar"] == 0 for p in panels)  # no plotly mode bar over the titles
    # Captions name the run each panel shows.
    captions = page.locator(".fx-caption").all_inner_texts()
    assert all("fa · digits" in c and "finished" in c for c in captions if c)


def test_the_page_reflows_at_1000_px_and_plots_keep_their_height(finished, artifacts, capsys):
    page = finished
    page.set_viewport_size({"width": 1000, "height": 900})
    page.wait_for_timeout(800)
    sizes = plot_sizes(page)
    assert all(h == PANEL_HEIGHT for _, h in sizes), sizes
    assert all(w > 550 for w, _ in sizes), sizes  # one column: each plot the full width
    overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 1
    path = artifacts / "dashboard-1000.png"
    page.screenshot(path=str(path))
    with capsys.disabled():
        print(f"\n[browser] screenshot: {path}")
    page.set_viewport_size({"width": 1400, "height": 900})
    page.wait_for_timeout(800)
    again = plot_sizes(page)
    assert all(h == PANEL_HEIGHT for _, h in again), again  # not collapsed to ~40 px
    assert all(400 < w < 550 for w, _ in again), again  # two columns again
    # Hidden (a JupyterLab tab in the background), then shown: still sized right.
    page.evaluate("() => { document.querySelector('.fx-plots').style.display = 'none'; }")
    page.wait_for_timeout(300)
    page.evaluate("() => { document.querySelector('.fx-plots').style.display = ''; }")
    page.wait_for_timeout(800)
    assert plot_sizes(page) == again


@pytest.mark.parametrize("width", [1400, 1000])
def test_the_header_takes_two_lines(finished, artifacts, width):
    page = finished
    page.set_viewport_size({"width": width, "height": 900})
    page.evaluate("() => window.scrollTo(0, 0)")
    page.wait_for_timeout(300)
    pieces = page.evaluate(HEADER_JS)
    assert len(pieces) == 7, pieces  # title, tagline, lectures, label, 3 experiments
    assert all(len(tops) == 1 for _, tops, _ in pieces), pieces  # nothing wraps inside
    tops = sorted(t[0] for _, t, _ in pieces)
    # Pieces of one line differ by a few px (18 px title, 12.5 px text): a new line
    # starts more than 12 px below the previous piece.
    lines = 1 + sum(b - a > 12 for a, b in zip(tops, tops[1:], strict=False))
    assert lines <= 2, pieces
    tagline = next(w for text, _, w in pieces if text.startswith("Errors"))
    assert tagline > 150, pieces  # it may give way, but stays readable
    box = page.locator(".fx-header-row").bounding_box()
    page.screenshot(path=str(artifacts / f"dashboard-header-{width}.png"),
                    clip={"x": 0, "y": 0, "width": width, "height": box["y"] + box["height"]})
    # The lecture notebooks are a menu: every one linked, shown on a click.
    page.click(".fx-lectures summary")
    links = page.locator(".fx-lectures a")
    assert links.count() == 6 and links.first.is_visible()
    page.click(".fx-lectures summary")
    assert not links.first.is_visible()
    page.set_viewport_size({"width": 1400, "height": 900})


def test_no_plotly_console_warnings(finished):
    warnings = [m for m in finished.console if "matches" in m or "WARN:" in m]
    assert warnings == []


def test_dropdowns_have_tooltips_and_panels_have_help(finished):
    page = finished
    for css in ("fx-rule", "fx-dataset", "fx-model", "fx-optimizer"):
        title = page.locator(f".{css} select").get_attribute("title")
        assert title, css
    assert "rule" in page.locator(".fx-rule select").get_attribute("title").lower()
    help_box = page.locator(".fx-panel-alignment .fx-help")
    help_box.locator("summary").click()
    assert help_box.evaluate("el => el.open")
    text = help_box.inner_text()
    assert "90°" in text and "layer 1" in text
    help_box.locator("summary").click()
    # Angles carry their unit.
    ticks = page.eval_on_selector_all(".fx-plot-alignment .ytick text",
                                      "els => els.map(e => e.textContent)")
    assert "90°" in ticks


def test_export_downloads_a_zip_and_load_run_shows_it(finished, tmp_path):
    page = finished
    with page.expect_download(timeout=60_000) as info:
        page.click(".fx-export")
    download = info.value
    path = tmp_path / download.suggested_filename
    download.save_as(path)
    names = {n.split("/")[-1] for n in zipfile.ZipFile(io.BytesIO(path.read_bytes())).namelist()}
    assert {"run.json", "weights.safetensors", "curves.html", "alignment.html"} <= names
    wait_status_contains(page, download.suggested_filename)
    assert "/tmp" not in status_text(page) and "/work" not in status_text(page)
    with page.expect_file_chooser(timeout=30_000) as chooser:
        page.click(".fx-load")
    chooser.value.set_files(str(path))
    wait_state(page, "loaded")
    page.wait_for_function(
        "() => document.querySelector('.fx-panel-curves .fx-caption').textContent"
        ".includes('saved run')", timeout=60_000)
    assert not page.locator(".fx-pin").is_disabled()


def test_the_address_bar_follows_the_controls_and_reload_restores_them(finished):
    page = finished
    set_text(page, ".fx-seed input", "7")
    wait_link(page, "seed=7")
    page.wait_for_function("() => window.location.search.includes('seed=7')", timeout=30_000)
    page.reload(wait_until="domcontentloaded", timeout=TIMEOUT_MS)
    wait_ready(page)
    assert page.locator(".fx-seed input").input_value() == "7"
    assert "epochs=4" in page.evaluate("() => window.location.search")


def test_a_bad_link_keeps_its_valid_fields_and_lists_every_invalid_one(browser, voila_url):
    # ?token= is jupyter-server's, as a Jupyter or JupyterHub link carries it: not listed.
    page, _, errors = open_dashboard(browser, voila_url + "?rule=nope&lr=10&width=abc"
                                     "&token=not-a-setting", viewport=(1400, 900))
    try:
        text = status_text(page)
        assert "cannot be used" in text
        assert "rule must be one of" in text and "unknown setting 'width'" in text
        assert "token" not in text
        assert "Traceback" not in page.locator("body").inner_text()
        # lr=10 is valid (the slider's range stops at 1): the slider widens and shows it.
        readout = page.locator(".fx-lr .widget-readout").inner_text()
        assert float(readout) == 10.0
        assert errors == []
    finally:
        page.close()
