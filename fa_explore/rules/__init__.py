"""Learning rules. Each rule is one :class:`~fa_explore.rules.base.Rule` subclass in
one module of this package; the registry below finds them, so adding a rule is
adding a file (and its test)."""

from __future__ import annotations

import importlib
import pkgutil

from .base import Rule

# Display order: the reference's order, then any rule added later, by name.
_ORDER = ("bp", "fa", "usf", "frsf", "brsf", "kp", "wm", "dfa", "dkp", "pfa", "pfa_o",
          "fg_w", "fg_a", "lg_fg_a", "fdfa")


def _discover() -> dict[str, type[Rule]]:
    found: dict[str, type[Rule]] = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name == "base":
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        for value in vars(module).values():
            if (isinstance(value, type) and issubclass(value, Rule) and value.name
                    and value.__module__ == module.__name__):
                if value.name in found:
                    raise RuntimeError(f"two rules are named {value.name!r}")
                found[value.name] = value
    rank = {name: i for i, name in enumerate(_ORDER)}
    return dict(sorted(found.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0])))


RULES: dict[str, type[Rule]] = _discover()

__all__ = ["RULES", "Rule"]
