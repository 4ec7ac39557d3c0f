"""(Weighted) Kabsch alignment with proper rotations only, and RMSD."""
from __future__ import annotations

import torch
from torch import Tensor

from ._masks import atom_weights


def _weights(x: Tensor, mask: Tensor | None, weights: Tensor | None) -> Tensor:
    w = atom_weights(x, mask)
    if weights is not None:
        if weights.shape != x.shape[:-1]:
            raise ValueError(f"weights shape {tuple(weights.shape)} does not match {tuple(x.shape)}")
        w = w * weights.to(x.dtype)[..., None]
    return w


def _weighted_centroid(x: Tensor, w: Tensor) -> Tensor:
    return (x * w).sum(dim=-2, keepdim=True) / w.sum(dim=-2, keepdim=True).clamp_min(
        torch.finfo(x.dtype).tiny
    )


def kabsch_rotation(
    x: Tensor, ref: Tensor, mask: Tensor | None = None, weights: Tensor | None = None
) -> Tensor:
    """The proper rotation R [B, 3, 3] minimizing sum_n w_n |R (x_n - c_x) - (ref_n - c_ref)|^2.

    R = U diag(1, 1, det(U V^T)) V^T from the SVD U S V^T of sum_n w_n b_n a_n^T (float64).
    """
    w = _weights(x, mask, weights)
    a = (x - _weighted_centroid(x, w)) * w
    b = ref - _weighted_centroid(ref, w)
    H = torch.einsum("bni,bnj->bij", b.to(torch.float64), a.to(torch.float64))
    U, _, Vh = torch.linalg.svd(H)
    d = torch.sign(torch.linalg.det(U @ Vh))
    d = torch.where(d == 0, torch.ones_like(d), d)
    D = torch.diag_embed(torch.stack([torch.ones_like(d), torch.ones_like(d), d], dim=-1))
    return (U @ D @ Vh).to(x.dtype)


def kabsch_align(
    x: Tensor, ref: Tensor, mask: Tensor | None = None, weights: Tensor | None = None
) -> Tensor:
    """x rotated (proper rotation) and translated onto ref, minimizing the weighted squared
    deviation over valid atoms (AlphaFold3/Boltz pass per-atom weights). Padding comes out as 0.
    """
    w = _weights(x, mask, weights)
    R = kabsch_rotation(x, ref, mask, weights)
    cx, cref = _weighted_centroid(x, w), _weighted_centroid(ref, w)
    return ((x - cx) @ R.transpose(-1, -2) + cref) * atom_weights(x, mask)


def rmsd(x: Tensor, y: Tensor, mask: Tensor | None = None, align: bool = True) -> Tensor:
    """Root mean square deviation [B] over valid atoms, after optimal superposition of x onto y
    if align. The rotation is treated as a constant in the backward pass: by the envelope theorem
    this is the exact gradient of the minimal RMSD, and it avoids SVD gradients at ties.
    """
    w = atom_weights(x, mask)
    if align:
        R = kabsch_rotation(x.detach(), y.detach(), mask)
        cx, cy = _weighted_centroid(x, w), _weighted_centroid(y, w)
        x = (x - cx) @ R.transpose(-1, -2) + cy
    sq = (((x - y) ** 2).sum(-1, keepdim=True) * w).sum(dim=(-2, -1))
    n = w.sum(dim=(-2, -1)).clamp_min(1.0)
    msd = sq / n
    positive = msd > 0
    return torch.where(positive, torch.where(positive, msd, torch.ones_like(msd)).sqrt(), 0 * msd)
