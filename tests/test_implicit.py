"""Implicit-regularization quantities against closed forms and the conservation law."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from fa_explore import RunConfig, build, train
from fa_explore.analysis.implicit import (
    conservation_per_neuron,
    model_at,
    output_alignment,
    sign_concordance,
)


def _built(rule, **fields):
    cfg = RunConfig(rule=rule, hidden=fields.pop("hidden", (40, 30)), **fields)
    return build(cfg, input_shape=(20,), n_classes=5, device="cpu")


def test_sign_concordance_closed_forms():
    model, bp = _built("bp")
    assert math.isnan(sign_concordance(model, bp)[0])
    assert sign_concordance(model, bp)[1:] == [1.0, 1.0]  # B = W
    model, anti = _built("fa", init_angle=180.0)  # B = -W
    assert sign_concordance(model, anti)[1:] == [0.0, 0.0]
    model, usf = _built("usf")  # B = s sign(W)
    assert sign_concordance(model, usf)[1:] == [1.0, 1.0]
    model, fa = _built("fa", hidden=(200, 200))  # independent draws: a coin flip each
    for value in sign_concordance(model, fa)[1:]:
        assert value == pytest.approx(0.5, abs=0.02)
    model, dfa = _built("dfa")
    assert all(math.isnan(v) for v in sign_concordance(model, dfa))


def test_output_alignment_closed_forms():
    model, aligned = _built("fa", init_angle=0.0)
    np.testing.assert_allclose(output_alignment(model, aligned), 1.0, atol=1e-6)
    model, anti = _built("fa", init_angle=180.0)
    np.testing.assert_allclose(output_alignment(model, anti), -1.0, atol=1e-6)
    model, fa = _built("fa")
    cos = output_alignment(model, fa)
    assert cos.shape == (30,) and np.all(np.abs(cos) <= 1)
    # Against a direct computation for one neuron: column 3 of W_L and of B_L.
    # B2: W_3's feedback.
    v, b = model.layers[-1].weight[:, 3].detach().double(), fa.B2[:, 3].double()
    assert cos[3] == pytest.approx(float(v @ b / (v.norm() * b.norm())), rel=1e-9)
    with pytest.raises(ValueError, match="needs a hidden layer"):
        output_alignment(*_built("fa", hidden=()))
    with pytest.raises(ValueError, match="no feedback matrix"):
        output_alignment(*_built("dfa"))


@pytest.mark.parametrize("rule", ["fa", "bp", "usf"])
def test_the_law_holds_neuron_by_neuron(rule):
    model, rule_module = _built(rule, hidden=(50,))
    model, rule_module = model.double(), rule_module.double()
    start = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(200, 20, generator=gen, dtype=torch.float64), torch.randint(0, 5, (200,),
                                                                                  generator=gen)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    for _ in range(300):
        optimizer.zero_grad(set_to_none=True)
        rule_module.compute_grads(model, x, y)
        optimizer.step()
    ratios = conservation_per_neuron(model, rule_module, start)[1]
    moved = ratios[np.isfinite(ratios)]
    assert len(moved) > 40
    # 1 up to the discrete step's O(lr) term: per neuron, not only on average.
    assert np.median(np.abs(moved - 1)) < 5e-3, np.percentile(moved, [5, 50, 95])


def test_no_law_no_ratios():
    model, rule = _built("dfa")
    assert conservation_per_neuron(model, rule, copy.deepcopy(model)) == {}
    model, rule = _built("fa", activation="tanh")
    assert conservation_per_neuron(model, rule, copy.deepcopy(model)) == {}


def test_model_at_gives_the_recorded_weights():
    run = train(RunConfig(rule="fa", hidden=(8,), epochs=1, train_size=64, eval_size=32))
    first = model_at(run, 0)
    last = model_at(run, -1)
    flat = torch.nn.utils.parameters_to_vector
    torch.testing.assert_close(flat(first.parameters()), run.trajectory.points[0])
    torch.testing.assert_close(flat(last.parameters()), flat(run.model.parameters()))
    assert not torch.equal(flat(first.parameters()), flat(last.parameters()))


def test_training_logs_sign_concordance_and_fa_raises_it():
    # FA pulls W towards its feedback's signs (the Dale's-principle effect).
    run = train(RunConfig(rule="fa", hidden=(64,), epochs=10, train_size=400, eval_size=200,
                          optimizer="sgd", lr=0.05))
    history = run.history
    assert history["sign_concordance/1"].isna().all()
    start, end = history["sign_concordance/2"].iloc[[0, -1]]
    assert start == pytest.approx(0.5, abs=0.06) and end > start + 0.05  # measured +0.08
    assert end == pytest.approx(sign_concordance(run.model, run.rule)[1])
