"""Datasets: shapes and metadata, the generators' geometry, the shared options, and
the download path run offline against a fake scikit-learn OpenML cache."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import random

import numpy as np
import pytest
import torch

from fa_explore import RunConfig, load_dataset
from fa_explore import data as data_module
from fa_explore.data import (
    DATASETS,
    DataUnavailableError,
    _mnist1d_arrays,
    available,
    dataset_from_config,
    dataset_shape,
)
from fa_explore.models import build_model

LOCAL = [n for n, s in DATASETS.items() if not s.downloads]
TWO_D = [n for n, s in DATASETS.items() if s.kind == "2d"]
SMALL = {"mnist1d": {"n_samples": 500}}  # keeps the generator quick in option tests


# ------------------------------------------------------------------ metadata
def test_registry_holds_the_issue_sets_with_metadata():
    expected = {"digits": "image", "mnist1d": "sequence", "moons": "2d", "circles": "2d",
                "spirals": "2d", "xor": "2d", "gaussians": "2d", "mnist": "image",
                "fashion_mnist": "image", "cifar10": "image"}
    assert {n: s.kind for n, s in DATASETS.items() if n in expected} == expected
    assert {n for n, s in DATASETS.items() if s.downloads} == {"mnist", "fashion_mnist",
                                                               "cifar10"}
    assert DATASETS["mnist1d"].input_shape == (1, 40)
    assert DATASETS["mnist"].input_shape == (1, 28, 28)
    assert DATASETS["cifar10"].input_shape == (3, 32, 32)
    for spec in DATASETS.values():
        assert spec.description
        assert not spec.class_names or len(spec.class_names) == spec.n_classes
        assert set(spec.option_defaults) == set(spec.extra_options)
        if spec.kind == "2d":
            assert spec.input_shape == (2,)
            assert set(spec.extra_options) == {"noise", "n_samples"}


@pytest.mark.parametrize("name", [n for n, s in DATASETS.items() if s.option_defaults])
def test_option_defaults_are_what_the_loader_uses(name):
    implicit = load_dataset(name)
    explicit = load_dataset(name, **DATASETS[name].option_defaults)
    assert torch.equal(implicit.x_train, explicit.x_train)
    assert torch.equal(implicit.y_test, explicit.y_test)


@pytest.mark.parametrize("name", LOCAL)
def test_local_sets_load_as_tensors_deterministically(name):
    options = SMALL.get(name, {})
    spec = DATASETS[name]
    first = load_dataset(name, **options)
    again = load_dataset(name, **options)
    assert available(name) and spec.available
    for split in ("x_train", "x_test"):
        x = getattr(first, split)
        assert x.dtype == torch.float32 and x.shape[1:] == spec.input_shape
        assert torch.isfinite(x).all()
        assert torch.equal(x, getattr(again, split))
    for split in ("y_train", "y_test"):
        y = getattr(first, split)
        assert y.dtype == torch.int64
        assert torch.equal(y, getattr(again, split))
        assert set(y.tolist()) == set(range(spec.n_classes))  # every class on both sides
    assert first.n_classes == spec.n_classes and len(first.class_names) == spec.n_classes
    assert first.input_shape == spec.input_shape


# ------------------------------------------------------------------ MNIST-1D
def test_mnist1d_is_the_packages_generator_without_touching_global_rngs():
    from mnist1d.data import get_dataset_args, make_dataset

    np.random.seed(123)
    random.seed(123)
    np_before, py_before = np.random.get_state(), random.getstate()
    # A size no other test asks for, so the generator really runs here (clearing the
    # cache instead would make the next test generate the default 5000 again).
    misses = _mnist1d_arrays.cache_info().misses
    data = load_dataset("mnist1d", n_samples=300, standardize=False)
    assert _mnist1d_arrays.cache_info().misses == misses + 1
    np_after = np.random.get_state()
    assert np_after[0] == np_before[0] and np.array_equal(np_after[1], np_before[1])
    assert np_after[2:] == np_before[2:]
    assert random.getstate() == py_before

    args = get_dataset_args()
    args.num_samples = 300
    reference = make_dataset(args)
    np.testing.assert_array_equal(data.x_train.numpy()[:, 0], reference["x"].astype(np.float32))
    np.testing.assert_array_equal(data.x_test.numpy()[:, 0],
                                  reference["x_test"].astype(np.float32))
    np.testing.assert_array_equal(data.y_train.numpy(), reference["y"])
    assert (len(data.y_train), len(data.y_test)) == (240, 60)  # the package's 80/20 split
    assert data.x_train.shape[1:] == (1, 40)


def test_mnist1d_defaults_to_the_packages_5000_and_feeds_a_conv1d():
    data = load_dataset("mnist1d")
    assert (len(data.y_train), len(data.y_test)) == (4000, 1000)
    cfg = RunConfig(rule="bp", dataset="mnist1d", model="cnn", channels=(4,), hidden=(8,))
    model = build_model(cfg, data.input_shape, data.n_classes)
    assert isinstance(model.layers[0], torch.nn.Conv1d)
    assert model(data.x_test[:5]).shape == (5, 10)


def test_mnist1d_config_takes_n_samples_but_not_noise():
    RunConfig(rule="bp", dataset="mnist1d", n_samples=200)
    with pytest.raises(ValueError, match=r"RunConfig.noise must be None.*moons"):
        RunConfig(rule="bp", dataset="mnist1d", noise=0.1)


# ------------------------------------------------------------------ 2-D sets
def _raw(name, **options):
    data = load_dataset(name, standardize=False, **options)
    x = torch.cat([data.x_train, data.x_test]).double().numpy()
    y = torch.cat([data.y_train, data.y_test]).numpy()
    return data, x, y


@pytest.mark.parametrize("name", TWO_D)
def test_2d_sets_honour_n_samples_seed_and_stratify(name):
    data, x, y = _raw(name, n_samples=250, noise=0.1, seed=3)
    assert x.shape == (250, 2)
    n_classes = DATASETS[name].n_classes
    # Stratified: each class's share of the test set matches its share overall.
    overall = np.bincount(y, minlength=n_classes) / len(y)
    test = np.bincount(data.y_test.numpy(), minlength=n_classes) / len(data.y_test)
    assert np.abs(overall - test).max() <= 1.5 / len(data.y_test)
    _, x_same, _ = _raw(name, n_samples=250, noise=0.1, seed=3)
    _, x_other, _ = _raw(name, n_samples=250, noise=0.1, seed=4)
    np.testing.assert_array_equal(x, x_same)
    assert x_other.shape == x.shape and not np.allclose(np.sort(x, 0), np.sort(x_other, 0))
    # More noise spreads the same set further from its noiseless shape.
    _, x_clean, _ = _raw(name, n_samples=250, noise=0.0, seed=3)
    _, x_noisy, _ = _raw(name, n_samples=250, noise=0.3, seed=3)
    assert x_noisy.std() > x_clean.std() * 0.99 and not np.allclose(x_clean, x_noisy)


def test_2d_smallest_configurable_size_still_splits_every_class():
    for name in TWO_D:
        data = load_dataset(name, n_samples=10)
        assert len(data.y_train) + len(data.y_test) == 10
        assert set(data.y_test.tolist()) == set(range(DATASETS[name].n_classes))


def test_moons_without_noise_lie_on_their_half_circles():
    _, x, y = _raw("moons", noise=0.0, n_samples=200)
    upper, lower = x[y == 0], x[y == 1]
    np.testing.assert_allclose(np.hypot(*upper.T), 1, atol=1e-6)
    assert (upper[:, 1] >= -1e-6).all()
    np.testing.assert_allclose(np.hypot(lower[:, 0] - 1, lower[:, 1] - 0.5), 1, atol=1e-6)
    assert (lower[:, 1] <= 0.5 + 1e-6).all()


def test_circles_without_noise_have_radii_one_and_a_half():
    _, x, y = _raw("circles", noise=0.0, n_samples=200)
    radius = np.hypot(*x.T)
    np.testing.assert_allclose(radius[y == 0], 1.0, atol=1e-6)
    np.testing.assert_allclose(radius[y == 1], 0.5, atol=1e-6)


@pytest.mark.parametrize("arms", [2, 3])
def test_spirals_without_noise_lie_on_their_arms(arms):
    data, x, y = _raw("spirals", noise=0.0, n_samples=300, n_classes=arms)
    assert data.n_classes == arms and set(y.tolist()) == set(range(arms))
    radius, angle = np.hypot(*x.T), np.arctan2(x[:, 1], x[:, 0])
    # Arm k: angle = 2 pi k / arms + 3 pi r (mod 2 pi).
    offset = np.angle(np.exp(1j * (angle - 3 * np.pi * radius - 2 * np.pi * y / arms)))
    np.testing.assert_allclose(offset[radius > 1e-3], 0, atol=1e-4)
    assert np.bincount(y).max() - np.bincount(y).min() <= 1


def test_xor_labels_are_the_sign_disagreement_of_the_coordinates():
    _, x, y = _raw("xor", noise=0.1, n_samples=400)  # blobs 10 sigma from the axes
    np.testing.assert_array_equal(y, (x[:, 0] * x[:, 1] < 0).astype(int))
    assert np.bincount(y).tolist() == [200, 200]


@pytest.mark.parametrize("k", [2, 4])
def test_gaussians_are_k_blobs_on_a_circle_with_noise_as_their_std(k):
    _, x, y = _raw("gaussians", noise=0.0, n_samples=40, n_classes=k)
    angle = 2 * np.pi * y / k
    np.testing.assert_allclose(x, 2 * np.stack([np.cos(angle), np.sin(angle)], 1), atol=1e-6)
    _, x, y = _raw("gaussians", noise=0.5, n_samples=4000, n_classes=k)
    centres = 2 * np.stack([np.cos(2 * np.pi * y / k), np.sin(2 * np.pi * y / k)], 1)
    # Per-coordinate std 0.5; with 8000 draws its estimate is within a few percent.
    assert (x - centres).std() == pytest.approx(0.5, rel=0.05)


def test_2d_sets_refuse_a_convolutional_net():
    with pytest.raises(ValueError, match=r"RunConfig.model must be one of mlp for dataset 'moons'"):
        RunConfig(rule="bp", dataset="moons", model="cnn")


def test_config_options_reach_the_loader():
    cfg = RunConfig(rule="bp", dataset="spirals", noise=0.0, n_samples=90, n_classes=2,
                    label_noise=0.0, standardize=False, seed=5)
    data = dataset_from_config(cfg)
    assert len(data.y_train) + len(data.y_test) == 90
    assert dataset_shape(cfg) == (data.input_shape, data.n_classes) == ((2,), 2)
    direct = load_dataset("spirals", noise=0.0, n_samples=90, n_classes=2,
                          standardize=False, seed=5)
    assert torch.equal(direct.x_train, data.x_train)


# ------------------------------------------------------------------ options
@pytest.fixture(scope="module")
def digits_raw():
    return load_dataset("digits", standardize=False)


def test_label_noise_flips_the_requested_fraction_to_other_classes(digits_raw):
    noisy = load_dataset("digits", standardize=False, label_noise=0.3, seed=1)
    assert torch.equal(noisy.x_train, digits_raw.x_train)
    assert torch.equal(noisy.y_test, digits_raw.y_test)  # test labels untouched
    flipped = noisy.y_train != digits_raw.y_train
    # Binomial(1438, 0.3): std 0.012, so 0.3 +- 0.05 is a > 4 sigma band.
    assert flipped.double().mean().item() == pytest.approx(0.3, abs=0.05)
    # Every draw of a flip lands on a different class, uniformly over the other nine.
    shift = (noisy.y_train[flipped] - digits_raw.y_train[flipped]) % 10
    counts = np.bincount(shift.numpy(), minlength=10)
    assert counts[0] == 0
    expected = flipped.sum().item() / 9
    assert np.all(np.abs(counts[1:] - expected) < 5 * np.sqrt(expected))
    again = load_dataset("digits", standardize=False, label_noise=0.3, seed=1)
    other = load_dataset("digits", standardize=False, label_noise=0.3, seed=2)
    assert torch.equal(again.y_train, noisy.y_train)
    assert not torch.equal(other.y_train, noisy.y_train)


def test_class_subset_is_seeded_and_relabelled(digits_raw):
    chosen_by_seed = {}
    for seed in range(6):
        sub = load_dataset("digits", standardize=False, n_classes=3, seed=seed)
        assert sub.n_classes == 3 and len(sub.class_names) == 3
        original = [int(c) for c in sub.class_names]
        assert original == sorted(original)
        chosen_by_seed[seed] = tuple(original)
        for split in ("train", "test"):
            x, y = getattr(sub, f"x_{split}"), getattr(sub, f"y_{split}")
            full_x, full_y = getattr(digits_raw, f"x_{split}"), getattr(digits_raw, f"y_{split}")
            assert set(y.tolist()) == {0, 1, 2}
            keep = torch.isin(full_y, torch.tensor(original))
            assert torch.equal(x, full_x[keep])  # same rows, same order
            assert torch.equal(torch.tensor(original)[y], full_y[keep])  # relabelled 0..k-1
    assert chosen_by_seed[0] == tuple(int(c) for c in load_dataset(
        "digits", n_classes=3, seed=0).class_names)
    assert len(set(chosen_by_seed.values())) > 1


def test_train_size_is_an_exact_seeded_subsample(digits_raw):
    small = load_dataset("digits", standardize=False, train_size=100, seed=4)
    assert len(small.y_train) == 100 and torch.equal(small.x_test, digits_raw.x_test)
    rows = {tuple(r) for r in digits_raw.x_train.flatten(1).tolist()}
    assert all(tuple(r) in rows for r in small.x_train.flatten(1).tolist())
    assert torch.equal(load_dataset("digits", standardize=False, train_size=100,
                                    seed=4).x_train, small.x_train)
    assert not torch.equal(load_dataset("digits", standardize=False, train_size=100,
                                        seed=5).x_train, small.x_train)
    assert len(load_dataset("digits", train_size=len(digits_raw.y_train)).y_train) == len(
        digits_raw.y_train)


def test_standardisation_uses_training_statistics_only(digits_raw):
    data = load_dataset("digits")
    mean = digits_raw.x_train.double().mean(0)
    std = digits_raw.x_train.double().std(0, unbiased=False)
    varying = std > 1e-6
    torch.testing.assert_close(data.x_train.double().mean(0)[varying],
                               torch.zeros(int(varying.sum()), dtype=torch.float64),
                               atol=1e-5, rtol=0)
    torch.testing.assert_close(data.x_train.double().std(0, unbiased=False)[varying],
                               torch.ones(int(varying.sum()), dtype=torch.float64),
                               atol=1e-4, rtol=0)
    expected_test = (digits_raw.x_test.double() - mean) / torch.where(varying, std, 1.0)
    # float32 statistics: relative error ~1e-5 where a pixel is rarely non-zero.
    torch.testing.assert_close(data.x_test.double(), expected_test, atol=1e-5, rtol=1e-4)
    assert (data.x_train[:, ~varying] == 0).all()  # constant border pixels stay at 0


def test_options_compose_deterministically_per_seed():
    options = dict(n_classes=4, label_noise=0.2, train_size=100, seed=7)
    for name in ("digits", "mnist1d", "gaussians"):
        first = load_dataset(name, **SMALL.get(name, {}), **options)
        again = load_dataset(name, **SMALL.get(name, {}), **options)
        assert len(first.y_train) == 100 and first.n_classes == 4
        for split in ("x_train", "y_train", "x_test", "y_test"):
            assert torch.equal(getattr(first, split), getattr(again, split))
        assert set(first.y_test.tolist()) <= set(range(4))


@pytest.mark.parametrize("name, options, pattern", [
    ("digits", {"n_classes": 1}, r"n_classes .*\[2, 10\].*got 1"),
    ("digits", {"n_classes": 11}, r"n_classes .*\[2, 10\].*got 11"),
    ("digits", {"n_classes": "3"}, r"n_classes .*integer in \[2, 10\]"),
    ("moons", {"n_classes": 3}, r"n_classes .*\[2, 2\]"),
    ("digits", {"label_noise": -0.1}, r"label_noise .*\[0, 1\)"),
    ("digits", {"label_noise": 1.0}, r"label_noise .*\[0, 1\)"),
    ("digits", {"train_size": 0}, r"train_size .*integer in \[1, "),
    ("digits", {"train_size": 10_000}, r"train_size must be at most 1437"),
    ("digits", {"standardize": "yes"}, r"standardize must be true or false"),
    ("digits", {"seed": -1}, r"seed must be an integer in \[0, 2\^32 - 1\]"),
    ("digits", {"noise": 0.1}, r"no option\(s\) noise; it takes: n_classes, label_noise"),
    ("mnist1d", {"noise": 0.1}, r"no option\(s\) noise; .*n_samples"),
    ("moons", {"n_samples": 5}, r"n_samples .*integer in \[10, "),
    ("moons", {"noise": -1.0}, r"noise .*number in \[0, 10\]"),
    ("mnist2", {}, r"dataset must be one of digits, mnist1d, moons"),
])
def test_bad_options_name_the_option_and_the_allowed_values(name, options, pattern):
    with pytest.raises(ValueError, match=pattern):
        load_dataset(name, **options)


def test_config_checks_dataset_specific_fields():
    with pytest.raises(ValueError, match=r"RunConfig.noise must be None for dataset 'digits'"):
        RunConfig(rule="bp", noise=0.1)
    with pytest.raises(ValueError, match=r"RunConfig.n_classes .*\[2, 4\].*'gaussians'"):
        RunConfig(rule="bp", dataset="gaussians", n_classes=5)
    # Downloadable sets validate and report their shape without any download.
    cfg = RunConfig(rule="bp", dataset="cifar10", model="cnn", n_classes=3)
    assert dataset_shape(cfg) == ((3, 32, 32), 3)


# ------------------------------------------------- download path (offline)
def _write_fake_openml_cache(home, data_id, pixels, labels):
    """The four files ``fetch_openml(data_id=...)`` reads from ``<home>/openml``: the
    description, features and qualities API answers and the gzipped ARFF."""
    root = home / "openml" / "openml.org"
    n_rows, n_pixels = pixels.shape
    arff = ("@RELATION fake\n"
            + "".join(f"@ATTRIBUTE pixel{i + 1} NUMERIC\n" for i in range(n_pixels))
            + "@ATTRIBUTE class {0,1,2,3,4,5,6,7,8,9}\n@DATA\n"
            + "".join(",".join(map(str, row)) + f",{label}\n"
                      for row, label in zip(pixels, labels, strict=True)))

    def put(path, text):
        target = root / (path + ".gz")
        target.parent.mkdir(parents=True, exist_ok=True)
        with gzip.open(target, "wt", encoding="utf-8") as f:
            f.write(text)

    arff_path = f"data/v1/download/{data_id + 1}/fake.arff"
    put(arff_path, arff)
    put(f"api/v1/json/data/{data_id}", json.dumps({"data_set_description": {
        "id": str(data_id), "name": "fake", "version": "1", "description": "test set",
        "format": "ARFF", "status": "active", "url": f"https://api.openml.org/{arff_path}",
        "default_target_attribute": "class",
        "md5_checksum": hashlib.md5(arff.encode()).hexdigest()}}))
    feature = {"data_type": "numeric", "is_target": "false", "is_ignore": "false",
               "is_row_identifier": "false", "number_of_missing_values": "0"}
    features = [{**feature, "index": str(i), "name": f"pixel{i + 1}"} for i in range(n_pixels)]
    features.append({**feature, "index": str(n_pixels), "name": "class",
                     "data_type": "nominal", "is_target": "true",
                     "nominal_value": [str(c) for c in range(10)]})
    put(f"api/v1/json/data/features/{data_id}", json.dumps({"data_features": {
        "feature": features}}))
    put(f"api/v1/json/data/qualities/{data_id}", json.dumps({"data_qualities": {
        "quality": [{"name": "NumberOfInstances", "value": f"{n_rows}.0"}]}}))


@pytest.fixture
def offline(offline_openml):
    """tests/conftest.py's: an empty data folder, no network, requests logged."""
    return offline_openml


def _shrink_split(monkeypatch, name, n_train):
    source = data_module._OPENML[name]
    monkeypatch.setitem(data_module._OPENML, name, dataclasses.replace(source, n_train=n_train))
    return source


def test_download_path_reads_the_openml_cache_then_its_own_npz(offline, monkeypatch):
    folder, requests = offline
    source = _shrink_split(monkeypatch, "fashion_mnist", 18)
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(24, 784))
    labels = np.arange(24) % 10
    assert not available("fashion_mnist") and not DATASETS["fashion_mnist"].available
    _write_fake_openml_cache(folder, source.data_id, pixels, labels)
    assert available("fashion_mnist")

    data = load_dataset("fashion_mnist", standardize=False)
    assert requests == []  # everything came from the cache
    images = pixels.reshape(24, 1, 28, 28) / 255  # row-major pixels, scaled to [0, 1]
    np.testing.assert_allclose(data.x_train.numpy(), images[:18], rtol=0, atol=1e-7)
    np.testing.assert_allclose(data.x_test.numpy(), images[18:], rtol=0, atol=1e-7)
    np.testing.assert_array_equal(data.y_train.numpy(), labels[:18])
    np.testing.assert_array_equal(data.y_test.numpy(), labels[18:])
    assert data.class_names[0] == "T-shirt/top" and data.input_shape == (1, 28, 28)

    # The arrays are kept as <name>.npz; with the OpenML cache gone they still load.
    assert (folder / "fashion_mnist.npz").exists()
    for path in sorted((folder / "openml").rglob("*.gz")):
        path.unlink()
    assert available("fashion_mnist")
    again = load_dataset("fashion_mnist", standardize=False)
    assert torch.equal(again.x_train, data.x_train) and torch.equal(again.y_test, data.y_test)
    assert requests == []
    # The shared options apply as to any set.
    subset = load_dataset("fashion_mnist", n_classes=2, seed=1)
    assert set(subset.y_train.tolist()) <= {0, 1} and len(subset.class_names) == 2


def test_cifar10_rows_become_channel_first_images(offline, monkeypatch):
    folder, _ = offline
    source = _shrink_split(monkeypatch, "cifar10", 8)
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, size=(10, 3072))
    _write_fake_openml_cache(folder, source.data_id, pixels, np.arange(10))
    data = load_dataset("cifar10", standardize=False)
    image = data.x_train[3].numpy() * 255
    # Rows hold the 1024 red, then green, then blue pixels, each plane row-major.
    for channel, row, col in [(0, 0, 0), (1, 5, 7), (2, 31, 30)]:
        assert image[channel, row, col] == pytest.approx(pixels[3, channel * 1024 + row * 32 + col])
    assert data.x_test.shape == (2, 3, 32, 32)


@pytest.mark.filterwarnings("ignore:A network error occurred")
def test_offline_without_a_cache_raises_an_error_saying_how_to_get_the_data(offline):
    folder, requests = offline
    assert not available("mnist")
    with pytest.raises(DataUnavailableError) as caught:
        load_dataset("mnist")
    assert isinstance(caught.value, RuntimeError)
    message = str(caught.value)
    assert "load_dataset('mnist')" in message
    assert str(folder) in message and "FA_EXPLORE_DATA" in message
    assert "mnist.npz" in message
    assert requests and "openml.org" in requests[0]  # the real fetch was attempted
    assert not (folder / "mnist.npz").exists()


# ------------------------------------------------------------------ register
def test_register_refuses_a_taken_name_unless_asked_to_replace(monkeypatch):
    from fa_explore.data import DatasetSpec, register

    monkeypatch.setattr(data_module, "DATASETS", dict(DATASETS))  # leave the real one alone
    original = data_module.DATASETS["digits"]
    impostor = dataclasses.replace(original, description="another digits")
    with pytest.raises(ValueError, match=r"dataset 'digits' is already registered.*replace=True"):
        register(impostor)
    assert data_module.DATASETS["digits"] is original
    assert register(impostor, replace=True) is impostor
    assert data_module.DATASETS["digits"] is impostor
    fresh = DatasetSpec("tiny_new_set", "a test set", original.raw_loader, (1, 8, 8), 10,
                        "image")
    assert register(fresh) is fresh and data_module.DATASETS["tiny_new_set"] is fresh
    with pytest.raises(ValueError, match="DatasetSpec"):
        register("digits")
