"""What a dashboard page carries in its widget state: how many widgets of each kind
and how many bytes of JSON each kind adds (``_esm`` and ``_css`` of the anywidgets
counted apart), and per plot its figure and whether it carries plotly.js.

Voilà sends this state to the browser over the kernel's websocket at every page
load (it is not a cached file), so it bounds the page's transfer and the browser's
JSON parsing. It is measured in this process, without a server or a browser:

    python benchmarks/widget_state.py            # a table on stdout
    python benchmarks/widget_state.py --json     # the same as JSON
"""

from __future__ import annotations

import argparse
import collections
import json


def measure() -> dict:
    """Widget counts and state bytes of a freshly built ``Dashboard``."""
    from ipywidgets.widgets.widget import _instances  # every live widget, by model id

    from fa_explore.app.dashboard import Dashboard
    from fa_explore.app.plotview import PlotlyView

    before = set(_instances)
    dashboard = Dashboard(warm_up=False)
    try:
        widgets = [w for key, w in _instances.items() if key not in before]
        kinds: dict[str, dict[str, int]] = collections.defaultdict(
            lambda: {"count": 0, "bytes": 0, "esm_css_bytes": 0})
        plots = []
        for widget in widgets:
            state = widget.get_state()
            kind = kinds[type(widget).__name__]
            kind["count"] += 1
            kind["bytes"] += len(json.dumps(state, default=str))
            kind["esm_css_bytes"] += len(state.get("_esm", "") or "") + len(
                state.get("_css", "") or "")
            if isinstance(widget, PlotlyView):
                plots.append({"figure_bytes": len(widget.figure_json),
                              "plotly_js_bytes": len(widget.plotly_source),
                              "esm_bytes": len(state.get("_esm", "") or "")})
        return {"widgets": len(widgets), "bytes": sum(k["bytes"] for k in kinds.values()),
                "kinds": dict(sorted(kinds.items(), key=lambda kv: -kv[1]["bytes"])),
                "plots": plots}
    finally:
        dashboard.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    result = measure()
    if parser.parse_args().json:
        print(json.dumps(result, indent=1))
        return
    print(f"{result['widgets']} widgets, {result['bytes']:,} bytes of widget state")
    print(f"{'kind':24s} {'count':>6s} {'bytes':>11s} {'_esm+_css':>10s}")
    for name, kind in list(result["kinds"].items())[:12]:
        print(f"{name:24s} {kind['count']:6d} {kind['bytes']:11,d} {kind['esm_css_bytes']:10,d}")
    for i, plot in enumerate(result["plots"], 1):
        print(f"plot {i}: figure {plot['figure_bytes']:,} B, plotly.js "
              f"{plot['plotly_js_bytes']:,} B, _esm {plot['esm_bytes']:,} B")


if __name__ == "__main__":
    main()
