"""Analyses of trained (or training) models that notebooks and the dashboard share.

All of them look at the network *function* (the plain forward), never at a rule's
training pass, except where a rule's own estimate is the object of study.

- ``landscape``: the loss on the plane of a run's parameter trajectory
  (:func:`trajectory_pca`, :func:`loss_surface`) and the decision regions of a
  model with 2-D inputs (:func:`decision_grid`); slices around one model along
  filter-normalised random or Hessian directions (:func:`random_directions`,
  :func:`loss_slice_1d`, :func:`loss_slice_2d`; Li et al. 2018), linear
  interpolation between two models (:func:`interpolate`) and the soft-alignment
  paper's flatness numbers (:func:`sharpness`, :func:`sharpness_over_training`).
- ``hessian``: curvature of the loss as PyHessian measures it (Yao et al. 2020):
  Hessian-vector products (:func:`hessian_vector_product`), top eigenvalues
  (:func:`hessian_eigenvalues`, Lanczos or power iteration), the trace
  (:func:`hessian_trace`, Hutchinson 1989) and the eigenvalue density
  (:func:`hessian_density`, stochastic Lanczos quadrature, Ubaru et al. 2017 /
  Ghorbani et al. 2019; smoothed by :func:`density_on_grid`).
- ``robustness``: accuracy under adversarial perturbations (:func:`attack_accuracy`,
  :func:`adversarial_examples`: FGSM, Goodfellow et al. 2015; PGD, Madry et al.
  2018), under Gaussian input noise (:func:`noise_accuracy`) and as a tidy curve
  over perturbation sizes for several runs (:func:`robustness_curve`).
- ``variance``: bias, variance and angle of a rule's gradient estimates over fresh
  random draws (:func:`estimator_statistics`), the FDFA paper's comparison.
- ``geometry``: PFA's ``P Pᵀ`` spectrum against Marchenko–Pastur and the path angle
  against its closed form.
- ``implicit``: the implicit-regularization paper's per-neuron conservation law,
  output-layer alignment (Lemma 5.4) and sign concordance.
- ``trainability``: final accuracy over a grid of settings (init scales, depth,
  training-set size), run as a sweep (:func:`trainability_map`).
"""

from .geometry import (
    marchenko_pastur_density,
    marchenko_pastur_edges,
    path_alignment_theory,
    path_geometry,
    product_spectrum,
)
from .hessian import (
    HessianOperator,
    SpectralDensity,
    TraceEstimate,
    density_on_grid,
    hessian_density,
    hessian_eigenvalues,
    hessian_trace,
    hessian_vector_product,
)
from .implicit import conservation_per_neuron, model_at, output_alignment, sign_concordance
from .landscape import (
    DecisionGrid,
    Interpolation,
    LossSlice,
    LossSlice1D,
    LossSurface,
    Sharpness,
    TrajectoryPCA,
    decision_grid,
    interpolate,
    loss_slice_1d,
    loss_slice_2d,
    loss_surface,
    random_directions,
    sharpness,
    sharpness_over_training,
    trajectory_pca,
)
from .robustness import adversarial_examples, attack_accuracy, noise_accuracy, robustness_curve
from .trainability import TrainabilityMap, depth_grid, trainability_map
from .variance import estimator_statistics, fg_w_relative_variance, gradient_draws

__all__ = ["trainability_map", "TrainabilityMap", "depth_grid", "TrajectoryPCA", "LossSurface",
           "DecisionGrid", "trajectory_pca",
           "loss_surface", "decision_grid", "estimator_statistics", "gradient_draws",
           "fg_w_relative_variance", "marchenko_pastur_density", "marchenko_pastur_edges",
           "path_alignment_theory", "path_geometry", "product_spectrum",
           "conservation_per_neuron", "output_alignment", "sign_concordance", "model_at",
           "LossSlice", "LossSlice1D", "Interpolation", "Sharpness", "random_directions",
           "loss_slice_1d", "loss_slice_2d", "interpolate", "sharpness",
           "sharpness_over_training",
           "HessianOperator", "TraceEstimate", "SpectralDensity", "hessian_vector_product",
           "hessian_eigenvalues", "hessian_trace", "hessian_density", "density_on_grid",
           "attack_accuracy", "adversarial_examples", "noise_accuracy", "robustness_curve"]
