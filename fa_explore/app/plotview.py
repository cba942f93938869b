"""A plotly figure as a widget: whole figures in its state, new points as deltas.

Why not ``plotly.graph_objects.FigureWidget``: it ships plotly.js (5 MB) inside
every widget's front-end module and syncs changes the page must have seen from
the start; in Voilà, changes made before the page connects are lost and anywidget
gives each front end two seconds to start. Here the widget's state holds the
last *whole* figure (a page that connects late draws it), and while a run trains
the kernel sends only the new points of the traces that grow
(:meth:`PlotlyView.extend`, drawn with ``Plotly.extendTraces``).

The page keeps up however busy it is:

- each update is acknowledged once drawn and painted; until then
  :attr:`PlotlyView.busy` is true and the dashboard skips this plot (its points
  wait in the history and go in the next delta), so updates never pile up;
- a page that finds itself out of step (it connected late, or a delta does not
  fit what it has) says so and gets a whole figure again (``on_resync``);
- figures keep a fixed height and follow their container's width (a
  ``ResizeObserver``: window resize, JupyterLab panel resize, a hidden tab shown
  again), never collapsing to plotly's minimum;
- plotly.js travels once, in the state of one view per dashboard, and is loaded
  after the widgets have started.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import anywidget
import numpy as np
import plotly.graph_objects as go
import traitlets

# A page that never acknowledges (a closed tab) holds a plot up at most this long.
ACK_TIMEOUT = 3.0

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

// One plot draws per turn, every plot of the page taking turns: a turn starts in an
// animation frame and the next waits for a new task, so that drawing five plots
// is five short main-thread tasks, not one long one.
const TURNS = (globalThis.__fxTurns ??= { queue: [], busy: false });
function takeTurn(run) {
  TURNS.queue.push(run);
  nextTurn();
}
function nextTurn() {
  if (TURNS.busy || !TURNS.queue.length) return;
  TURNS.busy = true;
  const run = TURNS.queue.shift();
  requestAnimationFrame(async () => {
    try { await run(); } catch (error) { console.error("fa_explore plot turn failed", error); }
    setTimeout(() => { TURNS.busy = false; nextTurn(); }, 0);
  });
}

// plotly.py sends numeric arrays as {dtype, bdata} (base64). plotly.js decodes them
// for drawing but keeps the encoded object in graph.data, where extendTraces and the
// length checks below need real arrays: decode scatter x and y here.
const DTYPES = { f8: Float64Array, f4: Float32Array, i4: Int32Array, i2: Int16Array,
                 i1: Int8Array, u4: Uint32Array, u2: Uint16Array, u1: Uint8Array };
function decoded(values) {
  if (!values || typeof values !== "object" || typeof values.bdata !== "string") return values;
  const kind = DTYPES[values.dtype];
  if (!kind || values.shape && String(values.shape).includes(",")) return values;
  const text = atob(values.bdata);
  const bytes = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
  return Array.from(new kind(bytes.buffer));
}
function plainLines(data) {
  for (const trace of data) {
    if ((trace.type || "scatter") !== "scatter") continue;
    trace.x = decoded(trace.x);
    trace.y = decoded(trace.y);
  }
  return data;
}

const CONFIG = { responsive: false, displayModeBar: false, displaylogo: false,
                 doubleClick: "reset" };

function render({ model, el }) {
  const graph = document.createElement("div");
  graph.className = "fx-graph";
  el.appendChild(graph);
  let alive = true;
  let plotly = null;
  let drawnKey = null;
  let drawnRevision = -1;
  let width = 0;
  let height = 300;
  let drawing = false;
  let queue = [];  // {kind: "full"|"extend"|"resize", seq, msg}
  let helloSent = -2;

  const measure = () => Math.floor(el.getBoundingClientRect().width);
  const lengths = () => (graph.data || []).map((t) => (t.x && t.x.length) || 0);
  const hello = () => {
    if (helloSent === drawnRevision) return;  // asked already for this figure
    helloSent = drawnRevision;
    model.send({ type: "hello", revision: drawnRevision, lengths: lengths() });
  };

  async function drawFull() {
    let figure;
    try { figure = JSON.parse(model.get("figure_json") || "{}"); } catch (e) { return; }
    const data = plainLines(figure.data || []);
    const layout = figure.layout || {};
    height = layout.height || height;
    graph.style.height = height + "px";
    const w = measure();
    if (w > 0) width = w;
    const sized = Object.assign({}, layout, { height, autosize: false });
    if (width > 0) sized.width = width; else delete sized.width;
    // Plotly.react keeps state computed for the previous figure (autoranged axes):
    // right within one run, wrong across a new uirevision or other trace kinds.
    const key = JSON.stringify([layout.uirevision ?? null, data.map((t) => t.type)]);
    if (key !== drawnKey) {
      plotly.purge(graph);
      await plotly.newPlot(graph, data, sized, CONFIG);
      drawnKey = key;
    } else {
      await plotly.react(graph, data, sized, CONFIG);
    }
    drawnRevision = model.get("revision");
  }

  async function extend(msg) {
    if (msg.revision !== drawnRevision || !graph.data) { hello(); return; }
    const have = lengths();
    if (msg.indices.some((i, k) => have[i] !== msg.start[k])) { hello(); return; }
    await plotly.extendTraces(graph, { x: msg.x, y: msg.y }, msg.indices);
  }

  async function resize() {
    const w = measure();
    if (w <= 0 || !graph.data || (w === width && graph.style.height === height + "px")) return;
    width = w;
    await plotly.relayout(graph, { width, height });
  }

  let waiting = false;  // in the queue of turns
  function schedule() {
    if (drawing || waiting || !plotly || !alive || !queue.length) return;
    waiting = true;
    takeTurn(run);
  }

  async function run() {
    waiting = false;
    drawing = true;
    let ops = queue;
    queue = [];
    const last = ops.map((o) => o.kind).lastIndexOf("full");
    if (last >= 0) ops = ops.slice(last);  // a whole figure replaces what came before
    let seq = 0;
    for (const op of ops) {
      seq = Math.max(seq, op.seq || 0);
      try {
        if (!alive) break;
        if (op.kind === "full") await drawFull();
        else if (op.kind === "extend") await extend(op.msg);
        else await resize();
      } catch (error) {
        console.error("fa_explore plot update failed", error);
      }
    }
    // Acknowledge once the browser has painted: the kernel sends the next update then.
    requestAnimationFrame(() => setTimeout(() => {
      drawing = false;
      if (alive && seq) model.send({ type: "ack", seq });
      schedule();
    }, 0));
  }

  const onFigure = () => { queue.push({ kind: "full", seq: model.get("seq") }); schedule(); };
  const onMessage = (msg) => {
    if (!msg || msg.type !== "extend") return;
    queue.push({ kind: "extend", seq: msg.seq, msg });
    schedule();
  };
  model.on("change:figure_json", onFigure);
  model.on("msg:custom", onMessage);
  // Load plotly.js a moment after the first view renders, once every widget has
  // started (anywidget gives each two seconds; evaluating plotly.js holds the page).
  setTimeout(() => loadPlotly(model.get("plotly_source")), 250);
  model.on("change:plotly_source", () => loadPlotly(model.get("plotly_source")));
  SHARED.promise.then((P) => {
    plotly = P;
    queue.unshift({ kind: "full", seq: model.get("seq") });
    schedule();
    // Tell the kernel what this page holds: it sends a whole figure if that is behind.
    const greet = () => {
      if (drawnRevision < 0) { setTimeout(greet, 100); return; }
      model.send({ type: "hello", revision: drawnRevision, lengths: lengths() });
    };
    setTimeout(greet, 0);
  });
  const observer = new ResizeObserver(() => { queue.push({ kind: "resize" }); schedule(); });
  observer.observe(el);
  const onVisible = () => {
    if (document.visibilityState === "visible") { queue.push({ kind: "resize" }); schedule(); }
  };
  document.addEventListener("visibilitychange", onVisible);
  return () => {
    alive = false;
    observer.disconnect();
    document.removeEventListener("visibilitychange", onVisible);
    model.off("change:figure_json", onFigure);
    model.off("msg:custom", onMessage);
    if (plotly) plotly.purge(graph);
  };
}

export default { render };
"""

_CSS = r"""
.fx-graph { width: 100%; min-width: 0; }
"""


def _plain(values: Any) -> list:
    """Numbers as a JSON list (NaN and infinities dropped by the caller)."""
    return np.asarray(values, dtype=float).tolist()


class PlotlyView(anywidget.AnyWidget):
    """Shows a plotly figure: :meth:`show` replaces it, :meth:`extend` appends points.

    ``carry_plotly=True`` puts plotly.js into this widget's state: one view per
    page must carry it (the dashboard's first plot does). ``on_resync`` is called
    (from the kernel's thread) when a page asks for the whole figure again;
    ``on_ack`` when a page has drawn an update. ``clock`` times unanswered updates.
    """

    _esm = _ESM
    _css = _CSS
    figure_json = traitlets.Unicode("{}").tag(sync=True)
    plotly_source = traitlets.Unicode("").tag(sync=True)
    revision = traitlets.Int(0).tag(sync=True)
    seq = traitlets.Int(0).tag(sync=True)

    def __init__(self, figure: go.Figure | None = None, *, carry_plotly: bool = False,
                 on_resync: Callable[[], None] | None = None,
                 on_ack: Callable[[], None] | None = None,
                 clock: Callable[[], float] = time.monotonic, **kwargs):
        super().__init__(**kwargs)
        self._lock = threading.RLock()
        self._clock = clock
        self.on_resync, self.on_ack = on_resync, on_ack
        self._acked = 0
        self._sent_at = 0.0
        self._page_seen = False
        self.needs_full = False
        self._lengths: list[int] = []
        self._figure = go.Figure() if figure is None else figure
        self._set_figure(self._figure)
        if carry_plotly:
            from plotly.offline import get_plotlyjs

            self.plotly_source = get_plotlyjs()
        self.on_msg(self._handle_message)

    # ------------------------------------------------------------------ state
    @property
    def figure(self) -> go.Figure:
        """The last whole figure shown (points added by :meth:`extend` since are in
        :meth:`trace_lengths`, not here)."""
        return self._figure

    def trace_lengths(self) -> list[int]:
        """How many points each trace holds now on the page (whole figure + deltas)."""
        with self._lock:
            return list(self._lengths)

    @property
    def busy(self) -> bool:
        """An update has been sent and the page has not drawn it yet (only once a
        page has answered at all, and for at most :data:`ACK_TIMEOUT` seconds)."""
        with self._lock:
            return (self._page_seen and self.seq > self._acked
                    and self._clock() - self._sent_at < ACK_TIMEOUT)

    # ---------------------------------------------------------------- updates
    def _set_figure(self, figure: go.Figure) -> None:
        self.show_prepared(self.prepare(figure))

    def prepare(self, figure: go.Figure) -> tuple[go.Figure, str, list[int]]:
        """The figure's JSON and trace lengths, made without holding any lock (the
        slow part: the caller may hold its widget lock only for
        :meth:`show_prepared`, which the kernel's thread then waits on less)."""
        text = figure.to_json()
        lengths = [_length(trace.get("x")) for trace in json.loads(text).get("data", [])]
        return figure, text, lengths

    def show_prepared(self, prepared: tuple[go.Figure, str, list[int]]) -> None:
        """Show a figure made by :meth:`prepare`."""
        figure, text, lengths = prepared
        self._figure = figure
        self._show_json(text, lengths)

    def _show_json(self, text: str, lengths: list[int]) -> None:
        with self._lock:
            self._lengths = list(lengths)
            self.needs_full = False
            self._sent_at = self._clock()
            with self.hold_sync():
                self.revision += 1
                self.seq += 1
                self.figure_json = text

    def show(self, figure: go.Figure) -> None:
        """Replace the figure; the page redraws it."""
        self._figure = figure
        self._set_figure(figure)

    def extend(self, points: Mapping[int, tuple[Sequence[float], Sequence[float]]]) -> bool:
        """Append ``(x, y)`` points to the traces given by index; the page draws only
        those. Returns False (sending nothing) when there is nothing to add."""
        items = [(int(i), _plain(x), _plain(y)) for i, (x, y) in sorted(points.items())
                 if len(x)]
        if not items:
            return False
        with self._lock:
            for index, _, _ in items:
                if not 0 <= index < len(self._lengths):
                    raise ValueError(f"trace {index} is not in this figure "
                                     f"({len(self._lengths)} traces)")
            start = [self._lengths[i] for i, _, _ in items]
            for index, x, _ in items:
                self._lengths[index] += len(x)
            self.seq += 1
            self._sent_at = self._clock()
            message = {"type": "extend", "seq": self.seq, "revision": self.revision,
                       "indices": [i for i, _, _ in items], "start": start,
                       "x": [x for _, x, _ in items], "y": [y for _, _, y in items]}
        self.send(message)
        return True

    # ---------------------------------------------------------------- replies
    def _handle_message(self, _widget: Any, content: Any, _buffers: Any) -> None:
        if not isinstance(content, dict):
            return
        kind = content.get("type")
        callback = None
        with self._lock:
            self._page_seen = True
            if kind == "ack":
                seq = content.get("seq")
                if isinstance(seq, int):
                    self._acked = max(self._acked, seq)
                callback = self.on_ack
            elif kind == "hello":
                lengths = content.get("lengths")
                if content.get("revision") != self.revision or lengths != self._lengths:
                    self.needs_full = True
                    callback = self.on_resync
                else:
                    self._acked = max(self._acked, self.seq)
                    callback = self.on_ack
        if callback is not None:
            callback()


def _length(values: Any) -> int:
    if values is None:
        return 0
    if isinstance(values, dict):  # plotly's typed-array encoding {dtype, bdata, shape}
        import base64

        return len(np.frombuffer(base64.b64decode(values["bdata"]), dtype=values["dtype"]))
    return len(values)
