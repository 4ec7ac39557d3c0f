"""Mask helpers shared by the geometry functions (padding atoms carry zero weight)."""
from __future__ import annotations

import torch
from torch import Tensor


def atom_weights(x: Tensor, mask: Tensor | None) -> Tensor:
    """Weights [B, N, 1] in x's dtype: 1 for valid atoms, 0 for padding (all ones if mask is None)."""
    if x.dim() != 3 or x.shape[-1] != 3:
        raise ValueError(f"expected point clouds of shape [B, N, 3], got {tuple(x.shape)}")
    if mask is None:
        return torch.ones(x.shape[:-1] + (1,), dtype=x.dtype, device=x.device)
    if mask.shape != x.shape[:-1]:
        raise ValueError(f"mask shape {tuple(mask.shape)} does not match clouds {tuple(x.shape)}")
    return mask.to(dtype=x.dtype)[..., None]


def atom_counts(weights: Tensor) -> Tensor:
    """Number of valid atoms per cloud, shape [B, 1, 1], at least 1 (empty clouds stay finite)."""
    return weights.sum(dim=-2, keepdim=True).clamp_min(1.0)
