"""Fixed rigid shapes (centered, Å-like units) for the toy study; all have 5 points so they mix."""
from __future__ import annotations

import torch
from torch import Tensor

from ..geometry import center

_RAW = {
    # An irregular, chiral 5-point cloud (no symmetry: the SO(3) action on it is free).
    "pentamer": [[0.0, 0.0, 0.0], [1.5, 0.0, 0.0], [1.9, 1.4, 0.0], [0.6, 2.1, 0.9], [-0.5, 1.0, 1.6]],
    # A triangular bipyramid (D3h): three equatorial points and two apices.
    "bipyramid": [[1.2, 0.0, 0.0], [-0.6, 1.04, 0.0], [-0.6, -1.04, 0.0], [0.0, 0.0, 1.5], [0.0, 0.0, -1.5]],
    # A planar zig-zag (degenerate along no axis, but flat: det K small-ish, not zero).
    "zigzag": [[0.0, 0.0, 0.0], [1.2, 0.8, 0.0], [2.4, 0.0, 0.0], [3.6, 0.8, 0.0], [4.8, 0.0, 0.0]],
}


def shape(name: str, dtype: torch.dtype = torch.float64) -> Tensor:
    """A named shape [5, 3] (centered). `mirror-pentamer` is the enantiomer of `pentamer`."""
    if name == "mirror-pentamer":
        return shape("pentamer", dtype) * torch.tensor([1.0, 1.0, -1.0], dtype=dtype)
    if name not in _RAW:
        raise ValueError(f"unknown shape {name!r}; choose one of {sorted(SHAPES)}")
    return center(torch.tensor(_RAW[name], dtype=dtype)[None])[0]


SHAPES = tuple(sorted(_RAW)) + ("mirror-pentamer",)
