"""Helpers shared by the browser tests: open the dashboard page and wait until its
kernel has run the notebook and the widgets are wired, read what the plots draw,
and record timings (reported, never asserted against tight budgets) in
test-artifacts/browser-timings.txt."""

from __future__ import annotations

import time
from pathlib import Path

TIMEOUT_MS = 180_000  # a cold kernel on a busy 2-core machine takes a while
# A long run on digits with a small net: it never ends by itself during a test,
# and evaluates often so that points arrive at once.
LONG_RUN = "?epochs=500&eval_every=5&hidden=%5B32%5D"

# Per plotly trace of a plot: how many points it draws (null: not drawn yet).
POINTS_JS = """(selector) => {
  const graph = document.querySelector(selector + ' .js-plotly-plot');
  if (!graph || !graph._fullData) return null;
  return graph._fullData.map(trace => (trace.x && trace.x.length) || 0);
}"""

# Installed before the page's own scripts: the main thread's long tasks (over 50 ms)
# and every console message, for the measurements below.
MONITOR_JS = """
window.__fxLong = [];
try {
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) window.__fxLong.push([e.startTime, e.duration]);
  }).observe({ type: "longtask", buffered: true });
} catch (e) { window.__fxLongUnsupported = String(e); }
"""

# How late a setTimeout(0) runs, sampled every 100 ms for ``ms`` milliseconds: the
# main thread's responsiveness (resolves to [max, median, samples]).
TIMER_LAG_JS = """(ms) => new Promise((resolve) => {
  const lags = [];
  const end = performance.now() + ms;
  const sample = () => {
    const t = performance.now();
    setTimeout(() => {
      lags.push(performance.now() - t);
      if (performance.now() < end) setTimeout(sample, 100);
      else {
        lags.sort((a, b) => a - b);
        resolve([lags[lags.length - 1], lags[Math.floor(lags.length / 2)], lags.length]);
      }
    }, 0);
  };
  sample();
})"""


def rule_label(name: str) -> str:
    from fa_explore.app.controls import rule_label as label

    return label(name)


class Timings:
    """Timing lines of every browser test module, written as they come."""

    lines: list[str] = []

    def __init__(self, path: Path):
        self.path = path

    def add(self, capsys, text: str) -> None:
        Timings.lines.append(text)
        self.path.write_text("\n".join(Timings.lines) + "\n")
        with capsys.disabled():
            print(f"\n[browser timing] {text}")


def loadavg() -> str:
    """The 1, 5 and 15 minute load averages (``cat /proc/loadavg``)."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def open_dashboard(browser, url, viewport=(1500, 1400)):
    """A new page on the dashboard, once its kernel has run the notebook and the
    widgets are wired (status 'ready', plots drawn). Returns (page, seconds, errors);
    ``page.console`` collects the console messages."""
    page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
    errors, console = [], []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
    page.console = console
    # Closing sends the page's shutdown beacon, as closing a tab does: the shared
    # server does not keep a kernel per closed page until the culler comes.
    close = page.close
    page.close = lambda **kwargs: close(**{"run_before_unload": True, **kwargs})
    page.add_init_script(MONITOR_JS)
    started = time.perf_counter()
    page.goto(url, wait_until="domcontentloaded", timeout=TIMEOUT_MS)
    wait_ready(page)
    return page, time.perf_counter() - started, errors


def wait_ready(page) -> None:
    page.wait_for_selector(".fx-status .fx-state:text-is('ready')", timeout=TIMEOUT_MS)
    page.wait_for_function(f"() => ({POINTS_JS})('.fx-plot-curves') !== null",
                           timeout=TIMEOUT_MS)


def state(page) -> str:
    return page.locator(".fx-status .fx-state").inner_text()


def status_text(page) -> str:
    return page.locator(".fx-status").inner_text()


def wait_state(page, word, timeout=TIMEOUT_MS):
    page.wait_for_function(
        "(word) => document.querySelector('.fx-status .fx-state').textContent === word",
        arg=word, timeout=timeout)


def wait_status_contains(page, text, timeout=60_000):
    page.wait_for_function(
        "(text) => document.querySelector('.fx-status').textContent.includes(text)",
        arg=text, timeout=timeout)


def wait_link(page, fragment, timeout=60_000):
    """The kernel has applied a control change once the share link shows it."""
    page.wait_for_function(
        "(part) => document.querySelector('.fx-link-text').value.includes(part)",
        arg=fragment, timeout=timeout)


def wait_points(page, selector, timeout=TIMEOUT_MS, at_least=1):
    page.wait_for_function(
        f"([sel, n]) => {{ const k = ({POINTS_JS})(sel); return k && k.some(m => m >= n); }}",
        arg=[selector, at_least], timeout=timeout)
    return page.evaluate(POINTS_JS, selector)


def longest_task(page, since_ms: float = 0.0) -> float:
    """The longest main-thread task (ms) since ``since_ms`` (page time), 0 if none."""
    return page.evaluate(
        "(since) => Math.max(0, ...window.__fxLong.filter(e => e[0] >= since).map(e => e[1]))",
        since_ms)


def page_now(page) -> float:
    return page.evaluate("() => performance.now()")


def set_text(page, selector: str, value: str) -> None:
    page.fill(selector, value)
    page.press(selector, "Enter")
