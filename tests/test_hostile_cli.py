"""Hostile words for every option of `fa-explore train`: exit code 2, one line on
stderr naming the option or field, never a traceback (and nothing trains)."""

from __future__ import annotations

import pytest

from fa_explore.cli import main
from fa_explore.settings import SETTINGS

# Words no setting accepts ("none" is valid for optional settings, so it is not here).
HOSTILE_WORDS = ["nan", "inf", "-inf", "1e400", "-1e400", "1" * 5000, "abc", "[[[", "{}",
                 "\x00", "-" * 3, "1,2,", "0x10", "½"]
OPTIONS = [name for name, s in SETTINGS.items() if s.cli and s.kind != "bool"]


def _valid_for(setting, word: str) -> bool:
    try:
        from fa_explore.cli import _integers, _scalar_parser

        value = (_integers([word], setting.name) if setting.kind == "ints"
                 else _scalar_parser(setting)(word))
        setting.coerce(value)
    except Exception:  # noqa: BLE001 - any refusal means the word is hostile here
        return False
    return True


@pytest.mark.parametrize("name", OPTIONS)
def test_hostile_words_exit_2_naming_the_option(name, capsys):
    flag = "--" + name.replace("_", "-")
    for word in HOSTILE_WORDS:
        if _valid_for(SETTINGS[name], word):
            continue
        # A word that starts with "-" reads as an option unless attached with "=".
        argv = [f"{flag}={word}"] if word.startswith("-") else [flag, word]
        code = main(["train", *argv, "--no-progress"])
        out, err = capsys.readouterr()
        assert code == 2, (flag, word[:20], err[-300:])
        assert "Traceback" not in out + err
        assert name in err or flag in err, (flag, word[:20], err[-300:])
        assert len(err) < 3000


def test_hostile_rule_options_exit_2(capsys):
    for pair in ("alpha=abc", "alpha=1e400", "alpha=" + "9" * 5000, "alpha=[1]", "alpha=",
                 "=1", "alpha"):
        code = main(["train", "--rule", "fdfa", "--rule-option", pair, "--no-progress"])
        out, err = capsys.readouterr()
        assert code == 2, (pair, err[-300:])
        assert "Traceback" not in out + err and "alpha" in err or "rule-option" in err
