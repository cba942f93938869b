"""Layering: lower modules never reach up. models and data know nothing of
training, rules or metrics; metrics know models only; rules know models and the
settings schema. Checked on the source (any import, also inside a function)."""

import ast
from pathlib import Path

import pytest

import fa_explore.rules.base

PACKAGE = Path(fa_explore.rules.base.__file__).parent.parent

# module -> the fa_explore modules it may import (besides itself and its package).
ALLOWED = {
    "models": {"settings"},
    "data": {"settings"},
    "metrics": {"models"},
    "rules": {"models", "settings"},
}


def imported(path: Path) -> set[str]:
    """Top-level fa_explore modules named by the imports of a file."""
    relative = path.relative_to(PACKAGE).with_suffix("").parts
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the file's package
                base = list(relative[:-1])[:len(relative) - node.level]
                parts = base + (node.module.split(".") if node.module else [])
                names = [parts] if node.module else [base + [a.name] for a in node.names]
            elif (node.module or "").split(".")[0] == "fa_explore":
                names = [node.module.split(".")[1:]]
            else:
                continue
            found.update(p[0] for p in names if p)
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names
                         if a.name.startswith("fa_explore."))
    return found


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_lower_layers_do_not_reach_up(layer):
    files = ([PACKAGE / f"{layer}.py"] if (PACKAGE / f"{layer}.py").exists()
             else sorted((PACKAGE / layer).glob("*.py")))
    assert files
    for path in files:
        extra = imported(path) - ALLOWED[layer] - {layer}
        assert not extra, f"{path.relative_to(PACKAGE)} imports {sorted(extra)}"


def test_angle_between_lives_in_metrics_only():
    from fa_explore import metrics

    assert metrics.angle_between.__module__ == "fa_explore.metrics"
    assert not hasattr(fa_explore.rules.base, "angle_between")  # no alias left behind
