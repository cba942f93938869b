"""Weight init (models.init_weight_ / init_std) against its closed forms, and the
config's weight_init / init_gain reaching the built model."""

import math

import pytest
import torch

from fa_explore import RunConfig, build
from fa_explore.models import fans, init_std, init_weight_


def closed_form_std(shape, kind, gain):
    fan_in, fan_out = fans(shape)
    if kind == "normal":
        return gain / math.sqrt(fan_in)  # N(0, gain²/fan_in)
    return gain * math.sqrt(2.0 / (fan_in + fan_out))  # U(±gain·sqrt(6/(in+out)))


@pytest.mark.parametrize("kind", ["xavier_uniform", "normal"])
@pytest.mark.parametrize("gain", [1.0, 0.3, 2.5])
@pytest.mark.parametrize("shape", [(600, 500), (64, 32, 5, 5), (48, 16, 7)])
def test_std_of_a_large_draw_matches_the_closed_form(kind, gain, shape):
    generator = torch.Generator().manual_seed(0)
    weight = init_weight_(torch.empty(shape), generator, kind, gain)
    expected = closed_form_std(shape, kind, gain)
    assert init_std(shape, kind, gain) == pytest.approx(expected, rel=1e-12)
    assert init_std(weight, kind, gain) == pytest.approx(expected, rel=1e-12)
    assert weight.std().item() == pytest.approx(expected, rel=0.02)
    assert abs(weight.mean().item()) < 0.02 * expected
    if kind == "xavier_uniform":  # bounded at sqrt(3)·std
        assert weight.abs().max().item() <= math.sqrt(3) * expected * (1 + 1e-6)
    else:  # Gaussian tails: about 0.27% beyond 3 std
        beyond = (weight.abs() > 3 * expected).float().mean().item()
        assert 0.0015 < beyond < 0.004


def test_fans_count_the_receptive_field():
    assert fans((10, 4)) == (4, 10)
    assert fans((16, 3, 5, 5)) == (75, 400)
    assert fans((8, 2, 5)) == (10, 40)


def test_unknown_init_names_the_setting_and_the_choices():
    with pytest.raises(ValueError, match="weight_init must be one of xavier_uniform, normal"):
        init_weight_(torch.empty(3, 3), None, "orthogonal")


@pytest.mark.parametrize("kind", ["xavier_uniform", "normal"])
def test_config_init_reaches_every_forward_weight(kind):
    cfg = RunConfig(rule="bp", hidden=(400, 300), weight_init=kind, init_gain=2.0)
    model, _ = build(cfg, input_shape=(500,), n_classes=200, device="cpu")
    for layer in model.layers:
        expected = closed_form_std(tuple(layer.weight.shape), kind, 2.0)
        assert layer.weight.std().item() == pytest.approx(expected, rel=0.03)
        assert torch.count_nonzero(layer.bias) == 0
