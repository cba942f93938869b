"""Datasets: a registry of loaders returning tensors ready for training.

``load_dataset(name, **options)`` returns a :class:`Dataset`. Options shared by
every set: ``n_classes`` (seeded class subset), ``label_noise`` (training labels
only), ``train_size`` (seeded subsample of the training set), ``standardize``
(per-feature, with training statistics), ``seed``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch


@dataclass
class Dataset:
    """Train and test tensors: ``x`` float32 of shape ``(n, *input_shape)``, ``y`` int64."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    input_shape: tuple[int, ...]
    n_classes: int
    class_names: list[str] = field(default_factory=list)

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}, train={len(self.y_train)}, test={len(self.y_test)}, "
                f"input_shape={self.input_shape}, n_classes={self.n_classes})")


@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset: how to get raw arrays, and what it looks like."""

    name: str
    description: str
    raw_loader: Callable[..., tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]
    input_shape: tuple[int, ...]
    n_classes: int
    kind: str  # "image", "sequence" or "2d"
    downloads: bool = False
    class_names: tuple[str, ...] = ()
    # Raw-loader options this set accepts beyond the shared ones (e.g. noise).
    extra_options: tuple[str, ...] = ()

    def check_config(self, cfg) -> None:
        """Raise ValueError for config fields that mean nothing for this set."""
        for name in ("noise", "n_samples"):
            if getattr(cfg, name) is not None and name not in self.extra_options:
                raise ValueError(f"RunConfig.{name} must be None for dataset {self.name!r} "
                                 f"(only generated sets take it: "
                                 f"{', '.join(n for n, s in DATASETS.items() if name in s.extra_options)})")
        if cfg.n_classes is not None and cfg.n_classes > self.n_classes:
            raise ValueError(f"RunConfig.n_classes must be None or an integer in "
                             f"[2, {self.n_classes}] for dataset {self.name!r}; "
                             f"got {cfg.n_classes}")
        if cfg.model == "cnn" and self.kind == "2d":
            raise ValueError(f"RunConfig.model must be 'mlp' for dataset {self.name!r}: "
                             "a convolutional net needs image or sequence data")

    def __call__(self, **options: Any) -> Dataset:
        return load_dataset(self.name, **options)


DATASETS: dict[str, DatasetSpec] = {}


def register(spec: DatasetSpec) -> DatasetSpec:
    DATASETS[spec.name] = spec
    return spec


# ----------------------------------------------------------------- loaders
def _split(x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int):
    from sklearn.model_selection import train_test_split

    return train_test_split(x, y, test_size=test_fraction, random_state=seed, stratify=y)


def _digits(seed: int = 0, **_: Any):
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = bunch.images.astype(np.float32)[:, None, :, :]  # (n, 1, 8, 8)
    # The split is fixed (seed 0) so that runs with different seeds share a test set.
    return _split(x, bunch.target.astype(np.int64), 0.2, 0)


register(DatasetSpec(
    "digits", "scikit-learn's 8x8 handwritten digits (1,797 images, embedded)",
    _digits, (1, 8, 8), 10, "image", class_names=tuple(str(d) for d in range(10))))


# ------------------------------------------------------------------ options
def _subset_classes(x_tr, y_tr, x_te, y_te, n_classes: int, total: int, rng):
    chosen = np.sort(rng.choice(total, size=n_classes, replace=False))
    remap = {int(c): i for i, c in enumerate(chosen)}
    keep_tr, keep_te = np.isin(y_tr, chosen), np.isin(y_te, chosen)
    relabel = np.vectorize(remap.__getitem__, otypes=[np.int64])
    return (x_tr[keep_tr], relabel(y_tr[keep_tr]), x_te[keep_te], relabel(y_te[keep_te]),
            chosen)


def load_dataset(name: str, *, n_classes: int | None = None, label_noise: float = 0.0,
                 train_size: int | None = None, standardize: bool = True, seed: int = 0,
                 **options: Any) -> Dataset:
    """Load a registered dataset as tensors (see the module docstring for options)."""
    if name not in DATASETS:
        raise ValueError(f"dataset must be one of {', '.join(DATASETS)}; got {name!r}")
    spec = DATASETS[name]
    unknown = set(options) - set(spec.extra_options)
    if unknown:
        raise ValueError(f"dataset {name!r} takes no option(s) {', '.join(sorted(unknown))}; "
                         f"it takes: n_classes, label_noise, train_size, standardize, seed"
                         + "".join(f", {o}" for o in spec.extra_options))
    options = {k: v for k, v in options.items() if v is not None}
    x_tr, x_te, y_tr, y_te = spec.raw_loader(seed=seed, **options)
    rng = np.random.default_rng(seed)
    classes = spec.n_classes
    class_names = list(spec.class_names) or [str(c) for c in range(classes)]
    if n_classes is not None:
        if not 2 <= n_classes <= spec.n_classes:
            raise ValueError(f"n_classes must be in [2, {spec.n_classes}] for dataset "
                             f"{name!r}; got {n_classes}")
        x_tr, y_tr, x_te, y_te, chosen = _subset_classes(x_tr, y_tr, x_te, y_te, n_classes,
                                                         spec.n_classes, rng)
        classes = n_classes
        class_names = [class_names[c] for c in chosen]
    if train_size is not None:
        if train_size > len(y_tr):
            raise ValueError(f"train_size must be at most {len(y_tr)} for dataset {name!r} "
                             f"with these options; got {train_size}")
        keep = np.sort(rng.choice(len(y_tr), size=train_size, replace=False))
        x_tr, y_tr = x_tr[keep], y_tr[keep]
    if label_noise:
        if not 0 <= label_noise < 1:
            raise ValueError(f"label_noise must be in [0, 1); got {label_noise}")
        y_tr = y_tr.copy()
        flip = rng.random(len(y_tr)) < label_noise
        # A flipped label is a uniformly drawn *other* class.
        shift = rng.integers(1, classes, size=int(flip.sum()))
        y_tr[flip] = (y_tr[flip] + shift) % classes
    if standardize:
        mean = x_tr.mean(0, keepdims=True)
        std = x_tr.std(0, keepdims=True)
        std[std < 1e-8] = 1.0  # constant pixels (digits' borders) stay 0
        x_tr, x_te = (x_tr - mean) / std, (x_te - mean) / std
    return Dataset(name, torch.as_tensor(np.ascontiguousarray(x_tr), dtype=torch.float32),
                   torch.as_tensor(y_tr, dtype=torch.int64),
                   torch.as_tensor(np.ascontiguousarray(x_te), dtype=torch.float32),
                   torch.as_tensor(y_te, dtype=torch.int64),
                   tuple(spec.input_shape), classes, class_names)


def dataset_options(cfg) -> dict[str, Any]:
    """The ``load_dataset`` options a config asks for."""
    options = dict(n_classes=cfg.n_classes, label_noise=cfg.label_noise,
                   train_size=cfg.train_size, standardize=cfg.standardize, seed=cfg.seed)
    for name in DATASETS[cfg.dataset].extra_options:
        options[name] = getattr(cfg, name)
    return options


def dataset_from_config(cfg) -> Dataset:
    return load_dataset(cfg.dataset, **dataset_options(cfg))


def dataset_shape(cfg) -> tuple[tuple[int, ...], int]:
    """``(input_shape, n_classes)`` for a config without loading the data."""
    spec = DATASETS[cfg.dataset]
    return spec.input_shape, cfg.n_classes or spec.n_classes
