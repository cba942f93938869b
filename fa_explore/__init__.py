"""fa_explore: an interactive lab for learning without weight transport.

The model is the function; the rule is how it learns. Public API::

    from fa_explore import RunConfig, train
    run = train(RunConfig(rule="fa", dataset="digits"))
    run.history  # one row per evaluation: losses, accuracies, per-layer angles
    table = sweep(RunConfig(dataset="digits"), {"rule": ["bp", "fa"], "seed": [0, 1]})
"""

from . import sweep  # a callable module: fa_explore.sweep(base, grid) runs a sweep
from .config import RunConfig
from .convert import ConvertedNet, convert
from .data import DATASETS, Dataset, load_dataset
from .models import CNN, MLP, build_model
from .rules import RULES, Rule
from .sweep import iter_sweep
from .training import Run, Snapshot, build, train, train_iter

__version__ = "0.1.0"

__all__ = ["RunConfig", "RULES", "Rule", "DATASETS", "Dataset", "load_dataset", "build",
           "build_model", "MLP", "CNN", "train", "train_iter", "Run", "Snapshot",
           "convert", "ConvertedNet", "sweep", "iter_sweep", "__version__"]
