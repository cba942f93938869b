"""The live dashboard: controls generated from the settings schema, wired to a
:class:`TrainingSession`, and live plots.

This module builds widgets and moves values between them and the session; what
is allowed comes from :mod:`.controls` and the schema (:mod:`.fields` builds one
control per setting), the threads and state from :mod:`.session`, and every
figure from the pure builders in :mod:`.views`, drawn by :class:`.plotview.PlotlyView`
from a renderer thread: whole figures when a run starts or ends, only the new
points while it trains, each plot skipped while the page has not drawn its last
update. Use it in JupyterLab with ``Dashboard()`` (a new one closes the previous)
or as a page with Voilà (``apps/alignment_dashboard.ipynb``).

Threads: every widget write happens under one lock (``_ui``); the flag that tells
a control's observer that the kernel, not the user, moved it is per thread. The
kernel thread never waits for training (Stop returns at once).
"""

from __future__ import annotations

import atexit
import html
import math
import os
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import ipywidgets as widgets
import plotly.graph_objects as go

from ..config import RunConfig
from ..data import DATASETS
from ..rules import RULES
from ..settings import APP_SETTINGS, GROUPS, SETTINGS, in_group, rule_option_settings
from . import views
from .analyse_panel import AnalysePanel
from .appsettings import AppSettings, app_settings_from_query, join_query
from .bands import appendable, last_step, seed_bands
from .controls import (
    RULE_DEFAULT_FIELDS,
    UNCOMPARED_FIELDS,
    change_config,
    config_from_query,
    difference_labels,
    download_hint,
    format_value,
    plain_message,
    rule_label,
    setting_state,
)
from .fields import Field, css_name, make_field
from .linkbox import CopyLink, Downloader, ExperimentLinks, TooltipShim, Uploader
from .plotview import PlotlyView
from .session import ACTIVE, RunView, TrainingSession, format_seconds, log
from .sweep_panel import SweepPanel

MIN_RENDER_INTERVAL = 0.4  # seconds: plots update at most 2.5 times a second
# Building figures is pure Python and holds the GIL: after a redraw that took t
# seconds the renderer rests RENDER_REST * t, so training keeps most of it.
RENDER_REST = 2.0
WEIGHTS_INTERVAL = 1.5  # seconds between redraws of the scatter while training
BOUNDARY_INTERVAL = 1.5  # ... and of the decision regions
PANEL_HEIGHT = 280  # pixels of each plot: four fit a 1400 x 900 window
TERMINAL = ("stopped", "finished", "diverged", "error", "failed")
SHORT_TITLES = (("feedback vs forward weights", "B against W"),
                ("direct feedback D vs Jacobian ∂y/∂h", "D against ∂y/∂h"),
                ("Loss landscape along the trajectory", "Loss landscape"))

# The settings shown at once; the others of each group are under "more".
PRIMARY = ("rule", "init_angle", "feedback_sparsity", "expansion_ratio",
           "dataset", "n_classes", "label_noise", "train_size", "noise", "n_samples",
           "model", "hidden", "channels", "activation",
           "optimizer", "lr", "momentum", "weight_decay", "batch_size", "epochs",
           "seed", "eval_every")
SECTION_TITLES = {"rule": "Learning rule", "data": "Data", "model": "Network",
                  "optimisation": "Optimisation", "run": "Run"}

EXPERIMENTS = (
    ("BP vs FA on digits", "rule=bp&epochs=10",
     "Train backprop, press Pin, set the rule to fa and Train again: FA learns too, while "
     "its weight angles fall from 90°."),
    ("FA at initial angle 0° / 45° / 90°", "rule=fa&init_angle=0.0&epochs=10",
     "Train, Pin, then set the initial angle to 45 and to 90 and Train each: does training "
     "keep, lose or find the alignment?"),
    ("DFA vs FA on a deep net", "rule=dfa&hidden=%5B64%2C64%2C64%2C64%2C64%5D&epochs=10",
     "Train DFA with five hidden layers, Pin, set the rule to fa and Train: which one gets a "
     "useful error to the early layers?"),
)

PANEL_TITLES = {"curves": "Training curves", "alignment": "Alignment per layer",
                "landscape": "Loss landscape", "weights": "Feedback vs forward weights",
                "boundary": "Decision regions"}
PANEL_HELP = {
    "curves": "Loss (left) and accuracy (right) on fixed subsets of the training data "
              "(dotted) and the test data (solid), against training steps. Chance accuracy "
              "is 1 / the number of classes: a run that falls back to it has usually "
              "diverged.",
    "alignment": "Left: the angle between each layer's feedback matrix B and its forward "
                 "weights W (direct feedback: between D and the true output-to-layer "
                 "Jacobian ∂y/∂h). 90° means unrelated, 0° is backprop; layer 1 has no "
                 "weight angle, because no error is sent back into the input. Right: the "
                 "angle between the rule's update and the true gradient; the output layer's "
                 "is 0° for most rules, since its error is the exact output error. With "
                 "pinned runs, colour is the run and the line style the layer.",
    "landscape": "The loss on the plane spanned by the two main directions of the weights' "
                 "path (PC1, PC2: principal components of the recorded weight vectors, with "
                 "the share of the movement each explains). The white line is the path from "
                 "start (circle) to end (star); colours are on a log scale. Recomputed every "
                 "few seconds.",
    "weights": "One point per entry of the chosen layer's forward weight W (x) and the "
               "feedback entry that stands in for it (y); for direct feedback, D against the "
               "Jacobian ∂y/∂h. On the diagonal y = x the feedback equals the weights (as in "
               "backprop); points along any line through the origin mean aligned feedback, a "
               "round cloud none. At most 2,000 entries are drawn.",
    "boundary": "What the network predicts over the plane (colour: the class, depth: how "
                "sure it is), with the training points over it.",
}

_CSS = """
<style>
.fx-dashboard { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  color: #222; max-width: 1600px; }
.fx-dashboard .fx-header h2 { margin: 0 12px 0 0; font-size: 18px; font-weight: 600;
  display: inline; }
.fx-dashboard .fx-header p { margin: 0 12px 0 0; color: #555; font-size: 12.5px;
  display: inline; }
.fx-dashboard .fx-header a { color: #0b61a4; text-decoration: none; }
.fx-dashboard .fx-header a:hover { text-decoration: underline; }
/* Two lines at any width from 1000 px: title, tagline and the lectures menu, then the
   first experiments. The tagline gives way (ellipsis) before anything wraps. */
.fx-header-row { margin: 2px 0 4px 0; align-items: baseline; flex-wrap: wrap; gap: 2px 16px; }
.fx-header { flex: 1 1 auto; min-width: 0; }
.fx-header > .widget-html-content { display: flex; align-items: baseline; flex: 1 1 auto;
  min-width: 0; white-space: nowrap; overflow: visible; }
.fx-dashboard .fx-header .fx-tagline { min-width: 0; overflow: hidden;
  text-overflow: ellipsis; flex: 0 1 auto; }
.fx-experiments-box { flex: 0 0 auto; }
.fx-lectures { position: relative; font-size: 12.5px; flex: 0 0 auto; }
.fx-lectures summary { cursor: pointer; color: #0b61a4; list-style: none; }
.fx-lectures summary::-webkit-details-marker { display: none; }
.fx-lectures summary::after { content: " ▾"; }
.fx-lectures[open] summary::after { content: " ▴"; }
.fx-lectures ul { position: absolute; z-index: 20; margin: 2px 0 0 0; padding: 4px 10px;
  list-style: none; background: white; border: 1px solid #d8d8de; border-radius: 4px;
  box-shadow: 0 2px 8px rgba(0, 0, 0, 0.15); }
.fx-lectures li { margin: 2px 0; }
.fx-controls { background: #f7f7f9; border: 1px solid #e3e3e8; border-radius: 6px;
  padding: 4px 8px; max-height: calc(100vh - 70px); overflow-y: auto !important;
  position: sticky; top: 4px; }
.fx-controls > *, .fx-controls .fx-field-box, .fx-rule-options > *,
.fx-more .widget-vbox > * { flex-shrink: 0 !important; }
.fx-more { margin: 2px 0 !important; }
.fx-more .lm-AccordionPanel-title, .fx-more .p-Collapse-header,
.fx-more .jupyter-widget-Collapse-header {
  background: transparent !important; border: none !important; color: #556;
  font-size: 12px; font-weight: 600; padding: 2px 4px !important; }
.fx-controls .fx-section { margin: 6px 0 0 0; font-size: 11px; font-weight: 700;
  letter-spacing: .06em; text-transform: uppercase; color: #667; }
.fx-controls .widget-label { color: #333; }
.fx-controls .widget-inline-hbox, .fx-controls .widget-text, .fx-controls .widget-dropdown,
.fx-controls .widget-checkbox { margin-top: 1px; margin-bottom: 1px; }
.fx-more .p-Accordion-child, .fx-more .lm-Accordion-child, .fx-more .widget-accordion {
  font-size: 12px; }
.fx-hint, .fx-hint .widget-html-content { font-size: 11px; line-height: 1.3; color: #777; }
.fx-hint { margin: -2px 0 3px 4px; }
.fx-rule-info .widget-html-content { line-height: 1.35; }
.fx-hint:empty, .fx-hint .widget-html-content:empty { display: none; }
.fx-rule-info { font-size: 12px; line-height: 1.35; color: #444; margin: 0 0 3px 4px; }
.fx-rule-info i { color: #666; }
.fx-status { font-size: 14px; min-height: 22px; }
.fx-state { display: inline-block; padding: 1px 8px; margin-right: 8px; border-radius: 10px;
  font-weight: 600; font-size: 12px; background: #e8e8ee; color: #333; }
.fx-state-starting, .fx-state-running { background: #dbeafe; color: #1d4ed8; }
.fx-state-paused { background: #fef3c7; color: #92400e; }
.fx-state-finished { background: #dcfce7; color: #166534; }
.fx-state-stopped, .fx-state-loaded { background: #ececec; color: #444; }
.fx-state-diverged, .fx-state-error { background: #dc2626; color: white; }
.fx-message-problem { color: #b91c1c; }
.fx-warning { color: #92400e; background: #fef3c7; border-radius: 4px; padding: 0 6px;
  margin-left: 8px; }
.fx-eta { font-size: 12px; color: #555; white-space: nowrap; }
.fx-toolbar { align-items: center; gap: 2px; }
.fx-toolbar .widget-button { font-weight: 600; }
.fx-plots { display: grid !important; grid-template-columns: repeat(2, minmax(0, 1fr));
  gap: 6px; width: 100%; }
.fx-main { container-type: inline-size; min-width: 0; }
@container (max-width: 820px) { .fx-plots { grid-template-columns: minmax(0, 1fr); } }
.fx-panel { border: 1px solid #ececf0; border-radius: 6px; background: white;
  min-width: 0; overflow: visible; }
.fx-panel-head { align-items: center; gap: 4px; min-height: 24px; padding: 0 4px;
  flex-wrap: nowrap; overflow: visible; }
.fx-caption { font-size: 12px; color: #444; min-width: 0; overflow: hidden;
  white-space: nowrap; text-overflow: ellipsis; flex: 1 1 auto; }
.fx-caption .widget-html-content, .fx-caption .widget-html-content > div {
  overflow: hidden; white-space: nowrap; text-overflow: ellipsis; line-height: 22px; }
.fx-caption b { color: #1f2937; }
.fx-caption .fx-run { color: #555; }
.fx-caption .fx-prev { background: #e5e7eb; color: #374151; border-radius: 8px;
  padding: 0 6px; margin-right: 4px; font-weight: 600; }
.fx-caption .fx-bad { background: #dc2626; color: white; border-radius: 8px; padding: 0 6px;
  font-weight: 600; }
.fx-stale .fx-graph { opacity: .4; filter: grayscale(.7); }
.fx-help { position: relative; font-size: 12px; flex: 0 0 auto; }
.fx-help summary { list-style: none; cursor: pointer; width: 18px; height: 18px;
  line-height: 18px; text-align: center; border-radius: 9px; background: #e5e7eb;
  color: #374151; font-weight: 700; }
.fx-help summary::-webkit-details-marker { display: none; }
.fx-help[open] > div { position: absolute; right: 0; top: 22px; z-index: 20; width: 330px;
  background: white; border: 1px solid #d1d5db; border-radius: 6px; padding: 8px 10px;
  box-shadow: 0 4px 14px rgba(0,0,0,.12); line-height: 1.4; color: #333;
  white-space: normal; }
.fx-layer { flex: 0 0 auto; }
.fx-compare { border-collapse: collapse; font-size: 12px; margin-top: 6px; }
.fx-compare th, .fx-compare td { padding: 2px 8px; border-bottom: 1px solid #eee;
  text-align: left; white-space: nowrap; }
.fx-compare th { color: #555; font-weight: 600; }
.fx-swatch { display: inline-block; width: 14px; height: 4px; border-radius: 2px;
  vertical-align: middle; }
.fx-live-row td { font-weight: 600; }
</style>
"""

# The lecture notebooks (notebooks/ in the repository), opened in JupyterLab on
# Binder: the header links each one (tests check the list matches the folder).
NOTEBOOK_URL = "https://mybinder.org/v2/gh/fa-explore/fa_explore/main?urlpath=lab/tree/notebooks/"
NOTEBOOKS = (
    ("00_start_here.ipynb", "0 · start here"),
    ("01_weight_transport_and_feedback_alignment.ipynb", "1 · BP vs FA"),
    ("02_implicit_regularization.ipynb", "2 · implicit regularization"),
    ("03_product_feedback_alignment.ipynb", "3 · product FA"),
    ("04_forward_gradients_and_fdfa.ipynb", "4 · forward gradients, FDFA"),
    ("05_initial_soft_alignment.ipynb", "5 · soft alignment"),
)

# One line: the lectures are a menu (a <details>), so the header does not wrap.
_HEADER = """
<h2>Learning without weight transport</h2>
<p class="fx-tagline">Errors sent back through other matrices than Wᵀ: the forward weights
learn to <b>align</b>.</p>
<details class="fx-lectures"><summary title="The lecture notebooks, in JupyterLab on Binder"
>Lecture notebooks</summary><ul>""" + "".join(
    f'<li><a href="{NOTEBOOK_URL}{name}" target="_blank" rel="noopener">'
    f'{html.escape(title)}</a></li>' for name, title in NOTEBOOKS) + "</ul></details>\n"


def _hint(css_class: str = "fx-hint") -> widgets.HTML:
    hint = widgets.HTML("")
    hint.add_class(css_class)
    return hint


def _section(title: str) -> widgets.HTML:
    label = widgets.HTML(html.escape(title))
    label.add_class("fx-section")
    return label


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(
        value)


def run_caption(view: RunView | None, config: RunConfig) -> str:
    """What a panel says about the run it shows: rule · dataset · settings that differ
    from the defaults · status (plain text)."""
    if view is None:
        return f"{config.rule} · {config.dataset} · no run yet: press Train"
    request, default = view.request, RunConfig()
    parts = [f"{name}={format_value(getattr(request, name))}"
             for name in request.to_dict()
             if name not in ("rule", "dataset", "rule_options", *UNCOMPARED_FIELDS)
             and getattr(request, name) != getattr(default, name)]
    parts += [f"{k}={format_value(v)}" for k, v in sorted(request.rule_options.items())]
    settings = ", ".join(parts)
    if len(settings) > 70:
        settings = settings[:68] + "…"
    status = view.status
    if view.source == "loaded":
        status = f"saved run, {status}"
    if view.live_changes:
        status += " · " + "; ".join(c.text() for c in view.live_changes[-2:])
    return " · ".join(p for p in (request.rule, request.dataset, settings, status) if p)


class Panel:
    """A plot with its caption row: title, which run it shows, a "?" help."""

    def __init__(self, name: str, carry_plotly: bool, on_resync: Callable[[], None],
                 extra: widgets.Widget | None = None):
        self.name = name
        self.plot = PlotlyView(go.Figure(), carry_plotly=carry_plotly, on_resync=on_resync,
                               on_ack=on_resync)
        self.plot.add_class(f"fx-plot-{name}")
        self.plot.add_class("fx-plot")
        self.caption = widgets.HTML("")
        self.caption.add_class("fx-caption")
        self.help = widgets.HTML(
            f'<details class="fx-help"><summary title="What does this show?">?</summary>'
            f"<div>{html.escape(PANEL_HELP[name])}</div></details>")
        self.help.add_class("fx-help-box")
        head = [self.caption, *([extra] if extra is not None else []), self.help]
        self.head = widgets.HBox(head)
        self.head.add_class("fx-panel-head")
        self.box = widgets.VBox([self.head, self.plot])
        self.box.add_class("fx-panel")
        self.box.add_class(f"fx-panel-{name}")
        self.title = self.shown_title = PANEL_TITLES[name]
        # What was last sent: a key of the whole figure, rows sent, when; for an
        # ensemble's band, the rows of each member, the last step and the traces.
        self.key: Any = None
        self.rows = 0
        self.counts: tuple[int, ...] = ()
        self.frontier = -math.inf
        self.band_traces: dict[int, tuple[str, str]] = {}
        self.sent_at = -math.inf
        self.stale: bool | None = None
        self.caption_text = ""

    def set_caption(self, title: str, caption: str, stale: bool, problem: str = "") -> None:
        prev = '<span class="fx-prev">previous run</span>' if stale else ""
        bad = f' <span class="fx-bad">{html.escape(problem)}</span>' if problem else ""
        text = (f"{prev}<b>{html.escape(title)}</b> · "
                f'<span class="fx-run">{html.escape(caption)}</span>{bad}')
        if text != self.caption_text:
            # The whole caption as a tooltip: a narrow panel cuts it with an ellipsis.
            full = html.escape(f"{title} · {caption}", quote=True)
            self.caption.value = self.caption_text = f'<div title="{full}">{text}</div>'
            self.caption_text = text
        if stale != self.stale:
            (self.box.add_class if stale else self.box.remove_class)("fx-stale")
            self.stale = stale


class Dashboard(widgets.VBox):
    """The alignment dashboard: controls on the left, live plots on the right.

    ``Dashboard()`` displays itself in JupyterLab; making a new one closes the
    previous (re-running the cell leaks no threads). ``config`` presets the
    controls; ``query`` (a page URL's query string, as Voilà passes it in the
    ``QUERY_STRING`` environment variable) does the same and reports every bad
    part of a link in the status line instead of failing. Nothing trains until
    Train is pressed. ``warm_up=False`` skips the background warm-up (tests);
    ``clock`` paces the redraws (:class:`RedrawPacer`; tests pass a fake one).
    Torch's CPU threads follow the run's ``threads`` setting (the thread policy,
    :mod:`fa_explore.threads`); the progress line shows the choice.
    ``sweep_options`` go to the Sweep tab's :class:`~.sweep_state.SweepSession`
    (e.g. ``cache_dir``). ``seeds`` (or ``?seeds=4`` in the link) trains that many
    seeds at once: every curve is then their mean with a min–max band.
    """

    _previous: ClassVar[weakref.ref | None] = None
    _exit_hook: ClassVar[bool] = False

    def __init__(self, config: RunConfig | None = None, *, query: str | None = None,
                 landscape_interval: float | None = 3.0, warm_up: bool = True,
                 clock: Callable[[], float] = time.monotonic, close_previous: bool = True,
                 sweep_options: dict[str, Any] | None = None, seeds: int | None = None):
        if close_previous:
            previous = Dashboard._previous() if Dashboard._previous else None
            if previous is not None:
                previous.close(timeout=5.0)
        link_problem = ""
        app = AppSettings(seeds=1 if seeds is None else seeds)
        if query:
            config, link_problem = config_from_query(query)
            linked = app_settings_from_query(query)[0]  # its problems are in link_problem
            if linked != AppSettings():
                app = linked
        self._ui = threading.RLock()
        self._local = threading.local()
        self._clock = clock
        self.session = TrainingSession(
            config or RunConfig(), on_status=self._on_status, on_snapshot=self._on_snapshot,
            on_landscape=self._on_landscape, landscape_interval=landscape_interval,
            seeds=app.seeds)
        self._render_wanted = threading.Event()
        self._closing = threading.Event()
        self._closed = False
        self._threads_stopped = False
        self._landscape: tuple[int, Any, Any] | None = None  # (generation, pca, surface)
        self._pacer = RedrawPacer(clock=clock)
        self._renderer = threading.Thread(target=self._render_loop, name="fx-render",
                                          daemon=True)
        self._notice = ""  # a message about the last action, shown after the status
        self._notice_is_problem = False
        self._drawn: tuple[int, int, str] | None = None  # (generation, rows, status) drawn
        self._pin_colors: dict[int, str] = {}
        self._table_html = ""
        self._status_html = ""
        self._guides = {q: text for _, q, text in EXPERIMENTS}

        self._build_controls()
        self._build_plots()
        self._build_toolbar()
        # The Sweep tab and the Analyse action: their own modules, drawn by our renderer.
        self.sweep_panel = SweepPanel(lambda: self.session.config, self._request_render,
                                      self._writing, **(sweep_options or {}))
        self.analyse_panel = AnalysePanel(self.session, self._request_render, self._writing)
        super().__init__(children=self._layout())
        self.add_class("fx-dashboard")
        self._sync_controls()
        self._render_now()  # the empty plots, synchronously: the page shows them at once
        if link_problem:
            self._set_notice(link_problem, problem=True)
        self._show_status()
        self._renderer.start()
        if warm_up:
            self.session.warm_up()
        Dashboard._previous = weakref.ref(self)
        if not Dashboard._exit_hook:
            # Registered after ipykernel's and zmq's own exit handlers, so it runs
            # before them (atexit is last in, first out): the threads stop while the
            # kernel can still send what they queued. Without it a kernel shut down
            # mid-run logged "zmq gc socket requested during shutdown" tracebacks.
            atexit.register(_stop_at_exit)
            Dashboard._exit_hook = True

    # ================================================================ syncing
    @property
    def _syncing(self) -> bool:
        """True while this thread moves controls to show the config (their observers
        then do nothing). Per thread: another thread's writes never hide a user's
        change, and it can never stay set."""
        return getattr(self._local, "syncing", False)

    class _Sync:
        def __init__(self, dashboard: Dashboard):
            self.dashboard = dashboard

        def __enter__(self) -> None:
            self.dashboard._ui.acquire()
            local = self.dashboard._local
            self.saved = getattr(local, "syncing", False)
            local.syncing = True

        def __exit__(self, *exc: Any) -> None:
            self.dashboard._local.syncing = self.saved
            self.dashboard._ui.release()

    def _writing(self) -> Dashboard._Sync:
        """Hold the widget lock and mark this thread's writes as the kernel's."""
        return Dashboard._Sync(self)

    # ================================================================ widgets
    def _build_controls(self) -> None:
        self.fields: dict[str, Field] = {}
        for name, setting in SETTINGS.items():
            field = make_field(setting, self._on_field, lambda: self._syncing)
            if field is not None:
                field.main.tooltip = field.tooltip
                field.on_error = self._on_field_error
                self.fields[name] = field
        # The dashboard's own settings (seeds): fields from the same declarations.
        self.app_fields: dict[str, Field] = {}
        for name, setting in APP_SETTINGS.items():
            field = make_field(setting, self._on_field, lambda: self._syncing)
            field.main.tooltip = field.tooltip
            field.on_error = self._on_field_error
            self.app_fields[name] = field
        self.option_fields: dict[str, Field] = {}
        self.options_box = widgets.VBox([])
        self.options_box.add_class("fx-rule-options")
        self.rule_info = _hint("fx-rule-info")
        self.defaults_hint = _hint()
        self.rule_defaults = widgets.Button(
            description="rule defaults", icon="undo", layout=widgets.Layout(width="130px"),
            tooltip="Optimizer, learning rate, momentum, weight decay, batch size and "
                    "epochs back to the rule's defaults")
        self.rule_defaults.add_class("fx-defaults")
        self.rule_defaults.on_click(self._guard(self._on_rule_defaults))
        self.link = CopyLink(in_voila=bool(os.environ.get("QUERY_STRING") is not None
                                           and os.environ.get("SERVER_SOFTWARE", "")
                                           .startswith("voila")))
        self.link.add_class("fx-link")
        self.tips = TooltipShim(on_typed=self._on_typed)
        # Names the tests and notebooks use.
        f = self.fields
        self.rule, self.dataset, self.model = f["rule"].main, f["dataset"].main, f["model"].main
        self.depth, self.width = f["hidden"].depth, f["hidden"].width
        self.activation, self.optimizer = f["activation"].main, f["optimizer"].main
        self.angle, self.angle_random = f["init_angle"].main, f["init_angle"].default_box
        self.sparsity, self.expansion = f["feedback_sparsity"].main, f["expansion_ratio"].main
        self.lr, self.batch_size, self.epochs = f["lr"].main, f["batch_size"].main, (
            f["epochs"].main)
        self.seed, self.device = f["seed"].main, f["device"].main
        self.dataset_info = f["dataset"].hint
        self.angle_hint = f["init_angle"].hint

    def _build_toolbar(self) -> None:
        def button(description, css, icon, tooltip, style=""):
            b = widgets.Button(description=description, icon=icon, tooltip=tooltip,
                               button_style=style, layout=widgets.Layout(width="auto"))
            b.add_class(css)
            return b

        self.train = button("Train", "fx-train", "play", "Start a run with these settings",
                            "primary")
        self.pause = button("Pause", "fx-pause", "pause", "Pause or resume the run")
        self.step = button("Step", "fx-step", "step-forward",
                           "While paused: train up to the next evaluation")
        self.stop = button("Stop", "fx-stop", "stop", "Stop the run")
        self.reset = button("Reset", "fx-reset", "refresh",
                            "Stop and clear the current run (pinned runs stay)")
        self.pin = button("Pin", "fx-pin", "thumb-tack",
                          "Keep this run's curves to compare with the next (up to 6)")
        self.unpin = button("Clear pins", "fx-unpin", "times", "Forget the pinned runs")
        self.export = button("Export", "fx-export", "download",
                             "Download the run as a zip: run.json, weights.safetensors and "
                             "the figures as HTML")
        self.upload = Uploader(on_file=self._guard(self._on_upload), accept=".zip",
                               description="Load run", icon="upload",
                               tooltip="Open a zip made by Export to view and pin it")
        self.upload.add_class("fx-load")
        self.downloader = Downloader(on_done=self._on_downloaded)
        self.progress = widgets.FloatProgress(min=0, max=1, value=0,
                                              layout=widgets.Layout(width="260px"))
        self.progress.add_class("fx-progress")
        self.eta = widgets.HTML("")
        self.eta.add_class("fx-eta")
        self.status = widgets.HTML("")
        self.status.add_class("fx-status")

        self.train.on_click(self._guard(self._on_train))
        self.pause.on_click(self._guard(self._on_pause))
        self.step.on_click(self._guard(self._on_step))
        self.stop.on_click(self._guard(self._on_stop))
        self.reset.on_click(self._guard(self._on_reset))
        self.pin.on_click(self._guard(self._on_pin))
        self.unpin.on_click(self._guard(self._on_unpin))
        self.export.on_click(self._guard(self._on_export))

    def _build_plots(self) -> None:
        resync = self._request_render
        self.layer = widgets.Dropdown(description="layer", style={"description_width": "36px"},
                                      layout=widgets.Layout(width="130px"),
                                      tooltip="Which layer's feedback and forward weights")
        self.layer.add_class("fx-layer")
        self.layer.observe(self._guard(
            lambda change: None if self._syncing else self._request_render()), names="value")
        self.panels = {
            "curves": Panel("curves", True, resync),  # the first plot carries plotly.js
            "alignment": Panel("alignment", False, resync),
            "landscape": Panel("landscape", False, resync),
            "weights": Panel("weights", False, resync, extra=self.layer),
            "boundary": Panel("boundary", False, resync),
        }
        p = self.panels
        self.curves_plot, self.alignment_plot = p["curves"].plot, p["alignment"].plot
        self.landscape_plot, self.weights_plot = p["landscape"].plot, p["weights"].plot
        self.boundary_plot = p["boundary"].plot
        self.weights_panel = p["weights"].box
        self.plots = widgets.Box([])
        self.plots.add_class("fx-plots")
        self.table = widgets.HTML("")
        self.table.add_class("fx-table")

    def _controls_column(self) -> widgets.VBox:
        children: list[widgets.Widget] = []
        for group in GROUPS:
            names = [s.name for s in in_group(group) if s.name in self.fields]
            primary = [self.fields[n].box for n in names if n in PRIMARY]
            more = [self.fields[n].box for n in names if n not in PRIMARY]
            children.append(_section(SECTION_TITLES.get(group, group)))
            if group == "rule":
                children += [primary[0], self.rule_info, *primary[1:], self.options_box]
            else:
                children += primary
            if group == "optimisation":
                children.append(widgets.HBox([self.rule_defaults, self.defaults_hint],
                                             layout=widgets.Layout(align_items="center")))
            if group == "run":
                children += [f.box for f in self.app_fields.values()]
            if more:
                accordion = widgets.Accordion(children=[widgets.VBox(more)],
                                              titles=(f"more {SECTION_TITLES[group].lower()} "
                                                      "settings",))
                accordion.selected_index = None
                accordion.add_class("fx-more")
                children.append(accordion)
        children += [_section("Share"), self.link]
        controls = widgets.VBox(children, layout=widgets.Layout(
            width="344px", min_width="344px", flex="0 0 344px"))
        controls.add_class("fx-controls")
        return controls

    def _layout(self) -> list[widgets.Widget]:
        css = widgets.HTML(_CSS)
        header = widgets.HTML(_HEADER)
        header.add_class("fx-header")
        self.experiments = ExperimentLinks(
            label="First experiments:", on_open=self._guard(self._on_experiment),
            links=[{"label": label, "query": query, "title": text}
                   for label, query, text in EXPERIMENTS])
        self.experiments.add_class("fx-experiments-box")
        head = widgets.HBox([header, self.experiments])
        head.add_class("fx-header-row")
        toolbar = widgets.HBox(
            [self.train, self.pause, self.step, self.stop, self.reset,
             widgets.HTML("&nbsp;"), self.pin, self.unpin, self.export, self.upload],
            layout=widgets.Layout(flex_flow="row wrap", align_items="center"))
        toolbar.add_class("fx-toolbar")
        progress_row = widgets.HBox([self.progress, self.eta],
                                    layout=widgets.Layout(align_items="center"))
        train_tab = widgets.VBox([toolbar, progress_row, self.status, self.plots, self.table,
                                  self.analyse_panel.box], layout=widgets.Layout(min_width="0"))
        train_tab.add_class("fx-train-tab")
        self.tabs = widgets.Tab(children=[train_tab, self.sweep_panel.box],
                                titles=("Train", "Sweep"))
        self.tabs.add_class("fx-tabs")
        main = widgets.VBox([self.tabs], layout=widgets.Layout(flex="1 1 auto", min_width="0",
                                                               margin="0 0 0 8px"))
        main.add_class("fx-main")
        body = widgets.HBox([self._controls_column(), main],
                            layout=widgets.Layout(width="100%", align_items="flex-start"))
        return [css, self.tips, self.downloader, head, body]

    # ============================================================ sync state
    @staticmethod
    def _rule_label(name: str) -> str:
        return rule_label(name)

    @staticmethod
    def _n_layers(cfg: RunConfig) -> int:
        return len(cfg.hidden) + 1 + (len(cfg.channels) if cfg.model == "cnn" else 0)

    def _sync_controls(self) -> None:
        """Show the session's config in the controls, enable what applies and say
        why the rest is disabled."""
        cfg = self.session.config
        rule = RULES[cfg.rule]
        with self._writing():
            for name, field in self.fields.items():
                field.show(cfg)
                shown, reason = setting_state(cfg, name)
                note = download_hint(cfg.dataset) if name == "dataset" else ""
                if reason and SETTINGS[name].rule_flag:
                    from .controls import rules_using

                    users = rules_using(name)
                    field.main.tooltip = reason + (f" Used by: {', '.join(users)}."
                                                   if users else "")
                else:
                    field.main.tooltip = field.tooltip
                field.set_state(shown, reason, note)
            self.fields["dataset"].hint.value = html.escape(
                download_hint(cfg.dataset) or DATASETS[cfg.dataset].description)
            self.rule_info.value = (f"{html.escape(rule.description)}<br><i>"
                                    f"{html.escape(rule.paper)}</i>")
            self._sync_rule_options(cfg)
            chosen = [SETTINGS[f].label for f in RULE_DEFAULT_FIELDS if getattr(cfg, f) is not None]
            self.defaults_hint.value = html.escape(
                f"{rule.name}'s defaults" if not chosen else "set: " + ", ".join(chosen))
            self.rule_defaults.disabled = not chosen
            app = self._app_settings()
            for field in self.app_fields.values():
                field.show(app)
            self.link.query = join_query(cfg.to_query(), app.to_query())
            self.tips.tips = self._tooltips()
        self._sync_layer_choices()
        self._sync_plot_grid()

    def _app_settings(self) -> AppSettings:
        return AppSettings(seeds=self.session.seeds)

    def _sync_rule_options(self, cfg: RunConfig) -> None:
        declared = rule_option_settings(RULES[cfg.rule])
        if list(self.option_fields) != list(declared) or getattr(
                self, "_options_rule", None) != cfg.rule:
            self.option_fields = {}
            for key, option in declared.items():
                field = make_field(option, self._on_field, lambda: self._syncing,
                                   option_of=cfg.rule)
                if field is not None:
                    field.main.tooltip = field.tooltip
                    field.on_error = self._on_field_error
                    self.option_fields[key] = field
            self._options_rule = cfg.rule
            self.options_box.children = (
                ([_section(f"{cfg.rule} options")] if self.option_fields else [])
                + [f.box for f in self.option_fields.values()])
        for field in self.option_fields.values():
            field.show(cfg)

    def _tooltips(self) -> dict[str, str]:
        tips = {}
        for field in [*self.fields.values(), *self.app_fields.values(),
                      *self.option_fields.values()]:
            tips[field.css] = field.main.tooltip or field.tooltip
        tips["fx-depth"] = "Number of hidden layers (0: a linear classifier)"
        tips["fx-width"] = "Units in every hidden layer"
        for b in (self.train, self.pause, self.step, self.stop, self.reset, self.pin,
                  self.unpin, self.export):
            tips[b._dom_classes[0]] = b.tooltip
        tips["fx-load"] = "Open a zip made by Export to view and pin it"
        tips["fx-layer"] = "Which layer's feedback and forward weights"
        return tips

    def _sync_layer_choices(self) -> None:
        view = self.session.view
        n_layers = (view.run.model.n_layers if view is not None
                    else self._n_layers(self.session.config))
        options = [(f"{n} of {n_layers}", n) for n in range(2, n_layers + 1)] or [("1 of 1", 1)]
        with self._writing():
            current = self.layer.value
            values = [v for _, v in options]
            if list(self.layer.options) != options:
                self.layer.options = options
            self.layer.value = current if current in values else values[-1]

    def _shown_dataset(self) -> str:
        view = self.session.view
        return view.config.dataset if view is not None else self.session.config.dataset

    def _sync_plot_grid(self) -> None:
        # The panels follow the run shown (a 2-D run keeps its decision regions even
        # when the controls moved to another dataset): no panel mixes datasets.
        two_d = DATASETS[self._shown_dataset()].kind == "2d"
        names = ["curves", "alignment", "landscape", "weights"]
        if two_d:
            names = ["boundary", *names]
        boxes = [self.panels[n].box for n in names]
        with self._writing():
            if list(self.plots.children) != boxes:
                self.plots.children = boxes

    # =============================================================== status
    def _set_notice(self, text: str, problem: bool = False) -> None:
        self._notice, self._notice_is_problem = text, problem

    def _displayed_status(self) -> tuple[str, str]:
        """The badge and message: a run's end ("finished", "diverged") shows once
        its last points are drawn."""
        session = self.session
        status, message = session.status, session.message
        view = session.view
        if status in ("finished", "diverged") and view is not None and (
                self._drawn != (view.generation, len(view.rows), view.status)):
            return "running", "drawing the last points"
        return status, message

    def _show_status(self) -> None:
        session = self.session
        status, message = self._displayed_status()
        problem = status in ("diverged", "error")
        if self._notice:
            message, problem = self._notice, self._notice_is_problem or problem
        css = " fx-message-problem" if problem else ""
        warning = (f'<span class="fx-warning">⚠ {html.escape(session.warning)}</span>'
                   if session.warning else "")
        text = (f'<span class="fx-state fx-state-{status}">{status}</span>'
                f'<span class="fx-message{css}">{html.escape(message)}</span>{warning}')
        view = session.view
        active = session.active
        pinnable = (view is not None and bool(view.rows) and not active
                    and all(e.generation != view.generation for e in session.pinned))
        with self._writing():
            if text != self._status_html:
                self.status.value = self._status_html = text
            self.train.disabled = active
            self.train.tooltip = ("A run is going: Stop it (or change a setting) to start over"
                                  if active else "Start a run with these settings")
            self.pause.disabled = status not in ("running", "paused")
            self.pause.description = "Resume" if status == "paused" else "Pause"
            self.pause.icon = "play" if status == "paused" else "pause"
            self.step.disabled = status != "paused"
            self.stop.disabled = not active
            self.reset.disabled = view is None and not active
            self.pin.disabled = not pinnable
            self.unpin.disabled = not session.pinned
            self.export.disabled = view is None or not view.rows or active
            self._show_progress()

    def _show_progress(self) -> None:
        session = self.session
        progress = session.progress()
        status = session.status
        with self._writing():
            if progress.total_steps:
                self.progress.value = progress.fraction
                if status == "running":
                    left = (f" · {format_seconds(progress.eta)} left"
                            if progress.eta is not None else "")
                elif status == "paused":
                    left = " · paused"
                else:
                    left = ""
                threads = (f' · <span class="fx-threads">{html.escape(progress.threads)}</span>'
                           if progress.threads else "")
                seeds = f" (all {progress.seeds} seeds)" if progress.seeds > 1 else ""
                text = (f"step {progress.step:,} / {progress.total_steps:,}{seeds} · "
                        f"{format_seconds(progress.elapsed)}{left}{threads}")
            else:
                self.progress.value = 0
                text = "starting…" if status == "starting" else ""
            if self.eta.value != text:
                self.eta.value = text
            self.progress.bar_style = {"finished": "success", "diverged": "danger",
                                       "error": "danger", "paused": "warning"}.get(status, "info")

    # ============================================================ listeners
    def _on_status(self, session: TrainingSession) -> None:
        # From the worker or the kernel thread (under the session's lock): a new status
        # replaces older notes; the renderer draws what it means for the plots.
        if session.status in ACTIVE and session.status != "paused":
            self._set_notice("")
        self._show_status()
        self._request_render()

    def _on_snapshot(self, session: TrainingSession, snapshot) -> None:
        # The worker only flags new data; the renderer thread draws it.
        self._request_render()

    def _on_landscape(self, session: TrainingSession, pca, surface) -> None:
        self._landscape = (session.generation, pca, surface)
        self._request_render()

    def _on_downloaded(self, name: str, size: int) -> None:
        self._set_notice(f"Downloaded {name} ({size / 1e6:.1f} MB): run.json, "
                         "weights.safetensors and the figures as HTML.")
        self._show_status()

    # ============================================================== drawing
    def _request_render(self) -> None:
        """Ask the renderer thread to redraw (it coalesces requests)."""
        self._render_wanted.set()

    def _render_loop(self) -> None:
        while True:
            self._render_wanted.wait()
            if self._closing.is_set():
                return
            self._render_wanted.clear()
            self._pacer.start()
            try:
                self._render_now()
            except Exception:  # noqa: BLE001 - a drawing error must not kill the page
                log.exception("redrawing the dashboard failed")
            # Requests made meanwhile stay set: one redraw after the pause serves them all.
            if self._closing.wait(self._pacer.pause(busy=self.session.status == "running")):
                return

    def _pinned_shown(self, dataset: str) -> tuple[list[views.PinnedRun], list[Any], int]:
        """Pinned runs of ``dataset`` (a panel never mixes datasets) as PinnedRuns, their
        entries, and how many pins of other datasets are left out."""
        session = self.session
        pins = list(session.pinned)  # the kernel thread may pin meanwhile
        labels = difference_labels([e.config for e in pins] + [session.config])[:len(pins)]
        for entry in pins:
            if entry.generation not in self._pin_colors:
                used = set(self._pin_colors.values())
                free = [c for c in views.PINNED_COLORS if c not in used] or list(
                    views.PINNED_COLORS)
                self._pin_colors[entry.generation] = free[0]
        alive = {e.generation for e in pins}
        self._pin_colors = {g: c for g, c in self._pin_colors.items() if g in alive}
        shown, entries = [], []
        for label, entry in zip(labels, pins, strict=True):
            if entry.dataset == dataset:
                shown.append(views.PinnedRun(label, entry.history,
                                             self._pin_colors[entry.generation]))
                entries.append(entry)
        return shown, entries, len(pins) - len(shown)

    def _render_now(self) -> None:
        """Draw the current state: the shown run's plots, or empty ones."""
        self._retry = False
        self._draw_state()
        for panel in (self.sweep_panel, self.analyse_panel):
            try:
                self._retry = panel.render() or self._retry
            except Exception:  # noqa: BLE001 - one panel's drawing error spares the rest
                log.exception("redrawing a dashboard panel failed")
        if self._retry:  # something waits for the page: look again after the pause
            self._render_wanted.set()

    def _draw_state(self) -> None:
        session = self.session
        view = session.view
        config = session.config
        self._sync_plot_grid()
        dataset = self._shown_dataset()
        pinned, entries, hidden = self._pinned_shown(dataset)
        stale = view is not None and not session.matches_controls()
        caption = run_caption(view, config)
        if hidden:
            caption += f" · {hidden} pin{'s' if hidden > 1 else ''} of other datasets not shown"
        problem = "diverged" if view is not None and view.status == "diverged" else ""
        final = view is not None and view.status in TERMINAL
        pins_key = tuple((e.generation, p.label, p.color) for e, p in zip(entries, pinned,
                                                                           strict=True))
        generation = view.generation if view is not None else -session.generation
        n_rows = len(view.rows) if view is not None else 0
        now = self._clock()

        if view is not None and self.layer.options and len(self.layer.options) != max(
                1, view.run.model.n_layers - 1):
            self._sync_layer_choices()
        direct = view is not None and view.run.rule.feedback_kind == "direct" or (
            view is None and RULES[config.rule].feedback_kind == "direct")
        n_layers = view.run.model.n_layers if view is not None else self._n_layers(config)

        # Curves and alignment: whole figures at a new run, new pins or the end; in
        # between only the new points. An ensemble of seeds draws the mean and band.
        weight_title = views.DIRECT_ANGLE_TITLE if direct else views.WEIGHT_ANGLE_TITLE
        columns = [f"weight_angle/{l}" for l in range(1, n_layers + 1)] + [
            f"grad_angle/{l}" for l in range(1, n_layers + 1)]
        if view is not None and view.seeds > 1 and view.member_rows:
            self._draw_band_lines(
                "curves", (generation, pins_key, final), view,
                lambda bands: views.curves_figure(view.history, pinned, bands=bands),
                views.CURVE_COLUMNS, caption, stale, problem)
            self._draw_band_lines(
                "alignment", (generation, pins_key, final, n_layers, weight_title), view,
                lambda bands: views.alignment_figure(view.history, n_layers, pinned,
                                                     weight_title=weight_title, bands=bands),
                columns, caption, stale, problem)
            caption += f" · first of {view.seeds} seeds"  # the other panels show one run
        else:
            self._draw_lines(
                "curves", (generation, pins_key, final), view, n_rows,
                lambda: views.curves_figure(view.history if view else None, pinned),
                {i: c for i, c in enumerate(views.CURVE_COLUMNS)}, caption, stale, problem)
            self._draw_lines(
                "alignment", (generation, pins_key, final, n_layers, weight_title), view,
                n_rows,
                lambda: views.alignment_figure(view.history if view else None, n_layers,
                                               pinned, weight_title=weight_title),
                dict(enumerate(columns)), caption, stale, problem)

        # Weights, decision regions: whole figures, every few seconds while training.
        layer = min(max(1, self.layer.value or 1), n_layers)
        self._draw_paced("weights", (generation, layer, final), now, WEIGHTS_INTERVAL,
                         lambda: self._weights_figure(view, layer, direct), caption, stale,
                         problem)
        if DATASETS[dataset].kind == "2d":
            self._draw_paced("boundary", (generation, final), now, BOUNDARY_INTERVAL,
                             lambda: self._boundary_figure(view), caption, stale, problem)
        land = self._landscape if (self._landscape is not None and view is not None
                                   and self._landscape[0] == view.generation) else None
        self._draw_paced("landscape", (generation, id(land)), now, math.inf,
                         lambda: self._landscape_figure(view, land), caption, stale, problem)

        table = self._table(view, pinned, entries)
        with self._writing():
            if table != self._table_html:
                self.table.value = self._table_html = table
        if view is not None and final:
            busy = any(p.plot.busy for p in self.panels.values())
            drawn = (view.generation, n_rows, view.status)
            if busy:
                self._retry = True
            elif self._drawn != drawn:
                self._drawn = drawn
                self._show_status()
        self._show_progress()

    def _send_figure(self, panel: Panel, figure: go.Figure, caption: str, stale: bool,
                     problem: str) -> None:
        figure, title = views.panel_figure(figure, PANEL_HEIGHT)
        for long, short in SHORT_TITLES:  # the caption row is narrow
            title = title.replace(long, short)
        panel.shown_title = title or panel.title
        prepared = panel.plot.prepare(figure)  # the JSON, outside the widget lock
        with self._writing():
            panel.set_caption(panel.shown_title, caption, stale, problem)
            panel.plot.show_prepared(prepared)

    def _draw_lines(self, name: str, key: Any, view: RunView | None, n_rows: int,
                    build: Callable[[], go.Figure], columns: dict[int, str], caption: str,
                    stale: bool, problem: str) -> None:
        panel = self.panels[name]
        if key != panel.key or panel.plot.needs_full or n_rows < panel.rows:
            self._send_figure(panel, build(), caption, stale, problem)
            panel.key, panel.rows = key, n_rows
            return
        with self._writing():
            panel.set_caption(panel.shown_title, caption, stale, problem)
        if view is None or n_rows == panel.rows:
            return
        if panel.plot.busy:
            self._retry = True  # the page is still drawing the last update: come back
            return
        new = view.rows[panel.rows:n_rows]
        points = {index: views.rows_series(new, column) for index, column in columns.items()}
        with self._writing():
            panel.plot.extend(points)
        panel.rows = n_rows

    def _draw_band_lines(self, name: str, key: Any, view: RunView,
                         build: Callable[[Any], go.Figure], columns: Sequence[str],
                         caption: str, stale: bool, problem: str) -> None:
        """Like :meth:`_draw_lines` for an ensemble: the live traces are the mean over
        seeds, each with a band (two traces, found by their ``meta``). New points are
        appended when every new row lies after what is drawn (a batched ensemble);
        otherwise (seeds trained one after another) the figure is drawn again."""
        panel = self.panels[name]
        members = view.member_rows
        counts = tuple(len(rows) for rows in members)
        caption = f"{caption} · {seed_bands(members, ()).caption}"
        if key != panel.key or panel.plot.needs_full or not appendable(
                members, panel.counts, panel.frontier):
            figure = build(seed_bands(members, columns))
            # Which trace draws what: live means first, then each band's two edges.
            panel.band_traces = {i: (c, "mean") for i, c in enumerate(columns)}
            panel.band_traces.update({i: tuple(t.meta.split(":")) for i, t in
                                      enumerate(figure.data) if ":" in str(t.meta or "")})
            self._send_figure(panel, figure, caption, stale, problem)
            panel.key, panel.counts, panel.frontier = key, counts, last_step(members)
            return
        with self._writing():
            panel.set_caption(panel.shown_title, caption, stale, problem)
        if counts == panel.counts:
            return
        if panel.plot.busy:
            self._retry = True  # the page is still drawing the last update: come back
            return
        bands = seed_bands(members, columns, after=panel.frontier)
        points = {}
        for index, (column, part) in panel.band_traces.items():
            band = bands[column]
            points[index] = (band.steps, {"mean": band.mean, "low": band.low,
                                          "high": band.high}[part])
        with self._writing():
            panel.plot.extend(points)
        panel.counts, panel.frontier = counts, last_step(members)

    def _draw_paced(self, name: str, key: Any, now: float, interval: float,
                    build: Callable[[], go.Figure], caption: str, stale: bool,
                    problem: str) -> None:
        panel = self.panels[name]
        due = now - panel.sent_at >= interval and self.session.status == "running"
        if key != panel.key or panel.plot.needs_full or (due and not panel.plot.busy):
            figure = build()
            self._send_figure(panel, figure, caption, stale, problem)
            panel.key, panel.sent_at = key, now
        else:
            if due:
                self._retry = True  # the page is still drawing the last one: come back
            with self._writing():
                panel.set_caption(panel.shown_title, caption, stale, problem)

    def _weights_figure(self, view: RunView | None, layer: int, direct: bool) -> go.Figure:
        labels = views.DIRECT_LABELS if direct else views.WEIGHT_LABELS
        if view is None:
            return views.weights_figure(None, None, layer, labels=labels)
        run = view.run
        model, rule = run.model, run.rule
        try:
            x = run.data.x_train[:256] if direct else None
        except Exception:  # noqa: BLE001 - a loaded run's data may be unavailable
            x = None
        pair = None
        if layer >= 1 and (x is not None or not direct):
            pair = rule.alignment_target(model, layer - 1, x)
        if pair is None:
            return views.weights_figure(model.layers[layer - 1].weight.detach(), None, layer,
                                        labels=labels)
        feedback, target = pair
        return views.weights_figure(target, feedback, layer, labels=labels)

    def _boundary_figure(self, view: RunView | None) -> go.Figure:
        if view is None or DATASETS[view.config.dataset].kind != "2d":
            return views.boundary_figure(None, None, None, None)
        from ..analysis import decision_grid

        data = view.run.data  # the run's own data: the settings may have moved on
        grid = decision_grid(view.run.model, data.x_train, resolution=60)
        return views.boundary_figure(grid, data.x_train, data.y_train, data.class_names)

    def _landscape_figure(self, view: RunView | None, land) -> go.Figure:
        if view is not None and view.source == "loaded":
            return views.landscape_figure(None, None, empty_text=(
                "A saved run keeps no trajectory of its weights:<br>"
                "its loss landscape is drawn only while it trains."))
        if land is None:
            return views.landscape_figure(None, None)
        return views.landscape_figure(land[2], land[1])

    def _table(self, view: RunView | None, pinned: list[views.PinnedRun], entries) -> str:
        if view is None or not pinned:
            return ""
        runs = [(view.request, view, views.LIVE_COLOR, True)] + [
            (e.config, e.view, p.color, False) for p, e in zip(pinned, entries, strict=True)]
        labels = difference_labels([c for c, _, _, _ in runs])
        rows = []
        for label, (_, shown, color, live) in zip(labels, runs, strict=True):
            if shown is None:
                continue
            last = shown.final
            n = shown.run.model.n_layers
            rows.append(views.TableRow(
                ("this run: " if live else "") + label, color, shown.status,
                float(last.get("test_acc", math.nan)),
                [last.get(f"weight_angle/{k}", math.nan) for k in range(1, n + 1)],
                [last.get(f"grad_angle/{k}", math.nan) for k in range(1, n + 1)],
                int(last.get("step", 0) or 0), float(last.get("time", math.nan)), live=live))
        return views.comparison_html(rows)

    # ============================================================= handlers
    def _guard(self, handler: Callable[..., None]) -> Callable[..., None]:
        """Run a UI handler; any error goes to the status line in plain words and
        its traceback to the server log, never to the page."""

        def guarded(*args: Any) -> None:
            try:
                handler(*args)
            except ValueError as exc:
                self._set_notice(plain_message(exc), problem=True)
                self._show_status()
            except Exception as exc:  # noqa: BLE001
                log.exception("dashboard action failed")
                self._set_notice(f"Something went wrong: {plain_message(exc)}", problem=True)
                self._show_status()

        return guarded

    def _on_typed(self, css: str, text: str) -> None:
        """A number typed into a slider's readout (before the slider clamps it)."""
        for field in [*self.fields.values(), *self.app_fields.values(),
                      *self.option_fields.values()]:
            if field.css == css and hasattr(field, "take_typed"):
                field.take_typed(text)

    def _on_field_error(self, field: Field, error: ValueError) -> None:
        self._sync_controls()  # put the control back: the config did not change
        self._set_notice(f"Can't use that: {plain_message(error)}", problem=True)
        self._show_status()

    def _on_field(self, field: Field, value: Any, note: str) -> None:
        def apply() -> None:
            if field.name in APP_SETTINGS and field.option_of is None:
                self._apply_seeds(value, note)
                return
            changes = field.changes(value, self.session.config)
            self._apply_changes(changes, field.setting.label, note)

        self._guard(apply)()

    def _apply_changes(self, changes: dict[str, Any], what: str, note: str = "") -> None:
        session = self.session
        try:
            new, rule_note = change_config(session.config, **changes)
        except ValueError as exc:
            self._sync_controls()  # put the control back: the config did not change
            self._set_notice(f"Can't use that: {plain_message(exc)}", problem=True)
            self._show_status()
            return
        outcome = session.set_config(new, reason=f"{what} changed")
        self._sync_controls()
        self._request_render()
        live = ("" if outcome != "live" else
                f"{what} changed live: the run goes on with it from the next step.")
        stopped = (f"{what} changed: the run was stopped; press Train to start a new one."
                   if outcome == "stopped" else "")
        restarted = (f"{what} changed: the seeds train as one batched model without "
                     "optimizers to change live, so the run started again with it."
                     if outcome == "restarted" else "")
        notes = [n for n in (note, rule_note, live, stopped, restarted) if n]
        self._set_notice(" ".join(notes), problem=bool(note))
        self._show_status()

    def _apply_seeds(self, seeds: int, note: str = "") -> None:
        outcome = self.session.set_seeds(seeds)
        self._sync_controls()
        self._request_render()
        stopped = ("seeds changed: the run was stopped; press Train to start a new one."
                   if outcome == "stopped" else "")
        self._set_notice(" ".join(n for n in (note, stopped) if n), problem=bool(note))
        self._show_status()

    def _on_rule_defaults(self, _button) -> None:
        self._apply_changes({f: None for f in RULE_DEFAULT_FIELDS}, "hyperparameters")

    def _on_experiment(self, query: str) -> None:
        config, problem = config_from_query(query)
        if problem:
            raise ValueError(problem)
        outcome = self.session.set_config(config, reason="an experiment was opened")
        self._sync_controls()
        self._request_render()
        guide = self._guides.get(query, "")
        stopped = " (the run going was stopped)" if outcome == "stopped" else ""
        self._set_notice(f"Experiment set{stopped}: {guide}")
        self._show_status()

    def _on_train(self, _button) -> None:
        if self.session.active:  # a second click before the button disabled itself
            return
        self._set_notice("")
        self._drawn = None
        self.session.start()

    def _on_pause(self, _button) -> None:
        if self.session.status == "paused":
            self.session.resume()
        elif not self.session.pause():
            raise ValueError("Nothing to pause: the run is still starting or has just ended.")

    def _on_step(self, _button) -> None:
        if not self.session.step():
            raise ValueError("Step works while a run is paused: press Pause first.")

    def _on_stop(self, _button) -> None:
        if not self.session.stop():
            raise ValueError("Nothing to stop: no run is going.")

    def _on_reset(self, _button) -> None:
        self.session.reset()
        self._landscape = None
        self._sync_layer_choices()
        self._request_render()
        self._set_notice("")
        self._show_status()

    def _on_pin(self, _button) -> None:
        note = self.session.pin()
        self._request_render()
        self._set_notice(note)
        self._show_status()

    def _on_unpin(self, _button) -> None:
        had = len(self.session.pinned)
        self.session.clear_pinned()
        self._request_render()
        self._set_notice(f"unpinned {had} run(s)" if had else "No pinned runs to clear.",
                         problem=not had)
        self._show_status()

    def export_figures(self) -> dict[str, go.Figure]:
        """The shown run's figures, whole and titled (for Export)."""
        view = self.session.view
        if view is None:
            return {}
        pinned, _, _ = self._pinned_shown(view.config.dataset)
        direct = view.run.rule.feedback_kind == "direct"
        n_layers = view.run.model.n_layers
        land = self._landscape if (self._landscape is not None
                                   and self._landscape[0] == view.generation) else None
        layer = min(max(1, self.layer.value or 1), n_layers)
        figures = {
            "curves": views.curves_figure(view.history, pinned),
            "alignment": views.alignment_figure(
                view.history, n_layers, pinned,
                weight_title=views.DIRECT_ANGLE_TITLE if direct else views.WEIGHT_ANGLE_TITLE),
            "landscape": self._landscape_figure(view, land),
            "weights": self._weights_figure(view, layer, direct),
        }
        if DATASETS[view.config.dataset].kind == "2d":
            figures["boundary"] = self._boundary_figure(view)
        return figures

    def _on_export(self, _button) -> None:
        self.session._exportable()  # a plain-words error before any work
        figures = self.export_figures()
        name, data = self.session.export_zip(figures)
        self.downloader.download(name, data)
        self._set_notice(f"Downloading {name} ({len(data) / 1e6:.1f} MB): run.json, "
                         f"weights.safetensors and {len(figures)} figures as HTML.")
        self._show_status()

    def _on_upload(self, name: str, data: bytes) -> None:
        self.session.load_zip(data, name)
        self._landscape = None
        self._drawn = None
        self._sync_controls()
        self._request_render()
        self._set_notice("")
        self._show_status()

    # ============================================================== closing
    def close(self, timeout: float | None = 10.0) -> None:
        """Stop the run, join the threads and close the widgets. ``timeout`` bounds
        each join (``None``: wait for every thread, as the tests do)."""
        if getattr(self, "_closed", True):  # closed, or refused in __init__ (nothing runs)
            return
        self._closed = True
        self.stop_threads(timeout)
        if Dashboard._previous is not None and Dashboard._previous() is self:
            Dashboard._previous = None
        super().close()

    def stop_threads(self, timeout: float | None = 10.0) -> None:
        """Stop the run, the sweep, the analysis and the renderer and join their
        threads (``timeout`` bounds each join); the widgets stay. What
        :meth:`close` does first, and all the kernel's exit does."""
        if getattr(self, "_threads_stopped", True):  # stopped, or refused in __init__
            return
        self._threads_stopped = True
        self.session.close(timeout)
        self.sweep_panel.close(timeout)
        self.analyse_panel.close(timeout)
        self._closing.set()
        self._render_wanted.set()
        if self._renderer.is_alive() and self._renderer is not threading.current_thread():
            self._renderer.join(timeout)


def _stop_at_exit() -> None:
    """The kernel is exiting: stop the live dashboard's threads (briefly: nobody is
    left to see the page)."""
    dashboard = Dashboard._previous() if Dashboard._previous else None
    if dashboard is not None:
        dashboard.stop_threads(timeout=2.0)


class RedrawPacer:
    """When the renderer may redraw next: redraws start at least ``interval`` seconds
    apart, and while training runs a redraw that took ``t`` seconds is followed by a
    rest of ``rest * t`` (the figures hold the GIL; training should keep most of it).

    ``clock`` is any monotonic clock in seconds (tests pass a fake one). Use it as
    ``pacer.start()`` just before a redraw and ``pacer.pause(busy)`` right after it:
    the seconds to wait before the next one may start.
    """

    def __init__(self, interval: float = MIN_RENDER_INTERVAL, rest: float = RENDER_REST,
                 clock: Callable[[], float] = time.monotonic):
        self.interval, self.rest, self.clock = interval, rest, clock
        self._started: float | None = None

    def start(self) -> None:
        self._started = self.clock()

    def pause(self, busy: bool) -> float:
        spent = 0.0 if self._started is None else max(0.0, self.clock() - self._started)
        return max(self.interval - spent, self.rest * spent if busy else 0.0, 0.0)


__all__ = ["Dashboard", "RedrawPacer", "css_name"]
