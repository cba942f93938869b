"""The live dashboard (``Dashboard``) and the pure figure builders it draws with
(:mod:`fa_explore.app.views`).

``from fa_explore.app import Dashboard; Dashboard()`` shows it in JupyterLab;
``apps/alignment_dashboard.ipynb`` serves it as a page with Voilà. The widget
modules are imported on first use, so ``fa_explore.app.views`` needs only plotly.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Dashboard", "TrainingSession"]


def __getattr__(name: str) -> Any:
    if name == "Dashboard":
        from .dashboard import Dashboard

        return Dashboard
    if name == "TrainingSession":
        from .session import TrainingSession

        return TrainingSession
    raise AttributeError(f"module 'fa_explore.app' has no attribute {name!r}")
