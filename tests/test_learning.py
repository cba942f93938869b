"""Every rule learns digits with its defaults: the one learning check per rule.

Everything else in the suite checks plumbing and math on tiny nets and budgets;
these are the only full default training runs. The floors live in
benchmarks/floors.py, which ``benchmarks/step_time.py --accuracy`` reports too.
"""

import pytest

from benchmarks.floors import ACCURACY_FLOORS, DATASET, accuracy_floor
from fa_explore import RULES, RunConfig, train


def test_every_registered_rule_has_exactly_one_floor():
    assert set(ACCURACY_FLOORS) == set(RULES)
    assert all(0.1 < floor < 1 for floor in ACCURACY_FLOORS.values())  # above chance


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(RULES))
def test_rule_learns_digits_with_defaults(name):
    run = train(RunConfig(rule=name, dataset=DATASET))
    assert run.status == "finished"
    accuracy = run.final["test_acc"]
    assert accuracy >= accuracy_floor(name), f"{name}: {accuracy:.3f}"
