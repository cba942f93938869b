"""Analyses of trained (or training) models that notebooks and the dashboard share.

``landscape``: the loss on the plane of a run's parameter trajectory
(:func:`trajectory_pca`, :func:`loss_surface`) and the decision regions of a
model with 2-D inputs (:func:`decision_grid`).
"""

from .landscape import (DecisionGrid, LossSurface, TrajectoryPCA, decision_grid,
                        loss_surface, trajectory_pca)

__all__ = ["TrajectoryPCA", "LossSurface", "DecisionGrid", "trajectory_pca",
           "loss_surface", "decision_grid"]
