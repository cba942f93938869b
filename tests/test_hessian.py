"""fa_explore.analysis.hessian: Hessian-vector products, top eigenvalues, trace and
SLQ density of tiny float64 nets, checked against the dense Hessian
(torch.func.hessian over the flattened parameters)."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call, hessian

from fa_explore import CNN, MLP, RunConfig
from fa_explore.analysis import (
    HessianOperator,
    density_on_grid,
    hessian_density,
    hessian_eigenvalues,
    hessian_trace,
    hessian_vector_product,
)
from fa_explore.analysis.hessian import _rademacher


def tiny_mlp():
    torch.manual_seed(3)
    model = MLP((4,), (5,), 3, generator=torch.Generator().manual_seed(1)).double()
    x = torch.randn(40, 4, dtype=torch.float64)
    y = torch.randint(0, 3, (40,))
    return model, x, y


def tiny_cnn():
    torch.manual_seed(4)
    model = CNN((1, 8, 8), (2,), (4,), 3, generator=torch.Generator().manual_seed(2)).double()
    x = torch.randn(12, 1, 8, 8, dtype=torch.float64)
    y = torch.randint(0, 3, (12,))
    return model, x, y


def dense_hessian(model, x, y, names=None):
    """The exact Hessian of the mean cross-entropy over the chosen parameters."""
    named = dict(model.named_parameters())
    names = list(named) if names is None else names
    fixed = {n: p.detach() for n, p in named.items() if n not in names}
    shapes = [named[n].shape for n in names]
    sizes = [named[n].numel() for n in names]

    def loss(flat):
        parts = [t.reshape(s) for t, s in zip(torch.split(flat, sizes), shapes, strict=True)]
        pieces = dict(zip(names, parts, strict=True))
        return F.cross_entropy(functional_call(model, {**fixed, **pieces}, (x,)), y)

    flat = torch.cat([named[n].detach().reshape(-1) for n in names])
    return hessian(loss)(flat).numpy()


@pytest.fixture(scope="module")
def mlp_case():
    model, x, y = tiny_mlp()
    return model, x, y, dense_hessian(model, x, y)


@pytest.fixture(scope="module")
def fa_and_bp(fa_run_and_bp_copy):
    run, bp_model = fa_run_and_bp_copy
    return run, bp_model, run.data.x_train[:64], run.data.y_train[:64]


def snapshot(model):
    return ({k: v.clone() for k, v in model.state_dict().items()},
            [None if p.grad is None else p.grad.clone() for p in model.parameters()],
            model.training)


def assert_untouched(model, before):
    state, grads, training = before
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    for p, g in zip(model.parameters(), grads, strict=True):
        assert (p.grad is None and g is None) or torch.equal(p.grad, g)
    assert model.training == training
    assert all(p.requires_grad for p in model.parameters())


# --------------------------------------------------------------- products
def test_hvp_equals_the_dense_hessian_times_v_in_every_layout(mlp_case):
    model, x, y, H = mlp_case
    v = torch.randn(H.shape[0], dtype=torch.float64)
    expected = H @ v.numpy()
    np.testing.assert_allclose(hessian_vector_product(model, x, y, v).numpy(), expected,
                               rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(hessian_vector_product(model, x, y, v.numpy()), expected,
                               rtol=1e-10, atol=1e-12)
    op = HessianOperator(model, x, y)
    as_dict = hessian_vector_product(model, x, y, op.unflatten(v))
    assert list(as_dict) == [n for n, _ in model.named_parameters()]
    np.testing.assert_allclose(op.flatten(as_dict).numpy(), expected, rtol=1e-10, atol=1e-12)
    # Chunked data: the mean of the chunk Hessians weighted by chunk size.
    np.testing.assert_allclose(hessian_vector_product(model, x, y, v, batch_size=7).numpy(),
                               expected, rtol=1e-10, atol=1e-12)


def test_hvp_over_a_parameter_subset_is_that_block_of_the_hessian(mlp_case):
    model, x, y, _ = mlp_case
    names = ["layers.1.weight", "layers.0.bias"]  # given out of order: model order is used
    block = dense_hessian(model, x, y, ["layers.0.bias", "layers.1.weight"])
    v = torch.randn(block.shape[0], dtype=torch.float64)
    np.testing.assert_allclose(hessian_vector_product(model, x, y, v, params=names).numpy(),
                               block @ v.numpy(), rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="params must name"):
        hessian_vector_product(model, x, y, v, params=["layers.9.weight"])
    with pytest.raises(ValueError, match="flat v must have shape"):
        hessian_vector_product(model, x, y, torch.zeros(3, dtype=torch.float64))


def test_cnn_hvp_and_top_eigenvalues_match_the_dense_hessian():
    model, x, y = tiny_cnn()
    H = dense_hessian(model, x, y)
    v = torch.randn(H.shape[0], dtype=torch.float64)
    np.testing.assert_allclose(hessian_vector_product(model, x, y, v).numpy(), H @ v.numpy(),
                               rtol=1e-9, atol=1e-12)
    exact = np.linalg.eigvalsh(H)[::-1][:3]
    np.testing.assert_allclose(hessian_eigenvalues(model, x, y, k=3, tol=1e-10), exact,
                               rtol=1e-6)


# ------------------------------------------------------------ eigenvalues
def test_lanczos_top_eigenvalues_and_vectors_match_eigvalsh(mlp_case):
    model, x, y, H = mlp_case
    exact = np.linalg.eigvalsh(H)[::-1]
    top1 = hessian_eigenvalues(model, x, y, k=1, tol=1e-10)
    np.testing.assert_allclose(top1, exact[:1], rtol=1e-6)
    values, vectors = hessian_eigenvalues(model, x, y, k=3, tol=1e-10,
                                          return_eigenvectors=True)
    np.testing.assert_allclose(values, exact[:3], rtol=1e-6)
    assert vectors.shape == (3, H.shape[0])
    np.testing.assert_allclose(vectors @ vectors.T, np.eye(3), atol=1e-8)
    np.testing.assert_allclose(vectors @ H, values[:, None] * vectors, atol=1e-7)
    with pytest.raises(ValueError, match="smaller than the number of parameters"):
        hessian_eigenvalues(model, x, y, k=H.shape[0])
    with pytest.raises(ValueError, match="method must be"):
        hessian_eigenvalues(model, x, y, method="arnoldi")


def test_power_iteration_with_deflation_matches_eigvalsh(mlp_case):
    model, x, y, H = mlp_case
    exact = np.linalg.eigvalsh(H)[::-1]
    assert exact[0] > abs(exact[-1])  # power iteration finds the largest magnitude
    values = hessian_eigenvalues(model, x, y, k=3, method="power", iters=3000, tol=1e-12)
    np.testing.assert_allclose(values, exact[:3], rtol=1e-6)


# ------------------------------------------------------------------ trace
def test_hutchinson_trace_and_its_standard_error(mlp_case):
    model, x, y, H = mlp_case
    samples = 1000
    estimate = hessian_trace(model, x, y, samples=samples, seed=5)
    # Each term is vᵀHv for the seeded Rademacher probes.
    probes = _rademacher(samples, H.shape[0], 5).numpy()
    np.testing.assert_allclose(estimate.values, np.einsum("si,ij,sj->s", probes, H, probes),
                               rtol=1e-10, atol=1e-12)
    # z-test against the exact trace, with the exact Rademacher variance
    # Var(vᵀHv) = 2(‖H‖_F² − Σ Hᵢᵢ²).
    exact_se = math.sqrt(2 * ((H ** 2).sum() - (np.diag(H) ** 2).sum()) / samples)
    assert abs(estimate.mean - np.trace(H)) < 3 * exact_se
    assert abs(estimate.mean - np.trace(H)) < 3 * estimate.stderr
    # The reported standard error estimates the exact one (its own relative
    # error is about sqrt((kurtosis − 1) / 4m), ~3% here).
    assert estimate.stderr == pytest.approx(exact_se, rel=0.12)
    assert estimate.samples == samples


# ---------------------------------------------------------------- density
def test_slq_weights_and_moments(mlp_case):
    model, x, y, H = mlp_case
    n = H.shape[0]
    n_vectors = 20
    density = hessian_density(model, x, y, n_vectors=n_vectors, n_steps=10, seed=2)
    assert density.n_params == n
    assert density.weights.sum() == pytest.approx(1.0, abs=1e-12)
    assert (density.weights >= 0).all()
    for k in range(n_vectors):  # each probe's Gauss weights sum to 1 / n_vectors
        assert density.weights[density.probe == k].sum() == pytest.approx(1 / n_vectors)
    # Gauss quadrature with m nodes is exact for degree < 2m: the moments are the
    # probes' quadratic forms vᵀHᵖv/‖v‖² (‖v‖² = n for ±1 entries).
    probes = _rademacher(n_vectors, n, 2).numpy()
    H2 = H @ H
    forms1 = np.einsum("si,ij,sj->s", probes, H, probes) / n
    forms2 = np.einsum("si,ij,sj->s", probes, H2, probes) / n
    assert density.moment(1) == pytest.approx(forms1.mean(), rel=1e-9)
    assert density.moment(2) == pytest.approx(forms2.mean(), rel=1e-9)
    # ... which estimate tr(H)/n and tr(H²)/n (z-tests, exact Rademacher variance).
    for moment, A in ((density.moment(1), H), (density.moment(2), H2)):
        se = math.sqrt(2 * ((A ** 2).sum() - (np.diag(A) ** 2).sum()) / n_vectors) / n
        assert abs(moment - np.trace(A) / n) < 3 * se
    grid, values = density_on_grid(density)
    assert np.trapezoid(values, grid) == pytest.approx(1.0, abs=1e-3)
    grid2, values2 = density.on_grid(np.linspace(-1, 2, 50), sigma=0.05)
    assert grid2.shape == values2.shape == (50,)


def test_slq_with_as_many_steps_as_parameters_recovers_the_spectrum_ends(mlp_case):
    model, x, y, H = mlp_case
    exact = np.linalg.eigvalsh(H)
    density = hessian_density(model, x, y, n_vectors=1, n_steps=500, seed=0)
    assert len(density.nodes) <= H.shape[0]  # steps are capped at n_params
    assert density.nodes.max() == pytest.approx(exact[-1], rel=1e-6)
    assert density.nodes.min() == pytest.approx(exact[0], rel=1e-6)


# ---------------------------------------------- the function, not the rule
def test_fa_trained_and_bp_loaded_models_have_the_same_hessian(fa_and_bp):
    run, bp_model, x, y = fa_and_bp
    v = torch.randn(sum(p.numel() for p in bp_model.parameters()))
    assert torch.equal(hessian_vector_product(run.model, x, y, v),
                       hessian_vector_product(bp_model, x, y, v))
    fa_top = hessian_eigenvalues(run.model, x, y, k=2, seed=1)
    bp_top = hessian_eigenvalues(bp_model, x, y, k=2, seed=1)
    np.testing.assert_array_equal(fa_top, bp_top)
    assert fa_top[0] > 0
    assert hessian_trace(run.model, x, y, samples=8).mean == \
        hessian_trace(bp_model, x, y, samples=8).mean
    np.testing.assert_array_equal(hessian_density(run.model, x, y, n_steps=8).nodes,
                                  hessian_density(bp_model, x, y, n_steps=8).nodes)


def test_calls_leave_the_model_its_grads_and_mode_alone():
    model, x, y = tiny_mlp()
    model.train()
    model.layers[0].weight.grad = torch.full_like(model.layers[0].weight, 7.0)
    before = snapshot(model)
    v = torch.randn(sum(p.numel() for p in model.parameters()), dtype=torch.float64)
    hessian_vector_product(model, x, y, v)
    assert_untouched(model, before)
    hessian_eigenvalues(model, x, y, k=2)
    assert_untouched(model, before)
    hessian_eigenvalues(model, x, y, k=1, method="power", iters=20)
    assert_untouched(model, before)
    hessian_trace(model, x, y, samples=4)
    assert_untouched(model, before)
    hessian_density(model, x, y, n_steps=5)
    assert_untouched(model, before)


def test_training_logs_the_hessian_on_request():
    from fa_explore import train
    from fa_explore.analysis.hessian import hessian_eigenvalues, hessian_trace
    from fa_explore.training import HESSIAN_TRACE_PROBES, PROBE_BATCH, _fixed_subset

    cfg = RunConfig(rule="fa", hidden=(8,), epochs=1, train_size=96, batch_size=16,
                    eval_every=3, eval_size=64, hessian_every=2)
    run = train(cfg)
    history = run.history
    logged = history["hessian_top"].notna().to_numpy()
    assert logged.tolist() == [i % 2 == 0 for i in range(len(history))]  # step 0 included
    assert (history.loc[logged, "hessian_trace"].notna()).all()
    # The last logged value is the plain forward's Hessian on the probe batch.
    assert len(history) % 2 == 1  # so the final row is a logged one
    data = run.data
    subset = _fixed_subset(len(data.y_train), cfg.eval_size,
                           torch.Generator().manual_seed(cfg.seed + 3))[:PROBE_BATCH]
    x, y = data.x_train[subset], data.y_train[subset]
    top = float(hessian_eigenvalues(run.model, x, y, k=1, seed=cfg.seed)[0])
    trace = hessian_trace(run.model, x, y, samples=HESSIAN_TRACE_PROBES, seed=cfg.seed).mean
    assert history["hessian_top"].iloc[-1] == pytest.approx(top, rel=1e-6)
    assert history["hessian_trace"].iloc[-1] == pytest.approx(trace, rel=1e-6)
    # Off by default: no columns, and logging does not change what training does.
    plain = train(cfg.replace(hessian_every=None))
    assert "hessian_top" not in plain.history
    assert plain.history["train_loss"].tolist() == history["train_loss"].tolist()
