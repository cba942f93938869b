"""The fa-explore command: options generated from RunConfig, exit codes, tables."""

import dataclasses
import json
import subprocess
import sys

import pytest
import torch

from fa_explore import DATASETS, RULES, Run, RunConfig
from fa_explore.cli import build_parser, config_from_args, format_table, main

# A tiny, fast training run on digits (7 steps).
SMALL = ["--hidden", "16", "--train-size", "200", "--epochs", "1", "--eval-size", "50",
         "--no-progress"]


def parse_config(*argv: str) -> RunConfig:
    return config_from_args(build_parser().parse_args(["train", *argv]))


def no_traceback(text: str) -> bool:
    return "Traceback" not in text


# ------------------------------------------------------------- option parsing
def test_every_runconfig_field_is_an_option(capsys):
    assert main(["train", "--help"]) == 0
    help_text = capsys.readouterr().out
    for f in dataclasses.fields(RunConfig):
        assert f"--{f.name.replace('_', '-')}" in help_text, f.name
        if "_" in f.name:
            assert f"--{f.name}" in help_text, f.name


def test_no_options_give_the_default_config():
    assert parse_config() == RunConfig()


@pytest.mark.parametrize("argv", [["--hidden", "64", "32"], ["--hidden", "64,32"],
                                  ["--hidden", "64,", "32"]])
def test_tuple_fields_accept_spaces_and_commas(argv):
    assert parse_config(*argv).hidden == (64, 32)


def test_hidden_none_is_a_network_without_hidden_layers():
    assert parse_config("--hidden", "none").hidden == ()


def test_dash_and_underscore_spellings_are_the_same_option():
    dashed = parse_config("--init-angle", "30", "--batch-size", "16")
    underscored = parse_config("--init_angle", "30", "--batch_size", "16")
    assert dashed == underscored
    assert dashed.init_angle == 30.0 and dashed.batch_size == 16


def test_scalar_types_none_and_booleans():
    cfg = parse_config("--rule", "bp", "--lr", "0.05", "--epochs", "1e1", "--seed", "7",
                       "--no-standardize", "--n-classes", "3", "--optimizer", "sgd")
    assert (cfg.rule, cfg.lr, cfg.epochs, cfg.seed) == ("bp", 0.05, 10, 7)
    assert cfg.standardize is False and cfg.n_classes == 3 and cfg.optimizer == "sgd"
    assert parse_config("--lr", "0.1", "--lr", "none").lr is None  # last one wins


def test_rule_options_from_pairs_and_json():
    rule = next((name for name, cls in RULES.items() if cls.options), None)
    if rule is None:
        pytest.skip("no registered rule has options")
    key, option = next(iter(RULES[rule].options.items()))
    default = option.default
    value = default if isinstance(default, (bool, str)) else type(default)(default * 2)
    pair = parse_config("--rule", rule, "--rule-option", f"{key}={json.dumps(value)}")
    assert pair.rule_options == {key: value}
    as_json = parse_config("--rule", rule, "--rule-options", json.dumps({key: value}))
    assert as_json == pair


def test_config_file_then_options_override(tmp_path):
    saved = RunConfig(rule="bp", hidden=(32,), lr=0.01, seed=3)
    path = tmp_path / "cfg.json"
    path.write_text(saved.to_json())
    assert parse_config("--config", str(path)) == saved
    assert parse_config("--config", str(path), "--seed", "4") == saved.replace(seed=4)


# ------------------------------------------------------------ invalid input
@pytest.mark.parametrize("argv, words", [
    (["--lr", "-1"], ["lr", "a number in (0, 100]"]),
    (["--rule", "nope"], ["rule", "bp", "fa"]),
    (["--activation", "gelu"], ["activation", "relu", "tanh"]),
    (["--hidden", "0"], ["hidden", "integers in [1, 4096]"]),
    (["--hidden", "a,b"], ["hidden", "integer"]),
    (["--epochs", "abc"], ["--epochs", "integer"]),
    (["--init-angle", "30", "--rule", "bp"], ["init_angle", "fa"]),
    (["--rule-option", "nonsense_option=1"], ["rule_options", "nonsense_option"]),
    (["--rule-option", "no_equals_sign"], ["--rule-option", "key=value"]),
    (["--config", "/nonexistent/cfg.json"], ["--config", "cannot read"]),
])
def test_invalid_config_exits_2_naming_the_field(capsys, argv, words):
    assert main(["train", *argv, "--no-progress"]) == 2
    out, err = capsys.readouterr()
    assert no_traceback(err) and no_traceback(out)
    for word in words:
        assert word in err, (word, err)


def test_corrupted_config_file_exits_2(capsys, tmp_path):
    path = tmp_path / "cfg.json"
    path.write_text('{"rule": "fa", "hidden": [12')
    assert main(["train", "--config", str(path)]) == 2
    assert "not valid JSON" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present here")
def test_absent_cuda_exits_2_naming_device(capsys):
    assert main(["train", "--device", "cuda", *SMALL]) == 2
    err = capsys.readouterr().err
    assert "device" in err and "cuda" in err and no_traceback(err)


def test_missing_command_prints_usage_and_exits_2(capsys):
    assert main([]) == 2
    assert "train" in capsys.readouterr().err


# ------------------------------------------------------------------ training
def test_train_prints_final_table_and_saves_the_run(capsys, tmp_path):
    out_dir = tmp_path / "run"
    assert main(["train", "--rule", "fa", *SMALL, "--out", str(out_dir)]) == 0
    out = capsys.readouterr().out
    for column in ("layer", "weight_angle", "norm_ratio", "grad_angle", "conservation",
                   "train_loss", "test_acc"):
        assert column in out
    table_rows = [line.split() for line in out.splitlines()]
    layer_numbers = [row[0] for row in table_rows if row and row[0] in ("1", "2")]
    assert layer_numbers == ["1", "2"]  # one row per layer of the 64-16-10 net
    run = Run.load(out_dir, device=None)  # keep the saved device
    assert run.status == "finished"
    assert run.config == parse_config("--rule", "fa", *SMALL).resolve().replace(
        eval_every=run.config.eval_every)
    assert f"{run.final['test_acc']:.4g}" in out


def test_train_starts_from_a_saved_run(capsys, tmp_path):
    out_dir = tmp_path / "run"
    assert main(["train", "--rule", "bp", *SMALL, "--seed", "5", "--out", str(out_dir)]) == 0
    first = Run.load(out_dir)
    capsys.readouterr()
    # A saved run's directory (or its run.json) is a config file too.
    again = tmp_path / "again"
    assert main(["train", "--config", str(out_dir), "--no-progress", "--out", str(again)]) == 0
    assert Run.load(again).config == first.config


def test_diverged_run_exits_3_without_traceback(capsys):
    code = main(["train", "--rule", "bp", "--optimizer", "sgd", "--lr", "100", *SMALL])
    out, err = capsys.readouterr()
    assert code == 3
    assert "diverged" in err and no_traceback(err) and no_traceback(out)


# ------------------------------------------------------------------ listings
def test_rules_lists_every_registered_rule(capsys):
    assert main(["rules"]) == 0
    out = capsys.readouterr().out
    first_words = {line.split()[0] for line in out.splitlines() if line.strip()}
    assert set(RULES) <= first_words
    assert "init_angle" in out and "feedback_sparsity" in out
    for cls in RULES.values():
        assert cls.paper.split()[0] in out


def test_datasets_lists_every_dataset(capsys):
    assert main(["datasets"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line for line in lines if line.strip()}
    for name, spec in DATASETS.items():
        assert name in rows
        assert "x".join(map(str, spec.input_shape)) in rows[name]
        assert f" {spec.n_classes} " in rows[name]
        assert ("yes" if spec.downloads else "no") in rows[name]


def test_table_wraps_long_cells_to_the_width():
    table = format_table(["name", "text"], [["a", "word " * 40], ["b", 1.5]], max_width=40)
    lines = table.splitlines()
    assert all(len(line) <= 40 for line in lines)
    assert lines[0].split() == ["name", "text"] and "1.5" in table
    assert sum(line.count("word") for line in lines) == 40


def test_python_dash_m_runs_the_cli():
    result = subprocess.run([sys.executable, "-m", "fa_explore", "datasets"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "digits" in result.stdout
