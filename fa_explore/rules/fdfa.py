"""Forward direct feedback alignment: direct feedback that tracks the Jacobian ∂y/∂h_l."""

from __future__ import annotations

import torch
import torch.autograd.forward_ad as fwAD
from torch import nn

from ..settings import Option
from .base import layer_forward
from .dfa import DFA


class FDFA(DFA):
    """Forward direct feedback alignment (Bacho & Chu 2024, "Low-variance forward
    gradients using direct feedback alignment and momentum", Neural Networks).

    DFA whose ``D_l`` (zero at start) follow the batch-mean Jacobian ``J_l = ∂y/∂h_l``
    of the logits. Each step draws ``u_l ~ N(0, I)`` per example on every hidden
    output ``h_l``, gets ``ẏ_l`` by forward-mode AD and estimates
    ``D̂_l = mean_batch(ẏ_l ⊗ u_l)``. Option ``perturbation``:

    - ``"per_layer"`` (default): one forward-mode pass per hidden layer, started at
      that layer with only its own ``u_l`` (as FG-A does), so ``ẏ_l = J_l u_l`` and
      ``D̂_l`` carries only its own noise: per example, entry ``(i, j)`` has variance
      ``‖J_l[i,:]‖² + J_l[i,j]²``.
    - ``"joint"``: one pass with every ``u_k`` at once, ``ẏ = Σ_k J_k u_k`` (the
      reference's description); still unbiased, since the ``u_k`` are independent,
      but every other layer's ``Σ_{k≠l} ‖J_k[i,:]‖²`` adds to that variance.

    The default is per_layer, from measurements (digits, MLP 64-128-128-128-128-10,
    FDFA's defaults, 20 epochs, seeds 0-2; gradient angles of hidden layers 1-4 at the
    end): joint 27°, 27°, 33°, 37° (the last hidden layer worst, against the paper:
    its own Jacobian is drowned by the others' noise), per_layer 24°, 21°, 19°, 11°
    (the order of the paper's Fig. 7), test accuracy 0.971 vs 0.975, for a training
    step about 1.3× as long (batch 32 on one CPU thread).

    Option ``estimator``:

    - ``"average"`` (default; the reference's wording): ``D_l ← (1 − α) D_l + α D̂_l``
      (option ``alpha``, the paper's momentum ``1 − α``), THEN DFA with the updated
      ``D_l``.
    - ``"adam"`` (the authors' code): DFA with the CURRENT ``D_l``, and ``D_l`` gets
      the gradient ``D_l − D̂_l`` (of ``½‖D_l − D̂_l‖²``) for its own Adam optimizer
      (option ``feedback_lr``, paper 1e-4; no weight decay), which steps after the
      backward with the rest. ``D_l`` are then parameters.

    For the last hidden layer ``J = W_L`` exactly, so ``D_{L-1} → W_L`` and that
    layer's update approaches BP's. ``D`` learns, so a sparsity mask on it is 0/1
    (:class:`~fa_explore.rules.base.Rule`).
    Math: docs/math.md#fdfa
    """

    name = "fdfa"
    description = ("Forward DFA: direct feedback matrices track the output Jacobian, "
                   "estimated by forward-mode perturbations and averaged over steps.")
    paper = "Bacho & Chu 2024, Neural Networks (seed: forward_direct_feedback_alignment)"
    options = {
        "alpha": Option("float", 0.02, "weight of the newest Jacobian estimate in D's running "
                        "average (the paper's momentum is 1 - alpha; estimator 'average')",
                        minimum=0, maximum=1, exclusive_minimum=True),
        "perturbation": Option("str", "per_layer", "'per_layer': one forward-mode pass per "
                               "hidden layer with only its own perturbation; 'joint': one "
                               "pass perturbing every layer at once (each estimate then "
                               "carries every layer's noise)", choices=("per_layer", "joint"),
                               control="dropdown"),
        "estimator": Option("str", "average", "'average': D moves to a running average of "
                            "the estimates, then the backward uses it; 'adam' (the authors'): "
                            "the backward uses the current D, then Adam steps D on D - D̂",
                            choices=("average", "adam"), control="dropdown"),
        "feedback_lr": Option("float", 1e-4, "learning rate of D's Adam (estimator 'adam')",
                              minimum=0, maximum=10, exclusive_minimum=True),
    }
    adaptive_feedback = True
    uses_feedback_init = False  # D starts at zero

    def __init__(self, model, cfg, generator=None):
        super().__init__(model, cfg, generator)
        self.alpha = cfg.rule_option("alpha")
        self.perturbation = cfg.rule_option("perturbation")
        self.estimator = cfg.rule_option("estimator")
        self.feedback_lr = cfg.rule_option("feedback_lr")

    def feedback_is_parameter(self):
        return self.cfg.rule_option("estimator") == "adam"

    def init_direct_feedback(self, empty):
        return torch.nn.init.zeros_(empty)

    def param_groups(self, model):
        groups = [{"params": list(model.parameters())}]
        if self.estimator == "adam":
            groups.append({"params": list(self.parameters()), "optimizer": "adam",
                           "lr": self.feedback_lr, "weight_decay": 0.0})
        return groups

    # ---------------------------------------------------- Jacobian probes
    def jacobian_probes(self, model, x):
        """The training forward and one forward-mode probe per hidden layer: the
        logits ``y``, the hidden outputs ``h_l`` (for the DFA backward) and, per hidden
        layer, ``(ẏ_l, u_l)`` with ``u_l`` flattened ``(batch, N_l)``: ``ẏ_l = J_l u_l``
        (per_layer) or the joint ``ẏ = Σ_k J_k u_k`` for every layer (joint)."""
        if self.perturbation == "joint":
            logits, hidden, logits_dot, perturbations = self.perturbed_forward(model, x)
            return logits, hidden, [(logits_dot, u) for u in perturbations]
        logits, hidden, outputs = self.recorded_forward(model, x)
        probes = []
        with torch.no_grad():
            for l, h in enumerate(hidden, start=1):
                u = self.randn(*h.shape, like=h)
                probes.append((self.tangent_from(model, x, l, u, outputs), u.flatten(1)))
        return logits, hidden, probes

    def recorded_forward(self, model, x):
        """DFA's local forward (each layer on a detached input), keeping every
        layer's output ``a_l`` (detached) as the primal point of the probes."""
        hidden: list[torch.Tensor] = []
        outputs: list[torch.Tensor] = []

        def call(index: int, layer: nn.Module, h: torch.Tensor) -> torch.Tensor:
            if index > 0:
                hidden.append(h)
            out = layer(h.detach())
            outputs.append(out.detach())
            return out

        return model(x, call), hidden, outputs

    @staticmethod
    def tangent_from(model, x, start: int, u: torch.Tensor,
                     outputs: list[torch.Tensor]) -> torch.Tensor:
        """``ẏ = J_start u``: the tangent of the logits when only the input ``h`` of
        layer ``start`` moves along ``u``. The layers below run on an empty batch
        (the model's own code between layers still decides the way up, as in FG-A's
        ``run_from``); from ``start`` up every layer returns its recorded output as
        the primal, so only tangents are computed: a layer is linear in its input,
        its tangent is the layer without bias applied to the incoming tangent, and
        the activations and pooling between layers are differentiated by forward AD."""

        def call(index: int, layer: nn.Module, h: torch.Tensor) -> torch.Tensor:
            if index < start:
                return layer(h)
            tangent = u if index == start else fwAD.unpack_dual(h).tangent
            return fwAD.make_dual(outputs[index],
                                  layer_forward(layer, tangent, layer.weight, None))

        with fwAD.dual_level():
            return fwAD.unpack_dual(model(x[:0], call)).tangent

    def perturbed_forward(self, model, x):
        """The training forward with a random tangent ``u_l`` added at every hidden
        output (joint): the logits ``y``, the hidden outputs ``h_l`` (for the DFA
        backward), ``ẏ = Σ_l J_l u_l`` and the ``u_l`` (flattened, ``(batch, N_l)``)."""
        hidden: list[torch.Tensor] = []
        perturbations: list[torch.Tensor] = []

        def call(index: int, layer: nn.Module, h: torch.Tensor) -> torch.Tensor:
            if index == 0:
                return layer(h.detach())  # nobody needs the input's error
            primal, tangent = fwAD.unpack_dual(h)
            u = self.randn(*primal.shape, like=primal)
            hidden.append(primal)
            perturbations.append(u.flatten(1))
            # The tangent carries everything upstream has sent plus this layer's u_l.
            tangent = u if tangent is None else tangent + u
            # The layer is linear in its input, so its tangent is the layer without
            # bias applied to the incoming tangent: cheaper than forward AD through
            # addmm, and kept out of the reverse graph. The activation and pooling
            # between layers stay the model's, differentiated by forward AD.
            with torch.no_grad():
                tangent_out = layer_forward(layer, tangent, layer.weight, None)
            # The detached input keeps each layer's backward local, as in DFA.
            return fwAD.make_dual(layer(primal.detach()), tangent_out)

        with fwAD.dual_level():
            logits, logits_dot = fwAD.unpack_dual(model(x, call))
        return logits, hidden, logits_dot, perturbations

    # ------------------------------------------------------------ update
    @staticmethod
    def estimates(probes) -> list[torch.Tensor]:
        """``D̂_l = mean_batch(ẏ_l ⊗ u_l)`` per hidden layer, shape ``(N_L, N_l)``."""
        return [logits_dot.t() @ u / len(u) for logits_dot, u in probes]

    @torch.no_grad()
    def track_jacobians(self, probes) -> None:
        """``D_l ← (1 − α) D_l + α mean_batch(ẏ_l ⊗ u_l)`` for every hidden layer."""
        alpha = self.alpha
        for l, (logits_dot, u) in enumerate(probes, start=1):
            matrix = self.stored_direct_feedback(l)
            matrix.mul_(1 - alpha).addmm_(logits_dot.t(), u, alpha=alpha / len(u))

    def compute_grads(self, model, x, y):
        logits, hidden, probes = self.jacobian_probes(model, x)
        if self.estimator == "average" and probes:
            self.track_jacobians(probes)  # the reference: update D, then use it
        error, loss = self.output_error(logits, y)
        self.send_errors(logits, hidden, error)
        if self.estimator == "adam":
            # The authors: the backward above used the current D; Adam then steps
            # D on the gradient of ½‖D − D̂‖².
            for l, estimate in enumerate(self.estimates(probes), start=1):
                matrix = self.stored_direct_feedback(l)
                matrix.grad = matrix.detach() - estimate
        return loss
