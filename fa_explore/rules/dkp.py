"""Direct Kolen–Pollack: direct feedback learned like a readout of each hidden layer."""

from __future__ import annotations

import torch

from ..settings import Option
from .dfa import DFA


class DKP(DFA):
    """Direct Kolen–Pollack (Webster, Choi & Ahn 2021, "Learning the connections in
    direct feedback alignment", OpenReview zgGmAx9ZcY).

    DFA whose ``D_l`` (parameters ``D1``, ``D2`` …) start at zero and learn as if
    they were direct readouts ``h_l → y``: ``grad D_l = eᵀ h_l`` (batch-summed, ``e``
    the gradient of the batch-mean loss w.r.t. the logits). For the last hidden layer
    this is exactly ``grad W_L``, the Kolen–Pollack symmetry: when ``D_{L-1}`` and
    ``W_L`` take the same optimizer step and the same weight decay λ, and the optimizer
    is linear in the gradient (SGD with momentum), ``W_L − D_{L-1}`` only feels the
    decay and shrinks like ``(1 − lr·λ)^t`` (momentum: the same scalar recurrence),
    so ``D_{L-1} → W_L`` and that layer's error becomes BP's; both forget their
    start, as a readout trained with decay would.

    Defaults (option ``feedback_optimizer="shared"``): ``D`` in the forward weights'
    optimizer group, SGD lr 0.05, momentum 0.9, weight decay 0.01 on everything (as
    KP). Measured on digits (hidden 128-128, seeds 0-1, 10 epochs): ``D_2`` reaches
    6° from ``W_3`` and the last hidden layer's gradient angle 4-5° (DFA: 63-66°), the
    first's 11-17° (DFA: 59-66°), test accuracy 0.96-0.97 like DFA's.

    ``feedback_optimizer="adam"`` gives ``D`` its own Adam (the paper's: options
    ``feedback_lr`` 1e-4 and ``feedback_weight_decay`` 1e-6). With the forward weights
    on another optimizer and no decay on them, ``W_L − D_{L-1}`` then keeps ``W_L``'s
    random start: ``D_{L-1}`` tracks ``W_L − W_L(0)`` and stays far from ``W_L``
    (measured as above, DFA's Adam lr 1e-3: 66° after 10 epochs, and a last hidden
    layer gradient angle of 66-68°, no better than DFA's). A shared Adam with decay
    converges slowly (Adam is not linear in the gradient: 48° after 10 epochs at
    λ = 0.01). With ``feedback_sparsity`` a 0/1 mask (``D`` learns) multiplies ``D_l``
    at every use; the update itself is the reference's ``eᵀ h_l``.
    Math: docs/math.md#dkp
    """

    name = "dkp"
    description = ("Direct Kolen–Pollack: direct feedback matrices start at zero and learn "
                   "like readouts of each hidden layer, aligning with the forward path.")
    paper = "Webster, Choi & Ahn 2021, OpenReview (Learning the connections in DFA)"
    # SGD keeps W_L − D_{L-1} a linear function of the decay alone (see above).
    defaults = {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 1e-2}
    options = {
        "feedback_optimizer": Option("str", "shared", "'shared': D steps with the forward "
                                     "weights' optimizer, learning rate and weight decay (the "
                                     "Kolen-Pollack symmetry); 'adam': D on its own Adam "
                                     "(feedback_lr, feedback_weight_decay; the paper's)",
                                     choices=("shared", "adam"), control="dropdown"),
        "feedback_lr": Option("float", 1e-4, "learning rate of D's own Adam optimizer "
                              "(feedback_optimizer 'adam')",
                              minimum=0, maximum=10, exclusive_minimum=True),
        "feedback_weight_decay": Option("float", 1e-6, "weight decay of D's own optimizer "
                                        "(feedback_optimizer 'adam')", minimum=0, maximum=10),
    }
    learned_feedback = True
    adaptive_feedback = True
    uses_feedback_init = False  # D starts at zero

    def __init__(self, model, cfg, generator=None):
        super().__init__(model, cfg, generator)
        self.feedback_optimizer = cfg.rule_option("feedback_optimizer")
        self.feedback_lr = cfg.rule_option("feedback_lr")
        self.feedback_weight_decay = cfg.rule_option("feedback_weight_decay")

    def init_direct_feedback(self, empty):
        return torch.nn.init.zeros_(empty)

    def param_groups(self, model):
        if self.feedback_optimizer == "shared":
            return [{"params": [*model.parameters(), *self.parameters()]}]
        return [{"params": list(model.parameters())},
                {"params": list(self.parameters()), "optimizer": "adam",
                 "lr": self.feedback_lr, "weight_decay": self.feedback_weight_decay}]

    def send_errors(self, logits, hidden, error):
        for l, h in enumerate(hidden, start=1):
            # Descending eᵀh moves D_l like a linear readout y ≈ D_l h_l (the sign of
            # the forward weights' own update, as in Kolen–Pollack).
            self.stored_direct_feedback(l).grad = error.t() @ h.detach().flatten(1)
        super().send_errors(logits, hidden, error)
