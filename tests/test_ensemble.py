"""train_many: batched ensembles give the runs that training each config alone gives."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from fa_explore import RULES, RunConfig, load_dataset, train, train_many, train_many_iter
from fa_explore.ensemble import plan_ensembles, stacked_forward
from fa_explore.rules.base import Rule
from fa_explore.training import build

# 1 epoch of 240 examples in batches of 24: 10 steps, evaluated every 3.
SMALL = dict(hidden=(16, 12), epochs=1, batch_size=24, eval_every=3, eval_size=64)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", train_size=240, seed=0)


def assert_same_run(batched, alone, atol=1e-4):
    """Same status, message, columns and (within float tolerance) values."""
    assert batched.status == alone.status, (batched.message, alone.message)
    assert batched.stop_reason == alone.stop_reason
    assert batched.diverged_step == alone.diverged_step
    assert batched.config == alone.config
    a, b = batched.history, alone.history
    assert list(a.columns) == list(b.columns)
    assert len(a) == len(b)
    numeric = [c for c in a.columns if c != "time" and not c.startswith("conservation/")]
    pd.testing.assert_frame_equal(a[numeric], b[numeric], check_exact=False, atol=atol,
                                  rtol=1e-4)
    # The conservation ratio divides two small differences: relative tolerance, once
    # the weights have moved.
    conservation = [c for c in a.columns if c.startswith("conservation/")]
    np.testing.assert_allclose(a[conservation].to_numpy()[2:], b[conservation].to_numpy()[2:],
                               rtol=1e-2, atol=1e-3)
    for p, q in zip(batched.model.state_dict().values(), alone.model.state_dict().values(),
                    strict=True):
        torch.testing.assert_close(p, q, atol=1e-5, rtol=1e-4)
    # Each run owns its weights (no views into the ensemble's stacked tensors).
    assert all(p.untyped_storage().nbytes() == p.numel() * p.element_size()
               for p in batched.model.parameters())


MIXED = [
    RunConfig(rule="fa", seed=0, **SMALL),
    RunConfig(rule="bp", seed=1, **SMALL),
    RunConfig(rule="fa", seed=2, init_angle=30.0, lr=0.02, **SMALL),
    RunConfig(rule="fa", seed=3, feedback_sparsity=0.5, weight_decay=1e-3, **SMALL),
    RunConfig(rule="frsf", seed=4, lr_schedule="cosine", lr=0.002, **SMALL),
    RunConfig(rule="brsf", seed=5, **SMALL),
    RunConfig(rule="usf", seed=6, lr=0.005, **SMALL),
    RunConfig(rule="fa", seed=7, lr_schedule="cosine", **SMALL),
    RunConfig(rule="bp", seed=8, optimizer="sgd", lr=0.05, momentum=0.9, **SMALL),
    RunConfig(rule="fa", seed=9, optimizer="sgd", lr=0.02, weight_decay=1e-4, **SMALL),
    RunConfig(rule="kp", seed=10, **SMALL),  # learns its feedback: trains alone
    RunConfig(rule="fa", model="cnn", channels=(2,), seed=11, **SMALL),  # alone
]


def test_train_many_equals_training_each_config_alone(digits):
    plan = plan_ensembles(MIXED, digits)
    assert plan.groups == ((0, 1, 2, 3, 4, 5, 6, 7), (8, 9))  # adam (the default) / sgd
    assert plan.alone == (10, 11)
    batched = train_many(MIXED, data=digits)
    for cfg, run in zip(MIXED, batched, strict=True):
        assert_same_run(run, train(cfg, data=digits))


def test_sixteen_seeds_are_one_ensemble_and_load_the_data_once(monkeypatch):
    from fa_explore import ensemble

    loads = []
    real = ensemble.dataset_from_config
    monkeypatch.setattr(ensemble, "dataset_from_config",
                        lambda cfg: loads.append(cfg) or real(cfg))
    configs = [RunConfig(rule="fa", seed=s, **SMALL) for s in range(16)]
    plan = plan_ensembles(configs)
    assert plan.groups == (tuple(range(16)),) and plan.alone == ()
    # data_seed follows seed, but digits without subsampling draws nothing from it:
    # one dataset's tensors are shared (each distinct data key is still loaded once;
    # each member's Dataset keeps its own options, for check_dataset).
    assert len({id(d.x_train) for d in plan.data}) == 1
    assert len(loads) == 16


def test_a_diverging_member_ends_alone(digits):
    configs = [RunConfig(rule="fa", seed=0, **SMALL),
               RunConfig(rule="fa", seed=1, lr=5.0, **SMALL),
               RunConfig(rule="bp", seed=2, **SMALL)]
    batched = train_many(configs, data=digits)
    assert [r.status for r in batched] == ["finished", "diverged", "finished"]
    for cfg, run in zip(configs, batched, strict=True):
        assert_same_run(run, train(cfg, data=digits))


def test_a_member_reaching_its_target_stops_alone(digits):
    configs = [RunConfig(rule="bp", seed=0, target_loss=2.36, **SMALL),
               RunConfig(rule="fa", seed=1, **SMALL)]
    batched = train_many(configs, data=digits)
    assert batched[0].stop_reason == "target" and batched[1].stop_reason == "completed"
    assert len(batched[0].history) < len(batched[1].history)
    for cfg, run in zip(configs, batched, strict=True):
        assert_same_run(run, train(cfg, data=digits))


def test_iterator_yields_each_members_new_rows_and_stops_on_request(digits):
    configs = [RunConfig(rule="fa", seed=s, **SMALL) for s in range(3)]
    steps = []
    calls = 0

    def stop_after_five_steps():
        nonlocal calls
        calls += 1
        return calls > 5

    for snapshots in train_many_iter(configs, data=digits, should_stop=stop_after_five_steps):
        assert len(snapshots) == 3
        steps.append(snapshots[0].step)
        rows = [s.row for s in snapshots]
        if rows[0] is not None:
            assert all(r["step"] == snapshots[0].step for r in rows)
    assert steps == [0, 3, 5]
    assert [s.status for s in snapshots] == ["stopped"] * 3
    assert all(s.row is None for s in snapshots)
    assert all(s.run.message == "stopped by the user at step 5" for s in snapshots)
    assert all(len(s.run.history) == 2 for s in snapshots)


def test_train_many_checks_its_input():
    with pytest.raises(ValueError, match=r"configs\[1\] must be a RunConfig"):
        train_many([RunConfig(**SMALL), {"rule": "fa"}])
    assert train_many([]) == []


@pytest.mark.parametrize("name", [n for n, rule in RULES.items() if rule.batchable])
def test_batched_backward_gives_each_batchable_rules_own_gradients(name, digits):
    """The declaration ``batchable`` is what the ensemble relies on: the stacked
    backward through ``backward_matrix`` gives compute_grads' weight gradients."""
    configs = [RunConfig(rule=name, seed=s, **SMALL) for s in (0, 1)]
    x, y = digits.x_train[:24], digits.y_train[:24]
    built = [build(cfg, digits.input_shape, digits.n_classes) for cfg in configs]
    expected = []
    for model, rule in built:
        rule.compute_grads(model, x, y)
        expected.append([layer.weight.grad.clone() for layer in model.layers])
    built = [build(cfg, digits.input_shape, digits.n_classes) for cfg in configs]
    weights = [torch.stack([m.layers[l].weight.detach() for m, _ in built]).requires_grad_()
               for l in range(len(built[0][0].layers))]
    biases = [torch.stack([m.layers[l].bias.detach() for m, _ in built])
              for l in range(len(built[0][0].layers))]
    feedbacks = [None] + [torch.stack([r.backward_matrix(m, l) for m, r in built])
                          for l in range(1, len(weights))]
    logits = stacked_forward(weights, biases, built[0][0].activation,
                             x.flatten(1).expand(2, -1, -1), feedbacks)
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                             y.repeat(2), reduction="none").view(2, -1)
    loss.mean(1).sum().backward()
    for e in range(2):
        for l, w in enumerate(weights):
            torch.testing.assert_close(w.grad[e], expected[e][l], atol=1e-6, rtol=1e-5)


def test_a_batchable_rule_must_keep_the_hooks_the_ensemble_skips():
    with pytest.raises(TypeError, match="overrides on_epoch_start"):
        class _Scheduled(Rule):  # noqa: F841 - defining it is the test
            name = "scheduled"
            batchable = True

            def on_epoch_start(self, epoch, optimizers):
                pass
    # Never inherited: a subclass of a batchable rule must declare it again.
    class _Derived(RULES["fa"]):
        name = ""

    assert RULES["fa"].batchable and not _Derived.batchable
    assert not math.isnan(0.0)


def test_configs_that_share_equal_data_keep_their_own_data_settings():
    # Digits without a subsample are the same for any data_seed, so these configs
    # share one dataset; a member that trains alone (dfa) is checked against its
    # own config's data settings (check_dataset), not the first member's.
    configs = [RunConfig(rule=rule, data_seed=seed, **SMALL)
               for rule in ("dfa", "fa") for seed in (1, 2)]
    plan = plan_ensembles(configs)
    assert plan.alone == (0, 1) and plan.groups == ((2, 3),)
    assert all(torch.equal(d.x_train, plan.data[0].x_train) for d in plan.data)
    runs = train_many(configs)
    assert [r.status for r in runs] == ["finished"] * 4
    for run, cfg in zip(runs, configs, strict=True):
        assert_same_run(run, train(cfg))
