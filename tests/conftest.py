import os
import socket
import time
import urllib.error

import pytest
import torch
from hypothesis import settings

from fa_explore.threads import pin_threads

# Test nets are tiny: one thread avoids thread start-up and oversubscription costs.
# The thread policy (train_iter sets torch's count at each run) reads the same number,
# also in the processes the tests start (sweep workers, Voila kernels).
pin_threads(int(os.environ.get("FA_EXPLORE_TEST_THREADS", "1")))

# CI runs the same examples every time (no example database, no random seed), so a
# run fails only for a change in the code; locally hypothesis keeps exploring.
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
if os.environ.get("CI") == "true":
    settings.load_profile("ci")


def pytest_addoption(parser):
    parser.addoption("--load-test", action="store_true",
                     help="also run the tests marked 'load' (the classroom load test, "
                          "minutes of a busy machine: make load-test)")


def pytest_collection_modifyitems(config, items):
    # Deselected here rather than with addopts' -m "not load": a -m of the caller's
    # (PYTEST_ARGS="-m 'not slow'") would replace that and bring them back.
    if config.getoption("--load-test"):
        return
    load = [item for item in items if item.get_closest_marker("load")]
    if load:
        config.hook.pytest_deselected(items=load)
        items[:] = [item for item in items if not item.get_closest_marker("load")]


@pytest.fixture(autouse=True)
def _deterministic_global_rng():
    # Rules and training use their own generators; this only guards tests that use torch.rand.
    torch.manual_seed(0)
    yield


class _NoSleep:
    """The time module, but sleep returns at once."""

    def __getattr__(self, name):
        return getattr(time, name)

    @staticmethod
    def sleep(seconds):
        pass


@pytest.fixture
def offline_openml(monkeypatch, tmp_path):
    """An empty data folder and no network: every OpenML request raises and is logged.
    Returns ``(data folder, requested URLs)``."""
    import sklearn.datasets._openml as openml

    from fa_explore import data as data_module

    requests = []

    def blocked_urlopen(request, *args, **kwargs):
        requests.append(getattr(request, "full_url", request))
        raise urllib.error.URLError("network blocked by the test")

    def blocked_connect(*args, **kwargs):
        raise OSError("network blocked by the test")

    monkeypatch.setattr(openml, "urlopen", blocked_urlopen)
    monkeypatch.setattr(socket.socket, "connect", blocked_connect)
    monkeypatch.setattr(data_module, "_OPENML_DELAY", 1e-3)  # scikit-learn's retry pause
    # Some fetch_openml calls retry with scikit-learn's own 1 s delay, whatever ours:
    # its module's time.sleep does nothing here (the retries still happen, and count).
    monkeypatch.setattr(openml, "time", _NoSleep())
    monkeypatch.setenv("FA_EXPLORE_DATA", str(tmp_path / "data"))
    return tmp_path / "data", requests


@pytest.fixture(scope="session")
def fa_run_and_bp_copy():
    """A short FA run on digits and a BP model loaded with its weights: analyses of
    the network function must give the same numbers for both (the rule that trained
    it never enters them)."""
    import fa_explore
    from fa_explore import RunConfig

    run = fa_explore.train(RunConfig(rule="fa", hidden=(16,), epochs=1, train_size=200,
                                     eval_size=64))
    bp_model, _ = fa_explore.build(RunConfig(rule="bp", hidden=(16,)), run.data.input_shape,
                                   run.data.n_classes)
    bp_model.load_state_dict(run.model.state_dict())
    return run, bp_model
