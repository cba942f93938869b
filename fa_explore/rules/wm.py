"""Weight mirrors: feedback weights learned from the forward weights' response to noise."""

from __future__ import annotations

import torch
from torch import nn

from ..settings import Option
from .base import StoredLayerFeedback, feedback_forward, layer_forward, weight_grads


class WM(StoredLayerFeedback):
    """Feedback ``B_l`` (buffers ``B1``, ``B2`` …) learned by a mirror phase
    (Akrout et al. 2019, "Deep learning without weight transport").

    After every ``mirror_every``-th learning step, each layer ``l ≥ 1`` is driven
    by noise ``ξ ~ N(0, σ² I)`` (``mirror_batch`` × the layer's input), responds
    with ``r = ξ W_lᵀ``, and its feedback learns from the input-output correlation:
    ``B_l ← B_l + η_B · mean_batch(rᵀ ξ) − λ_B · B_l``. Since
    ``E[rᵀ ξ] / batch = σ² W_l``, ``B_l`` tends to ``(η_B σ² / λ_B) W_l`` (exactly
    ``W_l`` with the defaults, where ``η_B σ² = λ_B``).

    Convolutions: ``rᵀ ξ`` becomes the weight gradient of the convolution (a sum
    over positions); each kernel tap is divided by the number of positions where
    it meets the input (fewer at padded borders), which keeps the estimate at
    exactly ``σ² W_l``. ``init_angle`` sets the initial ``B_l``; with
    ``feedback_sparsity`` a fixed 0/1 mask multiplies ``B_l`` at every use (the
    initial ``B_l`` drawn ``1/sqrt(1 − p)`` larger under ``"rescaled"`` sparsity,
    see :class:`~.base.Rule`).
    Math: docs/math.md#wm
    """

    name = "wm"
    description = ("Weight mirror: feedback weights learn to mirror the forward weights "
                   "from the layer's response to injected noise.")
    paper = "Akrout, Wilson, Humphreys, Lillicrap & Tweed 2019, NeurIPS"
    # η_B σ² = λ_B: B tends to W itself. The mirror batch matches the training
    # batch, so a mirror phase costs about one more forward/backward.
    options = {
        "sigma": Option("float", 1.0, "std of the mirror phase's input noise", minimum=0,
                        maximum=100, exclusive_minimum=True),
        "eta_b": Option("float", 0.01, "mirror learning rate of B", minimum=0, maximum=10),
        "lambda_b": Option("float", 0.01, "mirror weight decay of B (per mirror phase)",
                           minimum=0, maximum=1, exclusive_maximum=True),
        "mirror_every": Option("int", 1, "learning steps between mirror phases", minimum=1,
                               maximum=100_000, unit="steps"),
        "mirror_batch": Option("int", 32, "noise examples per mirror phase", minimum=1,
                               maximum=65536, unit="examples"),
    }
    uses_init_angle = True
    uses_feedback_sparsity = True
    adaptive_feedback = True

    def __init__(self, model, cfg, generator=None):
        super().__init__(model, cfg, generator)
        self.sigma = cfg.rule_option("sigma")
        self.eta_b = cfg.rule_option("eta_b")
        self.lambda_b = cfg.rule_option("lambda_b")
        self.mirror_every = cfg.rule_option("mirror_every")
        self.mirror_batch = cfg.rule_option("mirror_batch")
        # Learning steps taken so far: decides when the next mirror phase comes.
        self.register_buffer("mirror_clock", torch.zeros((), dtype=torch.long))
        # Its value on the host: reading the buffer would wait for the device.
        self._clock = 0

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        # load_state_dict (a saved run, probe_grads' restore) sets the clock.
        if prefix + "mirror_clock" in state_dict:
            self._clock = int(state_dict[prefix + "mirror_clock"])

    def compute_grads(self, model, x, y):
        input_shapes: dict[int, torch.Size] = {}
        feedbacks = [None] + [self.feedback_matrix(model, l) for l in range(1, model.n_layers)]

        def observe(index, layer, h):
            input_shapes[index] = h.shape[1:]  # the mirror's noise takes this shape

        loss = self.loss(feedback_forward(model, x, feedbacks, observe), y)
        loss.backward()
        # Mirror after the gradient is taken: this step used the B that
        # effective_feedback showed, and the next one uses the mirrored B.
        if self._clock % self.mirror_every == 0:
            self.mirror(model, input_shapes)
        self.mirror_clock += 1  # on the device, no sync; the host keeps count alongside
        self._clock += 1
        return loss.detach()

    @torch.no_grad()
    def mirror(self, model, input_shapes) -> None:
        """One mirror phase on every layer with feedback; ``input_shapes[l]`` is the
        shape of one input example of layer ``l``."""
        for l in range(1, model.n_layers):
            weight = model.layers[l].weight
            noise = weight.new_empty(self.mirror_batch, *input_shapes[l]).normal_(
                0.0, self.sigma, generator=self.generator)
            self.mirror_layer(model, l, noise)

    @torch.no_grad()
    def mirror_layer(self, model, layer: int, noise: torch.Tensor) -> None:
        """``B_l ← B_l + η_B · mean(rᵀ ξ) − λ_B · B_l`` with ``r = ξ W_lᵀ``, ``ξ = noise``."""
        module = model.layers[layer]
        feedback = self.stored_feedback(layer)
        response = layer_forward(module, noise, module.weight, None)
        if isinstance(module, nn.Linear):
            # One fused op: B ← (1 − λ_B) B + (η_B / batch) rᵀ ξ.
            feedback.addmm_(response.T, noise, beta=1.0 - self.lambda_b,
                            alpha=self.eta_b / noise.shape[0])
            return
        correlation, _ = weight_grads(module, response, noise, want_bias=False)
        # Per tap, the number of (example, position) pairs that were summed.
        positions, _ = weight_grads(module, torch.ones_like(response[:1]),
                                    torch.ones_like(noise[:1]), want_bias=False)
        feedback.mul_(1.0 - self.lambda_b).add_(
            correlation / (noise.shape[0] * positions), alpha=self.eta_b)
