"""train_iter / train / Run: determinism, history, stopping, divergence, save/load."""

import json
import math
import re
from itertools import pairwise

import pandas as pd
import pandas.testing as pdt
import pytest
import torch

from fa_explore import RULES, Run, RunConfig, build, load_dataset, train, train_iter, training
from fa_explore.settings import EVALUATIONS_PER_RUN
from fa_explore.training import Trajectory

# 96 training examples, batch 16: 6 steps per epoch.
TINY = dict(hidden=(12, 10), batch_size=16, eval_size=64)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", train_size=96, seed=0)


def without_time(history: pd.DataFrame) -> pd.DataFrame:
    return history.drop(columns=["time"])  # wall-clock seconds differ between runs


def layer_columns(n_layers: int) -> list[str]:
    return [f"{metric}/{l}" for l in range(1, n_layers + 1)
            for metric in ("weight_angle", "norm_ratio", "grad_angle", "conservation")]


# --------------------------------------------------------------- determinism
def test_same_config_gives_identical_history(digits):
    cfg = RunConfig(rule="fa", epochs=2, eval_every=2, **TINY)
    first, second = train(cfg, data=digits), train(cfg, data=digits)
    pdt.assert_frame_equal(without_time(first.history), without_time(second.history))
    for a, b in zip(first.model.parameters(), second.model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_different_seed_gives_a_different_run(digits):
    cfg = RunConfig(rule="fa", epochs=2, eval_every=2, **TINY)
    first, other = train(cfg, data=digits), train(cfg.replace(seed=1), data=digits)
    assert not first.history["train_loss"].equals(other.history["train_loss"])
    assert not torch.equal(first.model.layers[0].weight, other.model.layers[0].weight)


# ------------------------------------------------------------------- history
def test_history_has_step_zero_and_every_column(digits):
    run = train(RunConfig(rule="fa", epochs=1, eval_every=2, **TINY), data=digits)
    history = run.history
    assert history["step"].iloc[0] == 0 and history["epoch"].iloc[0] == 0
    required = ["step", "epoch", "train_loss", "train_acc", "test_loss", "test_acc"]
    assert set(required + layer_columns(3)) <= set(history.columns)
    assert not any(c.endswith("/4") for c in history.columns)  # exactly L = 3 layers
    assert history[["train_acc", "test_acc"]].apply(lambda s: s.between(0, 1)).all().all()
    assert run.status == "finished" and run.final["step"] == run.total_steps == 6


@pytest.mark.parametrize("eval_every, steps", [(1, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]),
                                               (4, [0, 4, 8, 12]),
                                               (5, [0, 5, 10, 12]),
                                               (100, [0, 12])])
def test_eval_every_sets_the_evaluated_steps(digits, eval_every, steps):
    run = train(RunConfig(rule="bp", epochs=2, eval_every=eval_every, **TINY), data=digits)
    assert run.history["step"].tolist() == steps  # the last step is always evaluated
    assert run.history["epoch"].tolist() == [s / 6 for s in steps]


@pytest.mark.parametrize("epochs, every, rows", [(1, 1, 7), (4, 2, 13), (10, 5, 13)])
def test_default_eval_every_is_recorded_in_the_config(digits, epochs, every, rows):
    # About EVALUATIONS_PER_RUN evaluations: max(1, steps // 12), 6 steps an epoch.
    assert EVALUATIONS_PER_RUN == 12
    run = train(RunConfig(rule="bp", epochs=epochs, **TINY), data=digits)
    assert run.config.eval_every == every
    assert len(run.history) == rows


# ------------------------------------------------------------------ stopping
@pytest.mark.parametrize("k", [1, 2, 5])
def test_breaking_out_stops_the_run_between_steps(digits, k):
    cfg = RunConfig(rule="fa", epochs=2, eval_every=1, **TINY)
    for count, snapshot in enumerate(train_iter(cfg, data=digits), start=1):
        run = snapshot.run
        assert snapshot.status == "running"
        if count == k:
            break
    # The loop's generator is gone: closing it marked the run stopped.
    assert run.status == "stopped"
    assert run.history["step"].tolist() == list(range(k))


def test_close_stops_the_run(digits):
    stream = train_iter(RunConfig(rule="bp", epochs=2, eval_every=3, **TINY), data=digits)
    first, second = next(stream), next(stream)
    assert (first.step, second.step) == (0, 3) and second.total_steps == 12
    stream.close()
    assert second.run.status == "stopped" and "stopped" in second.run.message
    with pytest.raises(StopIteration):
        next(stream)


def test_stopped_run_holds_the_weights_of_its_last_step(digits):
    """Stopping after step k leaves the model as a run of exactly k steps leaves it."""
    cfg = RunConfig(rule="fa", epochs=2, eval_every=1, **TINY)
    for snapshot in train_iter(cfg, data=digits):
        if snapshot.step == 6:
            break
    one_epoch = train(cfg.replace(epochs=1), data=digits)
    for a, b in zip(snapshot.run.model.parameters(), one_epoch.model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("k", [0, 1, 5, 7])
def test_should_stop_ends_the_run_between_any_two_steps(digits, k):
    """The callback is asked before every step; stopping after k steps leaves the
    model exactly where k steps of the same run (evaluated at every step) leave it."""
    cfg = RunConfig(rule="fa", epochs=2, eval_every=100, **TINY)
    asked = []

    def should_stop():
        asked.append(True)
        return len(asked) > k

    snapshots = list(train_iter(cfg, data=digits, should_stop=should_stop))
    last = snapshots[-1]
    assert last.status == last.run.status == "stopped"
    assert last.row is None and last.step == k and len(asked) == k + 1
    assert last.run.history["step"].tolist() == [0]  # evaluation every 100 steps
    for snapshot in train_iter(cfg.replace(eval_every=1), data=digits):
        if snapshot.step == k:
            break
    for a, b in zip(last.run.model.parameters(), snapshot.run.model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


# ---------------------------------------------------------------- divergence
def test_huge_learning_rate_diverges_without_exception(digits):
    cfg = RunConfig(rule="bp", optimizer="sgd", lr=100.0, epochs=3, eval_every=1,
                    **{**TINY, "hidden": (32,)})
    snapshots = list(train_iter(cfg, data=digits))
    run = snapshots[-1].run
    assert run.status == "diverged" == snapshots[-1].status
    # Caught either by the batch loss (no row) or by the evaluated loss (a non-finite
    # row, or one above divergence_factor times the initial loss).
    last = snapshots[-1].row
    assert last is None or not last["train_loss"] <= cfg.divergence_factor * (
        run.rows[0]["train_loss"])
    assert isinstance(run.diverged_step, int) and 1 <= run.diverged_step < run.total_steps
    assert "diverged" in run.message and str(run.diverged_step) in run.message
    assert run.history["step"].max() <= run.diverged_step
    assert train(cfg, data=digits).status == "diverged"


def test_blow_up_with_finite_batch_loss_is_diverged(digits):
    # FA at an absurd lr can keep a finite batch loss while the evaluated loss is not.
    cfg = RunConfig(rule="fa", optimizer="sgd", lr=100.0, epochs=3, eval_every=1,
                    **{**TINY, "hidden": (32,)})
    run = train(cfg, data=digits)
    assert run.status == "diverged"
    losses = run.history["train_loss"]
    assert not losses.iloc[-1] <= cfg.divergence_factor * losses.iloc[0]


def test_an_exploding_but_finite_loss_is_diverged(digits):
    # Adam at lr 1 drives the loss to ~1e5 without ever reaching inf or NaN.
    cfg = RunConfig(rule="bp", optimizer="adam", lr=1.0, epochs=2, eval_every=5,
                    **{**TINY, "hidden": (32,)})
    run = train(cfg, data=digits)
    assert run.status == "diverged", run.history["train_loss"].tolist()
    assert all(math.isfinite(v) for v in run.history["train_loss"])
    assert run.history["train_loss"].iloc[-1] > 10 * run.history["train_loss"].iloc[0]
    assert "learning rate" in run.message
    # The factor is a setting: a tolerant one lets the same run finish.
    assert train(cfg.replace(divergence_factor=1e12), data=digits).status == "finished"


# ------------------------------------------- evaluation does not perturb training
@pytest.mark.parametrize("name", sorted(RULES))
def test_evaluation_does_not_change_training(digits, name):
    """Metrics run the rule (probe_grads) on a probe batch; that must not move the
    rule's random generator or state: the weights after training are the same
    whether every step or only the last is evaluated."""
    cfg = RunConfig(rule=name, epochs=1, hidden=(10,), batch_size=24, eval_size=32)
    often = train(cfg.replace(eval_every=1), data=digits)
    rarely = train(cfg.replace(eval_every=1000), data=digits)
    assert often.status == rarely.status == "finished"
    for part in ("model", "rule"):
        states = [getattr(run, part).state_dict() for run in (often, rarely)]
        assert states[0].keys() == states[1].keys()
        for key in states[0]:
            torch.testing.assert_close(states[0][key], states[1][key], rtol=0, atol=0,
                                       msg=f"{name}: {part} {key}")
    # Rows at the steps both evaluated (0 and the last) are identical.
    shared = without_time(often.history).set_index("step").loc[rarely.history["step"]]
    pdt.assert_frame_equal(shared, without_time(rarely.history).set_index("step"))


# ----------------------------------------------------------- model state dicts
@pytest.mark.parametrize("name", sorted(RULES))
def test_model_state_dict_has_only_ordinary_keys(name):
    model, _ = build(RunConfig(rule=name, hidden=(8, 6)), input_shape=(1, 8, 8), n_classes=4,
                     device="cpu")
    keys = list(model.state_dict())
    assert keys and all(re.fullmatch(r"layers\.\d+\.(weight|bias)", k) for k in keys), keys
    # So a model trained by any rule loads strictly into a BP model.
    bp_model, _ = build(RunConfig(rule="bp", hidden=(8, 6)), input_shape=(1, 8, 8),
                        n_classes=4, device="cpu")
    bp_model.load_state_dict(model.state_dict())


# ------------------------------------------------------------------ save / load
@pytest.fixture(scope="module")
def saved(digits, tmp_path_factory):
    cfg = RunConfig(rule="fa", feedback_sparsity=0.3, epochs=1, eval_every=2, **TINY)
    run = train(cfg, data=digits)
    path = run.save(tmp_path_factory.mktemp("saved") / "run")
    return run, path


def test_save_load_round_trip(saved):
    run, path = saved
    loaded = Run.load(path)
    assert loaded.config == run.config.replace(device="cpu")
    assert (loaded.status, loaded.message, loaded.diverged_step, loaded.total_steps) == (
        run.status, run.message, run.diverged_step, run.total_steps)
    # NaNs (layer 1 has no feedback matrix) survive JSON.
    assert run.history["weight_angle/1"].isna().all()
    pdt.assert_frame_equal(loaded.history, run.history)
    for state, original in ((loaded.model.state_dict(), run.model.state_dict()),
                            (loaded.rule.state_dict(), run.rule.state_dict())):
        assert state.keys() == original.keys()
        for key in state:
            torch.testing.assert_close(state[key], original[key], rtol=0, atol=0, msg=key)
    assert any(k.endswith("_mask") for k in loaded.rule.state_dict())  # masks are saved
    # The loaded run evaluates like the original.
    x = torch.randn(5, 1, 8, 8)
    torch.testing.assert_close(loaded.model(x), run.model(x), rtol=0, atol=0)


def test_diverged_run_round_trips(digits, tmp_path):
    cfg = RunConfig(rule="bp", optimizer="sgd", lr=100.0, epochs=3, eval_every=1,
                    **{**TINY, "hidden": (32,)})
    run = train(cfg, data=digits)
    loaded = Run.load(run.save(tmp_path / "run"))
    assert loaded.status == "diverged" and loaded.diverged_step == run.diverged_step


def _copy(path, tmp_path):
    import shutil

    return shutil.copytree(path, tmp_path / "copy")


def test_truncated_weights_are_rejected(saved, tmp_path):
    path = _copy(saved[1], tmp_path)
    weights = path / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(ValueError, match="checksum"):
        Run.load(path)


def test_unreadable_weights_with_matching_checksum_are_rejected(saved, tmp_path):
    import hashlib

    path = _copy(saved[1], tmp_path)
    weights, meta_file = path / "weights.safetensors", path / "run.json"
    weights.write_bytes(weights.read_bytes()[:40])
    meta = json.loads(meta_file.read_text())
    meta["weights_sha256"] = hashlib.sha256(weights.read_bytes()).hexdigest()
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="cannot be read"):
        Run.load(path)


def test_wrong_checksum_is_rejected(saved, tmp_path):
    path = _copy(saved[1], tmp_path)
    meta_file = path / "run.json"
    meta = json.loads(meta_file.read_text())
    meta["weights_sha256"] = "0" * 64
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="checksum"):
        Run.load(path)


def test_corrupted_json_is_rejected(saved, tmp_path):
    path = _copy(saved[1], tmp_path)
    meta_file = path / "run.json"
    meta_file.write_text(meta_file.read_text()[:50])
    with pytest.raises(ValueError, match="not valid JSON"):
        Run.load(path)


def test_json_without_required_keys_is_rejected(saved, tmp_path):
    path = _copy(saved[1], tmp_path)
    (path / "run.json").write_text(json.dumps({"format_version": 1, "config": {}}))
    with pytest.raises(ValueError, match="lacks.*history"):
        Run.load(path)


@pytest.mark.parametrize("missing", ["run.json", "weights.safetensors"])
def test_missing_file_is_rejected(saved, tmp_path, missing):
    path = _copy(saved[1], tmp_path)
    (path / missing).unlink()
    with pytest.raises(ValueError, match=f"missing {re.escape(missing)}"):
        Run.load(path)


def test_missing_directory_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="missing run.json"):
        Run.load(tmp_path / "nowhere")


# --------------------------------------------------------------------- device
@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present here")
def test_absent_cuda_is_a_value_error_naming_device(digits):
    cfg = RunConfig(rule="fa", device="cuda", epochs=1, **TINY)
    with pytest.raises(ValueError, match="device.*cuda"):
        train(cfg, data=digits)
    with pytest.raises(ValueError, match="device"):
        build(cfg, input_shape=(4,), n_classes=3)


# ----------------------------------------------------------------- trajectory
@pytest.mark.parametrize("bound", [8, 9])
def test_trajectory_is_bounded_and_spans_the_run(digits, monkeypatch, bound):
    # A bound of 8 points (the smallest allowed) or an odd one against 36 evaluated steps.
    monkeypatch.setattr(training, "TRAJECTORY_POINTS", bound)
    cfg = RunConfig(rule="bp", epochs=6, eval_every=1, hidden=(6,), batch_size=16,
                    eval_size=16)
    run = train(cfg, data=digits)
    trajectory = run.trajectory
    n_params = sum(p.numel() for p in run.model.parameters())
    assert trajectory.max_points == bound and run.total_steps == 36
    assert len(trajectory.steps) <= trajectory.max_points
    assert trajectory.steps[0] == 0 and trajectory.steps[-1] == run.total_steps
    assert trajectory.steps == sorted(set(trajectory.steps))
    assert trajectory.matrix().shape == (len(trajectory.steps), n_params)
    final = torch.cat([p.detach().flatten() for p in run.model.parameters()])
    torch.testing.assert_close(trajectory.matrix()[-1], final)
    # Roughly even: no gap is more than twice the stride of the downsampling.
    gaps = [b - a for a, b in zip(trajectory.steps, trajectory.steps[1:], strict=False)]
    assert max(gaps) <= 2 * math.ceil(run.total_steps / len(trajectory.steps))


def test_trajectory_halves_when_full():
    model = torch.nn.Linear(3, 2)
    trajectory = Trajectory(sum(p.numel() for p in model.parameters()))
    for step in range(1000):
        trajectory.record(step, model)
    steps = trajectory.steps
    assert trajectory.max_points // 2 <= len(steps) <= trajectory.max_points
    assert steps[0] == 0 and steps[-1] == 999
    stride = steps[1] - steps[0]
    assert all(b - a == stride for a, b in zip(steps[:-2], steps[1:-1], strict=False))


# ------------------------------------------- stopping after the last snapshot
@pytest.mark.parametrize("how", ["break", "close"])
def test_leaving_after_the_finished_snapshot_keeps_it_finished(digits, how):
    """Only a running run may become stopped: a consumer that stops iterating on
    the final snapshot (``break`` or ``close``) must not relabel a finished run."""
    cfg = RunConfig(rule="bp", epochs=1, eval_every=3, **TINY)
    stream = train_iter(cfg, data=digits)
    for snapshot in stream:
        if snapshot.status != "running":
            break
    if how == "close":
        stream.close()
    else:
        del stream  # the loop's generator is collected, as after a plain break
    assert snapshot.status == "finished"
    assert snapshot.run.status == "finished" and snapshot.run.message == "finished 6 steps"


@pytest.mark.parametrize("how", ["break", "close"])
def test_leaving_after_the_diverged_snapshot_keeps_it_diverged(digits, how):
    cfg = RunConfig(rule="bp", optimizer="sgd", lr=100.0, epochs=3, eval_every=1,
                    **{**TINY, "hidden": (32,)})
    stream = train_iter(cfg, data=digits)
    for snapshot in stream:
        if snapshot.status != "running":
            break
    if how == "close":
        stream.close()
    else:
        del stream
    run = snapshot.run
    assert run.status == "diverged" and run.diverged_step is not None
    assert "diverged" in run.message


@pytest.mark.parametrize("bound", [8, 9, 10, 11, 17])
@pytest.mark.parametrize("n_records", [1, 2, 9, 10, 11, 12, 37, 150, 151])
def test_trajectory_keeps_the_first_and_last_point_for_any_bound(bound, n_records):
    """An odd bound used to drop the final weights when the last record overflowed
    it (hidden (903, 903), 150 steps: the last stored step was 148)."""
    model = torch.nn.Linear(3, 2)
    trajectory = Trajectory(sum(p.numel() for p in model.parameters()), max_points=bound)
    for step in range(n_records):
        with torch.no_grad():
            model.bias.fill_(step)  # each point is recognisable by its step
        trajectory.record(step, model)
    steps, matrix = trajectory.steps, trajectory.matrix()
    assert 1 <= len(steps) <= bound and len(steps) == len(matrix)
    assert steps[0] == 0 and steps[-1] == n_records - 1
    assert steps == sorted(set(steps))
    assert matrix[:, -1].tolist() == [float(s) for s in steps]
    if n_records > bound:  # downsampled: still spread over the whole run
        assert len(steps) >= bound // 2
        gaps = [b - a for a, b in pairwise(steps)]
        assert max(gaps) <= 2 * math.ceil(n_records / len(steps))


@pytest.mark.parametrize("bad", [1, 0, 2.5, True, "8"])
def test_trajectory_bound_must_hold_two_points(bad):
    with pytest.raises(ValueError, match="max_points"):
        Trajectory(10, max_points=bad)


# ----------------------------------------------------- run.json's structure
def _edit_meta(saved, tmp_path, edit):
    """A copy of the saved run whose run.json went through ``edit(meta) -> meta``."""
    path = _copy(saved[1], tmp_path)
    meta_file = path / "run.json"
    meta_file.write_text(json.dumps(edit(json.loads(meta_file.read_text()))))
    return path


def _with(key, value):
    def edit(meta):
        meta[key] = value
        return meta

    return edit


@pytest.mark.parametrize("top", [5, "run", [1, 2], None])
def test_run_json_that_is_not_an_object_is_rejected(saved, tmp_path, top):
    path = _edit_meta(saved, tmp_path, lambda meta: top)
    with pytest.raises(ValueError, match=r"run\.json.*JSON object"):
        Run.load(path)


@pytest.mark.parametrize("key", ["format_version", "config", "status", "message",
                                 "diverged_step", "total_steps", "history",
                                 "weights_sha256"])
def test_each_missing_key_is_named(saved, tmp_path, key):
    def drop(meta):
        del meta[key]
        return meta

    with pytest.raises(ValueError, match=rf"run\.json.*lacks {key}"):
        Run.load(_edit_meta(saved, tmp_path, drop))


@pytest.mark.parametrize("key, value, words", [
    ("history", {"step": 0}, "a list of rows"),
    ("history", [1, 2], "a list of rows"),
    ("history", [{"step": 0}, ["train_loss", 1.0]], "a list of rows"),
    ("history", [{"step": "0"}], "number or null"),
    ("history", [{"train_loss": True}], "number or null"),
    ("history", [{"train_loss": {"value": 1}}], "number or null"),
    ("status", "exploded", "one of running, finished, diverged, stopped, failed"),
    ("status", None, "one of running"),
    ("message", 5, "a string"),
    ("diverged_step", "3", "null or an integer"),
    ("diverged_step", 2.5, "null or an integer"),
    ("diverged_step", True, "null or an integer"),
    ("total_steps", None, "an integer >= 0"),
    ("total_steps", -1, "an integer >= 0"),
    ("format_version", "1", "format version"),
    ("format_version", 2, "format version"),
    ("weights_sha256", 12, "a string"),
])
def test_badly_typed_keys_are_named(saved, tmp_path, key, value, words):
    path = _edit_meta(saved, tmp_path, _with(key, value))
    with pytest.raises(ValueError, match=rf"saved run .*run\.json.*{key}.*{re.escape(words)}"):
        Run.load(path)


@pytest.mark.parametrize("config, words", [
    ({"rule": "no_such_rule"}, "RunConfig.rule"),
    ({"hidden": "wide"}, "RunConfig.hidden"),
    ({"no_such_field": 1}, "no_such_field"),
    ([1, 2], "an object of RunConfig fields"),
])
def test_invalid_config_is_rejected_with_the_config_error(saved, tmp_path, config, words):
    def edit(meta):
        meta["config"] = ({**meta["config"], **config} if isinstance(config, dict)
                          else config)
        return meta

    with pytest.raises(ValueError, match=rf"run\.json.*config.*{re.escape(words)}"):
        Run.load(_edit_meta(saved, tmp_path, edit))


def test_unknown_extra_keys_are_tolerated(saved, tmp_path):
    path = _edit_meta(saved, tmp_path, _with("written_by", "a later version"))
    assert Run.load(path).status == saved[0].status


def test_non_finite_metrics_are_written_as_null(digits, tmp_path):
    """A diverged run used to write e.g. ``"train_loss": Infinity`` (not JSON)."""
    run = train(RunConfig(rule="bp", epochs=1, eval_every=3, **TINY), data=digits)
    run.rows[-1].update(train_loss=math.inf, test_loss=-math.inf, test_acc=math.nan)
    text = (run.save(tmp_path / "run") / "run.json").read_text()

    def refuse(constant):
        raise AssertionError(f"run.json holds {constant}")

    meta = json.loads(text, parse_constant=refuse)
    last = meta["history"][-1]
    assert last["train_loss"] is last["test_loss"] is last["test_acc"] is None
    assert last["train_acc"] == run.rows[-1]["train_acc"]
    loaded = Run.load(tmp_path / "run")
    assert loaded.history[["train_loss", "test_loss", "test_acc"]].iloc[-1].isna().all()
    pdt.assert_frame_equal(loaded.history.iloc[:-1], run.history.iloc[:-1])


def test_load_never_unpickles(saved, monkeypatch):
    import pickle

    def refuse(*args, **kwargs):
        raise AssertionError("Run.load used pickle")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    assert Run.load(saved[1]).status == saved[0].status


def test_run_status_is_one_of_the_statuses(saved):
    run = saved[0]
    assert run.status in training.STATUSES
    with pytest.raises(ValueError, match="status must be one of running, finished"):
        run.status = "paused"  # the dashboard's state, not a run's
    assert run.status == "finished"


# ------------------------------------------------------------- lr schedules
def lrs(run):
    return dict(zip(run.history["step"], run.history["lr"], strict=True))


def test_constant_schedule_logs_the_learning_rate(digits):
    run = train(RunConfig(rule="bp", optimizer="sgd", lr=0.05, epochs=1, eval_every=2, **TINY),
                data=digits)
    assert set(run.history["lr"]) == {0.05}


def test_step_schedule_multiplies_at_each_milestone_epoch(digits):
    # 6 steps per epoch: epochs 0 at 0.1, 1-2 at 0.05, 3 at 0.025.
    cfg = RunConfig(rule="bp", optimizer="sgd", lr=0.1, epochs=4, eval_every=1,
                    lr_schedule="step", lr_milestones=(1, 3), lr_factor=0.5, **TINY)
    got = lrs(train(cfg, data=digits))
    expected = {0: 0.1, 5: 0.1, 6: 0.05, 11: 0.05, 17: 0.05, 18: 0.025, 24: 0.025}
    assert {s: got[s] for s in expected} == pytest.approx(expected, rel=1e-12)


def test_step_schedule_of_the_pfa_paper():
    """lr 0.01, halved at epochs 20 and 30 (product_feedback_alignment seed)."""
    cfg = RunConfig(rule="pfa", lr=0.01, lr_schedule="step", lr_milestones=(20, 30),
                    lr_factor=0.5)
    spe = 10
    at_epoch = {e: 0.01 * training.lr_factor_at(cfg, e * spe, spe, 40 * spe)
                for e in (0, 19, 20, 29, 30, 39)}
    assert at_epoch == pytest.approx({0: 0.01, 19: 0.01, 20: 0.005, 29: 0.005,
                                      30: 0.0025, 39: 0.0025}, rel=1e-12)
    # The last update of epoch 19 still uses 0.01; the first of epoch 20 uses 0.005.
    assert training.lr_factor_at(cfg, 20 * spe - 1, spe, 40 * spe) == 1.0


def test_cosine_schedule_goes_from_lr_to_zero_per_step(digits):
    cfg = RunConfig(rule="bp", optimizer="adam", lr=0.01, epochs=2, eval_every=1,
                    lr_schedule="cosine", **TINY)
    got = lrs(train(cfg, data=digits))
    total = 12
    for step in (0, 1, 3, 6, 9, 11):
        assert got[step] == pytest.approx(0.005 * (1 + math.cos(math.pi * step / total)),
                                          rel=1e-9, abs=1e-15)
    assert got[6] == pytest.approx(0.005) and got[12] == pytest.approx(0.0, abs=1e-15)


def test_every_optimizer_keeps_its_groups_own_base_lr(digits):
    """DKP trains its feedback with its own Adam and lr; the schedule scales it too."""
    cfg = RunConfig(rule="dkp", optimizer="sgd", lr=0.1, epochs=2, lr_schedule="cosine",
                    rule_options={"feedback_optimizer": "adam", "feedback_lr": 1e-3},
                    **TINY).resolve()
    model, rule = build(cfg, input_shape=(1, 8, 8), n_classes=10, device="cpu")
    optimizers = training.make_optimizers(cfg, model, rule)
    assert len(optimizers) == 2
    schedulers = training.make_schedulers(cfg, optimizers, 6, 12)
    for _ in range(4):
        for optimizer in optimizers:
            optimizer.step()
        for scheduler in schedulers:
            scheduler.step()
    factor = 0.5 * (1 + math.cos(math.pi * 4 / 12))
    assert [g["lr"] for o in optimizers for g in o.param_groups] == pytest.approx(
        [0.1 * factor, 1e-3 * factor], rel=1e-12)


def test_the_schedule_changes_training_only_through_the_lr(digits):
    """A step schedule with factor 1 is the constant schedule, to the last bit."""
    cfg = RunConfig(rule="fa", optimizer="sgd", lr=0.05, epochs=2, eval_every=3, **TINY)
    flat = train(cfg, data=digits)
    same = train(cfg.replace(lr_schedule="step", lr_milestones=(1,), lr_factor=1.0),
                 data=digits)
    pdt.assert_frame_equal(without_time(flat.history), without_time(same.history))
    halved = train(cfg.replace(lr_schedule="step", lr_milestones=(1,), lr_factor=0.5),
                   data=digits)
    assert halved.history["train_loss"].iloc[:3].tolist() == (
        flat.history["train_loss"].iloc[:3].tolist())  # epoch 0 is the same
    assert not torch.equal(halved.model.layers[0].weight, flat.model.layers[0].weight)


# ------------------------------------------------------------------ targets
@pytest.mark.parametrize("target", [{"target_acc": 0.5}, {"target_loss": 1.0}])
def test_reaching_a_target_finishes_the_run_there(digits, target):
    cfg = RunConfig(rule="bp", optimizer="adam", lr=0.01, epochs=20, eval_every=2, **TINY,
                    **target)
    snapshots = list(train_iter(cfg, data=digits))
    run = snapshots[-1].run
    history = run.history
    (name, value), = target.items()
    column = "train_acc" if name == "target_acc" else "train_loss"
    met = (history[column] >= value) if name == "target_acc" else (history[column] <= value)
    assert met.iloc[-1] and not met.iloc[:-1].any()  # the first evaluation that meets it
    step = int(history["step"].iloc[-1])
    assert 0 < step < run.total_steps
    assert run.status == snapshots[-1].status == "finished" and run.stop_reason == "target"
    assert f"reached the target at step {step}" in run.message and name in run.message
    assert [s.status for s in snapshots[:-1]] == ["running"] * (len(snapshots) - 1)
    assert run.trajectory.steps[-1] == step


def test_a_target_met_at_step_zero_ends_before_any_update(digits):
    cfg = RunConfig(rule="bp", epochs=2, eval_every=2, target_loss=100.0, **TINY)
    snapshots = list(train_iter(cfg, data=digits))
    assert [(s.step, s.status) for s in snapshots] == [(0, "finished")]
    assert snapshots[0].run.stop_reason == "target"


def test_stop_reasons(digits):
    cfg = RunConfig(rule="bp", epochs=1, eval_every=3, **TINY)
    assert train(cfg, data=digits).stop_reason == "completed"
    stream = train_iter(cfg, data=digits)
    run = next(stream).run
    assert run.stop_reason is None
    stream.close()
    assert (run.status, run.stop_reason) == ("stopped", "stopped")
    diverged = train(cfg.replace(optimizer="sgd", lr=10.0), data=digits)
    assert (diverged.status, diverged.stop_reason) == ("diverged", "diverged")


def test_stop_reason_round_trips_and_old_files_get_one(digits, tmp_path):
    cfg = RunConfig(rule="bp", epochs=20, eval_every=2, target_acc=0.5, optimizer="adam",
                    lr=0.01, **TINY)
    run = train(cfg, data=digits)
    path = run.save(tmp_path / "run")
    assert Run.load(path).stop_reason == "target"
    meta = json.loads((path / "run.json").read_text())
    del meta["stop_reason"]  # written before the key existed
    (path / "run.json").write_text(json.dumps(meta))
    assert Run.load(path).stop_reason == "completed"  # what "finished" meant then
    meta["stop_reason"] = "bored"
    (path / "run.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"run\.json key stop_reason must be null or one of"):
        Run.load(path)


# -------------------------------------------------------------- divergence
@pytest.mark.parametrize("optimizer, lr", [("adam", 1.0), ("sgd", 10.0)])
def test_exploding_losses_end_as_diverged_with_a_hint(digits, optimizer, lr):
    """Adam at lr 1 (loss ~5e5) and SGD at lr 10 (loss ~1e9) never reach inf on digits
    within a tiny budget; the default divergence_factor catches both."""
    cfg = RunConfig(rule="bp", optimizer=optimizer, lr=lr, epochs=2, eval_every=2,
                    **{**TINY, "hidden": (32,)})
    run = train(cfg, data=digits)
    assert run.status == "diverged" and run.stop_reason == "diverged"
    assert isinstance(run.diverged_step, int) and run.diverged_step == run.final["step"]
    assert run.final["train_loss"] > cfg.divergence_factor * run.history["train_loss"].iloc[0]
    assert "lower the learning rate" in run.message and str(run.diverged_step) in run.message


# ------------------------------------------------------------- trajectory_every
@pytest.mark.parametrize("every, steps", [(None, [0, 4, 8, 12]), (1, list(range(13))),
                                          (5, [0, 5, 10, 12]), (100, [0, 12])])
def test_trajectory_every_sets_the_recorded_steps(digits, every, steps):
    cfg = RunConfig(rule="bp", epochs=2, eval_every=4, trajectory_every=every, **TINY)
    run = train(cfg, data=digits)
    assert run.trajectory.steps == steps
    assert run.history["step"].tolist() == [0, 4, 8, 12]  # evaluations are unchanged
    final = torch.cat([p.detach().flatten() for p in run.model.parameters()])
    torch.testing.assert_close(run.trajectory.matrix()[-1], final)


def test_trajectory_every_stays_bounded(digits, monkeypatch):
    monkeypatch.setattr(training, "TRAJECTORY_POINTS", 9)
    cfg = RunConfig(rule="bp", epochs=10, eval_every=1000, trajectory_every=1, **TINY)
    run = train(cfg, data=digits)
    steps = run.trajectory.steps
    assert len(steps) <= 9 and steps[0] == 0 and steps[-1] == run.total_steps == 60


# ---------------------------------------------------------------- data_seed
def test_data_seed_fixes_the_data_while_seed_moves_the_init():
    base = RunConfig(rule="fa", dataset="moons", n_samples=200, train_size=100,
                     label_noise=0.2, hidden=(8,), batch_size=20, epochs=1, eval_size=50,
                     data_seed=7)
    runs = [train(base.replace(seed=seed)) for seed in (0, 1)]
    a, b = (r.data for r in runs)
    for name in ("x_train", "y_train", "x_test", "y_test"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert not torch.equal(runs[0].model.layers[0].weight, runs[1].model.layers[0].weight)
    # data_seed None follows seed: then the data differ too.
    free = [train(base.replace(seed=seed, data_seed=None)).data for seed in (0, 1)]
    assert not torch.equal(free[0].x_train, free[1].x_train)
    # The data a data_seed gives is the data seed = data_seed gives.
    assert torch.equal(train(base.replace(seed=7, data_seed=None)).data.x_train, a.x_train)


def test_data_seed_draws_the_class_subset_and_the_subsample():
    from fa_explore.data import dataset_from_config

    cfg = RunConfig(dataset="digits", n_classes=3, train_size=50, label_noise=0.1, seed=0,
                    data_seed=5)
    same = dataset_from_config(cfg.replace(seed=9))
    data = dataset_from_config(cfg)
    assert data.class_names == same.class_names
    assert torch.equal(data.x_train, same.x_train) and torch.equal(data.y_train, same.y_train)
    other = dataset_from_config(cfg.replace(data_seed=6))
    assert not torch.equal(data.x_train, other.x_train)


# -------------------------------------------------------------- given data
def test_given_data_that_contradicts_train_size_is_refused():
    full = load_dataset("digits")
    cfg = RunConfig(rule="bp", train_size=50, epochs=1, **TINY)
    with pytest.raises(ValueError, match=r"RunConfig.train_size is 50 but the given data "
                                         r"was loaded with train_size=None"):
        train(cfg, data=full)
    # The config's own data is accepted and gives the run train would load itself.
    from fa_explore.data import dataset_from_config

    given = train(cfg, data=dataset_from_config(cfg))
    assert len(given.data.y_train) == 50
    assert without_time(given.history).equals(without_time(train(cfg).history))


@pytest.mark.parametrize("change, field", [({"label_noise": 0.2}, "label_noise"),
                                           ({"n_classes": 3}, "n_classes"),
                                           ({"standardize": False}, "standardize"),
                                           ({"data_seed": 4}, "data_seed")])
def test_given_data_that_contradicts_a_data_setting_is_refused(digits, change, field):
    cfg = RunConfig(rule="bp", epochs=1, **TINY, **change)
    with pytest.raises(ValueError, match=rf"RunConfig\.{field} is .* leave {field} at its "
                                         r"default"):
        train(cfg, data=digits)


def test_given_data_of_another_dataset_is_refused():
    with pytest.raises(ValueError, match=r"RunConfig.dataset is 'digits' but the given data "
                                         r"is 'moons'"):
        train(RunConfig(rule="bp", epochs=1, **TINY), data=load_dataset("moons"))


def test_hand_made_data_is_checked_where_it_can_be(digits):
    from fa_explore.data import Dataset

    data = Dataset("custom", digits.x_train, digits.y_train, digits.x_test, digits.y_test,
                   digits.input_shape, digits.n_classes)
    assert train(RunConfig(rule="bp", epochs=1, train_size=96, **TINY), data=data).rows
    with pytest.raises(ValueError, match=r"RunConfig.train_size is 50 but the given data "
                                         r"has 96 training examples"):
        train(RunConfig(rule="bp", epochs=1, train_size=50, **TINY), data=data)
    with pytest.raises(ValueError, match=r"RunConfig.label_noise is 0.1 but the given data "
                                         r"was built by hand"):
        train(RunConfig(rule="bp", epochs=1, label_noise=0.1, **TINY), data=data)
    # data_seed also draws the evaluation subset, so it applies to any data.
    assert train(RunConfig(rule="bp", epochs=1, data_seed=3, **TINY), data=data).rows
