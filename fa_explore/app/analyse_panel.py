"""The dashboard's Analyse action: widgets over an :class:`~.analyse_state.AnalyseSession`,
shown under the pinned runs' comparison table.

Pick the run shown (once it has ended) or a pinned run and press Analyse: the
Hessian's top eigenvalues and trace and the FGSM accuracy curve are computed in
a worker thread, and appear as a table per analysed run (its caption names the
run) and one robustness figure for all of them. Only the dashboard's renderer
thread writes these widgets (:meth:`AnalysePanel.render`).
"""

from __future__ import annotations

import html
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import replace
from typing import Any

import ipywidgets as widgets
import pandas as pd

from . import views
from .analyse_state import AnalyseSession
from .analysis_views import analysis_table_html, robustness_figure
from .controls import difference_labels, plain_message
from .plotview import PlotlyView
from .session import TrainingSession, log

PLOT_HEIGHT = 300

_CSS = """
<style>
.fx-analyse-row { align-items: center; gap: 6px; flex-wrap: wrap; }
.fx-analyse-status { font-size: 13px; }
.fx-analyse-message-problem { color: #b91c1c; }
.fx-analysis { border-collapse: collapse; font-size: 12px; margin: 4px 12px 4px 0;
  display: inline-table; vertical-align: top; }
.fx-analysis caption { text-align: left; font-weight: 600; color: #1f2937; padding: 2px 0; }
.fx-analysis th, .fx-analysis td { padding: 1px 8px; border-bottom: 1px solid #eee;
  text-align: left; white-space: nowrap; }
.fx-analysis th { color: #555; font-weight: 600; }
</style>
"""


def run_choices(session: TrainingSession) -> list[tuple[str, int, Any]]:
    """``(label, key, run)`` of the runs that can be analysed: the shown run once it
    has ended, then the pinned runs; labels say what differs between them."""
    entries = []
    view = session.view
    pinned = list(session.pinned)
    if view is not None and view.rows and not session.active and all(
            e.generation != view.generation for e in pinned):
        entries.append(("this run", view.generation, view.request, view.run))
    for number, entry in enumerate(pinned, start=1):
        if entry.view is not None:
            entries.append((f"pin {number}", entry.generation, entry.config, entry.view.run))
    labels = difference_labels([c for _, _, c, _ in entries])
    return [(f"{prefix}: {c.rule} on {c.dataset}" + (f" ({label})" if label and not
                                                    label.startswith("run ") else ""),
             key, run) for (prefix, key, c, run), label in zip(entries, labels, strict=True)]


class AnalysePanel:
    """Analyse controls, status, results table and robustness plot (:attr:`box`).
    ``session`` is the dashboard's training session; ``request_render`` and
    ``writing`` are its renderer's. ``options`` go to :class:`AnalyseSession`."""

    def __init__(self, session: TrainingSession, request_render: Callable[[], None],
                 writing: Callable[[], AbstractContextManager], **options: Any):
        self.training = session
        self._request_render, self._writing = request_render, writing
        self.session = AnalyseSession(on_change=lambda _s: request_render(), **options)
        self._notice, self._notice_problem = "", False
        self._choices: list[tuple[str, int, Any]] = []
        self._drawn: Any = None
        self._table_html = self._status_html = ""
        self.which = widgets.Dropdown(description="analyse", options=[],
                                      style={"description_width": "54px"},
                                      layout=widgets.Layout(width="380px"))
        self.which.add_class("fx-analyse-which")
        self.analyse = widgets.Button(
            description="Analyse", icon="search",
            tooltip="Hessian top eigenvalues and trace, and accuracy under FGSM attacks, "
                    "of the chosen run (finished or pinned)", layout=widgets.Layout(width="auto"))
        self.analyse.add_class("fx-analyse")
        self.stop = widgets.Button(description="Stop analysis", icon="stop", disabled=True,
                                   layout=widgets.Layout(width="auto"))
        self.stop.add_class("fx-analyse-stop")
        self.status = widgets.HTML("")
        self.status.add_class("fx-analyse-status")
        self.table = widgets.HTML("")
        self.table.add_class("fx-analyse-table")
        self.plot = PlotlyView(robustness_figure(None), on_resync=request_render,
                               on_ack=request_render)
        self.plot.add_class("fx-plot-robustness")
        self.plot.add_class("fx-plot")
        self.plot.layout.display = "none"  # until something is analysed
        self.analyse.on_click(self._guard(self._on_analyse))
        self.stop.on_click(self._guard(self._on_stop))
        row = widgets.HBox([self.which, self.analyse, self.stop, self.status])
        row.add_class("fx-analyse-row")
        self.box = widgets.VBox([widgets.HTML(_CSS), row, self.table, self.plot],
                                layout=widgets.Layout(min_width="0"))
        self.box.add_class("fx-analyse-panel")

    def _guard(self, handler: Callable[..., None]) -> Callable[..., None]:
        def guarded(*args: Any) -> None:
            try:
                handler(*args)
            except ValueError as exc:
                self._notice, self._notice_problem = plain_message(exc), True
            except Exception as exc:  # noqa: BLE001
                log.exception("analyse action failed")
                self._notice = f"Something went wrong: {plain_message(exc)}"
                self._notice_problem = True
            self._request_render()

        return guarded

    def _on_analyse(self, _button=None) -> None:
        choices = run_choices(self.training)
        key = self.which.value
        chosen = next((c for c in choices if c[1] == key), None)
        if chosen is None:
            raise ValueError("Nothing to analyse yet: let a run finish, or pin one.")
        label, key, run = chosen
        self._notice = ""
        self.session.start(run, label, key)

    def _on_stop(self, _button=None) -> None:
        if not self.session.stop():
            raise ValueError("Nothing to stop: no analysis is going.")

    def render(self) -> bool:
        """Bring the widgets up to date (renderer thread); True: call again later."""
        choices = run_choices(self.training)
        self.session.forget([key for _, key, _ in choices])
        # Named as the run is now (the shown run, once pinned, is "pin N").
        names = {key: label for label, key, _ in choices}
        results = [replace(r, label=names.get(r.key, r.label),
                           robustness=None if r.robustness is None else r.robustness.assign(
                               run=names.get(r.key, r.label)))
                   for r in self.session.results]
        with self._writing():
            options = [(label, key) for label, key, _ in choices]
            if options != [(label, key) for label, key, _ in self._choices]:
                current = self.which.value
                self.which.options = options
                keys = [k for _, k in options]
                self.which.value = current if current in keys else (keys[-1] if keys else None)
                self._choices = choices
            active = self.session.active
            self.analyse.disabled = active or not choices
            self.stop.disabled = not active
            message = self._notice or self.session.message or (
                "Analyse a finished or pinned run: its curvature and its robustness."
                if choices else "Let a run finish (or pin one) to analyse it.")
            problem = self._notice_problem if self._notice else self.session.status == "failed"
            css = " fx-analyse-message-problem" if problem else ""
            text = f'<span class="fx-analyse-message{css}">{html.escape(message)}</span>'
            if text != self._status_html:
                self.status.value = self._status_html = text
            table = analysis_table_html(results)
            if table != self._table_html:
                self.table.value = self._table_html = table
        # The stored results (not the relabelled copies) say whether anything changed.
        key = tuple((r.key, names.get(r.key), r.status, id(r.robustness))
                    for r in self.session.results)
        if key == self._drawn and not self.plot.needs_full:
            return False
        if self.plot.busy:
            return True
        frames = [r.robustness for r in results if r.robustness is not None]
        frame = pd.concat(frames, ignore_index=True) if frames else None
        figure, title = views.panel_figure(robustness_figure(frame), PLOT_HEIGHT)
        figure.update_layout(title=dict(text=title, x=0.01, font=dict(size=14)),
                             margin=dict(t=36))
        prepared = self.plot.prepare(figure)
        with self._writing():
            self.plot.layout.display = "" if frames else "none"
            self.plot.show_prepared(prepared)
        self._drawn = key
        return False

    def close(self, timeout: float | None = 10.0) -> None:
        """Stop the analysis and join its thread."""
        self.session.close(timeout)


__all__ = ["AnalysePanel", "run_choices"]
