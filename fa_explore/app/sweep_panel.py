"""The dashboard's Sweep tab: widgets over a :class:`~.sweep_state.SweepSession`.

The user picks one or two settings to vary (the schema's numeric settings with
bounds, or settings with choices), a range or a list of choices for each, the
seeds per point, the epochs of each run, the metric and the backend; Run sweep
starts it in the session's worker thread and the plot fills in as runs finish.

Only the dashboard's renderer thread writes these widgets (:meth:`SweepPanel.render`,
under the dashboard's widget lock): button handlers and control observers, on the
kernel thread, only change the session or note what changed and ask for a redraw.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import ipywidgets as widgets

from ..config import RunConfig
from ..sweep import BACKENDS
from . import views
from .analysis_views import sweep_figure
from .controls import plain_message
from .plotview import PlotlyView
from .session import log
from .sweep_state import (
    DEFAULT_BACKEND,
    DEFAULT_EPOCHS,
    DEFAULT_POINTS,
    DEFAULT_SEEDS,
    MAX_SWEEP_RUNS,
    MAX_SWEEP_SEEDS,
    SweepSession,
    SweepSpec,
    axis_values,
    metric_choices,
    sweep_axes,
)

PLOT_HEIGHT = 420
NONE = ""  # the second setting's "vary nothing else"

_CSS = """
<style>
.fx-sweep-tab { gap: 4px; }
.fx-sweep-row { align-items: center; gap: 6px; flex-wrap: wrap; }
.fx-sweep-row .widget-label { min-width: 0; }
.fx-sweep-status { font-size: 14px; min-height: 22px; }
.fx-sweep-help { font-size: 12px; color: #555; }
.fx-sweep-message-problem { color: #b91c1c; }
</style>
"""


class _AxisEditor:
    """The controls of one varied setting: which, and its range or its choices."""

    def __init__(self, title: str, optional: bool, on_change: Callable[[], None]):
        axes = sweep_axes()
        options = [(f"{a.label} ({a.name})", name) for name, a in axes.items()]
        if optional:
            options = [("nothing (a curve)", NONE), *options]
        self.name = widgets.Dropdown(options=options, description=title,
                                     style={"description_width": "70px"},
                                     layout=widgets.Layout(width="280px"))
        self.start = widgets.FloatText(description="from", style={"description_width": "36px"},
                                       layout=widgets.Layout(width="140px"))
        self.stop = widgets.FloatText(description="to", style={"description_width": "24px"},
                                      layout=widgets.Layout(width="130px"))
        self.points = widgets.BoundedIntText(
            value=DEFAULT_POINTS, min=1, max=MAX_SWEEP_RUNS, description="points",
            style={"description_width": "44px"}, layout=widgets.Layout(width="120px"))
        self.log = widgets.Checkbox(value=False, description="log spacing", indent=False,
                                    layout=widgets.Layout(width="110px"))
        self.choices = widgets.SelectMultiple(options=[], rows=4,
                                              layout=widgets.Layout(width="220px"))
        self.range_box = widgets.HBox([self.start, self.stop, self.points, self.log])
        self.range_box.add_class("fx-sweep-row")
        self.box = widgets.HBox([self.name, self.range_box, self.choices])
        self.box.add_class("fx-sweep-row")
        self.synced: str | None = None  # the setting the range/choices were last set for
        self.name.observe(lambda change: on_change(), names="value")

    def sync(self, config: RunConfig) -> None:
        """Show the controls the chosen setting needs, with its defaults (renderer
        thread, under the widget lock); only when the choice changed."""
        name = self.name.value
        if name == self.synced:
            return
        self.synced = name
        if name == NONE:
            self.range_box.layout.display = self.choices.layout.display = "none"
            return
        axis = sweep_axes()[name]
        if axis.numeric:
            low, high = axis.default_range(config)
            self.start.value, self.stop.value = float(low), float(high)
            self.log.value = axis.log
            self.points.value = DEFAULT_POINTS
            self.range_box.layout.display, self.choices.layout.display = "", "none"
        else:
            self.choices.options = [(str(c), c) for c in axis.choices]
            current = getattr(config, name)
            keep = [c for c in axis.choices if c == current] or list(axis.choices[:1])
            rest = [c for c in axis.choices if c not in keep]
            self.choices.value = tuple(keep + rest[:1])  # two to start: a first comparison
            self.range_box.layout.display, self.choices.layout.display = "none", ""

    def values(self) -> tuple[str | None, tuple[Any, ...]]:
        """``(setting, values)`` as chosen; ``(None, ())`` for nothing."""
        name = self.name.value
        if name == NONE:
            return None, ()
        axis = sweep_axes()[name]
        if axis.numeric:
            return name, axis_values(name, self.start.value, self.stop.value,
                                     self.points.value, log=self.log.value)
        return name, axis_values(name, choices=list(self.choices.value))


class SweepPanel:
    """The Sweep tab (:attr:`box`). ``config`` gives the settings the sweep
    starts from (the dashboard's controls), ``request_render`` asks the
    dashboard's renderer for a redraw and ``writing`` is its widget lock;
    ``session_options`` go to :class:`SweepSession` (tests pass a cache folder)."""

    def __init__(self, config: Callable[[], RunConfig], request_render: Callable[[], None],
                 writing: Callable[[], AbstractContextManager], **session_options: Any):
        self._config, self._request_render, self._writing = config, request_render, writing
        self.session = SweepSession(on_change=lambda _s: request_render(), **session_options)
        self._notice, self._notice_problem = "", False
        self._drawn: Any = None
        self._status_html = ""
        self._metrics: tuple[str, ...] = ()
        # A new choice of setting only asks for a redraw: the renderer shows its controls.
        self.x = _AxisEditor("vary", False, request_render)
        self.y = _AxisEditor("and", True, request_render)
        self.seeds = widgets.BoundedIntText(
            value=DEFAULT_SEEDS, min=1, max=MAX_SWEEP_SEEDS, description="seeds",
            tooltip="Runs of every point with seeds from the controls' seed up: the band "
                    "is their min–max", style={"description_width": "44px"},
            layout=widgets.Layout(width="120px"))
        self.epochs = widgets.BoundedIntText(
            value=DEFAULT_EPOCHS, min=1, max=1000, description="epochs",
            tooltip="Epochs of each run (unless epochs is what varies)",
            style={"description_width": "50px"}, layout=widgets.Layout(width="130px"))
        self.metric = widgets.Dropdown(description="metric", style={"description_width": "50px"},
                                       layout=widgets.Layout(width="230px"))
        self.backend = widgets.Dropdown(
            options=list(BACKENDS), value=DEFAULT_BACKEND, description="backend",
            tooltip="sequential: in this kernel (Stop stops the running point at once); "
                    "local: 2 worker processes", style={"description_width": "60px"},
            layout=widgets.Layout(width="210px"))
        self.run = widgets.Button(description="Run sweep", icon="play", button_style="primary",
                                  tooltip=f"Train every point (at most {MAX_SWEEP_RUNS} runs)",
                                  layout=widgets.Layout(width="auto"))
        self.run.add_class("fx-sweep-run")
        self.stop = widgets.Button(description="Stop", icon="stop", disabled=True,
                                   tooltip="Cancel the points not done",
                                   layout=widgets.Layout(width="auto"))
        self.stop.add_class("fx-sweep-stop")
        self.status = widgets.HTML("")
        self.status.add_class("fx-sweep-status")
        self.plot = PlotlyView(sweep_figure(None), on_resync=request_render,
                               on_ack=request_render)
        self.plot.add_class("fx-plot-sweep")
        self.plot.add_class("fx-plot")
        self.run.on_click(self._guard(self._on_run))
        self.stop.on_click(self._guard(self._on_stop))
        help_text = widgets.HTML(
            f"Each point trains the controls' settings with the ones varied here "
            f"(at most {MAX_SWEEP_RUNS} runs: points × seeds); finished points are cached "
            "on disk, so running a sweep again shows them at once.")
        help_text.add_class("fx-sweep-help")
        options = widgets.HBox([self.seeds, self.epochs, self.metric, self.backend])
        options.add_class("fx-sweep-row")
        buttons = widgets.HBox([self.run, self.stop, self.status])
        buttons.add_class("fx-sweep-row")
        self.box = widgets.VBox([widgets.HTML(_CSS), help_text, self.x.box, self.y.box, options,
                                 buttons, self.plot], layout=widgets.Layout(min_width="0"))
        self.box.add_class("fx-sweep-tab")

    # ------------------------------------------------------------ handlers
    def _guard(self, handler: Callable[..., None]) -> Callable[..., None]:
        """A click's error goes to the status line in plain words, never a traceback."""

        def guarded(*args: Any) -> None:
            try:
                handler(*args)
            except ValueError as exc:
                self._notice, self._notice_problem = plain_message(exc), True
            except Exception as exc:  # noqa: BLE001
                log.exception("sweep action failed")
                self._notice = f"Something went wrong: {plain_message(exc)}"
                self._notice_problem = True
            self._request_render()

        return guarded

    def spec(self) -> SweepSpec:
        """The sweep the controls describe now (``ValueError`` naming the field)."""
        base = self._config()
        x, x_values = self.x.values()
        y, y_values = self.y.values()
        return SweepSpec.make(base, x, x_values, y, y_values, seeds=self.seeds.value,
                              metric=self.metric.value or "test_acc",
                              backend=self.backend.value, epochs=self.epochs.value)

    def _on_run(self, _button=None) -> None:
        spec = self.spec()
        self._notice = ""
        self.session.start(spec)

    def _on_stop(self, _button=None) -> None:
        if not self.session.stop():
            raise ValueError("Nothing to stop: no sweep is going.")

    # ------------------------------------------------------------- drawing
    def render(self) -> bool:
        """Bring the widgets up to date (the renderer thread). Returns True when
        the page is still drawing the last figure: call again later."""
        config = self._config()
        view = self.session.view
        with self._writing():
            self.x.sync(config)
            self.y.sync(config)
            metrics = metric_choices(config)
            if metrics != self._metrics:
                current = self.metric.value
                self.metric.options = list(metrics)
                self.metric.value = current if current in metrics else "test_acc"
                self._metrics = metrics
            active = self.session.active
            self.run.disabled = active
            self.stop.disabled = not active
            message, problem = view.message, view.status == "error"
            if self._notice:
                message, problem = self._notice, self._notice_problem
            css = " fx-sweep-message-problem" if problem else ""
            text = (f'<span class="fx-state fx-sweep-state fx-state-{view.status}">'
                    f'{view.status}</span><span class="fx-sweep-message{css}">'
                    f"{html.escape(message)}</span>")
            if text != self._status_html:
                self.status.value = self._status_html = text
        key = (view.generation, len(view.rows), view.status)
        if key == self._drawn and not self.plot.needs_full:
            return False
        if self.plot.busy:
            return True
        figure, _title = views.panel_figure(sweep_figure(view.summary()), PLOT_HEIGHT)
        figure.update_layout(title=dict(text=_title, x=0.01, font=dict(size=14)),
                             margin=dict(t=36))
        prepared = self.plot.prepare(figure)
        with self._writing():
            self.plot.show_prepared(prepared)
        self._drawn = key
        return False

    def close(self, timeout: float | None = 10.0) -> None:
        """Stop the sweep and join its thread."""
        self.session.close(timeout)


__all__ = ["SweepPanel"]
