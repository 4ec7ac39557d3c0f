"""Pure tensor geometry of point clouds modulo rigid motions (no I/O, no config, no torch.nn).

All functions take batched clouds x [B, N, 3] with an optional boolean mask [B, N]; padding atoms
are ignored and come out as zeros.
"""
from .alignment import kabsch_align, kabsch_rotation, rmsd
from .rotations import apply_rotation, quaternion_to_matrix, random_rotation, so3_generators
from .se3 import (
    DEFAULT_EPS,
    angular_momentum,
    center,
    horizontal_projection,
    inertia_tensor,
    mean_curvature,
    regularized_inverse,
    vertical_component,
)

__all__ = [
    "DEFAULT_EPS",
    "angular_momentum",
    "apply_rotation",
    "center",
    "horizontal_projection",
    "inertia_tensor",
    "kabsch_align",
    "kabsch_rotation",
    "mean_curvature",
    "quaternion_to_matrix",
    "random_rotation",
    "regularized_inverse",
    "rmsd",
    "so3_generators",
    "vertical_component",
]
