"""Rotations: Haar-uniform sampling, the so(3) generators and the cross-product matrix."""
from __future__ import annotations

import torch
from torch import Tensor


def so3_generators(dtype: torch.dtype = torch.float64, device=None) -> Tensor:
    """The basis J_1, J_2, J_3 of so(3) with J_i x = e_i × x, shape [3, 3, 3]."""
    J = torch.zeros(3, 3, 3, dtype=dtype, device=device)
    J[0, 2, 1], J[0, 1, 2] = 1.0, -1.0
    J[1, 0, 2], J[1, 2, 0] = 1.0, -1.0
    J[2, 1, 0], J[2, 0, 1] = 1.0, -1.0
    return J


def quaternion_to_matrix(q: Tensor) -> Tensor:
    """Rotation matrices [..., 3, 3] of (not necessarily unit) quaternions q = (w, x, y, z) [..., 4]."""
    q = q / q.norm(dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    rows = [
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ]
    return torch.stack(rows, dim=-1).reshape(q.shape[:-1] + (3, 3))


def random_rotation(
    batch: int,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    device=None,
) -> Tensor:
    """Haar-uniform rotations [batch, 3, 3]: normalized Gaussian quaternions are uniform on S^3.

    Drawn on the generator's device (CPU if none is given) and moved to `device`, so a seeded CPU
    generator gives the same rotations on every device.
    """
    source = generator.device if generator is not None else torch.device("cpu")
    q = torch.randn(batch, 4, generator=generator, dtype=torch.float64, device=source)
    return quaternion_to_matrix(q).to(device=device, dtype=dtype)


def apply_rotation(R: Tensor, x: Tensor) -> Tensor:
    """Rotate every point of x [B, N, 3] by R [B, 3, 3] (x_n -> R x_n)."""
    return x @ R.transpose(-1, -2)
