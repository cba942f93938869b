"""Fixtures for the end-to-end tests: a real Voilà server on a free localhost port
and Debian's Chromium driven by Playwright for Python.

Both are skipped, with the reason, only when Chromium, Playwright or Voila is
missing; with ``FA_EXPLORE_REQUIRE_BROWSER=1`` (set by .ci/run) that is a failure
instead. Chromium is ``$FA_EXPLORE_CHROMIUM``, else /usr/bin/chromium, else the
``chromium`` on the PATH. The server's output goes to test-artifacts/voila-server.log.

Each test module gets its own server (``voila_server``, ``voila_url``), started like
``make app`` (repository root, voila.json, the page template on JUPYTER_PATH), and its
first page is served once the preheated kernel pool is full.
"""

from __future__ import annotations

import contextlib
import json
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
# Seconds to wait for Voila's preheated kernels (torch imported, first run warmed up).
POOL_FILL_TIMEOUT = 180
WARM_KERNEL_LOG = "kernel warmed up in"  # logged by the notebook before it waits


def pool_size(extra_args=()) -> int:
    """The preheated pool's size: voila.json's, or a --VoilaConfiguration.default_pool_size."""
    for arg in extra_args:
        if arg.startswith("--VoilaConfiguration.default_pool_size="):
            return int(arg.split("=", 1)[1])
    config = json.loads((REPO / "voila.json").read_text())
    return config["VoilaConfiguration"].get("default_pool_size", 1)


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


class VoilaServer:
    """A running Voilà server for the dashboard notebook, started in the repository
    root so that it reads voila.json (preheated kernel pool, culling, page template)."""

    def __init__(self, process: subprocess.Popen, port: int, log_path: Path, pool_size: int):
        self.process, self.port, self.log_path = process, port, log_path
        self.pool_size = pool_size  # preheated kernels kept ready
        self.url = f"http://127.0.0.1:{port}/"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, text: str, count: int = 1, timeout: float = 60.0) -> bool:
        """Wait until ``text`` appears ``count`` times in the log; False after ``timeout``."""
        deadline = time.monotonic() + timeout
        while self.log().count(text) < count:
            if self.process.poll() is not None or time.monotonic() > deadline:
                return False
            time.sleep(0.2)
        return True

    def warm_kernels(self) -> int:
        """How many kernels have run the notebook's warm-up so far (the notebook logs
        it just before waiting for a page request)."""
        return self.log().count(WARM_KERNEL_LOG)

    def kernel_pids(self) -> list[int]:
        """The server's live kernel processes (ipykernel), pooled kernels included."""
        import psutil

        try:
            children = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        pids = []
        for child in children:
            try:
                if any("ipykernel" in part for part in child.cmdline()):
                    pids.append(child.pid)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        return pids

    def kernel_exists(self, kernel_id: str) -> bool:
        """Whether the server still holds the kernel (GET /api/kernels/<id>)."""
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(f"{self.url}api/kernels/{kernel_id}", timeout=10):
                return True
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return False
            raise


@contextlib.contextmanager
def start_voila(artifacts: Path, log_name: str = "voila-server.log",
                extra_args: tuple[str, ...] = (), wait_for_pool: bool = True):
    """Start Voilà on a free localhost port; yield a :class:`VoilaServer`, then stop it.

    ``wait_for_pool``: return once every kernel of the preheated pool has run the
    notebook's warm-up (so that page timings are for a warm pool), or after
    POOL_FILL_TIMEOUT seconds regardless.
    """
    try:
        import voila  # noqa: F401
    except ImportError:
        _missing("browser tests need voila (pip install .[app])")
    port = _free_port()
    log_path = artifacts / log_name
    # share/jupyter holds the page template voila.json names ("fa_explore").
    jupyter_path = os.pathsep.join(
        p for p in (str(REPO / "share" / "jupyter"), os.environ.get("JUPYTER_PATH")) if p)
    env = dict(os.environ, PYTHONUNBUFFERED="1", JUPYTER_PATH=jupyter_path,
               FA_EXPLORE_RUNS=str(artifacts / "exports"),
               FA_EXPLORE_SWEEPS=str(artifacts / "sweeps"))  # the Sweep tab's cache
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "voila", NOTEBOOK, "--no-browser", f"--port={port}",
             "--Voila.ip=127.0.0.1", "--Voila.port_retries=0", *extra_args],
            cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=env)
        server = VoilaServer(process, port, log_path, pool_size(extra_args))
        try:
            deadline = time.monotonic() + SERVER_START_TIMEOUT
            while not _listening(port):
                if process.poll() is not None:
                    pytest.fail(f"voila exited with code {process.returncode}; see {log_path}")
                if time.monotonic() > deadline:
                    pytest.fail(f"voila did not listen on port {port} within "
                                f"{SERVER_START_TIMEOUT} s; see {log_path}")
                time.sleep(0.2)
            if wait_for_pool:
                server.wait_for_log(WARM_KERNEL_LOG, count=server.pool_size,
                                    timeout=POOL_FILL_TIMEOUT)
                if process.poll() is not None:
                    pytest.fail(f"voila exited with code {process.returncode}; see {log_path}")
            yield server
        finally:
            process.terminate()
            try:
                process.wait(30)  # Voila shuts its kernels down first
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
    print(f"\nvoila server log: {log_path}")


@pytest.fixture(scope="session")
def voila_starter(artifacts, browser):
    """``start_voila`` for modules that need a server of their own settings:
    ``with voila_starter(log_name, extra_args) as server: ...``."""
    return lambda *args, **kwargs: start_voila(artifacts, *args, **kwargs)


@pytest.fixture(scope="module")
def voila_server(artifacts, browser):
    """A Voilà server with the settings of voila.json, one per test module (a module
    starts with no kernels but a full pool)."""
    with start_voila(artifacts) as server:
        yield server


@pytest.fixture(scope="module")
def voila_url(voila_server):
    """The base URL of the module's Voilà server."""
    return voila_server.url
