"""RunConfig: every valid config survives JSON, dict and URL round trips; every
invalid value raises a ValueError naming the field and what is allowed."""

from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fa_explore import DATASETS, RULES, RunConfig
from fa_explore.config import (ACTIVATIONS, DEVICES, GLOBAL_DEFAULTS, OPTIMIZERS,
                               RULE_DEFAULTABLE, field_names)

RULE_NAMES = sorted(RULES)
DATASET_NAMES = sorted(DATASETS)
FAST = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


def _rules(**attributes) -> list[str]:
    return [n for n in RULE_NAMES
            if all(getattr(RULES[n], a) == v for a, v in attributes.items())]


def _skip_if_empty(names: list[str], what: str) -> list[str]:
    if not names:
        pytest.skip(f"no registered rule {what}")
    return names


# JSON turns floats into their repr and back, so any finite float round-trips.
def _floats(low, high, *, exclude_high=False, exclude_low=False):
    return st.floats(low, high, exclude_min=exclude_low, exclude_max=exclude_high,
                     allow_nan=False, allow_infinity=False)


def _option_value(default):
    if isinstance(default, bool):
        return st.booleans()
    if isinstance(default, int):
        return st.integers(0, 1000)
    if isinstance(default, float):
        return _floats(0, 10)
    return st.text(max_size=8)


@st.composite
def valid_configs(draw) -> RunConfig:
    rule = draw(st.sampled_from(RULE_NAMES))
    cls = RULES[rule]
    dataset = draw(st.sampled_from(DATASET_NAMES))
    spec = DATASETS[dataset]
    models = [m for m in cls.models if not (m == "cnn" and spec.kind == "2d")]
    model = draw(st.sampled_from(models))
    fields = dict(
        rule=rule, dataset=dataset, model=model,
        hidden=draw(st.lists(st.integers(1, 512), max_size=3).map(tuple)),
        channels=draw(st.lists(st.integers(1, 64), min_size=model == "cnn", max_size=3)
                      .map(tuple)),
        activation=draw(st.sampled_from(ACTIVATIONS)),
        optimizer=draw(st.none() | st.sampled_from(OPTIMIZERS)),
        lr=draw(st.none() | _floats(0, 10, exclude_low=True)),
        momentum=draw(st.none() | _floats(0, 1, exclude_high=True)),
        weight_decay=draw(st.none() | _floats(0, 1)),
        batch_size=draw(st.none() | st.integers(1, 4096)),
        epochs=draw(st.none() | st.integers(1, 500)),
        seed=draw(st.integers(0, 2**31)),
        device=draw(st.sampled_from(DEVICES)),
        n_classes=draw(st.none() | st.integers(2, spec.n_classes)),
        label_noise=draw(_floats(0, 1, exclude_high=True)),
        train_size=draw(st.none() | st.integers(1, 10**6)),
        standardize=draw(st.booleans()),
        eval_every=draw(st.none() | st.integers(1, 10**4)),
        eval_size=draw(st.integers(1, 10**5)),
    )
    if cls.uses_init_angle:
        fields["init_angle"] = draw(st.none() | _floats(0, 180))
    if cls.uses_feedback_sparsity:
        fields["feedback_sparsity"] = draw(_floats(0, 1, exclude_high=True))
    if cls.uses_expansion_ratio:
        ratios = st.sampled_from(cls.expansion_ratios) if cls.expansion_ratios else (
            st.integers(1, 64))
        fields["expansion_ratio"] = draw(st.none() | ratios)
    if "noise" in spec.extra_options:
        fields["noise"] = draw(st.none() | _floats(0, 5))
    if "n_samples" in spec.extra_options:
        fields["n_samples"] = draw(st.none() | st.integers(10, 10**5))
    if cls.options:
        keys = draw(st.lists(st.sampled_from(sorted(cls.options)), unique=True))
        fields["rule_options"] = {k: draw(_option_value(cls.options[k])) for k in keys}
    return RunConfig(**fields)


# -------------------------------------------------------------- round trips
@FAST
@given(valid_configs())
def test_every_valid_config_round_trips(cfg):
    assert RunConfig.from_json(cfg.to_json()) == cfg
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
    assert RunConfig.from_query(cfg.to_query()) == cfg
    assert RunConfig.from_query("?" + cfg.to_query()) == cfg
    # Round trips keep types, not just values that compare equal (1 == 1.0 == True).
    back = RunConfig.from_json(cfg.to_json())
    for f in dataclasses.fields(cfg):
        assert type(getattr(back, f.name)) is type(getattr(cfg, f.name)), f.name
    # The link only carries what differs from the defaults.
    default = RunConfig().to_dict()
    changed = {k for k, v in cfg.to_dict().items() if v != default[k]}
    assert {pair.split("=")[0] for pair in cfg.to_query().split("&") if pair} == changed


def test_json_and_query_forms_are_plain_and_readable():
    cfg = RunConfig(rule="fa", hidden=(64, 32), lr=0.01, init_angle=45)
    assert cfg.to_dict()["hidden"] == [64, 32]
    assert cfg.init_angle == 45.0 and isinstance(cfg.init_angle, float)
    query = cfg.to_query()
    assert "rule" not in query  # "fa" is the default rule
    assert RunConfig.from_query("rule=bp&hidden=[10]") == RunConfig(rule="bp", hidden=(10,))
    assert RunConfig.from_query("") == RunConfig()


def test_exact_integers_and_floats_from_json_are_accepted():
    cfg = RunConfig.from_json('{"batch_size": 64.0, "lr": 1, "seed": 3.0}')
    assert cfg.batch_size == 64 and type(cfg.batch_size) is int
    assert cfg.lr == 1.0 and type(cfg.lr) is float
    with pytest.raises(ValueError, match=r"RunConfig.batch_size must be None or an integer"):
        RunConfig.from_json('{"batch_size": 64.5}')


# ------------------------------------------------------------------ replace
@FAST
@given(valid_configs(), st.data())
def test_replace_validates(cfg, data):
    assert cfg.replace() == cfg
    seed = data.draw(st.integers(0, 100))
    assert cfg.replace(seed=seed).seed == seed
    with pytest.raises(ValueError, match=r"RunConfig.lr must be None or a positive number"):
        cfg.replace(lr=-data.draw(_floats(0, 10)))
    with pytest.raises(ValueError, match=r"RunConfig has no field\(s\) learning_rate; fields: "
                                         r"rule, dataset"):
        cfg.replace(learning_rate=0.1)


# ----------------------------------------------------------------- invalid
# (changes, message pattern): the message names the field and what is allowed.
INVALID = [
    ({"rule": "nope"}, r"RunConfig.rule must be one of .*\bbp\b.*\bfa\b.*; got 'nope'"),
    ({"dataset": "imagenet"}, r"RunConfig.dataset must be one of digits.*; got 'imagenet'"),
    ({"model": "rnn"}, r"RunConfig.model must be one of mlp, cnn; got 'rnn'"),
    ({"hidden": (0,)}, r"RunConfig.hidden must be a tuple of integer widths >= 1"),
    ({"hidden": (64, -3)}, r"RunConfig.hidden must be a tuple of integer widths >= 1"),
    ({"hidden": (64.5,)}, r"RunConfig.hidden must be a tuple of integer widths >= 1"),
    ({"hidden": (True,)}, r"RunConfig.hidden must be a tuple of integer widths >= 1"),
    ({"hidden": "128"}, r"RunConfig.hidden must be a tuple of integer widths >= 1"),
    ({"channels": (16, 0)}, r"RunConfig.channels must be a tuple of integer widths >= 1"),
    ({"model": "cnn", "channels": ()}, r"RunConfig.channels must be at least one convolution "
                                       r"width for model 'cnn'"),
    ({"activation": "gelu"}, r"RunConfig.activation must be one of relu, leaky_relu, tanh"),
    ({"rule": "fa", "init_angle": -1.0}, r"RunConfig.init_angle must be None or an angle in "
                                         r"degrees within \[0, 180\]; got -1.0"),
    ({"rule": "fa", "init_angle": 180.5}, r"RunConfig.init_angle .*\[0, 180\]"),
    ({"rule": "fa", "init_angle": math.nan}, r"RunConfig.init_angle .*\[0, 180\]"),
    ({"rule": "fa", "init_angle": "45"}, r"RunConfig.init_angle .*\[0, 180\]"),
    ({"rule": "bp", "init_angle": 30.0}, r"RunConfig.init_angle must be None for rule 'bp' "
                                         r".*rules that use it: .*\bfa\b"),
    ({"rule": "fa", "feedback_sparsity": 1.0}, r"RunConfig.feedback_sparsity must be a number "
                                               r"p with 0 <= p < 1; got 1.0"),
    ({"rule": "fa", "feedback_sparsity": -0.1}, r"RunConfig.feedback_sparsity .*0 <= p < 1"),
    ({"rule": "bp", "feedback_sparsity": 0.5}, r"RunConfig.feedback_sparsity must be 0 for "
                                               r"rule 'bp'"),
    ({"rule": "fa", "expansion_ratio": 2}, r"RunConfig.expansion_ratio must be None for rule "
                                           r"'fa'"),
    ({"optimizer": "rmsprop"}, r"RunConfig.optimizer must be None or one of sgd, adam"),
    ({"lr": 0.0}, r"RunConfig.lr must be None or a positive number; got 0.0"),
    ({"lr": -0.1}, r"RunConfig.lr must be None or a positive number"),
    ({"lr": math.inf}, r"RunConfig.lr must be None or a positive number"),
    ({"lr": "0.1"}, r"RunConfig.lr must be None or a positive number"),
    ({"momentum": 1.0}, r"RunConfig.momentum must be None or a number in \[0, 1\)"),
    ({"momentum": -0.5}, r"RunConfig.momentum must be None or a number in \[0, 1\)"),
    ({"weight_decay": -1e-4}, r"RunConfig.weight_decay must be None or a number >= 0"),
    ({"batch_size": 0}, r"RunConfig.batch_size must be None or an integer >= 1; got 0"),
    ({"batch_size": -32}, r"RunConfig.batch_size must be None or an integer >= 1"),
    ({"batch_size": 8.5}, r"RunConfig.batch_size must be None or an integer >= 1"),
    ({"epochs": 0}, r"RunConfig.epochs must be None or an integer >= 1"),
    ({"eval_every": 0}, r"RunConfig.eval_every must be None or an integer >= 1"),
    ({"seed": -1}, r"RunConfig.seed must be an integer >= 0"),
    ({"seed": True}, r"RunConfig.seed must be an integer >= 0"),
    ({"device": "tpu"}, r"RunConfig.device must be one of auto, cpu, cuda"),
    ({"n_classes": 1}, r"RunConfig.n_classes must be None \(all classes\) or an integer >= 2"),
    ({"n_classes": 11}, r"RunConfig.n_classes must be None or an integer in \[2, 10\] for "
                        r"dataset 'digits'"),
    ({"label_noise": 1.0}, r"RunConfig.label_noise must be a fraction in \[0, 1\)"),
    ({"label_noise": -0.01}, r"RunConfig.label_noise must be a fraction in \[0, 1\)"),
    ({"train_size": 0}, r"RunConfig.train_size must be None \(all\) or an integer >= 1"),
    ({"standardize": "yes"}, r"RunConfig.standardize must be True or False"),
    ({"standardize": 1}, r"RunConfig.standardize must be True or False"),
    ({"noise": 0.1}, r"RunConfig.noise must be None for dataset 'digits' \(only generated "
                     r"sets take it: .*moons"),
    ({"dataset": "moons", "noise": -0.1}, r"RunConfig.noise must be None \(dataset default\) "
                                          r"or a number >= 0"),
    ({"dataset": "moons", "n_samples": 9}, r"RunConfig.n_samples must be None \(dataset "
                                           r"default\) or an integer >= 10"),
    ({"n_samples": 100}, r"RunConfig.n_samples must be None for dataset 'digits'"),
    ({"eval_size": 0}, r"RunConfig.eval_size must be an integer >= 1"),
    ({"rule_options": [1]}, r"RunConfig.rule_options must be a dict of option name to value"),
    ({"rule": "bp", "rule_options": {"alpha": 0.1}}, r"RunConfig.rule_options has unknown "
                                                     r"option 'alpha' for rule 'bp'; "
                                                     r"allowed: none"),
]


@pytest.mark.parametrize("changes, pattern", INVALID,
                         ids=[",".join(f"{k}={v!r}" for k, v in c.items()) for c, _ in INVALID])
def test_invalid_values_name_the_field_and_the_allowed_values(changes, pattern):
    with pytest.raises(ValueError, match=pattern):
        RunConfig(**changes)
    with pytest.raises(ValueError, match=pattern):
        RunConfig().replace(**changes)


def test_init_angle_is_refused_by_every_rule_that_does_not_use_it():
    for name in _skip_if_empty(_rules(uses_init_angle=False), "without init_angle"):
        with pytest.raises(ValueError, match=rf"RunConfig.init_angle must be None for rule "
                                             rf"'{name}'"):
            RunConfig(rule=name, init_angle=45.0)
    for name in _rules(uses_init_angle=True):
        assert RunConfig(rule=name, init_angle=45.0).init_angle == 45.0


def test_feedback_sparsity_and_expansion_ratio_follow_the_rule_attributes():
    for name in _rules(uses_feedback_sparsity=False):
        with pytest.raises(ValueError, match=rf"feedback_sparsity must be 0 for rule '{name}'"):
            RunConfig(rule=name, feedback_sparsity=0.5)
    for name in _rules(uses_expansion_ratio=False):
        with pytest.raises(ValueError, match=rf"expansion_ratio must be None for rule '{name}'"):
            RunConfig(rule=name, expansion_ratio=2)
    users = _skip_if_empty(_rules(uses_expansion_ratio=True), "with expansion_ratio")
    for name in users:
        allowed = RULES[name].expansion_ratios
        with pytest.raises(ValueError, match=r"RunConfig.expansion_ratio must be "):
            RunConfig(rule=name, expansion_ratio=0)
        if allowed is not None:
            bad = max(allowed) + 1
            with pytest.raises(ValueError, match=rf"one of {', '.join(map(str, allowed))} for "
                                                 rf"rule '{name}'; got {bad}"):
                RunConfig(rule=name, expansion_ratio=bad)


def test_rule_options_are_checked_against_the_rule():
    with_options = _skip_if_empty([n for n in RULE_NAMES if RULES[n].options],
                                  "with options")
    name = with_options[0]
    known = sorted(RULES[name].options)
    with pytest.raises(ValueError, match=rf"unknown option 'nope' for rule '{name}'; "
                                         rf"allowed: {known[0]}"):
        RunConfig(rule=name, rule_options={"nope": 1})
    with pytest.raises(ValueError, match=rf"RunConfig.rule_options\['{known[0]}'\] must be a "
                                         r"number, bool or string"):
        RunConfig(rule=name, rule_options={known[0]: [1, 2]})


# One strategy of invalid values per field; any valid config with that one field
# changed must be refused with a message naming the field.
INVALID_BY_FIELD = {
    "rule": st.text(min_size=1, max_size=6).filter(lambda s: s not in RULES),
    "dataset": st.text(min_size=1, max_size=6).filter(lambda s: s not in DATASETS),
    "model": st.sampled_from(["rnn", "MLP", ""]),
    "hidden": st.lists(st.integers(-5, 0), min_size=1, max_size=3).map(tuple),
    "channels": st.lists(st.integers(-5, 0), min_size=1, max_size=3).map(tuple),
    "activation": st.sampled_from(["gelu", "sigmoid", "ReLU"]),
    "init_angle": _floats(-1e3, -1e-3) | _floats(180.001, 1e3),
    "feedback_sparsity": _floats(1, 10) | _floats(-10, -1e-6),
    "optimizer": st.sampled_from(["rmsprop", "SGD", ""]),
    "lr": _floats(-10, 0),
    "momentum": _floats(1, 10) | _floats(-10, -1e-6),
    "weight_decay": _floats(-10, -1e-9),
    "batch_size": st.integers(-10**4, 0),
    "epochs": st.integers(-100, 0),
    "seed": st.integers(-10**6, -1),
    "device": st.sampled_from(["tpu", "gpu", "CPU"]),
    "n_classes": st.integers(-5, 1) | st.integers(1001, 2000),
    "label_noise": _floats(1, 10) | _floats(-10, -1e-6),
    "train_size": st.integers(-100, 0),
    "standardize": st.sampled_from([0, 1, "true", None]),
    "noise": _floats(-10, -1e-6),
    "n_samples": st.integers(-100, 9),
    "eval_every": st.integers(-100, 0),
    "eval_size": st.integers(-100, 0),
}


@FAST
@given(valid_configs(), st.data())
def test_any_single_invalid_field_is_refused_by_name(cfg, data):
    name = data.draw(st.sampled_from(sorted(INVALID_BY_FIELD)))
    value = data.draw(INVALID_BY_FIELD[name])
    with pytest.raises(ValueError, match=rf"RunConfig.{name}\b"):
        cfg.replace(**{name: value})


# ----------------------------------------------------------------- resolve
@FAST
@given(valid_configs())
def test_resolve_fills_rule_defaults_and_keeps_given_values(cfg):
    cls = RULES[cfg.rule]
    resolved = cfg.resolve()
    for name in RULE_DEFAULTABLE:
        given_value = getattr(cfg, name)
        default = cls.defaults.get(name, GLOBAL_DEFAULTS[name])
        expected = given_value if given_value is not None else default
        assert getattr(resolved, name) == expected, name
        if name != "expansion_ratio":
            assert getattr(resolved, name) is not None, name
    assert resolved.rule_options == {**cls.options, **cfg.rule_options}
    for name in cls.options:
        assert resolved.rule_option(name) == cfg.rule_option(name)
    assert resolved.resolve() == resolved
    untouched = set(field_names()) - set(RULE_DEFAULTABLE) - {"rule_options"}
    assert all(getattr(resolved, n) == getattr(cfg, n) for n in untouched)


def test_resolve_uses_a_rules_own_defaults():
    resolved = RunConfig(rule="bp").resolve()
    assert resolved.optimizer == RULES["bp"].defaults.get("optimizer", GLOBAL_DEFAULTS["optimizer"])
    assert resolved.lr == RULES["bp"].defaults.get("lr", GLOBAL_DEFAULTS["lr"])
    with_defaults = [n for n in RULE_NAMES if RULES[n].defaults]
    for name in _skip_if_empty(with_defaults, "with its own defaults"):
        cls = RULES[name]
        resolved = RunConfig(rule=name).resolve()
        for key, value in cls.defaults.items():
            assert getattr(resolved, key) == value, (name, key)
        # A user's value beats the rule's default.
        assert RunConfig(rule=name, lr=0.123).resolve().lr == 0.123


# ------------------------------------------------------------ unknown names
def test_unknown_field_names_are_rejected_everywhere():
    with pytest.raises(ValueError, match=r"RunConfig has no field\(s\) learning_rate; "
                                         r"fields: rule, dataset, model"):
        RunConfig.from_dict({"rule": "bp", "learning_rate": 0.1})
    with pytest.raises(ValueError, match=r"RunConfig has no field\(s\) learning_rate"):
        RunConfig.from_json('{"learning_rate": 0.1}')
    with pytest.raises(ValueError, match=r"unknown setting 'learning_rate' in the link; "
                                         r"settings: rule, dataset"):
        RunConfig.from_query("rule=bp&learning_rate=0.1")
    with pytest.raises(ValueError, match=r"RunConfig.from_json: not valid JSON"):
        RunConfig.from_json("{rule: bp")
    with pytest.raises(ValueError, match=r"RunConfig.from_dict needs a dict; got list"):
        RunConfig.from_json("[1, 2]")
    with pytest.raises(ValueError, match=r"RunConfig.lr must be None or a positive number"):
        RunConfig.from_query("lr=-1")
