"""fa-explore's failure paths: one line on stderr, a documented exit code, no traceback,
and nothing lost (the --out directory is checked before training, a finished run's
results are printed even when saving fails, Ctrl-C saves the partial run)."""

import os
import re
import subprocess
import sys

import pytest

from fa_explore import RULES, Run, cli, training
from fa_explore.cli import (
    CONFIG_MAX_BYTES,
    EXIT_BROKEN_PIPE,
    EXIT_DATA_UNAVAILABLE,
    EXIT_DIVERGED,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    main,
)

# 64 examples in batches of 32: 2 steps an epoch.
TINY = ["--hidden", "8", "--train-size", "64", "--eval-size", "64", "--no-progress"]
EXIT_CODES = {"0": EXIT_OK, "1": EXIT_INTERNAL, "2": EXIT_USAGE, "3": EXIT_DIVERGED,
              "4": EXIT_DATA_UNAVAILABLE, "130": EXIT_INTERRUPTED, "141": EXIT_BROKEN_PIPE}


def one_line(err: str, start: str = "fa-explore: error: ") -> str:
    """The single line ``err`` holds (warnings aside): no traceback, our prefix."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines()
             if line.strip() and not line.startswith("fa-explore: warning: ")]
    assert len(lines) == 1, err
    assert lines[0].startswith(start), err
    return lines[0]


def interrupt_after(monkeypatch, calls: int, rule: str = "fa") -> None:
    """Ctrl-C during training step ``calls``: the rule's compute_grads runs once a step
    (and once more per evaluation, inside probe_grads, which does not count)."""
    cls = RULES[rule]
    compute, probe = cls.compute_grads, cls.probe_grads
    seen, probing = [], []

    def compute_grads(self, *args, **kwargs):
        if not probing:
            seen.append(1)
            if len(seen) == calls:
                raise KeyboardInterrupt
        return compute(self, *args, **kwargs)

    def probe_grads(self, *args, **kwargs):
        probing.append(1)
        try:
            return probe(self, *args, **kwargs)
        finally:
            probing.pop()

    monkeypatch.setattr(cls, "compute_grads", compute_grads)
    monkeypatch.setattr(cls, "probe_grads", probe_grads)


# ------------------------------------------------------------- exit codes
def test_exit_codes_are_documented_in_help_docstring_and_readme(capsys):
    assert main(["--help"]) == 0
    top = capsys.readouterr().out
    assert main(["train", "--help"]) == 0
    train_help = capsys.readouterr().out
    readme = (cli.Path(__file__).parents[1] / "README.md").read_text()
    assert (EXIT_OK, EXIT_USAGE, EXIT_DIVERGED, EXIT_INTERRUPTED) == (0, 2, 3, 130)
    for text in (top, train_help, cli.__doc__, readme):
        assert "exit code" in text.lower()
        for code in EXIT_CODES:
            assert re.search(rf"(?<![\w.]){code}(?![\w.])", text), (code, text[-600:])
    assert "--debug" in train_help


def test_a_bad_argument_is_one_line_naming_the_option(capsys):
    assert main(["train", "--epochs", "abc"]) == EXIT_USAGE
    line = one_line(capsys.readouterr().err)
    assert "--epochs" in line and "integer" in line and "fa-explore train --help" in line


def test_an_unknown_command_is_one_line(capsys):
    assert main(["trian"]) == EXIT_USAGE
    line = one_line(capsys.readouterr().err)
    assert "trian" in line and "train" in line


def test_python_dash_m_bad_argument_exits_2_without_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "fa_explore", "train", "--epochs", "abc"],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path,
                            check=False,
                            env={**os.environ, "PYTHONPATH": str(cli.Path(cli.__file__)
                                                                 .parents[1])})
    assert result.returncode == EXIT_USAGE, result.stderr
    assert "Traceback" not in result.stderr
    assert "--epochs" in one_line(result.stderr)
    assert result.stdout == ""


# ------------------------------------------------------------- data unavailable
@pytest.fixture
def offline(offline_openml):
    """An empty data folder and no network (tests/conftest.py, as test_data.py uses)."""
    folder, _ = offline_openml
    return folder


def test_offline_dataset_exits_4_with_how_to_get_it(capsys, offline, tmp_path):
    out_dir = tmp_path / "new" / "run"
    code = main(["train", "--dataset", "mnist", *TINY, "--out", str(out_dir)])
    out, err = capsys.readouterr()
    assert code == EXIT_DATA_UNAVAILABLE
    line = one_line(err)
    assert "'mnist'" in line and "FA_EXPLORE_DATA" in line and str(offline) in line
    assert "Traceback" not in out
    assert not (tmp_path / "new").exists()  # the --out folder made up front is removed


# ---------------------------------------------------------- unexpected errors
def test_an_internal_error_is_one_line_pointing_at_debug(capsys, monkeypatch):
    def broken(*args, **kwargs):
        raise TypeError("something inside broke")

    monkeypatch.setattr(training, "train_iter", broken)
    assert main(["train", *TINY]) == EXIT_INTERNAL
    line = one_line(capsys.readouterr().err)
    assert "TypeError: something inside broke" in line and "--debug" in line
    with pytest.raises(TypeError, match="inside broke"):
        main(["train", *TINY, "--debug"])
    with pytest.raises(TypeError, match="inside broke"):
        main(["--debug", "train", *TINY])


def test_a_mistyped_rule_option_is_one_line_naming_it(capsys):
    # A string where PFA wants a number was a raw TypeError from inside the optimizer;
    # the settings schema now refuses it up front.
    code = main(["train", "--rule", "pfa", "--rule-option", "first_epoch_weight_decay=abc",
                 *TINY, "--epochs", "1"])
    assert code == EXIT_USAGE
    assert "first_epoch_weight_decay" in one_line(capsys.readouterr().err)


def test_a_closed_output_pipe_is_quiet(capsys, monkeypatch):
    def closed(*args, **kwargs):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(cli, "rules_table", closed)
    assert main(["rules"]) == EXIT_BROKEN_PIPE
    assert "Traceback" not in capsys.readouterr().err


# ------------------------------------------------------------------- --out
def test_out_that_is_a_file_is_refused_before_training(capsys, tmp_path):
    path = tmp_path / "taken"
    path.write_text("not a folder")
    assert main(["train", *TINY, "--epochs", "1", "--out", str(path)]) == EXIT_USAGE
    out, err = capsys.readouterr()
    line = one_line(err)
    assert str(path) in line and "--out" in line and "not a directory" in line
    assert out == ""  # refused before training
    assert path.read_text() == "not a folder"


def test_out_that_cannot_be_created_is_refused_before_training(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    path = blocker / "run"
    assert main(["train", *TINY, "--epochs", "1", "--out", str(path)]) == EXIT_USAGE
    out, err = capsys.readouterr()
    line = one_line(err)
    assert str(path) in line and "cannot create" in line
    assert out == ""


def test_out_that_is_not_writable_is_refused_before_training(capsys, tmp_path, monkeypatch):
    folder = tmp_path / "readonly"
    folder.mkdir()
    if os.geteuid() == 0:  # root writes anywhere: make the write probe fail instead
        def refuse(*args, **kwargs):
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(cli.tempfile, "TemporaryFile", refuse)
    else:
        folder.chmod(0o555)
    try:
        code = main(["train", *TINY, "--epochs", "1", "--out", str(folder)])
    finally:
        folder.chmod(0o755)
    out, err = capsys.readouterr()
    assert code == EXIT_USAGE
    line = one_line(err)
    assert str(folder) in line and "not writable" in line and "Permission denied" in line
    assert out == ""


def test_a_failed_save_keeps_the_printed_results(capsys, tmp_path, monkeypatch):
    def full_disk(self, path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Run, "save", full_disk)
    out_dir = tmp_path / "run"
    assert main(["train", *TINY, "--epochs", "1", "--out", str(out_dir)]) == EXIT_USAGE
    out, err = capsys.readouterr()
    assert "test_acc" in out and "weight_angle" in out and "status: finished" in out
    line = one_line(err)
    assert str(out_dir) in line and "No space left on device" in line and "not saved" in line


# ------------------------------------------------------------------- Ctrl-C
def test_ctrl_c_saves_the_partial_run(capsys, tmp_path, monkeypatch):
    interrupt_after(monkeypatch, 4)
    out_dir = tmp_path / "run"
    assert main(["train", *TINY, "--epochs", "3", "--out", str(out_dir)]) == EXIT_INTERRUPTED
    line = one_line(capsys.readouterr().err, "fa-explore: interrupted")
    assert "at step 4 of 6" in line and f"partial run saved to {out_dir}" in line
    run = Run.load(out_dir)
    assert run.status == "stopped" and "interrupted" in run.message
    assert run.total_steps == 6 and [row["step"] for row in run.rows] == [0, 1, 2, 3]


def test_ctrl_c_without_out_says_nothing_was_saved(capsys, monkeypatch):
    interrupt_after(monkeypatch, 2)
    assert main(["train", *TINY, "--epochs", "2"]) == EXIT_INTERRUPTED
    line = one_line(capsys.readouterr().err, "fa-explore: interrupted")
    assert "at step 2 of 4" in line and "--out" in line


def test_ctrl_c_before_training_leaves_no_empty_out_folder(capsys, tmp_path, monkeypatch):
    def interrupted_load(cfg):
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "dataset_from_config", interrupted_load)
    out_dir = tmp_path / "run"
    assert main(["train", *TINY, "--out", str(out_dir)]) == EXIT_INTERRUPTED
    line = one_line(capsys.readouterr().err, "fa-explore: interrupted")
    assert "before training" in line
    assert not out_dir.exists()


def test_the_progress_bar_still_shows(capsys):
    argv = [a for a in TINY if a != "--no-progress"]
    assert main(["train", *argv, "--epochs", "1"]) == EXIT_OK
    err = capsys.readouterr().err
    assert "2/2" in err and "step" in err and "Traceback" not in err


# ------------------------------------------------------------------ --config
def config_error(capsys, path) -> str:
    assert main(["train", "--config", str(path), "--no-progress"]) == EXIT_USAGE
    out, err = capsys.readouterr()
    assert out == ""
    line = one_line(err)
    assert f"--config {path}" in line  # every file error names the file
    return line


@pytest.mark.parametrize("content, words", [
    (b"\xff\xfe\x00{", ["UTF-8"]),
    (b'{"rule": "fa", "hidden": [12', ["not valid JSON", "line 1"]),
    (b"[" * 100_000 + b"]" * 100_000, ["nested too deeply"]),
    (b"[1, 2]", ["JSON object", "an array"]),
    (b'"fa"', ["JSON object", "a string"]),
    (b'{"format_version": 1, "config": [3]}', ["JSON object", "an array"]),
    (b'{"nonsense_field": 1}', ["nonsense_field"]),
    (b'{"lr": -1}', ["lr"]),
    (b"", ["not valid JSON"]),
])
def test_bad_config_files_are_one_line_naming_the_file(capsys, tmp_path, content, words):
    path = tmp_path / "cfg.json"
    path.write_bytes(content)
    line = config_error(capsys, path)
    for word in words:
        assert word in line, (word, line)


def test_config_with_a_utf8_bom_is_read(capsys, tmp_path):
    path = tmp_path / "cfg.json"
    path.write_bytes(b"\xef\xbb\xbf" + b'{"rule": "bp", "seed": 4}')
    assert cli.read_config_file(path) == cli.RunConfig(rule="bp", seed=4)


def test_missing_config_file(capsys, tmp_path):
    path = tmp_path / "absent.json"
    assert "no such file" in config_error(capsys, path).lower()


def test_config_directory_without_run_json(capsys, tmp_path):
    line = config_error(capsys, tmp_path)
    assert "a directory without run.json" in line


def test_unreadable_config_file(capsys, tmp_path, monkeypatch):
    path = tmp_path / "secret.json"
    path.write_text("{}")
    if os.geteuid() == 0:  # root reads anything: make opening this file fail instead
        real_open = os.open

        def refuse(name, *args, **kwargs):
            if os.fspath(name) == str(path):
                raise PermissionError(13, "Permission denied", str(path))
            return real_open(name, *args, **kwargs)

        monkeypatch.setattr(cli.os, "open", refuse)
    else:
        path.chmod(0)
    assert "Permission denied" in config_error(capsys, path)


def test_config_file_over_the_cap_is_refused_unread(capsys, tmp_path):
    path = tmp_path / "huge.json"
    with open(path, "wb") as f:  # sparse: no disk used
        f.truncate(CONFIG_MAX_BYTES + 1)
    line = config_error(capsys, path)
    assert "larger than" in line and f"{CONFIG_MAX_BYTES // 2**20} MiB" in line


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero")
@pytest.mark.timeout(30)
def test_config_dev_zero_is_refused_unread(capsys):
    assert "not a regular file" in config_error(capsys, "/dev/zero")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes")
@pytest.mark.timeout(30)
def test_config_named_pipe_is_refused_without_blocking(capsys, tmp_path):
    path = tmp_path / "pipe.json"
    os.mkfifo(path)
    assert "not a regular file" in config_error(capsys, path)
