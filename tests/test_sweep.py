"""Sweeps: grids, the three backends agree, the cache survives a killed sweep,
failures are rows, cancellation leaves no worker behind, and the CLI."""

from __future__ import annotations

import inspect
import json
import math
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

import fa_explore.data as data_module
import fa_explore.sweep as sweep_module
from fa_explore import RunConfig, iter_sweep, sweep  # sweep: that module, callable
from fa_explore.cli import main
from fa_explore.data import DATA_ENV

ROOT = Path(__file__).resolve().parents[1]
# scikit-learn warns before each retry of the download that the offline points make.
pytestmark = pytest.mark.filterwarnings("ignore:A network error occurred:UserWarning")
TINY = RunConfig(hidden=(8,), epochs=1, train_size=128, eval_size=64)
# A point that fails for real inside any worker: a downloadable set, an empty data
# folder, and a proxy that refuses every connection (so it fails online too).
OFFLINE_ENV = {"http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9",
               "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"}
MIXED_GRID = [{"rule": "bp", "seed": 0}, {"rule": "bp", "seed": 1}, {"rule": "fa", "seed": 0},
              {"rule": "fa", "seed": 1},
              {"rule": "fa", "optimizer": "sgd", "lr": 100.0},  # diverges at once
              {"rule": "fa", "dataset": "mnist"},  # DataUnavailableError
              {"rule": "bp", "init_angle": 30.0}]  # invalid: bp has no init_angle


@pytest.fixture(scope="module")
def offline_data(tmp_path_factory):
    return tmp_path_factory.mktemp("no_data")


@pytest.fixture()
def offline(monkeypatch, offline_data):
    monkeypatch.setattr(data_module, "_OPENML_DELAY", 0.01)  # no retry wait in this process
    monkeypatch.setenv(DATA_ENV, str(offline_data))
    for name, value in OFFLINE_ENV.items():
        monkeypatch.setenv(name, value)


@pytest.fixture(scope="module")
def cluster(offline_data):
    """One real 2-worker Dask cluster for the module, on loopback, no dashboard;
    its workers inherit the offline environment at spawn."""
    distributed = pytest.importorskip("distributed")
    saved = dict(os.environ)
    os.environ.update(OFFLINE_ENV, **{DATA_ENV: str(offline_data)})
    try:
        local = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                         dashboard_address=None, host="127.0.0.1",
                                         silence_logs=50)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    with distributed.Client(local) as client:  # workers end at once on close (4 s saved)
        client.run(sweep_module._exit_fast)
    yield local
    local.close()


def _comparable(table: pd.DataFrame) -> pd.DataFrame:
    # The operating system's words for a refused connection differ between a worker
    # process and this one ("Connection refused" / "Name or service not known"): not
    # a property of the backend, so they are masked.
    table = table.assign(message=table["message"].str.replace(
        r"<urlopen error [^>]*>", "<urlopen error …>", regex=True))
    return table.drop(columns=["wall_time", "cached"]).set_index("point")


# ------------------------------------------------------------------ grids
def test_the_module_is_the_function():
    import fa_explore

    assert fa_explore.sweep is sweep_module is sweep and callable(sweep_module)
    assert list(inspect.signature(fa_explore.sweep).parameters)[:2] == ["base_config", "grid"]
    table = fa_explore.sweep(TINY, {"seed": [0]}, backend="sequential", cache=False)
    assert list(table["status"]) == ["finished"]


def test_product_grid_points_in_order_with_invalid_rows():
    plan = sweep_module.expand_grid(TINY, {"rule": ["bp", "fa"], "init_angle": [None, 30],
                                           "hidden": [[8], (4, 4)]})
    assert plan.varied == ("rule", "init_angle", "hidden")
    assert len(plan.points) == 8 and len(plan.valid_points) == 6
    assert [p.changes["rule"] for p in plan.points] == ["bp"] * 4 + ["fa"] * 4
    invalid = [p for p in plan.points if not p.valid]
    assert {p.changes["rule"] for p in invalid} == {"bp"}
    assert "init_angle" in invalid[0].error and "bp" in invalid[0].error
    assert [plan.shown(p, "hidden") for p in plan.points[:2]] == [(8,), (4, 4)]
    assert plan.shown(invalid[0], "init_angle") == 30.0


@pytest.mark.parametrize("grid, words", [
    ({"rule": ["fa"], "colour": [1]}, ["'colour'", "settings:", "init_angle", "seed"]),
    ([{"seed": 0}, {"lr_rate": 1}], ["grid[1]", "'lr_rate'", "settings:"]),
    ({"rule": "fa"}, ["grid['rule']", "list of values", "'fa'"]),
    ({"seed": []}, ["grid['seed']", "empty"]),
    ([], ["empty list"]),
    ([3], ["grid[0]", "mapping"]),
    ("rule=fa", ["mapping of setting name"]),
    ({"seed": list(range(200)), "lr": [0.1] * 100}, ["20,000 points", "at most"]),
    ({"rule": ["bp", "dfa"], "init_angle": [10, 20]}, ["every point", "invalid", "init_angle"]),
])
def test_bad_grids_raise_naming_the_problem(grid, words):
    with pytest.raises(ValueError) as info:
        sweep(TINY, grid, backend="sequential", cache=False)
    assert all(w in str(info.value) for w in words), str(info.value)


def test_bad_arguments_raise_before_anything_runs():
    grid = {"seed": [0]}
    for kwargs, word in [(dict(backend="threads"), "local, dask, sequential"),
                         (dict(workers=0), "workers"), (dict(workers=True), "workers"),
                         (dict(address="tcp://127.0.0.1:1"), "dask backend"),
                         (dict(metrics="test_acc"), "list of metric names")]:
        with pytest.raises(ValueError, match=word):
            iter_sweep(TINY, grid, cache=False, **kwargs)


# ------------------------------------------------------------- backends
def test_three_backends_give_the_same_rows(tmp_path, offline, cluster):
    tables = {backend: sweep(TINY, MIXED_GRID, backend=backend, cache=False,
                             address=cluster.scheduler_address if backend == "dask" else None)
              for backend in ("sequential", "local", "dask")}
    reference = tables["sequential"]
    assert list(reference["status"]) == ["finished"] * 4 + ["diverged", "failed", "invalid"]
    assert "DataUnavailableError" in reference["message"][5]
    assert "diverged at step" in reference["message"][4]
    assert {"test_acc", "train_loss", "grad_angle/1", "weight_angle/2"} <= set(reference)
    assert pd.isna(reference["config"][6]) and reference["config"][0].startswith("{")
    assert RunConfig.from_json(reference["config"][2]) == TINY.replace(rule="fa", seed=0)
    assert reference["steps"][0] == 4 and reference["steps"][4] >= 1
    for backend in ("local", "dask"):
        pd.testing.assert_frame_equal(_comparable(tables[backend]), _comparable(reference),
                                      check_exact=False, rtol=1e-6, atol=1e-9)


def test_iterator_yields_rows_as_dicts_and_a_grouping_runner_gives_the_same(tmp_path):
    grid = {"rule": ["bp", "fa"], "seed": [0, 1]}
    rows = list(iter_sweep(TINY, grid, backend="sequential", cache=False))
    assert all(isinstance(r, dict) for r in rows) and sorted(r["point"] for r in rows) == [
        0, 1, 2, 3]
    grouped = sweep(TINY, grid, backend="sequential", cache=False, runner=OneTask())
    plain = sweep_module.results_frame(rows, ("rule", "seed"))
    # The default runner trained the four points as one batched ensemble
    # (train_many); OneTask trains them one by one: the same runs within float noise.
    pd.testing.assert_frame_equal(_comparable(grouped), _comparable(plain),
                                  check_exact=False, rtol=1e-4, atol=1e-4)


def test_the_default_runner_batches_compatible_points_in_bounded_tasks():
    configs = [TINY.replace(rule=rule, seed=seed) for rule in ("bp", "fa", "kp")
               for seed in (0, 1)]
    # TINY subsamples the training set with data_seed = seed, so each seed has its
    # own data: bp and fa of one seed train together; kp learns its feedback (alone).
    assert sweep_module.EnsembleRunner().group(configs) == [[0, 2], [1, 3], [4], [5]]
    same_data = [c.replace(data_seed=0) for c in configs]
    assert sweep_module.EnsembleRunner().group(same_data) == [[0, 1, 2, 3], [4], [5]]
    assert sweep_module.EnsembleRunner(max_members=3).group(same_data) == [
        [0, 1, 2], [3], [4], [5]]
    with pytest.raises(ValueError, match="max_members"):
        sweep_module.EnsembleRunner(max_members=0)


class OneTask(sweep_module.Runner):
    """Every point in one task: the shape a train_many batching runner takes."""

    def group(self, configs):
        return [list(range(len(configs)))]


def test_metrics_restricts_the_metric_columns():
    table = sweep(TINY, {"seed": [0]}, backend="sequential", cache=False,
                  metrics=["test_acc", "grad_angle"])
    metric_columns = [c for c in table if c not in (
        "point", "seed", "status", "message", *sweep_module._TAIL)]
    assert metric_columns == ["test_acc", "grad_angle/1", "grad_angle/2"]


# ----------------------------------------------------------------- cache
def _refuse_training(calls):
    def fake_train_iter(cfg, data=None, should_stop=None):
        calls.append(cfg)
        raise RuntimeError("this test computes nothing")
        yield  # pragma: no cover - a generator, as train_iter

    return fake_train_iter


def test_a_second_sweep_reads_everything_from_the_cache(tmp_path, monkeypatch):
    grid = [{"seed": 0}, {"seed": 1}, {"seed": 0}, {"seed": 1, "lr": 100.0, "optimizer": "sgd"}]
    first = sweep(TINY, grid, backend="sequential", cache_dir=tmp_path)
    assert list(first["status"]) == ["finished", "finished", "finished", "diverged"]
    assert first["key"][0] == first["key"][2]  # the same config runs once
    assert len(list(tmp_path.glob("*.json"))) == 3
    calls = []
    monkeypatch.setattr(sweep_module, "train_iter", _refuse_training(calls))
    second = sweep(TINY, grid, backend="sequential", cache_dir=tmp_path)
    assert calls == [] and second["cached"].all()
    pd.testing.assert_frame_equal(_comparable(second), _comparable(first))
    # A damaged entry is recomputed, not trusted.
    (tmp_path / f"{first['key'][1]}.json").write_text('{"format": 1, "res')
    third = sweep(TINY, grid, backend="sequential", cache_dir=tmp_path)
    assert len(calls) == 1 and list(third["cached"]) == [True, False, True, True]


def test_cache_directory_defaults_to_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(sweep_module.CACHE_ENV, str(tmp_path / "sweeps"))
    assert sweep_module.default_cache_dir() == tmp_path / "sweeps"
    sweep(TINY, {"seed": [0]}, backend="sequential")
    assert len(list((tmp_path / "sweeps").glob("*.json"))) == 1
    sweep(TINY, {"seed": [1]}, backend="sequential", cache=False)
    assert len(list((tmp_path / "sweeps").glob("*.json"))) == 1


def test_saved_runs_load_back(tmp_path):
    table = sweep(TINY, {"rule": ["fa"]}, backend="sequential", cache_dir=tmp_path,
                  save_runs=True)
    run = sweep_module.load_run(table.iloc[0], cache_dir=tmp_path)
    assert run.status == "finished" and run.final["test_acc"] == table["test_acc"][0]


def test_a_killed_sweep_restarts_without_recomputing_finished_points(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    base = RunConfig(hidden=(8,), epochs=4, train_size=512, eval_size=64)  # ~0.2 s a point
    grid = {"seed": list(range(6))}
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        from fa_explore import RunConfig, sweep
        sweep(RunConfig.from_json({base.to_json()!r}), {grid!r}, backend="sequential",
              cache_dir={str(cache)!r})
    """)
    child = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT)
    try:
        deadline = time.monotonic() + 120
        while not list(cache.glob("*.json")) and child.poll() is None:
            assert time.monotonic() < deadline, "no point finished in 2 minutes"
            time.sleep(0.01)
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait()
    finished = {p.stem for p in cache.glob("*.json")}
    assert 1 <= len(finished) < 6, "the sweep was not interrupted mid-way"
    calls = []
    monkeypatch.setattr(sweep_module, "train_iter", _refuse_training(calls))
    rerun = sweep(base, grid, backend="sequential", cache_dir=cache)
    assert set(rerun.loc[rerun["cached"], "key"]) == finished
    assert (rerun.loc[~rerun["cached"], "status"] == "failed").all()
    assert len(calls) == 6 - len(finished)


# ---------------------------------------------------------- cancellation
def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie has exited; only its status is left to read
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_closing_the_iterator_cancels_and_leaves_no_worker(tmp_path):
    before = set(multiprocessing.active_children())  # the module's Dask cluster
    long = RunConfig(hidden=(8,), epochs=10_000, eval_size=64)  # minutes a point
    # One worker: after the quick first point, a long one runs and the rest wait.
    rows = iter_sweep(long, [{"epochs": 1}, {"seed": 1}, {"seed": 2}, {"seed": 3}],
                      backend="local", workers=1, cache_dir=tmp_path)
    assert next(rows)["point"] == 0
    workers = set(multiprocessing.active_children()) - before
    assert len(workers) == 1
    started = time.monotonic()
    rows.close()
    took = time.monotonic() - started
    # Asked of the OS: with a Dask cluster in this process, a child's exit status
    # may be read by another thread, leaving multiprocessing's bookkeeping stale.
    assert [w.pid for w in workers if _running(w.pid)] == []
    # Before the grace period: the running point stopped and the worker left by
    # itself, rather than being terminated after JOIN_SECONDS.
    assert took < sweep_module.JOIN_SECONDS
    assert len(list(tmp_path.glob("*.json"))) == 1  # only the finished point is cached


def _executing(dask_worker):
    return len(dask_worker.state.executing)


def test_closing_a_dask_sweep_stops_its_running_points(cluster):
    distributed = pytest.importorskip("distributed")
    long = RunConfig(hidden=(8,), epochs=10_000, eval_size=64)  # minutes a point
    grid = [{"epochs": 1}, {"seed": 1}, {"seed": 2}]
    with distributed.Client(cluster) as client:
        rows = iter_sweep(long, grid, backend="dask", address=client, cache=False)
        assert next(rows)["point"] == 0
        rows.close()
        deadline = time.monotonic() + 15  # they stop within a second
        while sum(client.run(_executing).values()):  # the workers' threads, not the scheduler
            assert time.monotonic() < deadline, "the long points kept running"
            time.sleep(0.1)
        assert client.submit(sum, [1, 2]).result() == 3  # the cluster is still usable


def test_should_stop_ends_the_sweep_and_marks_the_rest_cancelled(tmp_path):
    finished = []

    def stop():
        return len(finished) >= 1

    rows = iter_sweep(TINY, {"seed": [0, 1, 2]}, backend="sequential", cache=False,
                      should_stop=stop)
    for row in rows:
        finished.append(row)
    assert len(finished) == 1
    table = sweep(TINY, {"seed": [0, 1, 2]}, backend="sequential", cache=False,
                  should_stop=lambda: True)
    assert list(table["status"]) == ["cancelled"] * 3 and table["config"][0]


# ------------------------------------------------------------------- CLI
def _write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def test_cli_sweep_prints_the_table_and_writes_csv(tmp_path, capsys):
    grid = _write(tmp_path / "grid.yaml", """
        base: {hidden: [8], epochs: 1, train_size: 128, eval_size: 64}
        grid:
          rule: [bp, fa]
          init_angle: [null, 30]
        backend: sequential
    """)
    out = tmp_path / "results.csv"
    code = main(["sweep", str(grid), "--no-progress", "--cache-dir", str(tmp_path / "c"),
                 "--out", str(out)])
    text = capsys.readouterr().out
    assert code == 0
    header = next(line for line in text.splitlines() if line.startswith("rule"))
    assert header.split() == ["rule", "init_angle", "status", "test_acc", "time_s"]
    assert "invalid (1 point): RunConfig.init_angle" in text
    assert "4 points: 3 finished, 1 invalid" in text
    table = pd.read_csv(out)
    assert len(table) == 4 and {"test_acc", "config", "grad_angle/1"} <= set(table)
    json_grid = tmp_path / "grid.json"
    json_grid.write_text(json.dumps({"base": {"hidden": [8], "epochs": 1, "train_size": 128,
                                              "eval_size": 64},
                                     "grid": {"seed": [0]}}))
    assert main(["sweep", str(json_grid), "--backend", "sequential", "--no-progress",
                 "--no-cache"]) == 0


def test_cli_sweep_exit_5_when_a_point_failed(tmp_path, offline, capsys):
    grid = _write(tmp_path / "grid.yaml", """
        base: {hidden: [8], epochs: 1, train_size: 128, eval_size: 64}
        grid: {dataset: [digits, mnist]}
    """)
    cache = tmp_path / "cache"
    assert main(["sweep", str(grid), "--backend", "sequential", "--no-progress",
                 "--cache-dir", str(cache)]) == 5
    assert "failed (1 point): DataUnavailableError" in capsys.readouterr().out
    assert len(list(cache.glob("*.json"))) == 1  # failures are not cached: retried next time


@pytest.mark.parametrize("content, words", [
    ("grid: {rule: [fa], colour: [1]}\n", ["unknown setting 'colour'", "settings:"]),
    ("grid: {rule: [bp], init_angle: [10]}\n", ["every point", "init_angle"]),
    ("grid: {seed: [0]}\nbase: {hidden: 8}\n", ["RunConfig.hidden"]),
    ("grid: [1, 2\n", ["not valid YAML"]),
    ("base: &a {seed: 1}\ngrid: {seed: *a}\n", ["aliases"]),
    ("- 1\n", ["needs a mapping"]),
    ("grid: {seed: [0]}\ncolour: 1\n", ["unknown key 'colour'"]),
    ("base: {}\n", ["no 'grid'"]),
    ("grid: {seed: [0]}\nbackend: threads\n", ["backend must be one of"]),
    ("grid: {seed: [0]}\nworkers: -1\n", ["workers"]),
    ("grid: {seed: [0]}\n" + "#" * (1 << 20), ["larger than 1 MiB"]),
    (b"grid: {seed: [0]}\n\xff", ["not UTF-8"]),
])
def test_cli_sweep_bad_files_exit_2_with_one_line_naming_the_file(tmp_path, capsys, content,
                                                                  words):
    path = tmp_path / "bad.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    assert main(["sweep", str(path), "--backend", "sequential", "--no-progress",
                 "--no-cache"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(path) in err, err
    assert all(w in err for w in words), err


def test_cli_sweep_missing_file_and_directory_exit_2(tmp_path, capsys):
    for target in (tmp_path / "absent.yaml", tmp_path):
        assert main(["sweep", str(target)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and str(target) in err
    bad_json = tmp_path / "grid.json"
    bad_json.write_text("{grid")
    assert main(["sweep", str(bad_json)]) == 2
    assert "not valid JSON" in capsys.readouterr().err


def test_nan_metrics_survive_the_cache(tmp_path):
    table = sweep(TINY, {"seed": [0]}, backend="sequential", cache_dir=tmp_path)
    again = sweep(TINY, {"seed": [0]}, backend="sequential", cache_dir=tmp_path)
    assert math.isnan(table["weight_angle/1"][0]) and math.isnan(again["weight_angle/1"][0])
    assert again["cached"][0]
