"""Fixtures for the end-to-end tests: a real Voilà server on a free localhost port
and Debian's Chromium driven by Playwright for Python.

Both are skipped, with the reason, only when Chromium, Playwright or Voila is
missing; with ``FA_EXPLORE_REQUIRE_BROWSER=1`` (set by .ci/run) that is a failure
instead. Chromium is ``$FA_EXPLORE_CHROMIUM``, else /usr/bin/chromium, else the
``chromium`` on the PATH. The server's output goes to test-artifacts/voila-server.log.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
NOTEBOOK = "apps/alignment_dashboard.ipynb"
CHROMIUM = Path(os.environ.get("FA_EXPLORE_CHROMIUM")
                or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists()
                    else shutil.which("chromium") or "/usr/bin/chromium"))
REQUIRED = os.environ.get("FA_EXPLORE_REQUIRE_BROWSER") == "1"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
SERVER_START_TIMEOUT = 90  # seconds; a busy 2-core CI machine is slow to import jupyter


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _missing(reason: str):
    """Skip, or fail where the browser tests are required (CI)."""
    if REQUIRED:
        pytest.fail(f"{reason} (FA_EXPLORE_REQUIRE_BROWSER=1: required here)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def browser():
    if not CHROMIUM.exists():
        _missing(f"browser tests need Chromium at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("browser tests need Playwright for Python (pip install playwright)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="session")
def voila_url(artifacts, browser):
    """A Voilà server for the dashboard notebook; yields its base URL."""
    try:
        import voila  # noqa: F401
    except ImportError:
        _missing("browser tests need voila (pip install .[app])")
    port = _free_port()
    log_path = artifacts / "voila-server.log"
    env = dict(os.environ, PYTHONUNBUFFERED="1",
               FA_EXPLORE_RUNS=str(artifacts / "exports"))
    with open(log_path, "w") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "voila", NOTEBOOK, "--no-browser", f"--port={port}",
             "--Voila.ip=127.0.0.1", "--Voila.port_retries=0"],
            cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            deadline = time.monotonic() + SERVER_START_TIMEOUT
            while not _listening(port):
                if server.poll() is not None:
                    pytest.fail(f"voila exited with code {server.returncode}; see {log_path}")
                if time.monotonic() > deadline:
                    pytest.fail(f"voila did not listen on port {port} within "
                                f"{SERVER_START_TIMEOUT} s; see {log_path}")
                time.sleep(0.2)
            yield f"http://127.0.0.1:{port}/"
        finally:
            server.terminate()
            try:
                server.wait(20)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(10)
    print(f"\nvoila server log: {log_path}")
