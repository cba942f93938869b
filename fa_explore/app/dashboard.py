"""The live dashboard: ipywidgets controls wired to a :class:`TrainingSession`.

This module only builds widgets and moves values between them and the session;
what is allowed comes from :mod:`.controls`, the threads and state from
:mod:`.session`, and every figure from the pure builders in :mod:`.views`
(redrawn in place by :class:`.plotview.PlotlyView`, at most ten times a second,
from a renderer thread). Use it in JupyterLab with ``Dashboard()`` or as a page with Voilà
(``apps/alignment_dashboard.ipynb``).
"""

from __future__ import annotations

import html
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import ipywidgets as widgets
import plotly.graph_objects as go

from ..config import RunConfig
from ..data import DATASETS
from ..rules import RULES
from ..settings import SETTINGS
from . import views
from .controls import (
    RULE_DEFAULT_CHOICE,
    RULE_DEFAULT_FIELDS,
    change_config,
    config_from_query,
    dataset_choices,
    device_choices,
    disabled_reasons,
    expansion_choices,
    model_choices,
    plain_message,
    rules_using,
)
from .linkbox import CopyLink
from .plotview import PlotlyView
from .session import TrainingSession, format_seconds, log

MIN_RENDER_INTERVAL = 0.1  # seconds: plots update at most ten times a second
# Building plotly figures is pure Python and holds the GIL: after a redraw that
# took t seconds the renderer rests RENDER_REST * t, so training keeps most of it.
RENDER_REST = 2.0


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

_CSS = """
<style>
.fx-dashboard { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  color: #222; max-width: 1500px; }
.fx-dashboard .fx-header h2 { margin: 4px 0 2px 0; font-size: 20px; font-weight: 600; }
.fx-dashboard .fx-header p { margin: 0 0 6px 0; color: #555; font-size: 13px; }
.fx-controls { background: #f7f7f9; border: 1px solid #e3e3e8; border-radius: 6px;
  padding: 6px 8px; }
.fx-controls .fx-section { margin: 8px 0 2px 0; font-size: 11px; font-weight: 700;
  letter-spacing: .06em; text-transform: uppercase; color: #667; }
.fx-controls .widget-label { color: #333; }
.fx-hint { font-size: 11px; line-height: 1.3; color: #777; margin: -2px 0 4px 4px; }
.fx-hint:empty { display: none; }
.fx-rule-info { font-size: 12px; line-height: 1.35; color: #444; margin: 0 0 4px 4px; }
.fx-rule-info i { color: #666; }
.fx-status { font-size: 14px; min-height: 22px; }
.fx-state { display: inline-block; padding: 1px 8px; margin-right: 8px; border-radius: 10px;
  font-weight: 600; font-size: 12px; background: #e8e8ee; color: #333; }
.fx-state-running { background: #dbeafe; color: #1d4ed8; }
.fx-state-paused { background: #fef3c7; color: #92400e; }
.fx-state-finished { background: #dcfce7; color: #166534; }
.fx-state-stopped { background: #ececec; color: #444; }
.fx-state-diverged, .fx-state-error { background: #fee2e2; color: #991b1b; }
.fx-message-problem { color: #b91c1c; }
.fx-eta { font-size: 12px; color: #555; white-space: nowrap; }
.fx-toolbar .widget-button { font-weight: 600; }
.fx-plot { border: 1px solid #ececf0; border-radius: 6px; overflow: hidden;
  background: white; }
</style>
"""

_HEADER = """
<h2>Learning without weight transport</h2>
<p>Backpropagation sends errors back through the transposed forward weights. Feedback
alignment and its family send them through other matrices, and the forward weights
learn to <b>align</b> with that feedback. Pick a rule, press <b>Train</b>, and watch the
angles.</p>
"""

DESCRIPTION_WIDTH = "92px"
CONTROL_WIDTH = "318px"


def _plot(figure: go.Figure, css_class: str, carry_plotly: bool = False) -> PlotlyView:
    view = PlotlyView(figure, carry_plotly=carry_plotly)
    view.add_class(css_class)
    view.add_class("fx-plot")
    return view


def _hint(css_class: str = "fx-hint") -> widgets.HTML:
    hint = widgets.HTML("")
    hint.add_class(css_class)
    return hint


def _section(title: str) -> widgets.HTML:
    label = widgets.HTML(html.escape(title))
    label.add_class("fx-section")
    return label


class Dashboard(widgets.VBox):
    """The alignment dashboard: controls on the left, live plots on the right.

    ``Dashboard()`` displays itself in JupyterLab. ``config`` presets the
    controls; ``query`` (a page URL's query string, as Voilà passes it in the
    ``QUERY_STRING`` environment variable) does the same and reports a bad link
    in the status line instead of failing. Nothing trains until Train is pressed.
    ``warm_up=False`` skips the background warm-up (tests); ``clock`` paces the
    redraws (:class:`RedrawPacer`; tests pass a fake one).
    """

    def __init__(self, config: RunConfig | None = None, *, query: str | None = None,
                 landscape_interval: float | None = 3.0, warm_up: bool = True,
                 clock: Callable[[], float] = time.monotonic):
        link_problem = ""
        if query:
            config, link_problem = config_from_query(query)
        self.session = TrainingSession(
            config or RunConfig(), on_status=self._on_status, on_snapshot=self._on_snapshot,
            on_landscape=self._on_landscape, landscape_interval=landscape_interval)
        # Status, progress and layer widgets are written from several threads; the
        # figures only by the renderer thread (and here, before it starts).
        self._widget_lock = threading.RLock()
        self._syncing = False
        self._render_wanted = threading.Event()
        self._closing = threading.Event()
        self._landscape: tuple[Any, Any] | None = None  # (pca, surface) of the live run
        self._landscape_drawn = True
        self._pacer = RedrawPacer(clock=clock)
        self._renderer = threading.Thread(target=self._render_loop, name="fx-render",
                                          daemon=True)
        self._notice = ""  # a message about the last action, shown after the status
        self._notice_is_problem = False

        self._build_controls()
        self._build_plots()
        self._build_toolbar()
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

    # ================================================================ widgets
    def _build_controls(self) -> None:
        style = {"description_width": DESCRIPTION_WIDTH}
        wide = widgets.Layout(width=CONTROL_WIDTH)

        def dropdown(description, options, css, tooltip):
            w = widgets.Dropdown(options=options, description=description, style=style,
                                 layout=wide, tooltip=tooltip)
            w.add_class(css)
            return w

        def int_box(description, low, high, css, tooltip):
            w = widgets.BoundedIntText(min=low, max=high, description=description,
                                       style=style, layout=wide, tooltip=tooltip)
            w.add_class(css)
            return w

        rule_options = [(self._rule_label(name), name) for name in RULES]
        self.rule = dropdown("rule", rule_options, "fx-rule",
                             "How errors travel back to the hidden layers")
        self.rule_info = _hint("fx-rule-info")
        self.dataset = dropdown("dataset", [], "fx-dataset", "What the network learns")
        self.dataset_info = _hint()
        self.model = dropdown("model", [], "fx-model",
                              "MLP: fully connected. CNN: convolutions, then the MLP layers")
        self.model_hint = _hint()
        self.depth = widgets.IntSlider(min=1, max=5, description="depth", style=style,
                                       layout=wide, continuous_update=False,
                                       tooltip="Number of hidden layers")
        self.depth.add_class("fx-depth")
        self.width = int_box("width", 2, 2048, "fx-width", "Units per hidden layer")
        self.hidden_hint = _hint()
        self.activation = dropdown("activation", list(SETTINGS["activation"].allowed_choices()),
                                   "fx-activation", "Hidden nonlinearity")

        self.angle_random = widgets.Checkbox(
            description="random feedback (no set angle)", indent=False,
            layout=widgets.Layout(width=CONTROL_WIDTH),
            tooltip="Off: start each feedback matrix at the chosen angle to its forward "
                    "weights (soft initial alignment)")
        self.angle_random.add_class("fx-angle-random")
        self.angle = widgets.FloatSlider(min=0, max=180, step=5, description="init angle",
                                         style=style, layout=wide, continuous_update=False,
                                         readout_format=".0f",
                                         tooltip="Angle (degrees) between each feedback "
                                                 "matrix and its forward weights at the start")
        self.angle.add_class("fx-angle")
        self.angle_hint = _hint()
        self.sparsity = widgets.FloatSlider(min=0, max=0.95, step=0.05, description="sparsity",
                                            style=style, layout=wide, continuous_update=False,
                                            readout_format=".2f",
                                            tooltip="Fraction of feedback weights set to zero")
        self.sparsity.add_class("fx-sparsity")
        self.sparsity_hint = _hint()
        self.expansion = dropdown("expansion", [], "fx-expansion",
                                  "PFA: width multiple of the intermediate feedback layer")
        self.expansion_hint = _hint()

        self.optimizer = dropdown("optimizer", list(SETTINGS["optimizer"].allowed_choices()),
                                  "fx-optimizer",
                                  "Optimizer stepping the gradients the rule computes")
        self.lr = widgets.FloatLogSlider(min=-5, max=0, step=0.1, base=10,
                                         description="learn. rate", style=style, layout=wide,
                                         continuous_update=False, readout_format=".1e",
                                         tooltip="Learning rate (log scale)")
        self.lr.add_class("fx-lr")
        self.batch_size = int_box("batch size", 1, 65536, "fx-batch", "Examples per step")
        self.epochs = int_box("epochs", 1, 100_000, "fx-epochs", "Passes over the training set")
        self.defaults_hint = _hint()
        self.rule_defaults = widgets.Button(
            description="rule defaults", icon="undo", layout=widgets.Layout(width="130px"),
            tooltip="Optimizer, learning rate, batch size and epochs back to the rule's defaults")
        self.rule_defaults.add_class("fx-defaults")
        self.seed = int_box("seed", 0, 2**31 - 1, "fx-seed",
                            "Seeds weights, feedback and batch order: same seed, same run")
        self.device = dropdown("device", device_choices(), "fx-device",
                               "Where training runs (cuda only when a GPU is present)")

        self.link = CopyLink(in_voila=bool(os.environ.get("QUERY_STRING") is not None
                                           and os.environ.get("SERVER_SOFTWARE", "")
                                           .startswith("voila")))
        self.link.add_class("fx-link")

        fields: list[tuple[widgets.Widget, Callable[[Any], dict[str, Any]]]] = [
            (self.rule, lambda v: {"rule": v}),
            (self.dataset, lambda v: {"dataset": v}),
            (self.model, lambda v: {"model": v}),
            (self.depth, lambda v: {"hidden": (self.width.value,) * v}),
            (self.width, lambda v: {"hidden": (v,) * self.depth.value}),
            (self.activation, lambda v: {"activation": v}),
            (self.angle_random, lambda v: {"init_angle": None if v else self.angle.value}),
            (self.angle, lambda v: {"init_angle": v}),
            (self.sparsity, lambda v: {"feedback_sparsity": v}),
            (self.expansion, lambda v: {"expansion_ratio": v or None}),
            (self.optimizer, lambda v: {"optimizer": v}),
            (self.lr, lambda v: {"lr": float(f"{v:.3g}")}),
            (self.batch_size, lambda v: {"batch_size": v}),
            (self.epochs, lambda v: {"epochs": v}),
            (self.seed, lambda v: {"seed": v}),
            (self.device, lambda v: {"device": v}),
        ]
        for control, to_changes in fields:
            control.observe(self._control_handler(control, to_changes), names="value")
        self.rule_defaults.on_click(self._guard(self._on_rule_defaults))

    def _build_toolbar(self) -> None:
        def button(description, css, icon, tooltip, style=""):
            b = widgets.Button(description=description, icon=icon, tooltip=tooltip,
                               button_style=style, layout=widgets.Layout(width="auto"))
            b.add_class(css)
            return b

        self.train = button("Train", "fx-train", "play", "Start a run with these settings",
                            "primary")
        self.pause = button("Pause", "fx-pause", "pause", "Pause or resume the run")
        self.stop = button("Stop", "fx-stop", "stop", "Stop the run")
        self.reset = button("Reset", "fx-reset", "refresh",
                            "Stop and clear the current run (pinned runs stay)")
        self.pin = button("Pin", "fx-pin", "thumb-tack",
                          "Keep this run's curves as faint lines to compare with the next")
        self.unpin = button("Clear pins", "fx-unpin", "times", "Forget the pinned runs")
        self.export = button("Export", "fx-export", "download",
                             "Save the run (config, history, weights) and the figures as HTML")
        self.progress = widgets.FloatProgress(min=0, max=1, value=0,
                                              layout=widgets.Layout(width="260px"))
        self.progress.add_class("fx-progress")
        self.eta = widgets.HTML("")
        self.eta.add_class("fx-eta")
        self.status = widgets.HTML("")
        self.status.add_class("fx-status")

        self.train.on_click(self._guard(self._on_train))
        self.pause.on_click(self._guard(self._on_pause))
        self.stop.on_click(self._guard(self._on_stop))
        self.reset.on_click(self._guard(self._on_reset))
        self.pin.on_click(self._guard(self._on_pin))
        self.unpin.on_click(self._guard(self._on_unpin))
        self.export.on_click(self._guard(self._on_export))

    def _build_plots(self) -> None:
        cfg = self.session.config
        # The first plot carries plotly.js for the page.
        self.curves_plot = _plot(views.curves_figure(None), "fx-plot-curves", carry_plotly=True)
        self.alignment_plot = _plot(
            views.alignment_figure(None, self._n_layers(cfg)), "fx-plot-alignment")
        self.landscape_plot = _plot(views.landscape_figure(None, None),
                                             "fx-plot-landscape")
        self.boundary_plot = _plot(views.boundary_figure(None, None, None, None),
                                            "fx-plot-boundary")
        self.weights_plot = _plot(views.weights_figure(None, None, 1),
                                           "fx-plot-weights")
        self.layer = widgets.Dropdown(description="layer", style={"description_width": "40px"},
                                      layout=widgets.Layout(width="160px"),
                                      tooltip="Which layer's forward and feedback weights")
        self.layer.add_class("fx-layer")
        self.layer.observe(self._guard(
            lambda change: None if self._syncing else self._request_render()), names="value")
        self.weights_panel = widgets.VBox([self.layer, self.weights_plot])
        self.plots = widgets.GridBox(
            layout=widgets.Layout(grid_template_columns="repeat(2, minmax(0, 1fr))",
                                  grid_gap="8px", width="100%"))
        self.plots.add_class("fx-plots")

    def _layout(self) -> list[widgets.Widget]:
        css = widgets.HTML(_CSS)
        header = widgets.HTML(_HEADER)
        header.add_class("fx-header")
        controls = widgets.VBox(
            [_section("Learning rule"), self.rule, self.rule_info,
             _section("Data"), self.dataset, self.dataset_info,
             _section("Network"), self.model, self.model_hint, self.depth, self.width,
             self.hidden_hint, self.activation,
             _section("Feedback"), self.angle_random, self.angle, self.angle_hint,
             self.sparsity, self.sparsity_hint, self.expansion, self.expansion_hint,
             _section("Optimisation"), self.optimizer, self.lr, self.batch_size, self.epochs,
             widgets.HBox([self.rule_defaults, self.defaults_hint],
                          layout=widgets.Layout(align_items="center")),
             self.seed, self.device,
             _section("Share"), self.link],
            layout=widgets.Layout(width="340px", min_width="340px", flex="0 0 340px"))
        controls.add_class("fx-controls")
        toolbar = widgets.HBox(
            [self.train, self.pause, self.stop, self.reset,
             widgets.HTML("&nbsp;"), self.pin, self.unpin, self.export],
            layout=widgets.Layout(flex_flow="row wrap", align_items="center"))
        toolbar.add_class("fx-toolbar")
        progress_row = widgets.HBox([self.progress, self.eta],
                                    layout=widgets.Layout(align_items="center"))
        right = widgets.VBox([toolbar, progress_row, self.status, self.plots],
                             layout=widgets.Layout(flex="1 1 auto", min_width="0",
                                                   margin="0 0 0 10px"))
        body = widgets.HBox([controls, right], layout=widgets.Layout(width="100%",
                                                                     align_items="flex-start"))
        return [css, header, body]

    # ============================================================ sync state
    @staticmethod
    def _rule_label(name: str) -> str:
        description = RULES[name].description
        title = description.split(":")[0] if ":" in description else ""
        return f"{name} — {title}" if title and len(title) <= 40 else name

    @staticmethod
    def _n_layers(cfg: RunConfig) -> int:
        return len(cfg.hidden) + 1 + (len(cfg.channels) if cfg.model == "cnn" else 0)

    def _sync_controls(self) -> None:
        """Show the session's config in the controls, enable what applies and say
        why the rest is disabled."""
        cfg = self.session.config
        resolved = cfg.resolve()
        rule = RULES[cfg.rule]
        reasons = disabled_reasons(cfg)
        self._syncing = True
        try:
            self.rule.value = cfg.rule
            self.rule_info.value = (f"{html.escape(rule.description)}<br><i>"
                                    f"{html.escape(rule.paper)}</i>")
            self.dataset.options = dataset_choices(cfg)
            self.dataset.value = cfg.dataset
            spec = DATASETS[cfg.dataset]
            self.dataset_info.value = html.escape(getattr(spec, "description", ""))
            self.model.options = model_choices(cfg)
            self.model.value = cfg.model
            self._apply_reason(self.model, self.model_hint, reasons["model"],
                               "MLP: fully connected. CNN: convolutions, then the MLP layers")
            uniform = len(set(cfg.hidden)) <= 1
            self.depth.value = max(self.depth.min, min(self.depth.max, len(cfg.hidden)))
            self.width.value = cfg.hidden[0] if cfg.hidden else self.width.value
            self.hidden_hint.value = ("" if uniform else
                                      f"hidden layers from the link: {cfg.hidden}; changing "
                                      "depth or width makes them all equal")
            self.activation.value = cfg.activation

            angle_reason = reasons["init_angle"]
            self.angle_random.value = cfg.init_angle is None
            if cfg.init_angle is not None:
                self.angle.value = cfg.init_angle
            self.angle_random.disabled = angle_reason is not None
            self.angle.disabled = angle_reason is not None or cfg.init_angle is None
            used_by = f" Used by: {', '.join(rules_using('init_angle'))}."
            self.angle.tooltip = (angle_reason + used_by) if angle_reason else (
                "Untick 'random feedback' to set the angle" if cfg.init_angle is None
                else "Angle (degrees) between each feedback matrix and its forward weights "
                     "at the start")
            self.angle_random.tooltip = (angle_reason + used_by) if angle_reason else (
                "Off: start each feedback matrix at the chosen angle to its forward "
                "weights (soft initial alignment)")
            self.angle_hint.value = html.escape(angle_reason or "")

            self.sparsity.value = cfg.feedback_sparsity
            self._apply_reason(self.sparsity, self.sparsity_hint, reasons["feedback_sparsity"],
                               "Fraction of feedback weights set to zero",
                               rules_using("feedback_sparsity"))
            self.expansion.options = expansion_choices(cfg)
            self.expansion.value = cfg.expansion_ratio or RULE_DEFAULT_CHOICE
            self._apply_reason(self.expansion, self.expansion_hint, reasons["expansion_ratio"],
                               "PFA: width multiple of the intermediate feedback layer",
                               rules_using("expansion_ratio"))

            self.optimizer.value = resolved.optimizer
            self.lr.value = resolved.lr
            self.batch_size.value = resolved.batch_size
            self.epochs.value = resolved.epochs
            chosen = [f for f in RULE_DEFAULT_FIELDS if getattr(cfg, f) is not None]
            self.defaults_hint.value = html.escape(
                f"{rule.name}'s defaults" if not chosen else "set: " + ", ".join(chosen))
            self.rule_defaults.disabled = not chosen
            self.seed.value = cfg.seed
            devices = device_choices()
            if cfg.device not in [v for _, v in devices]:  # e.g. a link made on a GPU box
                devices.append((f"{cfg.device} (not available here)", cfg.device))
            self.device.options = devices
            self.device.value = cfg.device
            self.link.query = cfg.to_query()
        finally:
            self._syncing = False
        self._sync_layer_choices()
        self._sync_plot_grid()

    @staticmethod
    def _apply_reason(control: widgets.Widget, hint: widgets.HTML, reason: str | None,
                      help_text: str, used_by: list[str] | None = None) -> None:
        """Enable the control, or disable it and show why (the tooltip also says
        which rules use it)."""
        control.disabled = reason is not None
        users = f" Used by: {', '.join(used_by)}." if used_by else ""
        control.tooltip = help_text if reason is None else reason + users
        hint.value = html.escape(reason or "")

    def _sync_layer_choices(self) -> None:
        with self._widget_lock:
            self._sync_layer_choices_locked()

    def _sync_layer_choices_locked(self) -> None:
        run = self.session.run
        n_layers = run.model.n_layers if run is not None else self._n_layers(self.session.config)
        options = [(f"{n} of {n_layers}", n) for n in range(2, n_layers + 1)] or [("1 of 1", 1)]
        current = self.layer.value
        values = [v for _, v in options]
        syncing, self._syncing = self._syncing, True
        try:
            self.layer.options = options
            self.layer.value = current if current in values else values[0]
        finally:
            self._syncing = syncing

    def _sync_plot_grid(self) -> None:
        two_d = DATASETS[self.session.config.dataset].kind == "2d"
        panels = [self.curves_plot, self.alignment_plot, self.landscape_plot,
                  self.weights_panel]
        if two_d:
            panels = [self.boundary_plot, *panels]
        if list(self.plots.children) != panels:
            self.plots.children = panels

    # =============================================================== status
    def _set_notice(self, text: str, problem: bool = False) -> None:
        self._notice, self._notice_is_problem = text, problem

    def _show_status(self) -> None:
        session = self.session
        status = session.status
        message = session.message
        problem = status in ("diverged", "error")
        if self._notice:
            message, problem = self._notice, self._notice_is_problem or problem
        css = " fx-message-problem" if problem else ""
        with self._widget_lock:
            self.status.value = (f'<span class="fx-state fx-state-{status}">{status}</span>'
                                 f'<span class="fx-message{css}">{html.escape(message)}</span>')
            active = session.active
            self.train.disabled = active
            self.train.tooltip = ("A run is going: Stop it (or change a setting) to start over"
                                  if active else "Start a run with these settings")
            self.pause.disabled = not active
            self.pause.description = "Resume" if status == "paused" else "Pause"
            self.pause.icon = "play" if status == "paused" else "pause"
            self.stop.disabled = not active
            self._show_progress()

    def _show_progress(self) -> None:
        progress = self.session.progress()
        if progress.total_steps:
            self.progress.value = progress.fraction
            left = (f" · {format_seconds(progress.eta)} left"
                    if self.session.active and progress.eta is not None else "")
            self.eta.value = (f"step {progress.step:,} / {progress.total_steps:,} · "
                              f"{format_seconds(progress.elapsed)}{left}")
        else:
            self.progress.value = 0
            self.eta.value = ""
        self.progress.bar_style = {"finished": "success", "diverged": "danger",
                                   "error": "danger", "paused": "warning"}.get(
                                       self.session.status, "info")

    # ============================================================ listeners
    def _on_status(self, session: TrainingSession) -> None:
        # From the worker or the kernel thread; a new status replaces older notes.
        self._set_notice("")
        self._show_status()
        if not session.active:  # the last points of a run, or the plots after Reset
            self._request_render()

    def _on_snapshot(self, session: TrainingSession, snapshot) -> None:
        # The worker only flags new data; the renderer thread draws it.
        self._request_render()

    def _on_landscape(self, session: TrainingSession, pca, surface) -> None:
        self._landscape, self._landscape_drawn = (pca, surface), False
        self._request_render()

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

    def _pinned(self) -> list[views.PinnedRun]:
        return [views.PinnedRun(label, history)
                for label, history in self.session.pinned_labels()]

    def _render_now(self) -> None:
        """Draw the current state: the live run's plots, or empty ones."""
        run = self.session.run
        if run is None:
            self._render_empty()
        else:
            self._render_run(run)
        with self._widget_lock:
            self._show_progress()

    @staticmethod
    def _show(view: PlotlyView, revision: str, figure: go.Figure) -> None:
        """Show a figure; zoom and pan survive redraws of one run, not a new run."""
        figure.update_layout(uirevision=f"{figure.layout.uirevision}|{revision}")
        view.show(figure)

    def _render_empty(self) -> None:
        revision = "empty"
        cfg = self.session.config
        pinned = self._pinned()
        self._show(self.curves_plot, revision, views.curves_figure(None, pinned))
        self._show(self.alignment_plot, revision,
                   views.alignment_figure(None, self._n_layers(cfg), pinned))
        self._show(self.landscape_plot, revision, views.landscape_figure(None, None))
        self._show(self.weights_plot, revision,
                   views.weights_figure(None, None, self.layer.value))
        self._show(self.boundary_plot, revision, views.boundary_figure(None, None, None, None))

    def _render_run(self, run) -> None:
        # Runs alongside training: it only reads the model (a torn read of a weight
        # being stepped shows for a tenth of a second at most).
        revision = f"run{self.session.run_generation}"
        history = run.history
        pinned = self._pinned()
        model, rule = run.model, run.rule
        self._show(self.curves_plot, revision, views.curves_figure(history, pinned))
        self._show(self.alignment_plot, revision,
                   views.alignment_figure(history, model.n_layers, pinned))
        if self.layer.options and len(self.layer.options) != max(1, model.n_layers - 1):
            self._sync_layer_choices()
        layer = min(max(1, self.layer.value or 1), model.n_layers)
        weight = model.layers[layer - 1].weight.detach()
        feedback = rule.effective_feedback(model, layer - 1)
        self._show(self.weights_plot, revision, views.weights_figure(weight, feedback, layer))
        if not self._landscape_drawn:  # new surface, or a new run without one yet
            pca, surface = self._landscape or (None, None)
            self._landscape_drawn = True
            self._show(self.landscape_plot, revision, views.landscape_figure(surface, pca))
        if DATASETS[run.config.dataset].kind == "2d":
            from ..analysis import decision_grid

            data = run.data  # the run's own data: the settings may have moved on
            grid = decision_grid(model, data.x_train, resolution=80)
            self._show(self.boundary_plot, revision, views.boundary_figure(
                grid, data.x_train, data.y_train, data.class_names))

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

    def _control_handler(self, control: widgets.Widget,
                         to_changes: Callable[[Any], dict[str, Any]]):
        def handler(change: dict) -> None:
            if self._syncing:
                return
            self._apply_changes(to_changes(change["new"]), control.description or "setting")

        return self._guard(handler)

    def _apply_changes(self, changes: dict[str, Any], what: str) -> None:
        session = self.session
        try:
            new, note = change_config(session.config, **changes)
        except ValueError as exc:
            self._sync_controls()  # put the control back: the config did not change
            self._set_notice(f"Can't use that: {plain_message(exc)}", problem=True)
            self._show_status()
            return
        stopped = session.set_config(new, reason=f"{what} changed")
        self._sync_controls()
        if session.run is None:  # empty plots follow the settings (layers, 2-D or not)
            self._request_render()
        notes = [n for n in (note, f"{what} changed: the run was stopped; press Train to "
                             "start a new one." if stopped else "") if n]
        self._set_notice(" ".join(notes))
        self._show_status()

    def _on_rule_defaults(self, _button) -> None:
        self._apply_changes({f: None for f in RULE_DEFAULT_FIELDS}, "hyperparameters")

    def _on_train(self, _button) -> None:
        if self.session.active:  # a second click before the button disabled itself
            return
        self._set_notice("")
        self._landscape, self._landscape_drawn = None, False
        self.session.start()

    def _on_pause(self, _button) -> None:
        if self.session.status == "paused":
            self.session.resume()
        elif not self.session.pause():
            raise ValueError("Nothing to pause yet: the run is still starting.")

    def _on_stop(self, _button) -> None:
        if not self.session.stop():
            raise ValueError("Nothing to stop: no run is going.")

    def _on_reset(self, _button) -> None:
        self.session.reset()
        self._landscape, self._landscape_drawn = None, True
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

    def _on_export(self, _button) -> None:
        figures = {"curves": self.curves_plot.figure,
                   "alignment": self.alignment_plot.figure,
                   "landscape": self.landscape_plot.figure,
                   "weights": self.weights_plot.figure}
        run = self.session.run
        if run is not None and DATASETS[run.config.dataset].kind == "2d":
            figures["boundary"] = self.boundary_plot.figure
        folder = self.session.export(figures=figures)
        self._set_notice(f"Saved the run (run.json, weights.safetensors) and "
                         f"{len(figures)} figures as HTML to {folder}")
        self._show_status()

    # ============================================================== closing
    def close(self, timeout: float | None = 10.0) -> None:
        """Stop the run, join the threads and close the widgets. ``timeout`` bounds
        each join (``None``: wait for every thread, as the tests do)."""
        self.session.close(timeout)
        self._closing.set()
        self._render_wanted.set()
        if self._renderer.is_alive():
            self._renderer.join(timeout)
        super().close()
