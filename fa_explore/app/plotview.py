"""A plotly figure as a widget that always holds its whole current figure.

Why not ``plotly.graph_objects.FigureWidget``: it syncs *changes* (restyle,
relayout) that the browser applies to the figure it already has, and it ships
plotly.js (5 MB) inside every widget's front-end module. In Voilà that breaks
twice: changes made before the page connects (while the notebook runs) are
lost, and anywidget gives each widget's front end two seconds to start before
it ignores every later message, which five 5 MB modules on a busy laptop or
Binder do not make (the plots then never update). Here the widget's state *is*
the figure (its JSON), so a page that connects late draws the current figure,
and the browser redraws with ``Plotly.react`` (which keeps the user's zoom,
through each figure's ``uirevision``), or draws afresh when the ``uirevision``
or the kinds of traces change. plotly.js travels once, in the state of
one widget per dashboard, and is loaded after the widgets have started.
"""

from __future__ import annotations

import anywidget
import plotly.graph_objects as go
import traitlets

_ESM = r"""
const SHARED = (globalThis.__fxPlotly ??= (() => {
  let resolve, reject;
  const promise = new Promise((res, rej) => { resolve = res; reject = rej; });
  return { promise, resolve, reject, started: false };
})());

function loadPlotly(source) {
  if (globalThis.Plotly && globalThis.Plotly.react) {
    SHARED.resolve(globalThis.Plotly);
    return;
  }
  if (SHARED.started || !source) return;
  SHARED.started = true;
  const url = URL.createObjectURL(new Blob([source], { type: "text/javascript" }));
  const script = document.createElement("script");
  // plotly.min.js is UMD: hide an AMD loader so that it sets window.Plotly.
  const savedDefine = window.define;
  window.define = undefined;
  const done = () => { window.define = savedDefine; URL.revokeObjectURL(url); };
  script.onload = () => { done(); SHARED.resolve(window.Plotly); };
  script.onerror = (error) => { done(); SHARED.started = false; SHARED.reject(error); };
  script.src = url;
  document.head.appendChild(script);
}

function render({ model, el }) {
  const graph = document.createElement("div");
  graph.className = "fx-graph";
  el.appendChild(graph);
  let alive = true;
  let plotly = null;
  let drawnKey = null;
  const config = { responsive: true, displaylogo: false,
                   modeBarButtonsToRemove: ["select2d", "lasso2d"] };
  const draw = () => {
    if (!alive || !plotly) return;
    let figure;
    try { figure = JSON.parse(model.get("figure_json") || "{}"); } catch (e) { return; }
    const data = figure.data || [];
    const layout = figure.layout || {};
    // Plotly.react keeps state computed for the previous figure (autoranged axes),
    // right within one run but wrong across a new uirevision or other trace kinds
    // (e.g. a square-scaled plot drawn over an empty placeholder): start afresh then.
    const key = JSON.stringify([layout.uirevision ?? null, data.map((t) => t.type)]);
    if (key !== drawnKey) {
      plotly.purge(graph);
      plotly.newPlot(graph, data, layout, config);
      drawnKey = key;
    } else {
      plotly.react(graph, data, layout, config);
    }
  };
  model.on("change:figure_json", draw);
  // Load plotly.js a moment after the first view renders, once every widget has
  // started (anywidget gives each two seconds; evaluating plotly.js holds the page).
  setTimeout(() => loadPlotly(model.get("plotly_source")), 250);
  model.on("change:plotly_source", () => loadPlotly(model.get("plotly_source")));
  SHARED.promise.then((P) => { plotly = P; draw(); });
  const resize = new ResizeObserver(() => {
    if (alive && plotly && graph.data) plotly.Plots.resize(graph);
  });
  resize.observe(el);
  return () => {
    alive = false;
    resize.disconnect();
    model.off("change:figure_json", draw);
    if (plotly) plotly.purge(graph);
  };
}

export default { render };
"""

_CSS = r"""
.fx-graph { width: 100%; min-height: 40px; }
"""


class PlotlyView(anywidget.AnyWidget):
    """Shows a plotly figure; :meth:`show` replaces it (redrawn in place).

    ``carry_plotly=True`` puts plotly.js into this widget's state: one view per
    page must carry it (the dashboard's first plot does).
    """

    _esm = _ESM
    _css = _CSS
    figure_json = traitlets.Unicode("{}").tag(sync=True)
    plotly_source = traitlets.Unicode("").tag(sync=True)

    def __init__(self, figure: go.Figure | None = None, *, carry_plotly: bool = False,
                 **kwargs):
        super().__init__(**kwargs)
        self._figure = go.Figure() if figure is None else figure
        self.figure_json = self._figure.to_json()
        if carry_plotly:
            from plotly.offline import get_plotlyjs

            self.plotly_source = get_plotlyjs()

    @property
    def figure(self) -> go.Figure:
        """The figure shown now."""
        return self._figure

    def show(self, figure: go.Figure) -> None:
        """Replace the figure; the browser redraws it (unchanged figures send nothing)."""
        self._figure = figure
        self.figure_json = figure.to_json()
