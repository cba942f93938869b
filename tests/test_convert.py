"""fa_explore.convert: the layer-local rules on a user's own module (a small ResNet
block with batch norm), its names, its function and its gradients."""

from __future__ import annotations

import copy
import io
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fa_explore import RULES, convert
from fa_explore.convert import ConvertedNet, layer_rules
from fa_explore.metrics import ConservationTracker, layer_metrics
from fa_explore.training import make_optimizers


class Block(nn.Module):
    """stem conv -> BN -> ReLU, then conv -> BN -> ReLU -> conv -> BN plus the skip,
    ReLU, global average pool, flatten, Linear."""

    def __init__(self, seed: int = 0, width: int = 4, n_classes: int = 3):
        super().__init__()
        torch.manual_seed(seed)
        self.stem = nn.Conv2d(3, width, 3, padding=1)
        self.bn0 = nn.BatchNorm2d(width)
        self.conv1 = nn.Conv2d(width, width, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.fc = nn.Linear(width, n_classes)
        with torch.no_grad():  # affine BN parameters away from 1 / 0
            for bn in (self.bn0, self.bn1, self.bn2):
                bn.weight.uniform_(0.5, 1.5)
                bn.bias.uniform_(-0.2, 0.2)
        self.double()

    def forward(self, x):
        h = F.relu(self.bn0(self.stem(x)))
        r = F.relu(self.bn1(self.conv1(h)))
        r = self.bn2(self.conv2(r))
        h = F.relu(h + r)
        return self.fc(F.adaptive_avg_pool2d(h, 1).flatten(1))


def batch(n=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 8, 8, generator=g, dtype=torch.float64)
    return x, torch.arange(n) % 3


def true_param_grads(module, x, y):
    module.zero_grad(set_to_none=True)
    F.cross_entropy(module(x), y).backward()
    return {n: p.grad.clone() for n, p in module.named_parameters()}


def rule_param_grads(net, rule, x, y):
    net.zero_grad(set_to_none=True)
    rule.compute_grads(net, x, y)
    return {n: p.grad.clone() for n, p in net.named_parameters()}


def test_layers_in_execution_order_and_names_kept():
    net, _ = convert(Block(), "fa", example_input=batch()[0])
    assert isinstance(net, ConvertedNet) and net.n_layers == 4
    assert net.layer_names == ("stem", "conv1", "conv2", "fc")
    assert net.layers[3] is net.module.fc and isinstance(net.layers[0], nn.Conv2d)
    assert net.input_shape == (3, 8, 8)
    assert repr(net.module) == repr(Block())  # printed as before


@pytest.mark.parametrize("rule", ["bp", "fa"])
def test_gradients_equal_autograd_when_feedback_is_w(rule):
    x, y = batch()
    reference = Block()
    expected = true_param_grads(reference, x, y)
    net, fa_rule = convert(Block(), rule, example_input=x)
    with torch.no_grad():
        for l in range(1, net.n_layers):
            if rule == "fa":
                fa_rule.stored_feedback(l).copy_(net.layers[l].weight)
    got = rule_param_grads(net, fa_rule, x, y)
    assert got.keys() == expected.keys()  # convs, BN affine, linear
    for name in expected:
        assert torch.allclose(got[name], expected[name], atol=1e-12, rtol=0), name


def test_fa_init_angle_zero_is_backprop():
    x, y = batch()
    expected = true_param_grads(Block(), x, y)
    net, rule = convert(Block(), "fa", example_input=x, init_angle=0)
    got = rule_param_grads(net, rule, x, y)
    for name in expected:
        assert torch.allclose(got[name], expected[name], atol=1e-10, rtol=1e-8), name


def test_random_fa_differs_from_bp_except_at_the_last_layer():
    x, y = batch()
    expected = true_param_grads(Block(), x, y)
    net, rule = convert(Block(), "fa", example_input=x)
    got = rule_param_grads(net, rule, x, y)
    for name in ("stem.weight", "conv1.weight", "conv2.weight", "bn2.weight"):
        assert not torch.allclose(got[name], expected[name], atol=1e-6), name
    assert torch.allclose(got["fc.weight"], expected["fc.weight"], atol=1e-12, rtol=0)
    row = layer_metrics(net, rule, x, y, ConservationTracker(net, rule))
    for n in (1, 2, 3):
        assert row[f"grad_angle/{n}"] > 1.0
        assert math.isnan(row[f"conservation/{n}"])  # not a chain: undefined
    assert row["grad_angle/4"] < 1e-5
    assert math.isnan(row["weight_angle/1"]) and 0 < row["weight_angle/2"] < 180


def test_state_dict_keys_and_round_trip():
    x, _ = batch()
    original = Block()
    keys = list(original.state_dict())
    net, _ = convert(Block(seed=5), "kp", example_input=x)
    assert list(net.state_dict()) == keys
    assert [n for n, _ in net.named_parameters()] == [n for n, _ in original.named_parameters()]
    assert [n for n, _ in net.named_buffers()] == [n for n, _ in original.named_buffers()]
    with torch.no_grad():
        net.layers[0].weight.add_(0.1)
    out = net(x)
    plain = Block(seed=9)  # a fresh, unconverted module
    plain.load_state_dict(net.state_dict())
    assert torch.equal(plain(x), out)
    again, _ = convert(Block(seed=11), "fa", example_input=x)
    again.load_state_dict(plain.state_dict())
    assert torch.equal(again(x), out)
    # torch.save of the state dict, and a converted net inside another module
    buffer = io.BytesIO()
    torch.save(net.state_dict(), buffer)
    buffer.seek(0)
    Block(seed=3).load_state_dict(torch.load(buffer))
    outer = nn.Sequential(net)
    assert list(outer.state_dict()) == [f"0.{k}" for k in keys]
    outer.load_state_dict(nn.Sequential(plain).state_dict())


def test_output_is_the_original_function_and_conversion_changes_nothing():
    x, _ = batch()
    module = Block()
    module.train()
    reference = copy.deepcopy(module)
    rng = torch.get_rng_state()
    net, _ = convert(module, "pfa", example_input=x)
    assert torch.equal(torch.get_rng_state(), rng)
    pairs = zip(reference.state_dict().items(), module.state_dict().values(), strict=True)
    for (name, a), b in pairs:
        assert torch.equal(a, b), name  # the traced forward left BN statistics alone
    assert torch.equal(net(x), reference(x))
    assert torch.equal(module(x), reference(x))


def test_deepcopy_and_pickle_give_independent_working_copies():
    x, y = batch()
    net, rule = convert(Block(), "fa", example_input=x)
    twin = copy.deepcopy(net)
    assert torch.equal(twin(x), net(x))
    assert twin.layers[0] is twin.module.stem and twin.layers[0] is not net.layers[0]
    before = net.layers[1].weight.clone()
    rule.compute_grads(twin, x, y)
    with torch.no_grad():
        twin.layers[1].weight.sub_(twin.layers[1].weight.grad)
    assert torch.equal(net.layers[1].weight, before) and net.layers[1].weight.grad is None
    buffer = io.BytesIO()
    torch.save(net, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert torch.equal(loaded(x), net(x))
    assert rule_param_grads(loaded, rule, x, y).keys() == dict(net.named_parameters()).keys()


@pytest.mark.parametrize("rule", ["kp", "usf", "pfa"])
def test_rules_train_the_block(rule):
    x, y = batch(n=12, seed=2)
    net, learner = convert(Block(), rule, example_input=x, optimizer="sgd", lr=0.2,
                           momentum=0.9, weight_decay=0.0)
    optimizers = make_optimizers(learner.cfg, net, learner)
    learner.on_epoch_start(0, optimizers)
    losses = []
    for _ in range(15):
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        losses.append(float(learner.compute_grads(net, x, y)))
        for opt in optimizers:
            opt.step()
    assert losses[-1] < 0.8 * losses[0]
    row = layer_metrics(net, learner, x, y, None)
    for n in range(1, net.n_layers + 1):
        assert math.isfinite(row[f"grad_angle/{n}"])
        if n > 1:
            assert math.isfinite(row[f"weight_angle/{n}"])


@pytest.mark.parametrize("name", list(RULES))
def test_every_registered_rule_converts_or_is_refused(name):
    x, y = batch()
    cls = RULES[name]
    if cls.feedback_kind != "layer":
        with pytest.raises(ValueError, match=rf"rule {name!r}.*{', '.join(layer_rules())}"):
            convert(Block(), name, example_input=x)
        return
    net, rule = convert(Block(), name, example_input=x)
    grads = rule_param_grads(net, rule, x, y)
    assert grads.keys() == dict(net.named_parameters()).keys()
    assert all(torch.isfinite(g).all() for g in grads.values())


def test_direct_and_forward_gradient_rules_are_refused():
    assert {"dfa", "fg_a"}.isdisjoint(layer_rules())
    for name in ("dfa", "fg_a"):
        with pytest.raises(ValueError, match=f"rule '{name}'.*fa, usf"):
            convert(Block(), name, example_input=batch()[0])


def test_weight_sharing_is_refused():
    shared = nn.Linear(4, 4).double()
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 4), shared, nn.ReLU(), shared,
                          nn.Linear(4, 2)).double()
    with pytest.raises(ValueError, match=r"'2' \(2 times\).*weight sharing"):
        convert(model, "fa", example_input=torch.randn(2, 3, 2, 2, dtype=torch.float64))


def test_bad_settings_and_layers_are_refused_and_unrouted_layers_warned():
    x = batch()[0]
    with pytest.raises(ValueError, match="'hidden' is not a setting of convert"):
        convert(Block(), "fa", example_input=x, hidden=(8,))
    with pytest.raises(ValueError, match="must be one of"):
        convert(Block(), "nope", example_input=x)
    same = nn.Sequential(nn.Conv2d(3, 2, 3, padding="same"), nn.Flatten(), nn.Linear(128, 2))
    with pytest.raises(ValueError, match="padding='same'"):
        convert(same.double(), "fa", example_input=x)
    net, _ = convert(Block(), "fa", example_input=x)
    with pytest.raises(ValueError, match="already converted"):
        convert(net.module, "fa", example_input=x)

    class Extra(Block):
        def __init__(self):
            super().__init__()
            self.unused = nn.Linear(2, 2).double()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        net, _ = convert(Extra(), "fa", example_input=x)
    assert net.n_layers == 4 and any("unused" in str(w.message) for w in caught)


def test_conv1d_and_restore():
    model = nn.Sequential(nn.Conv1d(2, 3, 3, padding=1), nn.ReLU(), nn.Flatten(),
                          nn.Linear(15, 4)).double()
    x, y = torch.randn(5, 2, 5, dtype=torch.float64), torch.tensor([0, 1, 2, 3, 0])
    expected = true_param_grads(copy.deepcopy(model), x, y)
    net, rule = convert(model, "bp", example_input=x)
    got = rule_param_grads(net, rule, x, y)
    assert all(torch.allclose(got[k], expected[k], atol=1e-12, rtol=0) for k in expected)
    plain = net.restore()
    assert plain is model and type(model[0]) is nn.Conv1d and not hasattr(model[0], "_fa_router")


def test_names_resolve_as_paths_so_the_loss_landscape_works():
    from fa_explore.analysis.landscape import loss_surface, trajectory_pca
    from fa_explore.training import Trajectory

    x, y = batch()
    net, rule = convert(Block(), "fa", example_input=x)
    assert net.fc is net.module.fc and net.get_submodule("bn1") is net.module.bn1
    trajectory = Trajectory(sum(p.numel() for p in net.parameters()))
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    for step in range(3):
        trajectory.record(step, net)
        optimizer.zero_grad()
        rule.compute_grads(net, x, y)
        optimizer.step()
    trajectory.record(3, net)
    surface = loss_surface(net, x, y, trajectory_pca(trajectory.matrix()), resolution=3)
    assert surface.loss.shape == (3, 3) and torch.isfinite(torch.as_tensor(surface.loss)).all()
