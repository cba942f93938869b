"""What the dashboard's controls allow, decided from rule and dataset attributes
(fa_explore.app.controls): no widgets, no browser."""

import pytest

from fa_explore import DATASETS, RULES, RunConfig
from fa_explore.app.controls import (
    DEFAULT_CHOICE,
    RULE_DEFAULT_CHOICE,
    change_config,
    clamp_to_bounds,
    config_from_query,
    dataset_available,
    dataset_choices,
    device_choices,
    difference_labels,
    disabled_reasons,
    download_hint,
    dropdown_choices,
    expansion_choices,
    help_text,
    log_exponents,
    model_choices,
    parse_ints,
    parse_number,
    plain_message,
    rules_using,
    setting_state,
    shown_value,
    ui_range,
)
from fa_explore.settings import SETTINGS


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


def test_a_token_in_the_link_is_not_a_setting():
    # Jupyter, Voila --token and JupyterHub/Binder links carry ?token=...
    cfg = RunConfig(rule="dfa", init_angle=None, lr=0.0005)
    back, problem = config_from_query(f"?token=0123abcd&{cfg.to_query()}&voila-theme=dark")
    assert back == cfg and problem == ""
    # Only the known ones: an unknown key is still reported.
    assert "tokens" in config_from_query("?tokens=1")[1]


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


def test_downloadable_datasets_not_yet_cached_are_listed_with_how_to_get_them(monkeypatch,
                                                                              tmp_path):
    monkeypatch.setenv("FA_EXPLORE_DATA", str(tmp_path))  # an empty cache
    options = dict((v, label) for label, v in dataset_choices(RunConfig()))
    assert list(options) == list(DATASETS)  # every set, in registry order
    for name, spec in DATASETS.items():
        assert dataset_available(spec) == (not spec.downloads)
        assert ("not downloaded yet" in options[name]) == spec.downloads, name
        hint = download_hint(name)
        assert bool(hint) == spec.downloads
        if hint:  # how to get it, and no server path
            assert f"load_dataset('{name}')" in hint and str(tmp_path) not in hint


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


# ----------------------------------------------------- controls from the schema

def test_slider_ranges_come_from_the_schema_and_widen_for_an_outside_value():
    lr = SETTINGS["lr"]
    assert ui_range(lr) == (lr.ui_minimum, lr.ui_maximum) == (1e-5, 1.0)
    assert log_exponents(lr) == (-5, 0)
    # A link's lr=10 (allowed: up to 100) widens the slider instead of being clamped.
    assert ui_range(lr, 10.0) == (1e-5, 10.0) and log_exponents(lr, 10.0) == (-5, 1)
    # The batch size moves by powers of two, from its hard minimum to its UI maximum.
    assert log_exponents(SETTINGS["batch_size"]) == (0, 10)
    assert log_exponents(SETTINGS["batch_size"], 4096) == (0, 12)
    assert ui_range(SETTINGS["init_angle"]) == (0, 180)
    assert ui_range(SETTINGS["feedback_sparsity"]) == (0, 0.99)  # 1 is excluded


def test_values_outside_the_hard_bounds_are_clamped_with_a_note():
    assert clamp_to_bounds(SETTINGS["batch_size"], 0) == (
        1, "batch 0 is out of range: using the smallest allowed, 1.")
    value, note = clamp_to_bounds(SETTINGS["hidden"], 5000, "width")
    assert value == 4096 and isinstance(value, int)
    assert note == "width 5,000 is out of range: using the largest allowed, 4,096."
    assert clamp_to_bounds(SETTINGS["seed"], 7) == (7, "")
    # An excluded bound clamps to the declared UI end.
    assert clamp_to_bounds(SETTINGS["lr"], 0.0)[0] == 1e-5
    assert clamp_to_bounds(SETTINGS["label_noise"], 1.0)[0] == 0.9


def test_number_boxes_parse_text_and_empty_means_none():
    n_classes = SETTINGS["n_classes"]
    assert parse_number(n_classes, "") is None and parse_number(n_classes, " 4 ") == 4
    assert parse_number(SETTINGS["train_size"], "1_000") == 1000
    with pytest.raises(ValueError, match="whole number"):
        parse_number(n_classes, "2.5")
    with pytest.raises(ValueError, match="must be a number"):
        parse_number(n_classes, "abc")
    with pytest.raises(ValueError, match="needs a value"):
        parse_number(SETTINGS["seed"], "")
    assert parse_ints(SETTINGS["channels"], "16, 32") == (16, 32)
    assert parse_ints(SETTINGS["channels"], "[8 16]") == (8, 16)
    assert parse_ints(SETTINGS["channels"], "") == ()


def test_dropdowns_offer_the_schema_choices_and_name_the_default():
    cfg = RunConfig(rule="kp")
    options = dropdown_choices(cfg, "optimizer")
    assert options[0] == (f"rule default ({cfg.resolve().optimizer})", DEFAULT_CHOICE)
    assert [v for _, v in options[1:]] == list(SETTINGS["optimizer"].allowed_choices())
    assert [v for _, v in dropdown_choices(cfg, "lr_schedule")] == ["constant", "step",
                                                                    "cosine"]
    assert [v for _, v in dropdown_choices(cfg, "rule")] == list(RULES)
    pfa = dropdown_choices(RunConfig(rule="pfa"), "expansion_ratio")
    assert pfa[0][1] == DEFAULT_CHOICE and 4 in [v for _, v in pfa]
    options = dropdown_choices(RunConfig(rule="dkp"), "feedback_optimizer", option_of="dkp")
    assert [v for _, v in options] == ["shared", "adam"]


def test_where_a_control_shows_follows_the_schema():
    two_d = next(n for n, s in DATASETS.items() if s.kind == "2d")
    assert setting_state(RunConfig(dataset=two_d), "noise") == (True, None)
    assert setting_state(RunConfig(), "noise") == (False, None)  # digits takes no noise
    assert setting_state(RunConfig(), "channels") == (False, None)  # only the CNN has them
    shown, reason = setting_state(RunConfig(rule="bp"), "init_angle")
    assert shown and "bp" in reason
    # A 2-D set's noise slider shows the dataset's own default when it is None.
    assert shown_value(RunConfig(dataset=two_d), "noise") == (
        DATASETS[two_d].option_defaults["noise"])
    assert shown_value(RunConfig(rule="kp"), "lr") == RunConfig(rule="kp").resolve().lr


def test_help_texts_come_from_the_declarations():
    text = help_text(SETTINGS["n_classes"])
    assert SETTINGS["n_classes"].help[1:] in text and "[2, 1000]" in text
    assert "Empty: all classes" in text
    assert "live" in help_text(SETTINGS["lr"])


def test_the_step_schedule_and_its_milestones_come_together():
    cfg, note = change_config(RunConfig(epochs=10), lr_schedule="step")
    assert cfg.lr_milestones == (5,) and "Milestone" in note
    cfg, note = change_config(cfg, lr_schedule="cosine")
    assert cfg.lr_milestones == () and "cleared" in note
    cfg, note = change_config(RunConfig(), lr_milestones=(3,))
    assert cfg.lr_schedule == "step"
