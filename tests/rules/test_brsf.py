"""brSF (Liao 2016): B_l = |M_l(t)| ⊙ sign(W_l), M_l(t) redrawn at every step."""

import pytest
import torch

from fa_explore.models import xavier_std

from feedback_checks import (
    assert_all_equal,
    assert_sparse_feedback,
    batch,
    bp_grads,
    manual_grads,
    rule_grads,
    sgd_steps,
    tiny,
)


def expected_feedback(rule, model, l):
    return rule.get_buffer(f"M{l}").abs() * torch.sign(model.layers[l].weight.detach())


def test_magnitudes_are_redrawn_every_step_and_feedback_follows():
    model, rule = tiny("brsf", hidden=(60, 50))
    x, y = batch(model)
    draws = []
    for _ in range(40):
        draws.append(rule.M1.clone())
        sgd_steps(rule, model, x, y, steps=1)
        assert not torch.equal(rule.M1, draws[-1])
        for l in range(1, model.n_layers):
            assert torch.equal(rule.effective_feedback(model, l),
                               expected_feedback(rule, model, l))
    stacked = torch.stack(draws)
    # Each draw is Xavier-uniform (std s), independent of the previous one.
    s = xavier_std(rule.M1)
    assert stacked.std().item() == pytest.approx(s, rel=0.02)
    assert stacked.abs().max() <= 3 ** 0.5 * s
    consecutive = torch.corrcoef(torch.stack([stacked[:-1].flatten(), stacked[1:].flatten()]))
    assert abs(consecutive[0, 1].item()) < 0.02


def test_draws_come_from_the_rule_generator():
    sequences = []
    for _ in range(2):
        model, rule = tiny("brsf", seed=5)
        x, y = batch(model)
        seen = []
        for _ in range(3):
            sgd_steps(rule, model, x, y, steps=1)
            seen.append(rule.M1.clone())
        sequences.append(torch.stack(seen))
    assert torch.equal(*sequences)


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_equals_bp_when_weights_match_the_next_magnitudes(kind):
    # The next step uses the stored M: set W = |M| ⊙ sign(W), then B = W.
    model, rule = tiny("brsf", kind)
    x, y = batch(model)
    sgd_steps(rule, model, x, y, steps=2)
    with torch.no_grad():
        for l in range(1, model.n_layers):
            model.layers[l].weight.copy_(expected_feedback(rule, model, l))
    assert_all_equal(rule_grads(rule, model, x, y), bp_grads(model, x, y))


@pytest.mark.parametrize("sparsity", [0.0, 0.5])
def test_backward_uses_the_effective_feedback(sparsity):
    model, rule = tiny("brsf", feedback_sparsity=sparsity)
    x, y = batch(model)
    sgd_steps(rule, model, x, y, steps=3)
    feedbacks = [rule.effective_feedback(model, l) for l in range(model.n_layers)]
    assert_all_equal(rule_grads(rule, model, x, y), manual_grads(model, feedbacks, x, y))


def test_probe_grads_restores_the_magnitudes_and_the_generator():
    model, rule = tiny("brsf")
    x, y = batch(model)
    magnitudes, rng = rule.M1.clone(), rule.generator.get_state()
    feedbacks = [rule.effective_feedback(model, l) for l in range(model.n_layers)]
    probed = rule.probe_grads(model, x, y)
    assert torch.equal(rule.M1, magnitudes)
    assert torch.equal(rule.generator.get_state(), rng)
    expected = manual_grads(model, feedbacks, x, y)[0::2]
    assert_all_equal(probed, expected)


def test_feedback_sparsity_masks_the_feedback():
    p = 0.5
    model, rule = tiny("brsf", hidden=(200, 200), feedback_sparsity=p)
    x, y = batch(model)
    first = rule.effective_feedback(model, 1)
    unmasked = rule.M1.abs() * torch.sign(model.layers[1].weight)
    assert_sparse_feedback(first, unmasked, p)
    sgd_steps(rule, model, x, y, steps=3)
    # The magnitudes changed; the mask did not.
    assert torch.equal(rule.effective_feedback(model, 1) == 0, first == 0)


def test_has_no_conservation_law():
    model, rule = tiny("brsf")
    assert rule.conservation_potential(model, 0) is None
