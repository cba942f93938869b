"""Every rule learns digits with its defaults (the Core issue's accuracy targets)."""

import pytest

from fa_explore import RULES, RunConfig, train

# BP must reach 95%; every FA-family, KP, WM, DFA, DKP, PFA and FDFA rule 90%.
# Forward-gradient rules have no target in the issue; their floors sit safely below
# what their defaults measure (see the closing note of the Core issue), far above
# the 10% of chance.
TARGETS = {"bp": 0.95, "fg_w": 0.75, "fg_a": 0.85, "lg_fg_a": 0.85}
DEFAULT_TARGET = 0.90


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(RULES))
def test_rule_learns_digits_with_defaults(name):
    run = train(RunConfig(rule=name, dataset="digits"))
    assert run.status == "finished"
    accuracy = run.final["test_acc"]
    assert accuracy >= TARGETS.get(name, DEFAULT_TARGET), f"{name}: {accuracy:.3f}"
