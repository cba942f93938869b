"""The live dashboard (``Dashboard``) and the pure figure builders it draws with
(:mod:`fa_explore.app.views`).

``from fa_explore.app import Dashboard; Dashboard()`` shows it in JupyterLab;
``apps/alignment_dashboard.ipynb`` serves it as a page with Voilà. The widget
modules are imported on first use, so ``fa_explore.app.views`` needs only plotly.
:func:`dashboard_link` is the address of the served dashboard preset to a config.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["Dashboard", "TrainingSession", "dashboard_link"]

# The dashboard notebook, as Voila's server extension in JupyterLab serves it.
DASHBOARD_PATH = "voila/render/apps/alignment_dashboard.ipynb"


def dashboard_link(config: Any = None) -> str:
    """The link, for a notebook in JupyterLab, that opens the Voila dashboard preset
    to ``config`` (a :class:`~fa_explore.RunConfig`; None: the defaults).

    The path starts at the single-user server's prefix: ``JUPYTERHUB_SERVICE_PREFIX``
    on JupyterHub and Binder (``/user/<name>/``), else ``/``. A relative link would
    not do: JupyterLab resolves relative links in outputs against the notebook's
    folder and opens them as files in JupyterLab.
    """
    prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX") or "/"
    if not prefix.endswith("/"):
        prefix += "/"
    query = config.to_query() if config is not None else ""
    return prefix + DASHBOARD_PATH + (f"?{query}" if query else "")


def __getattr__(name: str) -> Any:
    if name == "Dashboard":
        from .dashboard import Dashboard

        return Dashboard
    if name == "TrainingSession":
        from .session import TrainingSession

        return TrainingSession
    raise AttributeError(f"module 'fa_explore.app' has no attribute {name!r}")
