"""fa-explore's failure paths: one line on stderr naming the option, field or file,
a documented exit code and no traceback."""

import os

import pytest

from fa_explore import cli
from fa_explore.cli import CONFIG_MAX_BYTES, EXIT_USAGE, main


def one_line(err: str, start: str = "fa-explore: error: ") -> str:
    """The single line ``err`` holds (warnings aside): no traceback, our prefix."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines()
             if line.strip() and not line.startswith("fa-explore: warning: ")]
    assert len(lines) == 1, err
    assert lines[0].startswith(start), err
    return lines[0]


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
