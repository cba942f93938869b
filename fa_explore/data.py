"""Datasets: a registry of loaders returning tensors ready for training.

``load_dataset(name, **options)`` returns a :class:`Dataset`. Options shared by
every set: ``n_classes`` (seeded class subset), ``label_noise`` (training labels
only), ``train_size`` (seeded subsample of the training set), ``standardize``
(per-feature, with training statistics), ``seed``. Generated sets take more:
the 2-D teaching sets ``noise`` and ``n_samples``, ``mnist1d`` ``n_samples``.

Three families:

* embedded: ``digits`` (scikit-learn's 8x8 digits, the default);
* generated: ``mnist1d`` (the MNIST-1D procedural generator, Greydanus 2020) and
  the 2-D sets ``moons``, ``circles``, ``spirals``, ``xor``, ``gaussians``;
* downloaded on first use from OpenML through scikit-learn's ``fetch_openml``:
  ``mnist``, ``fashion_mnist``, ``cifar10``. The first load keeps scikit-learn's
  OpenML cache and a compact ``<name>.npz`` copy of the arrays in
  :func:`data_dir` (``$FA_EXPLORE_DATA``, default ``~/.cache/fa_explore``); later
  loads read the ``.npz``. Without the files and without a network they raise
  :class:`DataUnavailableError` (a ``RuntimeError``: the request is valid, the
  machine lacks the data) whose message says how to get them.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import json
import math
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch


class DataUnavailableError(RuntimeError):
    """A downloadable dataset is not cached and could not be downloaded.

    The message says how to fetch it once online or where to put the files.
    """


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
    # The load_dataset options that made it (None for data built by hand): lets
    # train(cfg, data=...) check that the data is the one the config describes.
    options: dict[str, Any] | None = field(default=None, repr=False, compare=False)

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}, train={len(self.y_train)}, test={len(self.y_test)}, "
                f"input_shape={self.input_shape}, n_classes={self.n_classes})")


@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset: how to get raw arrays, and what it looks like.

    ``raw_loader(seed=..., **extra_options)`` returns ``x_train, x_test, y_train,
    y_test`` as numpy arrays. With ``generates_classes`` the loader also takes
    ``n_classes`` and draws that many classes itself (spiral arms, Gaussian
    blobs) instead of :func:`load_dataset` picking a subset of them.
    """

    name: str
    description: str
    raw_loader: Callable[..., tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]
    input_shape: tuple[int, ...]
    n_classes: int
    kind: str  # "image", "sequence" or "2d"
    downloads: bool = False
    class_names: tuple[str, ...] = ()
    # Raw-loader options this set accepts beyond the shared ones (e.g. noise),
    # and the values the loader uses when they are None (for sliders and docs).
    extra_options: tuple[str, ...] = ()
    option_defaults: dict[str, Any] = field(default_factory=dict, hash=False)
    generates_classes: bool = False

    @property
    def available(self) -> bool:
        """False only for a downloadable set that is not cached yet (see :func:`available`)."""
        return available(self.name)

    def __call__(self, **options: Any) -> Dataset:
        return load_dataset(self.name, **options)


DATASETS: dict[str, DatasetSpec] = {}


def register(spec: DatasetSpec, replace: bool = False) -> DatasetSpec:
    """Add a dataset to :data:`DATASETS` under ``spec.name`` and return it.

    A name is taken once, as rule and model names are: registering it again is a
    ``ValueError`` unless ``replace=True`` says the old spec is meant to go (a
    silent overwrite would change what every config naming it loads).
    """
    if not isinstance(spec, DatasetSpec):
        raise ValueError(f"register needs a DatasetSpec; got {type(spec).__name__}")
    if spec.name in DATASETS and not replace:
        raise ValueError(f"dataset {spec.name!r} is already registered; pass replace=True "
                         f"to replace it, or choose another name (taken: "
                         f"{', '.join(DATASETS)})")
    DATASETS[spec.name] = spec
    return spec


def _split(x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int):
    from sklearn.model_selection import train_test_split

    # A stratified split needs at least one test example per class.
    n_test = max(len(np.unique(y)), math.ceil(test_fraction * len(y)))  # ceil as sklearn
    return train_test_split(x, y, test_size=n_test, random_state=seed, stratify=y)


# ---------------------------------------------------------------- embedded
@functools.lru_cache(maxsize=1)
def _digits_arrays():
    """Read and split digits once per process (tens of ms that every run, sweep
    point and ensemble member would otherwise pay again)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = bunch.images.astype(np.float32)[:, None, :, :]  # (n, 1, 8, 8)
    # The split is fixed (seed 0) so that runs with different seeds share a test set.
    arrays = _split(x, bunch.target.astype(np.int64), 0.2, 0)
    for array in arrays:
        array.setflags(write=False)  # shared by every caller of the cache
    return arrays


def _digits(seed: int = 0):
    return _digits_arrays()


register(DatasetSpec(
    "digits", "scikit-learn's 8x8 handwritten digits (1,797 images, embedded)",
    _digits, (1, 8, 8), 10, "image", class_names=tuple(str(d) for d in range(10))))


# ------------------------------------------------------------------ MNIST-1D
MNIST1D_SAMPLES = 5000  # the package's default (and the published set's) size


@functools.lru_cache(maxsize=4)
def _mnist1d_arrays(n_samples: int):
    """Run the MNIST-1D generator (Greydanus 2020) once per size in this process.

    The generator seeds and draws from numpy's and Python's *global* RNGs; their
    states are restored so loading data never changes anyone else's random stream.
    """
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = n_samples
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        data = make_dataset(args)  # never get_dataset: that one downloads
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    arrays = (data["x"].astype(np.float32)[:, None, :],
              data["x_test"].astype(np.float32)[:, None, :],
              data["y"].astype(np.int64), data["y_test"].astype(np.int64))
    for array in arrays:
        array.setflags(write=False)  # shared by every caller of the cache
    return arrays


def _mnist1d(seed: int = 0, n_samples: int | None = None):
    # The generator's own fixed seed (42) makes the standard MNIST-1D; run seeds
    # share it, as they share the digits split. It makes n_samples // 10 per class.
    return _mnist1d_arrays(MNIST1D_SAMPLES if n_samples is None else int(n_samples))


register(DatasetSpec(
    "mnist1d", "MNIST-1D: 1-D digit templates, padded, sheared, translated and noised "
               "into length-40 sequences (generated locally; Greydanus 2020)",
    _mnist1d, (1, 40), 10, "sequence", class_names=tuple(str(d) for d in range(10)),
    extra_options=("n_samples",), option_defaults={"n_samples": MNIST1D_SAMPLES}))


# ------------------------------------------------------------- 2-D sets
TWO_D_SAMPLES = 1000


def _two_d(make, default_noise: float):
    """Wrap ``make(n, noise, rng_seed[, n_classes]) -> (x, y)`` as a raw loader with a
    stratified 80/20 split, all seeded from ``seed``."""

    @functools.wraps(make)
    def loader(seed: int = 0, n_samples: int | None = None, noise: float | None = None,
               **classes: int):
        n = TWO_D_SAMPLES if n_samples is None else int(n_samples)
        x, y = make(n, default_noise if noise is None else float(noise), seed, **classes)
        return _split(x.astype(np.float32), y.astype(np.int64), 0.2, seed)

    return loader


def _make_moons(n, noise, seed):
    from sklearn.datasets import make_moons

    return make_moons(n, noise=noise, random_state=seed)


def _make_circles(n, noise, seed):
    from sklearn.datasets import make_circles

    return make_circles(n, noise=noise, factor=0.5, random_state=seed)


def _make_spirals(n, noise, seed, n_classes=3):
    """``n_classes`` interleaved arms of 1.5 turns out to radius 1, Gaussian noise."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % n_classes
    t = rng.uniform(0, 1, n)  # position along the arm = radius
    angle = 2 * np.pi * y / n_classes + 3 * np.pi * t
    x = t[:, None] * np.stack([np.cos(angle), np.sin(angle)], 1)
    return x + noise * rng.standard_normal((n, 2)), y


def _make_xor(n, noise, seed):
    """Four blobs at (±1, ±1); the class is whether the two coordinates differ in sign."""
    from sklearn.datasets import make_blobs

    centers = np.array([[1, 1], [-1, -1], [1, -1], [-1, 1]], dtype=float)
    x, blob = make_blobs(n, centers=centers, cluster_std=noise, random_state=seed)
    return x, blob // 2


def _make_gaussians(n, noise, seed, n_classes=4):
    """``n_classes`` isotropic blobs with centres evenly on a circle of radius 2."""
    from sklearn.datasets import make_blobs

    angle = 2 * np.pi * np.arange(n_classes) / n_classes
    centers = 2 * np.stack([np.cos(angle), np.sin(angle)], 1)
    return make_blobs(n, centers=centers, cluster_std=noise, random_state=seed)


for _name, _make, _noise, _classes, _names, _text in [
    ("moons", _make_moons, 0.2, 2, ("upper", "lower"), "two interleaved half circles"),
    ("circles", _make_circles, 0.1, 2, ("outer", "inner"),
     "two concentric circles (radii 1 and 0.5)"),
    ("spirals", _make_spirals, 0.05, 3, (), "interleaved spiral arms (n_classes arms, "
                                            "default 3)"),
    ("xor", _make_xor, 0.4, 2, ("x*y > 0", "x*y < 0"),
     "four Gaussian blobs in the quadrants, labelled by XOR of the coordinate signs"),
    ("gaussians", _make_gaussians, 0.5, 4, (), "isotropic Gaussian blobs on a circle "
                                               "(n_classes blobs, default 4)"),
]:
    register(DatasetSpec(
        _name, f"2-D teaching set: {_text}; noise = Gaussian std (default {_noise}), "
               f"n_samples default {TWO_D_SAMPLES}",
        _two_d(_make, _noise), (2,), _classes, "2d", class_names=_names,
        extra_options=("noise", "n_samples"),
        option_defaults={"noise": _noise, "n_samples": TWO_D_SAMPLES},
        generates_classes=_name in ("spirals", "gaussians")))


# ------------------------------------------------------ downloaded (OpenML)
DATA_ENV = "FA_EXPLORE_DATA"
_OPENML_RETRIES, _OPENML_DELAY = 1, 1.0  # scikit-learn's retries on a network error


def data_dir() -> Path:
    """Folder holding downloaded sets: ``$FA_EXPLORE_DATA`` or ``~/.cache/fa_explore``."""
    return Path(os.environ.get(DATA_ENV) or Path.home() / ".cache" / "fa_explore")


@dataclass(frozen=True)
class _OpenMLSource:
    data_id: int  # OpenML ids: names can gain versions, ids never change
    openml_name: str
    n_train: int  # the standard split: the first n_train rows train, the rest test
    image_shape: tuple[int, ...]  # one row reshaped (channels first)


_OPENML = {
    "mnist": _OpenMLSource(554, "mnist_784", 60000, (1, 28, 28)),
    "fashion_mnist": _OpenMLSource(40996, "Fashion-MNIST", 60000, (1, 28, 28)),
    # OpenML's CIFAR_10 rows are the five training batches then the test batch,
    # each row the 1024 red, then green, then blue pixels as in the original files.
    "cifar10": _OpenMLSource(40927, "CIFAR_10", 50000, (3, 32, 32)),
}


def _npz_path(name: str) -> Path:
    return data_dir() / f"{name}.npz"


def _openml_cached(source: _OpenMLSource) -> bool:
    """Whether scikit-learn's OpenML cache in :func:`data_dir` holds the whole set."""
    root = data_dir() / "openml" / "openml.org"
    api = root / "api" / "v1" / "json" / "data"
    parts = [api / f"{source.data_id}.gz", api / "features" / f"{source.data_id}.gz",
             api / "qualities" / f"{source.data_id}.gz"]
    if not all(p.exists() for p in parts):
        return False
    try:
        with gzip.open(parts[0], "rt", encoding="utf-8") as f:
            url = json.load(f)["data_set_description"]["url"]
    except (OSError, ValueError, KeyError):
        return False
    from urllib.parse import urlparse

    return (root / (urlparse(url).path.lstrip("/") + ".gz")).exists()


def available(name: str) -> bool:
    """Whether ``load_dataset(name)`` works without a network: True for embedded and
    generated sets, and for downloadable ones once cached in :func:`data_dir`."""
    if name not in DATASETS:
        raise ValueError(f"dataset must be one of {', '.join(DATASETS)}; got {name!r}")
    if not DATASETS[name].downloads:
        return True
    return _npz_path(name).exists() or _openml_cached(_OPENML[name])


def _unavailable_message(name: str, source: _OpenMLSource, reason: Exception) -> str:
    folder = data_dir()
    return (f"dataset {name!r} is not downloaded yet and OpenML could not be reached "
            f"({type(reason).__name__}: {reason}). Download it once on a machine with "
            f"internet access:\n    python -c \"import fa_explore; "
            f"fa_explore.load_dataset('{name}')\"\n"
            f"It is then kept in {folder} (set {DATA_ENV} to choose the folder). To move it "
            f"to an offline machine, copy {folder / (name + '.npz')} (or scikit-learn's "
            f"OpenML cache, {folder / 'openml'}) into that machine's {DATA_ENV} folder. "
            f"Source: https://www.openml.org/d/{source.data_id} ({source.openml_name}).")


def _integer_labels(target: np.ndarray, name: str) -> np.ndarray:
    target = np.asarray(target, dtype=np.float64)
    if not np.array_equal(target, np.round(target)) or target.min() < 0:
        raise RuntimeError(f"dataset {name!r}: OpenML returned class labels that are not "
                           f"integers >= 0: {np.unique(target)[:10]}")
    return target.astype(np.int64)


def _fetch_openml_arrays(name: str) -> tuple[np.ndarray, np.ndarray]:
    """``(x uint8 of shape (n, *image_shape), y int64)``, from our ``.npz`` or OpenML.

    The first call runs scikit-learn's ``fetch_openml`` (which keeps its own cache
    of the API answers and the ARFF file) and saves the arrays as ``<name>.npz``,
    which later calls read in a fraction of a second.
    """
    source, path = _OPENML[name], _npz_path(name)
    if path.exists():
        with np.load(path) as saved:
            return saved["x"], saved["y"]
    from sklearn.datasets import fetch_openml

    try:
        # One numeric dtype for every column, labels included: float32 halves the
        # parse memory, and it sidesteps scikit-learn's categorical handling of the
        # label column, which fails on integer labels with pandas >= 3.1
        # (scikit-learn issue #34892).
        x, y = fetch_openml(data_id=source.data_id, data_home=str(data_dir()),
                            as_frame=False, parser="pandas", return_X_y=True,
                            read_csv_kwargs={"dtype": np.float32},
                            n_retries=_OPENML_RETRIES, delay=_OPENML_DELAY)
    except OSError as exc:  # URLError, socket and HTTP errors: no network or no server
        raise DataUnavailableError(_unavailable_message(name, source, exc)) from exc
    x = np.asarray(x)
    if x.min() < 0 or x.max() > 255 or not np.array_equal(x, np.round(x)):
        raise RuntimeError(f"dataset {name!r}: expected 8-bit pixel values from OpenML")
    x = x.astype(np.uint8).reshape(-1, *source.image_shape)
    y = _integer_labels(y, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.npz")
    np.savez(partial, x=x, y=y)
    os.replace(partial, path)  # atomic: a crash never leaves a half-written cache
    return x, y


def _openml_loader(name: str):
    def loader(seed: int = 0):
        x, y = _fetch_openml_arrays(name)
        n_train = _OPENML[name].n_train
        # Pixels scaled to [0, 1]; standardisation (the default) then uses train stats.
        x = x.astype(np.float32) / np.float32(255)
        return x[:n_train], x[n_train:], y[:n_train], y[n_train:]

    return loader


for _name, _text, _names in [
    ("mnist", "MNIST handwritten digits, 28x28 grey (60,000 train / 10,000 test)",
     tuple(str(d) for d in range(10))),
    ("fashion_mnist", "Fashion-MNIST clothing images, 28x28 grey (60,000 / 10,000)",
     ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
      "Bag", "Ankle boot")),
    ("cifar10", "CIFAR-10 colour photos, 3x32x32 (50,000 / 10,000)",
     ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
      "truck")),
]:
    register(DatasetSpec(
        _name, f"{_text}; downloaded from OpenML on first use, then cached",
        _openml_loader(_name), _OPENML[_name].image_shape, 10, "image", downloads=True,
        class_names=_names))
del _name, _make, _noise, _classes, _names, _text


# ------------------------------------------------------------------ options
def _subset_classes(x_tr, y_tr, x_te, y_te, n_classes: int, total: int, rng):
    chosen = np.sort(rng.choice(total, size=n_classes, replace=False))
    remap = np.full(total, -1, dtype=np.int64)
    remap[chosen] = np.arange(n_classes)
    keep_tr, keep_te = np.isin(y_tr, chosen), np.isin(y_te, chosen)
    return x_tr[keep_tr], remap[y_tr[keep_tr]], x_te[keep_te], remap[y_te[keep_te]], chosen


def _as_tensor(array: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    # Cached arrays are read-only; torch must not alias them.
    if not array.flags.writeable:
        array = array.copy()
    return torch.as_tensor(np.ascontiguousarray(array), dtype=dtype)


def load_dataset(name: str, *, n_classes: int | None = None, label_noise: float = 0.0,
                 train_size: int | None = None, standardize: bool = True, seed: int = 0,
                 **options: Any) -> Dataset:
    """Load a registered dataset as tensors (see the module docstring for options).

    Deterministic for a given ``seed``. Raises ``ValueError`` for bad options and
    :class:`DataUnavailableError` for a downloadable set that is not cached offline.
    """
    if name not in DATASETS:
        raise ValueError(f"dataset must be one of {', '.join(DATASETS)}; got {name!r}")
    spec = DATASETS[name]
    unknown = set(options) - set(spec.extra_options)
    if unknown:
        raise ValueError(f"dataset {name!r} takes no option(s) {', '.join(sorted(unknown))}; "
                         f"it takes: n_classes, label_noise, train_size, standardize, seed"
                         + "".join(f", {o}" for o in spec.extra_options))
    # The same declarations as RunConfig's fields (fa_explore.settings), so both
    # entry points accept and reject the same values with the same words.
    from .settings import SETTINGS

    where = f"load_dataset({name!r})"
    seed = SETTINGS["seed"].coerce(seed, where)
    n_classes = dataclasses.replace(SETTINGS["n_classes"], maximum=spec.n_classes).coerce(
        n_classes, where)
    train_size = SETTINGS["train_size"].coerce(train_size, where)
    label_noise = SETTINGS["label_noise"].coerce(label_noise, where)
    standardize = SETTINGS["standardize"].coerce(standardize, where)
    options = {key: SETTINGS[key].coerce(value, where) for key, value in options.items()}
    made_with = dict(n_classes=n_classes, label_noise=label_noise, train_size=train_size,
                     standardize=standardize, seed=seed, **options)
    options = {k: v for k, v in options.items() if v is not None}
    classes = spec.n_classes if n_classes is None else n_classes
    if spec.generates_classes:
        options["n_classes"] = classes
    x_tr, x_te, y_tr, y_te = spec.raw_loader(seed=seed, **options)
    rng = np.random.default_rng(seed)
    class_names = list(spec.class_names) or [str(c) for c in range(spec.n_classes)]
    if spec.generates_classes:
        class_names = class_names[:classes]
    elif n_classes is not None and n_classes < spec.n_classes:
        x_tr, y_tr, x_te, y_te, chosen = _subset_classes(x_tr, y_tr, x_te, y_te, n_classes,
                                                         spec.n_classes, rng)
        class_names = [class_names[c] for c in chosen]
    if train_size is not None:
        if train_size > len(y_tr):
            raise ValueError(f"train_size must be at most {len(y_tr)} for dataset {name!r} "
                             f"with these options; got {train_size}")
        keep = np.sort(rng.choice(len(y_tr), size=train_size, replace=False))
        x_tr, y_tr = x_tr[keep], y_tr[keep]
    if label_noise:
        y_tr = y_tr.copy()
        flip = rng.random(len(y_tr)) < label_noise
        # A flipped label is a uniformly drawn *other* class.
        shift = rng.integers(1, classes, size=int(flip.sum()))
        y_tr[flip] = (y_tr[flip] + shift) % classes
    if standardize:
        mean = x_tr.mean(0, keepdims=True)
        std = x_tr.std(0, keepdims=True)
        std[std < 1e-6] = 1.0  # constant pixels (digits' borders) stay 0
        x_tr, x_te = (x_tr - mean) / std, (x_te - mean) / std
    return Dataset(name, _as_tensor(x_tr, torch.float32), _as_tensor(y_tr, torch.int64),
                   _as_tensor(x_te, torch.float32), _as_tensor(y_te, torch.int64),
                   tuple(spec.input_shape), classes, class_names, made_with)


def dataset_options(cfg) -> dict[str, Any]:
    """The ``load_dataset`` options a config asks for. The data's seed is
    ``cfg.data_seed`` (``cfg.seed`` when None): it draws the class subset, the
    label noise, the training subsample and the generated sets, so runs that
    differ only in ``seed`` (init, feedback, batch order) share their data."""
    data_seed = cfg.seed if cfg.data_seed is None else cfg.data_seed
    options = dict(n_classes=cfg.n_classes, label_noise=cfg.label_noise,
                   train_size=cfg.train_size, standardize=cfg.standardize, seed=data_seed)
    for name in DATASETS[cfg.dataset].extra_options:
        options[name] = getattr(cfg, name)
    return options


def dataset_from_config(cfg) -> Dataset:
    """The data ``cfg`` describes: ``load_dataset`` with :func:`dataset_options`."""
    return load_dataset(cfg.dataset, **dataset_options(cfg))


def check_dataset(cfg, data: Dataset) -> None:
    """Raise ``ValueError`` when ``data``, given to ``train(cfg, data=...)``, is not
    the data ``cfg`` describes.

    Every data-shaping setting the config sets away from its default (``train_size``,
    ``n_classes``, ``label_noise``, ``standardize``, ``data_seed`` and the dataset's
    own options such as ``noise``) must be what the data was made with: data from
    :func:`load_dataset` records its options (and its name, checked against
    ``cfg.dataset``); for data built by hand ``train_size`` and ``n_classes`` are
    checked against its size and classes, and the other settings, which cannot be
    checked, must stay at their defaults. A setting at its default takes the data
    as given (reshaping given data would standardize it twice, and would draw
    other examples than the config's own loading does).
    """
    from .settings import SETTINGS

    requested = dataset_options(cfg)
    fields = {key: "data_seed" if key == "seed" else key for key in requested}
    changed = [key for key, name in fields.items()
               if getattr(cfg, name) != SETTINGS[name].default]
    how = ("pass data=dataset_from_config(cfg) (or no data: train loads it), or leave "
           "{name} at its default ({default!r}) to train on the data as given")

    def refuse(key: str, found: str) -> None:
        name = fields[key]
        raise ValueError(f"train(cfg, data=...): RunConfig.{name} is {getattr(cfg, name)!r} "
                         f"but {found}; "
                         + how.format(name=name, default=SETTINGS[name].default))

    if data.options is not None:
        if data.name != cfg.dataset:
            raise ValueError(f"train(cfg, data=...): RunConfig.dataset is {cfg.dataset!r} but "
                             f"the given data is {data.name!r}; set dataset={data.name!r} or "
                             "pass data=dataset_from_config(cfg)")
        for key in changed:
            if data.options.get(key) != requested[key]:
                refuse(key, f"the given data was loaded with {key}={data.options.get(key)!r}")
        return
    checks = {"train_size": (len(data.y_train), "training examples"),
              "n_classes": (data.n_classes, "classes")}
    for key in changed:
        if key in checks:
            have, what = checks[key]
            if have != requested[key]:
                refuse(key, f"the given data has {have} {what}")
        elif key != "seed":  # data_seed also draws the evaluation subset: it applies
            refuse(key, "the given data was built by hand, so it cannot be checked")


def dataset_shape(cfg) -> tuple[tuple[int, ...], int]:
    """``(input_shape, n_classes)`` for a config without loading the data."""
    spec = DATASETS[cfg.dataset]
    return spec.input_shape, cfg.n_classes or spec.n_classes
