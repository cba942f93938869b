"""The README's Python blocks run as written: a new user's first copy-paste works."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_the_readme_has_python_blocks():
    assert python_blocks(), "the README lost its API tour"


@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_readme_python_block_runs(index, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # run.save("runs/...") writes here, not into the checkout
    code = python_blocks()[index]
    exec(compile(code, f"README.md python block {index + 1}", "exec"), {"__name__": "__readme__"})
    out = capsys.readouterr()
    assert "Traceback" not in out.out + out.err
    if "run.save(" in code:
        assert (tmp_path / "runs").is_dir()
