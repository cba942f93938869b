"""Batched ensembles: :func:`train_many` trains many configs at once.

Configs that share an architecture (an MLP of the same widths and activation, the
same data, batch size, epochs, evaluation schedule and optimizer kind) and whose
rules are ``batchable`` (:class:`~fa_explore.rules.base.Rule`: bp, fa and its
initial-alignment variants, usf, frsf, brsf) train as ONE model whose weights are
stacked along a leading member axis: every layer is one batched matrix product
(``torch.baddbmm``) for all members, forward and backward, and the optimizer
updates all members with one set of tensor operations. Members may differ in
seed, rule, init angle, feedback sparsity and gain, initialisation, learning
rate, momentum, weight decay, schedule, targets and divergence factor.

Each member is still an ordinary :class:`~fa_explore.training.Run`: its model and
rule are built by :func:`~fa_explore.training.build` from its own config (so
initial weights and feedback draws are the ones a single run gets), its batch
order comes from its own generator, and while training its model's parameters
are views of the stacked tensors, so the rule computes its feedback from them
as it always does. The history rows have the same columns and, within float
tolerance, the same values as :func:`~fa_explore.training.train` gives each
config alone; the metrics are computed batched too (one forward for every
member's evaluation, one backward each for the rules' and the true probe
gradients). A member that diverges or reaches its target ends alone: its
weights are frozen while the others go on.

Every other config (another model or rule kind, a CNN) trains on its own with
:func:`~fa_explore.training.train_iter`.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .config import RunConfig
from .data import Dataset, dataset_from_config, dataset_options
from .metrics import ConservationTracker
from .models import MLP
from .rules import RULES
from .threads import apply_threads
from .training import (
    PROBE_BATCH,
    Run,
    Snapshot,
    _fixed_subset,
    build,
    divergence_message,
    eval_interval,
    hessian_row,
    lr_factor_at,
    resolve_device,
    target_message,
    train_iter,
)

ADAM_BETAS = (0.9, 0.999)  # torch.optim.Adam's defaults, which single runs use
ADAM_EPS = 1e-8
EVAL_CHUNK = 2048  # examples per member in one batched evaluation forward


def _to_host(tensor: torch.Tensor) -> torch.Tensor:
    """The one way values leave the device: at an evaluation, never in a step."""
    return tensor.cpu()


class _StackedFeedbackLinear(torch.autograd.Function):
    """``h @ Wᵀ + b`` for every member at once (``h``: ``(E, n, in)``, ``W``:
    ``(E, out, in)``); the backward sends the error through ``feedback`` (``(E, out,
    in)``; ``W`` itself for backprop) and gives ``W`` the local update ``δᵀ h``."""

    @staticmethod
    def forward(ctx, h, weight, bias, feedback):
        ctx.save_for_backward(h, feedback)
        return torch.baddbmm(bias.unsqueeze(1), h, weight.transpose(1, 2))

    @staticmethod
    def backward(ctx, grad_out):
        h, feedback = ctx.saved_tensors
        grad_h = torch.bmm(grad_out, feedback) if ctx.needs_input_grad[0] else None
        grad_w = torch.bmm(grad_out.transpose(1, 2), h)
        return grad_h, grad_w, grad_out.sum(1), None


def stacked_forward(weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor],
                    activation: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                    feedbacks: Sequence[torch.Tensor | None] | None = None) -> torch.Tensor:
    """Logits ``(E, n, classes)`` of the stacked MLP on ``x`` (``(E, n, in)``).

    With ``feedbacks`` (one ``(E, out, in)`` tensor per layer, None for the first)
    the backward sends layer ``l``'s error through ``feedbacks[l]``; without, it is
    the plain forward (exact autograd)."""
    h = x
    last = len(weights) - 1
    for index, (weight, bias) in enumerate(zip(weights, biases, strict=True)):
        if feedbacks is None:
            h = torch.baddbmm(bias.unsqueeze(1), h, weight.transpose(1, 2))
        else:
            # The first layer's input needs no gradient, so its feedback is unused.
            feedback = feedbacks[index] if index > 0 else weight.detach()
            h = _StackedFeedbackLinear.apply(h, weight, bias, feedback)
        if index < last:
            h = activation(h)
    return h


def member_losses(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Each member's mean cross-entropy: ``(E,)`` from logits ``(E, n, C)``, ``y (E, n)``."""
    members, n, classes = logits.shape
    return F.cross_entropy(logits.reshape(members * n, classes), y.reshape(-1),
                           reduction="none").view(members, n).mean(1)


def _angles(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Degrees between ``a[e]`` and ``b[e]`` as flat vectors, per member (NaN if
    one is zero), in float64 as :func:`~fa_explore.metrics.angle_between`."""
    a, b = a.flatten(1).double(), b.flatten(1).double()
    na, nb = a.norm(dim=1), b.norm(dim=1)
    cos = torch.clamp((a * b).sum(1) / (na * nb), -1.0, 1.0)
    angles = torch.rad2deg(torch.acos(cos))
    return torch.where((na == 0) | (nb == 0), torch.nan, angles)


class _StackedOptimizer:
    """SGD (momentum, weight decay) or Adam (weight decay as ``torch.optim.Adam``:
    added to the gradient) over every member's parameters at once, following
    ``torch.optim``'s update formulas, with per-member learning rate, momentum and
    weight decay (``(E,)`` tensors). The parameters are views of one ``(E, P)``
    tensor ``flat``, so a step is a handful of operations on it whatever the depth.
    ``active`` (bool per member) leaves ended members untouched."""

    def __init__(self, kind: str, flat: torch.Tensor, params: Sequence[torch.Tensor],
                 momentum: torch.Tensor, weight_decay: torch.Tensor):
        if kind not in ("sgd", "adam"):
            raise ValueError(f"optimizer must be sgd or adam; got {kind!r}")
        self.kind, self.flat, self.params = kind, flat, list(params)
        self.momentum, self.weight_decay = momentum[:, None], weight_decay[:, None]
        self.state: dict[str, torch.Tensor] = {}
        self.steps = 0

    @torch.no_grad()
    def step(self, lr: torch.Tensor, active: torch.Tensor) -> None:
        self.steps += 1
        flat, state = self.flat, self.state
        grad = torch.cat([p.grad.flatten(1) for p in self.params], 1)
        for p in self.params:
            p.grad = None
        grad.add_(self.weight_decay * flat)
        if self.kind == "sgd":
            buf = state.get("momentum")
            if buf is None:
                buf = state["momentum"] = grad
            else:
                buf.mul_(self.momentum).add_(grad)
            update = lr[:, None] * buf
        else:
            beta1, beta2 = ADAM_BETAS
            if not state:
                state["m"], state["v"] = torch.zeros_like(flat), torch.zeros_like(flat)
            m, v = state["m"], state["v"]
            m.lerp_(grad, 1 - beta1)
            v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            bias1 = 1 - beta1 ** self.steps
            bias2_sqrt = math.sqrt(1 - beta2 ** self.steps)
            denom = v.sqrt().div_(bias2_sqrt).add_(ADAM_EPS)
            update = (lr[:, None] / bias1) * m / denom
        flat.copy_(torch.where(active[:, None], flat - update, flat))


@dataclass
class _Member:
    index: int  # position in train_many's configs
    config: RunConfig
    run: Run
    tracker: ConservationTracker
    shuffle: torch.Generator
    train_eval: torch.Tensor
    test_eval: torch.Tensor
    pending_losses: list[torch.Tensor] = field(default_factory=list)


def _group_key(cfg: RunConfig, data: Dataset, device: torch.device) -> tuple | None:
    """What members of one batched ensemble share, or None when ``cfg`` trains alone."""
    if cfg.model != "mlp" or not RULES[cfg.rule].batchable:
        return None
    return (id(data), tuple(cfg.hidden), cfg.activation, cfg.batch_size, cfg.epochs,
            cfg.eval_every, cfg.eval_size, cfg.optimizer, str(device), cfg.trajectory_every,
            cfg.hessian_every, cfg.threads)


def _data_key(cfg: RunConfig) -> tuple:
    return (cfg.dataset, tuple(sorted(dataset_options(cfg).items())))


def _same_data(a: Dataset, b: Dataset) -> bool:
    return all(torch.equal(getattr(a, name), getattr(b, name))
               for name in ("x_train", "y_train", "x_test", "y_test"))


def _resolved(cfg: RunConfig, n_train: int) -> RunConfig:
    """``cfg`` with the rule's defaults and the evaluation interval filled in, as
    :func:`~fa_explore.training.train_iter` resolves them."""
    cfg = cfg.resolve()
    steps = math.ceil(n_train / cfg.batch_size) * cfg.epochs
    if cfg.eval_every is None:
        cfg = cfg.replace(eval_every=eval_interval(cfg, steps))
    return cfg


@dataclass(frozen=True)
class EnsemblePlan:
    """How :func:`train_many` trains a list of configs: ``groups`` (positions of
    the configs that train together as one batched ensemble, each list in input
    order), ``alone`` (positions of those that train one by one) and ``data``
    (each config's dataset, loaded once per distinct dataset)."""

    groups: tuple[tuple[int, ...], ...]
    alone: tuple[int, ...]
    data: tuple[Dataset, ...]


def plan_ensembles(configs: Sequence[RunConfig], data: Dataset | None = None) -> EnsemblePlan:
    """Group ``configs`` into batched ensembles (see the module docstring), loading
    each distinct dataset once (``data``, when given, is every config's)."""
    configs = list(configs)
    for index, cfg in enumerate(configs):
        if not isinstance(cfg, RunConfig):
            raise ValueError(f"train_many configs[{index}] must be a RunConfig; got "
                             f"{type(cfg).__name__}")
    # key -> (the tensors shared with equal data, this key's own Dataset)
    datasets: dict[tuple, tuple[Dataset, Dataset]] = {}
    groups: dict[tuple, list[int]] = {}
    alone: list[int] = []
    member_data: list[Dataset] = []
    for index, cfg in enumerate(configs):
        resolved = cfg.resolve()
        if data is not None:
            shared = own = data
        else:
            key = _data_key(resolved)
            if key not in datasets:
                loaded = dataset_from_config(resolved)
                # Configs whose data differ only in a seed that nothing random used
                # (digits without subsampling) share one dataset and one ensemble.
                same = next((d for d, _ in datasets.values() if _same_data(d, loaded)), None)
                # Its own options on the shared tensors: train_iter checks them
                # against the config (check_dataset) when the member trains alone.
                datasets[key] = (loaded, loaded) if same is None else (
                    same, dataclasses.replace(same, options=loaded.options))
            shared, own = datasets[key]
        member_data.append(own)
        resolved = _resolved(resolved, len(shared.y_train))
        group = _group_key(resolved, shared, resolve_device(resolved.device))
        if group is None:
            alone.append(index)
        else:
            groups.setdefault(group, []).append(index)
    return EnsemblePlan(tuple(tuple(g) for g in groups.values()), tuple(alone),
                        tuple(member_data))


def train_many_iter(configs: Sequence[RunConfig], data: Dataset | None = None,
                    should_stop: Callable[[], bool] | None = None
                    ) -> Iterator[list[Snapshot | None]]:
    """Train every config, yielding after each evaluation the newest
    :class:`~fa_explore.training.Snapshot` of every config: with the row just
    recorded for those evaluated at this point, ``row`` None for the others, and
    None for a config that has not started. Batchable configs sharing an
    architecture train together (:func:`plan_ensembles`); the others one after
    another. ``data`` is used by every config instead of loading its dataset.
    ``should_stop`` is called before every step; True stops every run still
    going (status ``stopped``)."""
    configs = list(configs)
    plan = plan_ensembles(configs, data)
    latest: list[Snapshot | None] = [None] * len(configs)

    def quiet(snapshot: Snapshot) -> Snapshot:  # the same run, no new row
        return Snapshot(snapshot.run, None, snapshot.step, snapshot.total_steps,
                        snapshot.status)

    for indices in plan.groups:
        for snapshots in _train_group([configs[i] for i in indices], plan.data[indices[0]],
                                      should_stop):
            latest = [s if s is None else quiet(s) for s in latest]
            for i, snapshot in zip(indices, snapshots, strict=True):
                latest[i] = snapshot
            yield list(latest)
    for i in plan.alone:
        for snapshot in train_iter(configs[i], plan.data[i], should_stop):
            latest = [s if s is None else quiet(s) for s in latest]
            latest[i] = snapshot
            yield list(latest)


def train_many(configs: Sequence[RunConfig], data: Dataset | None = None,
               progress: bool = False) -> list[Run]:
    """Train every config and return their runs, in order: the same runs (within
    float tolerance) as ``[train(c) for c in configs]``, with compatible configs
    trained as one batched ensemble (see the module docstring). ``progress``
    shows a tqdm bar of evaluations."""
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=None, unit="eval", desc=f"{len(configs)} runs")
    if not configs:
        return []
    snapshots: list[Snapshot | None] = [None] * len(configs)
    try:
        for latest in train_many_iter(configs, data):
            snapshots = latest
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return [s.run for s in snapshots]


def _train_group(configs: Sequence[RunConfig], data: Dataset,
                 should_stop: Callable[[], bool] | None) -> Iterator[list[Snapshot]]:
    """Train one batched ensemble, yielding every member's snapshot at each evaluation."""
    first = configs[0].resolve()
    device = resolve_device(first.device)
    # The thread policy, as train_iter applies it (the first member's setting).
    threads = apply_threads(first.threads) if device.type == "cpu" else None
    x_train = data.x_train.to(device).flatten(1)
    y_train = data.y_train.to(device)
    x_test, y_test = data.x_test.to(device).flatten(1), data.y_test.to(device)
    n_train = len(y_train)
    steps_per_epoch = math.ceil(n_train / first.batch_size)
    total_steps = steps_per_epoch * first.epochs

    members: list[_Member] = []
    for index, cfg in enumerate(configs):
        cfg = _resolved(cfg, n_train)
        model, rule = build(cfg, data.input_shape, data.n_classes, device)
        run = Run(cfg, model, rule, data)
        run.total_steps = total_steps
        run.optimizers, run.schedulers = [], []
        run.threads = threads
        data_seed = cfg.seed if cfg.data_seed is None else cfg.data_seed
        subset_gen = torch.Generator().manual_seed(data_seed + 3)
        train_eval = _fixed_subset(n_train, cfg.eval_size, subset_gen).to(device)
        test_eval = _fixed_subset(len(y_test), cfg.eval_size, subset_gen).to(device)
        members.append(_Member(index, cfg, run, ConservationTracker(model, rule),
                               torch.Generator().manual_seed(cfg.seed + 2),
                               train_eval, test_eval))
    n_members = len(members)
    models = [m.run.model for m in members]
    rules = [m.run.rule for m in members]
    if not all(isinstance(model, MLP) for model in models) or any(
            p.requires_grad for rule in rules for p in rule.parameters()):
        raise ValueError("train_many batches MLPs whose rules learn no parameters of "
                         "their own (Rule.batchable)")
    n_layers = models[0].n_layers
    activation = models[0].activation
    # The stacked parameters; each member's parameters become views of its slice, so
    # its rule reads the current weights and the metrics see them.
    # All members' parameters in one (E, P) tensor; each layer's stacked weight and
    # bias are views of it (autograd leaves), and each member's parameters are views
    # of its slice, so its rule reads the current weights and the metrics see them.
    pieces = [t for l in range(n_layers) for t in (
        torch.stack([model.layers[l].weight.detach() for model in models]),
        torch.stack([model.layers[l].bias.detach() for model in models]))]
    flat = torch.cat([t.flatten(1) for t in pieces], 1)
    views, offset = [], 0
    for t in pieces:
        size = t[0].numel()
        views.append(flat[:, offset:offset + size].view(t.shape).requires_grad_())
        offset += size
    weights, biases = views[0::2], views[1::2]
    for e, model in enumerate(models):
        for l, layer in enumerate(model.layers):
            layer.weight.data = weights[l].data[e]
            layer.bias.data = biases[l].data[e]

    def per_member(values) -> torch.Tensor:
        return torch.tensor(values, dtype=weights[0].dtype, device=device)

    cfgs = [m.config for m in members]
    optimizer = _StackedOptimizer(first.optimizer, flat, views,
                                  per_member([c.momentum for c in cfgs]),
                                  per_member([c.weight_decay for c in cfgs]))
    base_lr = per_member([c.lr for c in cfgs])
    scheduled = any(c.lr_schedule != "constant" for c in cfgs)
    active = torch.ones(n_members, dtype=torch.bool, device=device)
    running = [True] * n_members
    train_eval = torch.stack([m.train_eval for m in members])
    test_eval = torch.stack([m.test_eval for m in members])
    probe = train_eval[:, :PROBE_BATCH]
    started = time.perf_counter()
    eval_every = members[0].config.eval_every

    def lr_factors(updates_done: int) -> list[float]:
        return [lr_factor_at(c, updates_done, steps_per_epoch, total_steps) for c in cfgs]

    def feedback_stack() -> list[torch.Tensor | None]:
        stacks: list[torch.Tensor | None] = [None]
        for l in range(1, n_layers):
            matrices = [rule.backward_matrix(model, l)
                        for rule, model in zip(rules, models, strict=True)]
            if all(m.data_ptr() == weights[l].data[e].data_ptr()
                   and m.shape == weights[l].shape[1:] for e, m in enumerate(matrices)):
                stacks.append(weights[l].detach())  # backprop everywhere: W itself
            else:
                stacks.append(torch.stack(matrices))
        return stacks

    @torch.no_grad()
    def evaluate(x: torch.Tensor, y: torch.Tensor, subsets: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        total_loss = torch.zeros(n_members, dtype=torch.float64, device=device)
        correct = torch.zeros(n_members, dtype=torch.float64, device=device)
        for start in range(0, subsets.shape[1], EVAL_CHUNK):
            chunk = subsets[:, start:start + EVAL_CHUNK]
            logits = stacked_forward(weights, biases, activation, x[chunk])
            target = y[chunk]
            members_, n, classes = logits.shape
            total_loss += F.cross_entropy(logits.reshape(-1, classes), target.reshape(-1),
                                          reduction="none").view(members_, n).sum(1).double()
            correct += (logits.argmax(2) == target).sum(1).double()
        n = subsets.shape[1]
        return total_loss / n, correct / n

    def probe_grads(feedbacks) -> list[torch.Tensor]:
        with torch.enable_grad():
            params = [w.detach().requires_grad_() for w in weights]
            bs = [b.detach() for b in biases]
            logits = stacked_forward(params, bs, activation, x_train[probe], feedbacks)
            return list(torch.autograd.grad(member_losses(logits, y_train[probe]).sum(),
                                            params))

    def record(step: int, epoch: float, who: list[int]) -> None:
        train_loss, train_acc = evaluate(x_train, y_train, train_eval)
        test_loss, test_acc = evaluate(x_test, y_test, test_eval)
        grad_angles = torch.stack([
            _angles(a, b) for a, b in zip(probe_grads(feedback_stack()),
                                          probe_grads([None] + weights[1:]), strict=True)], 1)
        feedback, target = [], []
        for l in range(n_layers):
            pairs = [rule.alignment_target(model, l, x_train[probe[e]])
                     for e, (rule, model) in enumerate(zip(rules, models, strict=True))]
            if all(pair is None for pair in pairs):
                feedback.append(None)
                target.append(None)
            elif any(pair is None for pair in pairs):
                # Members disagree on whether this layer has feedback: NaN rows for
                # those without, the others' matrices as they are.
                nan = torch.full_like(weights[l].detach(), math.nan)
                feedback.append(torch.stack([nan[e] if p is None else p[0]
                                             for e, p in enumerate(pairs)]))
                target.append(torch.stack([nan[e] if p is None else p[1]
                                           for e, p in enumerate(pairs)]))
            else:
                feedback.append(torch.stack([pair[0] for pair in pairs]))
                target.append(torch.stack([pair[1] for pair in pairs]))
        columns = {}
        for l in range(n_layers):
            b, w = feedback[l], target[l]
            if b is None:
                nan = torch.full((n_members,), math.nan, dtype=torch.float64,
                                 device=device)
                columns[l] = (nan, nan, nan)
                continue
            w_norm = w.flatten(1).double().norm(dim=1)
            ratio = torch.where(w_norm == 0, torch.nan,
                                b.flatten(1).double().norm(dim=1) / w_norm)
            concord = ((torch.sign(w) * torch.sign(b)) > 0).flatten(1).double().mean(1)
            columns[l] = (_angles(w, b), ratio, concord)
        # One transfer to the host for everything this evaluation measured.
        values = torch.stack([train_loss, train_acc, test_loss, test_acc,
                              *[c for l in range(n_layers) for c in columns[l]],
                              *grad_angles.double().t()])
        values = _to_host(values).tolist()
        factors = lr_factors(step)
        now = time.perf_counter() - started
        for e in who:
            member, cfg = members[e], cfgs[e]
            model, rule = models[e], rules[e]
            row = {"step": step, "epoch": epoch, "train_loss": values[0][e],
                   "train_acc": values[1][e], "test_loss": values[2][e],
                   "test_acc": values[3][e], "lr": cfg.lr * factors[e], "time": now}
            conservation = member.tracker.ratios(model, rule)
            for l in range(n_layers):
                angle, ratio, concord = (values[4 + 3 * l + k][e] for k in range(3))
                n = l + 1
                row[f"weight_angle/{n}"] = angle
                row[f"norm_ratio/{n}"] = ratio
                row[f"grad_angle/{n}"] = values[4 + 3 * n_layers + l][e]
                row[f"conservation/{n}"] = conservation[l]
                row[f"sign_concordance/{n}"] = concord
            if cfg.hessian_every is not None:
                row.update(hessian_row(model, x_train[probe[e]], y_train[probe[e]],
                                       len(member.run.rows) % cfg.hessian_every == 0,
                                       cfg.seed))
            member.run.rows.append(row)
            if cfg.trajectory_every is None:
                member.run.trajectory.record(step, model)

    def end(e: int, status: str, reason: str, message: str) -> None:
        run = members[e].run
        run.status, run.stop_reason, run.message = status, reason, message
        running[e] = False
        active[e] = False

    def snapshots(step: int, recorded: Sequence[int]) -> list[Snapshot]:
        """Every member's snapshot: the newest row for those just recorded, None for
        the others (ended earlier, or just now without a row)."""
        return [Snapshot(m.run, m.run.rows[-1] if e in recorded else None, step,
                         total_steps, m.run.status) for e, m in enumerate(members)]

    pending: list[torch.Tensor] = []  # (E,) batch losses since the last check

    def check_losses(step: int) -> list[int]:
        """Members whose batch loss went non-finite since the last check: ended as
        diverged at their first bad step (one host transfer)."""
        if not pending:
            return []
        losses = torch.stack(pending)
        first_step = step - len(pending) + 1
        pending.clear()
        losses = _to_host(losses)
        bad = ~torch.isfinite(losses)
        ended = []
        for e in range(n_members):
            if running[e] and bad[:, e].any():
                index = int(bad[:, e].nonzero()[0, 0])
                members[e].run.diverged_step = first_step + index
                end(e, "diverged", "diverged", f"diverged at step {first_step + index}: the "
                    f"training loss became {losses[index, e].item()}; lower the learning rate")
                ended.append(e)
        return ended

    try:
        everyone = list(range(n_members))
        record(0, 0.0, everyone)
        for e in everyone:
            members[e].run.trajectory.record(0, models[e])
            reached = target_message(cfgs[e], members[e].run.rows[-1])
            if reached:
                end(e, "finished", "target", reached)
        yield snapshots(0, everyone)
        step = 0
        orders: list[torch.Tensor] = []
        for _ in range(first.epochs):
            if not any(running):
                break
            orders = torch.stack([torch.randperm(n_train, generator=m.shuffle)
                                  for m in members]).to(device)
            for start in range(0, n_train, first.batch_size):
                if not any(running):
                    break
                if should_stop is not None and should_stop():
                    check_losses(step)
                    for e in everyone:
                        if running[e]:
                            end(e, "stopped", "stopped", f"stopped by the user at step {step}")
                    yield snapshots(step, ())
                    return
                batch = orders[:, start:start + first.batch_size]
                logits = stacked_forward(weights, biases, activation, x_train[batch],
                                         feedback_stack())
                losses = member_losses(logits, y_train[batch])
                losses.sum().backward()
                for e in everyone:
                    if running[e]:  # an ended member's rule stays as it ended
                        rules[e].after_backward(models[e])
                pending.append(losses.detach())
                step += 1
                lr = base_lr * per_member(lr_factors(step - 1)) if scheduled else base_lr
                optimizer.step(lr, active)
                if first.trajectory_every is not None and (
                        step % first.trajectory_every == 0 or step == total_steps):
                    for e in everyone:
                        if running[e]:
                            members[e].run.trajectory.record(step, models[e])
                if step % eval_every == 0 or step == total_steps:
                    check_losses(step)
                    who = [e for e in everyone if running[e]]
                    if not who:
                        yield snapshots(step, ())
                        break
                    record(step, step / steps_per_epoch, who)
                    for e in who:
                        row = members[e].run.rows[-1]
                        blown_up = divergence_message(cfgs[e], row, members[e].run.rows[0])
                        if blown_up:
                            members[e].run.diverged_step = step
                            end(e, "diverged", "diverged", blown_up)
                            continue
                        reached = target_message(cfgs[e], members[e].run.rows[-1])
                        if reached:
                            members[e].run.trajectory.record(step, models[e])
                            end(e, "finished", "target", reached)
                        elif step == total_steps:
                            end(e, "finished", "completed", f"finished {total_steps} steps")
                    yield snapshots(step, who)
    except GeneratorExit:
        for e in range(n_members):
            if running[e]:
                end(e, "stopped", "stopped", "stopped by the user")
        raise
    except Exception as exc:
        for e in range(n_members):
            if running[e]:
                end(e, "failed", "failed", f"{type(exc).__name__}: {exc}")
        raise
    finally:
        # Each run keeps weights of its own, not views into the ensemble's tensors.
        for model in models:
            for layer in model.layers:
                layer.weight.data = layer.weight.data.clone()
                layer.bias.data = layer.bias.data.clone()
