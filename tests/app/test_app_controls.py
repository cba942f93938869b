"""What the dashboard's controls allow, decided from rule and dataset attributes
(fa_explore.app.controls): no widgets, no browser."""

import pytest

from fa_explore import DATASETS, RULES, RunConfig
from fa_explore.app.controls import (
    RULE_DEFAULT_CHOICE,
    change_config,
    config_from_query,
    dataset_available,
    dataset_choices,
    device_choices,
    difference_labels,
    disabled_reasons,
    expansion_choices,
    model_choices,
    plain_message,
    rules_using,
)


@pytest.mark.parametrize("name", list(RULES))
def test_disabled_reasons_follow_the_rule_attributes(name):
    rule = RULES[name]
    reasons = disabled_reasons(RunConfig(rule=name, model=rule.models[0]))
    assert (reasons["init_angle"] is None) == rule.uses_init_angle
    assert (reasons["feedback_sparsity"] is None) == rule.uses_feedback_sparsity
    assert (reasons["expansion_ratio"] is None) == rule.uses_expansion_ratio
    assert (reasons["model"] is None) == (len(rule.models) > 1)
    for key, reason in reasons.items():
        if reason is not None:  # a reason names the rule, in words
            assert name in reason and len(reason) > 20, key


def test_rules_using_a_setting_are_the_ones_that_declare_it():
    # Literal lists, in registry order (the dashboard lists them in the hints).
    assert rules_using("init_angle") == ["fa", "kp", "wm"]
    assert rules_using("feedback_sparsity") == ["fa", "usf", "frsf", "brsf", "kp", "wm", "dfa",
                                                "dkp", "pfa", "pfa_o", "fdfa"]
    assert rules_using("expansion_ratio") == ["pfa", "pfa_o"]


def test_model_choices_are_the_models_the_rule_supports(monkeypatch):
    assert all(model_choices(RunConfig(rule=name)) == ["mlp", "cnn"] for name in RULES)

    class MlpOnly(RULES["fa"]):
        name = "mlp_only"
        models = ("mlp",)

    monkeypatch.setitem(RULES, "mlp_only", MlpOnly)
    assert model_choices(RunConfig(rule="mlp_only")) == ["mlp"]


@pytest.mark.parametrize("cfg, expected", [
    # The rule default first (value RULE_DEFAULT_CHOICE), then the ratios on offer.
    (RunConfig(rule="pfa"), [("rule default (10)", RULE_DEFAULT_CHOICE), ("1", 1), ("2", 2),
                             ("4", 4), ("8", 8), ("16", 16)]),
    (RunConfig(rule="pfa_o"), [("rule default (1)", RULE_DEFAULT_CHOICE), ("1", 1)]),
    # A ratio from a link that is not on offer is added, in order.
    (RunConfig(rule="pfa", expansion_ratio=7), [("rule default (10)", RULE_DEFAULT_CHOICE),
                                                ("1", 1), ("2", 2), ("4", 4), ("7", 7),
                                                ("8", 8), ("16", 16)]),
    (RunConfig(rule="fa"), [("rule default", RULE_DEFAULT_CHOICE), ("1", 1), ("2", 2),
                            ("4", 4), ("8", 8), ("16", 16)]),
], ids=["pfa", "pfa_o", "pfa-7", "fa"])
def test_expansion_choices(cfg, expected):
    assert expansion_choices(cfg) == expected


def test_switching_rule_clears_the_settings_the_new_rule_does_not_use():
    angle_rule = next(n for n, c in RULES.items() if c.uses_init_angle and c.uses_feedback_sparsity)
    plain_rule = next(n for n, c in RULES.items()
                      if not c.uses_init_angle and not c.uses_feedback_sparsity)
    cfg = RunConfig(rule=angle_rule, init_angle=30.0, feedback_sparsity=0.5)
    new, note = change_config(cfg, rule=plain_rule)
    assert new.rule == plain_rule and new.init_angle is None and new.feedback_sparsity == 0
    assert "initial angle" in note and "feedback sparsity" in note
    # Settings the new rule uses are kept, and nothing is said.
    other = next(n for n, c in RULES.items()
                 if c.uses_init_angle and c.uses_feedback_sparsity and n != angle_rule)
    kept, note = change_config(cfg, rule=other)
    assert kept.init_angle == 30.0 and kept.feedback_sparsity == 0.5 and note == ""


def test_impossible_combination_raises_the_config_message():
    two_d = next(n for n, s in DATASETS.items() if s.kind == "2d")
    cfg = RunConfig(dataset=two_d)
    with pytest.raises(ValueError, match="mlp"):
        change_config(cfg, model="cnn")
    with pytest.raises(ValueError, match="rule must be one of"):
        change_config(cfg, rule="no_such_rule")


def test_plain_message_drops_class_prefixes_and_tracebacks():
    text = plain_message(ValueError("RunConfig.lr must be None or a positive number; got -1"
                                    "\nmore detail"))
    assert text == "lr must be None or a positive number; got -1"


def test_config_from_query_round_trips_and_ignores_voila_keys():
    cfg = RunConfig(rule="bp", hidden=(16, 16), lr=0.01, seed=3)
    back, problem = config_from_query("?" + cfg.to_query() + "&theme=dark&template=lab")
    assert back == cfg and problem == ""
    assert config_from_query("") == (RunConfig(), "")


@pytest.mark.parametrize("query, word", [("rule=no_such_rule", "rule"),
                                         ("colour=red", "colour"),
                                         ("lr=-1", "lr"),
                                         ("rule=bp&init_angle=30", "init_angle")])
def test_a_bad_link_gives_defaults_and_says_what_is_wrong(query, word):
    cfg, problem = config_from_query(query)
    # Only the valid part of the link is kept (here: rule=bp in the last case).
    assert cfg == (RunConfig(rule="bp") if query.startswith("rule=bp") else RunConfig())
    assert "cannot be used" in problem and word in problem.lower()
    assert "Traceback" not in problem


def test_a_bad_link_keeps_its_valid_fields_and_lists_every_invalid_one():
    cfg, problem = config_from_query("?rule=nope&lr=10&hidden=abc&width=3&seed=4")
    assert (cfg.rule, cfg.lr, cfg.hidden, cfg.seed) == ("fa", 10.0, (128, 128), 4)
    for word in ("rule must be one of", "hidden must be", "unknown setting 'width'"):
        assert word in problem, word


def test_downloadable_datasets_are_listed_only_when_available(monkeypatch, tmp_path):
    monkeypatch.setenv("FA_EXPLORE_DATA", str(tmp_path))  # an empty cache
    names = [v for _, v in dataset_choices(RunConfig())]
    for name, spec in DATASETS.items():
        assert (name in names) == (not spec.downloads), name
        assert dataset_available(spec) == (not spec.downloads)
    downloadable = [n for n, s in DATASETS.items() if s.downloads]
    if downloadable:  # a link may still ask for one: it is listed, marked
        options = dataset_choices(RunConfig(dataset=downloadable[0]))
        assert (f"{downloadable[0]} (not downloaded yet)", downloadable[0]) in options


def test_device_choices_offer_cuda_only_when_present(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert [v for _, v in device_choices()] == ["auto", "cpu"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: "Fake GPU")
    assert [v for _, v in device_choices()] == ["auto", "cpu", "cuda"]


def test_difference_labels_name_only_what_differs():
    configs = [RunConfig(rule="fa"), RunConfig(rule="bp"), RunConfig(rule="fa", lr=0.01)]
    labels = difference_labels(configs)
    default_lr = RunConfig(rule="fa").resolve().lr
    assert labels[0] == f"rule=fa, lr={default_lr:g}"
    assert labels[1].startswith("rule=bp") and labels[2] == "rule=fa, lr=0.01"
    # Hyperparameters every config leaves to its rule follow the rule: not named.
    kp_defaults = RULES["kp"].defaults
    assert kp_defaults  # kp sets its own optimizer and learning rate
    assert difference_labels([RunConfig(rule="kp"), RunConfig(rule="bp")]) == ["rule=kp",
                                                                               "rule=bp"]
    # An explicit value equal to the rule default is no difference.
    same = difference_labels([RunConfig(), RunConfig(lr=default_lr)])
    assert same == ["run 1", "run 2"]
    assert difference_labels([]) == []
