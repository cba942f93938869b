"""Invariants every registered rule must satisfy, whatever its name."""

import math
from pathlib import Path

import pytest
import torch

from fa_explore import RULES, RunConfig, build
from fa_explore.config import RULE_DEFAULTABLE
from fa_explore.rules.base import Rule

TESTS = Path(__file__).parent / "rules"
ALL_RULES = sorted(RULES)


def test_reference_rules_are_registered():
    expected = {"bp", "fa", "usf", "frsf", "brsf", "kp", "wm", "dfa", "dkp", "pfa", "pfa_o",
                "fg_w", "fg_a", "lg_fg_a", "fdfa"}
    assert expected <= set(RULES), f"missing: {expected - set(RULES)}"


@pytest.mark.parametrize("name", ALL_RULES)
def test_rule_declares_itself(name):
    cls = RULES[name]
    assert issubclass(cls, Rule) and cls.name == name
    assert cls.description and cls.paper and cls.__doc__
    assert cls.feedback_kind in ("layer", "direct", "none")
    assert set(cls.defaults) <= set(RULE_DEFAULTABLE)
    assert set(cls.models) <= {"mlp", "cnn"} and "mlp" in cls.models
    # One rule = one file plus its test.
    assert (TESTS / f"test_{name}.py").is_file(), f"tests/rules/test_{name}.py is missing"


@pytest.mark.parametrize("name", ALL_RULES)
@pytest.mark.parametrize("model_kind", ["mlp", "cnn"])
def test_grads_fill_every_trainable_tensor(name, model_kind):
    if model_kind not in RULES[name].models:
        with pytest.raises(ValueError, match="model"):
            RunConfig(rule=name, model=model_kind)
        return
    cfg = RunConfig(rule=name, model=model_kind, hidden=(12, 10), channels=(3, 4))
    model, rule = build(cfg, input_shape=(1, 8, 8), n_classes=5, device="cpu")
    x, y = torch.randn(7, 1, 8, 8), torch.randint(0, 5, (7,))
    loss = rule.compute_grads(model, x, y)
    assert loss.ndim == 0 and not loss.requires_grad and math.isfinite(loss.item())
    for pname, p in [*model.named_parameters(), *rule.named_parameters()]:
        assert p.grad is not None and p.grad.shape == p.shape, pname
        assert torch.isfinite(p.grad).all(), pname
    # The output layer always gets a nonzero update.
    assert model.layers[-1].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ALL_RULES)
def test_effective_feedback_matches_kind(name):
    cfg = RunConfig(rule=name, hidden=(12, 10))
    model, rule = build(cfg, input_shape=(6,), n_classes=3, device="cpu")
    assert rule.effective_feedback(model, 0) is None  # nobody needs the input's error
    for layer in range(1, model.n_layers):
        fb = rule.effective_feedback(model, layer)
        if rule.feedback_kind == "layer":
            assert fb is not None and fb.shape == model.layers[layer].weight.shape
        else:
            assert fb is None


@pytest.mark.parametrize("name", ALL_RULES)
def test_probe_grads_leaves_rule_state_alone(name):
    cfg = RunConfig(rule=name, hidden=(12, 10))
    model, rule = build(cfg, input_shape=(6,), n_classes=3, device="cpu")
    x, y = torch.randn(9, 6), torch.randint(0, 3, (9,))
    before = {k: v.clone() for k, v in rule.state_dict().items()}
    first = rule.probe_grads(model, x, y)
    second = rule.probe_grads(model, x, y)
    for a, b in zip(first, second, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    for k, v in rule.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)
    assert all(p.grad is None for p in model.parameters())
