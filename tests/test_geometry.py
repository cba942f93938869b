"""PFA geometry against random-matrix theory."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.integrate import quad

from fa_explore import RunConfig, build
from fa_explore.analysis.geometry import (
    marchenko_pastur_density,
    marchenko_pastur_edges,
    p_spectrum,
    path_alignment_theory,
    path_geometry,
    product_spectrum,
    random_p,
)


@pytest.mark.parametrize("k", [1, 2, 10, 100])
def test_marchenko_pastur_is_a_density_with_unit_mean_and_variance_one_over_k(k):
    a, b = marchenko_pastur_edges(k)
    mass = quad(lambda x: marchenko_pastur_density(x, k), a, b, limit=200)[0]
    mean = quad(lambda x: x * marchenko_pastur_density(x, k), a, b, limit=200)[0]
    second = quad(lambda x: x * x * marchenko_pastur_density(x, k), a, b, limit=200)[0]
    assert mass == pytest.approx(1, abs=1e-6)
    assert mean == pytest.approx(1, abs=1e-6)
    assert second - mean**2 == pytest.approx(1 / k, rel=1e-5)


def test_reference_edges_and_angles():
    assert marchenko_pastur_edges(10) == pytest.approx((0.4675, 1.7325), abs=1e-4)
    for k, angle, ratio in [(1, 45.0, math.sqrt(2)), (10, 17.5, 1.049), (100, 5.7, 1.005)]:
        got_angle, got_ratio = path_alignment_theory(k)
        assert got_angle == pytest.approx(angle, abs=0.05)
        assert got_ratio == pytest.approx(ratio, abs=1e-3)


@pytest.mark.parametrize("k", [1, 10, 100])
def test_sampled_geometry_follows_the_closed_forms(k):
    gen = torch.Generator().manual_seed(0)
    n = 128
    w = torch.randn(n, 96, generator=gen, dtype=torch.float64)
    p = random_p(n, k, gen)
    eig = p_spectrum(p)
    assert eig.mean() == pytest.approx(1, abs=0.05)
    assert eig.var() == pytest.approx(1 / k, rel=0.25)
    a, b = marchenko_pastur_edges(k)
    assert eig.min() > a - 0.15 and eig.max() < b + 0.25
    angle, ratio = path_geometry(w, p)
    theory_angle, theory_ratio = path_alignment_theory(k)
    assert angle == pytest.approx(theory_angle, abs=2.0)
    assert ratio == pytest.approx(theory_ratio, rel=0.05)


def test_orthogonal_p_gives_an_exact_path():
    gen = torch.Generator().manual_seed(1)
    p = random_p(20, 1, gen, orthogonal=True)
    np.testing.assert_allclose(p_spectrum(p), np.ones(20), atol=1e-12)
    w = torch.randn(20, 7, generator=gen, dtype=torch.float64)
    angle, ratio = path_geometry(w, p)
    assert angle == pytest.approx(0, abs=1e-5) and ratio == pytest.approx(1, abs=1e-12)


def test_the_pfa_rule_draws_p_with_the_marchenko_pastur_spectrum():
    _, rule = build(RunConfig(rule="pfa", hidden=(64, 200), expansion_ratio=10), (1, 8, 8), 10)
    eig = product_spectrum(rule, 1)  # P1 belongs to W_2 (200 x 64): shape (200, 2000)
    assert len(eig) == 200
    assert eig.mean() == pytest.approx(1, abs=0.05) and eig.var() == pytest.approx(0.1, rel=0.3)
    _, fa_rule = build(RunConfig(rule="fa", hidden=(8,)), (1, 8, 8), 10)
    with pytest.raises(ValueError, match="no product feedback pathway"):
        product_spectrum(fa_rule, 1)
