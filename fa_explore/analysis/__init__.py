"""Analyses of trained (or training) models that notebooks and the dashboard share.

All of them look at the network *function* (the plain forward), never at a rule's
training pass, except where a rule's own estimate is the object of study.

- ``landscape``: the loss on the plane of a run's parameter trajectory
  (:func:`trajectory_pca`, :func:`loss_surface`) and the decision regions of a
  model with 2-D inputs (:func:`decision_grid`).
- ``variance``: bias, variance and angle of a rule's gradient estimates over fresh
  random draws (:func:`estimator_statistics`), the FDFA paper's comparison.
- ``geometry``: PFA's ``P Pᵀ`` spectrum against Marchenko–Pastur and the path angle
  against its closed form.
- ``implicit``: the implicit-regularization paper's per-neuron conservation law,
  output-layer alignment (Lemma 5.4) and sign concordance.
"""

from .geometry import (
    marchenko_pastur_density,
    marchenko_pastur_edges,
    path_alignment_theory,
    path_geometry,
    product_spectrum,
)
from .implicit import conservation_per_neuron, model_at, output_alignment, sign_concordance
from .landscape import (
    DecisionGrid,
    LossSurface,
    TrajectoryPCA,
    decision_grid,
    loss_surface,
    trajectory_pca,
)
from .variance import estimator_statistics, fg_w_relative_variance, gradient_draws

__all__ = ["TrajectoryPCA", "LossSurface", "DecisionGrid", "trajectory_pca",
           "loss_surface", "decision_grid", "estimator_statistics", "gradient_draws",
           "fg_w_relative_variance", "marchenko_pastur_density", "marchenko_pastur_edges",
           "path_alignment_theory", "path_geometry", "product_spectrum",
           "conservation_per_neuron", "output_alignment", "sign_concordance", "model_at"]
