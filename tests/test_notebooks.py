"""The lecture notebooks: stored without outputs, and each runs top to bottom."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
    assert NOTEBOOKS, "notebooks/*.ipynb is empty"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_stored_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert not cell.get("outputs"), f"{path.name} cell {i} has stored outputs"
            assert cell.get("execution_count") is None, f"{path.name} cell {i} has a count"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_has_parameters_cell(path):
    nb = nbformat.read(path, as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert tagged, f"{path.name} has no cell tagged 'parameters'"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_executes(path, tmp_path):
    nb = nbformat.read(path, as_version=4)
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("FA_EXPLORE_SWEEPS", str(tmp_path / "sweeps"))
    client = nbclient.NotebookClient(nb, timeout=180, kernel_name="python3",
                                     resources={"metadata": {"path": str(path.parent)}})
    old = dict(os.environ)
    os.environ.update(env)
    try:
        client.execute()
    finally:
        os.environ.clear()
        os.environ.update(old)


def test_the_dashboard_header_links_every_notebook():
    from fa_explore.app import dashboard

    stored = [p.name for p in NOTEBOOKS]
    assert sorted(name for name, _ in dashboard.NOTEBOOKS) == stored
    _HEADER = dashboard._HEADER
    for name in stored:
        assert name in _HEADER


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_dashboard_links_are_made_by_dashboard_link(path):
    # A hard-coded "/voila/render/..." breaks behind a JupyterHub or Binder prefix.
    assert "/voila/render" not in path.read_text(), path.name


def test_dashboard_link_starts_at_the_servers_prefix(monkeypatch):
    from fa_explore import RunConfig
    from fa_explore.app import dashboard_link

    cfg = RunConfig(rule="dfa", init_angle=None, lr=0.0005)
    monkeypatch.delenv("JUPYTERHUB_SERVICE_PREFIX", raising=False)
    assert dashboard_link() == "/voila/render/apps/alignment_dashboard.ipynb"
    monkeypatch.setenv("JUPYTERHUB_SERVICE_PREFIX", "/user/ada")
    link = dashboard_link(cfg)
    assert link == "/user/ada/voila/render/apps/alignment_dashboard.ipynb?" + cfg.to_query()
    assert RunConfig.from_query(link.split("?", 1)[1]) == cfg
