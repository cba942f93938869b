"""fa_explore: an interactive lab for learning without weight transport.

The model is the function; the rule is how it learns. Public API::

    from fa_explore import RunConfig, train
    run = train(RunConfig(rule="fa", dataset="digits"))
    run.history  # one row per evaluation: losses, accuracies, per-layer angles
    runs = train_many([RunConfig(rule="fa", seed=s) for s in range(16)])  # one batched model
    table = sweep(RunConfig(dataset="digits"), {"rule": ["bp", "fa"], "seed": [0, 1]})

The names are imported on first use, so importing a module of the package that needs
none of them (``fa_explore.app.serving``, which Voilà's server process loads) does not
import torch.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

__version__ = "0.1.0"

# Public name -> the submodule that defines it.
_EXPORTS = {
    "RunConfig": "config",
    "ConvertedNet": "convert", "convert": "convert",
    "DATASETS": "data", "Dataset": "data", "load_dataset": "data",
    "CNN": "models", "MLP": "models", "build_model": "models",
    "RULES": "rules", "Rule": "rules",
    "sweep": "sweep", "iter_sweep": "sweep",
    "Run": "training", "Snapshot": "training", "build": "training", "train": "training",
    "train_iter": "training",
    "train_many": "ensemble", "train_many_iter": "ensemble",
}
# Submodules whose name is also a public name: the package attribute is the function
# `convert`, and `sweep` is the (callable) module itself.
_SHADOWED = {"convert"}

__all__ = ["RunConfig", "RULES", "Rule", "DATASETS", "Dataset", "load_dataset", "build",
           "build_model", "MLP", "CNN", "train", "train_iter", "train_many",
           "train_many_iter", "Run", "Snapshot",
           "convert", "ConvertedNet", "sweep", "iter_sweep", "__version__"]


class _Package(types.ModuleType):
    def __getattr__(self, name: str) -> Any:
        if name in _EXPORTS:
            module = importlib.import_module(f"{__name__}.{_EXPORTS[name]}")
            value = module if name == "sweep" else getattr(module, name)
            setattr(self, name, value)
            return value
        if not name.startswith("__"):
            try:
                return importlib.import_module(f"{__name__}.{name}")
            except ModuleNotFoundError as error:
                if error.name != f"{__name__}.{name}":
                    raise
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        # Importing fa_explore.convert sets the package attribute to the submodule;
        # the public name stays the function, as `from .convert import convert` had it.
        if name in _SHADOWED and isinstance(value, types.ModuleType):
            value = getattr(value, name)
        super().__setattr__(name, value)

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(__all__))


sys.modules[__name__].__class__ = _Package
