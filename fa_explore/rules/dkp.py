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
    this is exactly ``grad W_L``, the Kolen–Pollack symmetry: under one shared
    optimizer ``W_L − D_{L-1}`` only feels the weight decay, so ``D_{L-1} → W_L`` and
    that layer's error becomes BP's. ``D`` has its own optimizer group (paper: Adam,
    lr 1e-4, weight decay 1e-6; options ``feedback_lr`` and ``feedback_weight_decay``).
    Starting from zero under Adam, ``feedback_lr`` only rescales ``D`` (hence the
    hidden errors, which an Adam forward optimizer normalises away): it matters
    mainly through the weight decay. With ``feedback_sparsity`` the
    mask multiplies ``D_l`` at every use; the update itself is the reference's
    ``eᵀ h_l``.
    """

    name = "dkp"
    description = ("Direct Kolen–Pollack: direct feedback matrices start at zero and learn "
                   "like readouts of each hidden layer, aligning with the forward path.")
    paper = "Webster, Choi & Ahn 2021, OpenReview (Learning the connections in DFA)"
    options = {
        "feedback_lr": Option("float", 1e-4, "learning rate of D's own Adam optimizer",
                              minimum=0, maximum=10, exclusive_minimum=True),
        "feedback_weight_decay": Option("float", 1e-6, "weight decay of D's own optimizer",
                                        minimum=0, maximum=10),
    }
    learned_feedback = True
    adaptive_feedback = True
    uses_feedback_init = False  # D starts at zero

    def __init__(self, model, cfg, generator=None):
        super().__init__(model, cfg, generator)
        self.feedback_lr = cfg.rule_option("feedback_lr")
        self.feedback_weight_decay = cfg.rule_option("feedback_weight_decay")

    def init_direct_feedback(self, empty):
        return torch.nn.init.zeros_(empty)

    def param_groups(self, model):
        return [{"params": list(model.parameters())},
                {"params": list(self.parameters()), "optimizer": "adam",
                 "lr": self.feedback_lr, "weight_decay": self.feedback_weight_decay}]

    def send_errors(self, logits, hidden, error):
        for l, h in enumerate(hidden, start=1):
            # Descending eᵀh moves D_l like a linear readout y ≈ D_l h_l (the sign of
            # the forward weights' own update, as in Kolen–Pollack).
            self.stored_direct_feedback(l).grad = error.t() @ h.detach().flatten(1)
        super().send_errors(logits, hidden, error)
