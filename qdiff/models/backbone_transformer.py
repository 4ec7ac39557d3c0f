"""A non-equivariant transformer over Cα coordinates (a scaled-down Proteina design): tokens
from coordinates, sinusoidal time and residue-index encodings; attention biased per head by
radial features of pairwise distances of x_t (and of a self-conditioning structure); trained with
random-rotation augmentation. Output: one vector per residue."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .embeddings import sinusoidal_embedding


def distance_features(x: Tensor, n: int, max_dist: float = 30.0) -> Tensor:
    """[B, L, L, n] Gaussian radial features of pairwise distances, centers evenly over
    [0, max_dist] in the units of x (30 Å; 3.0 when training in nm with coord_scale 0.1)."""
    d = torch.cdist(x, x)
    centers = torch.linspace(0.0, max_dist, n, device=x.device, dtype=x.dtype)
    width = max_dist / n
    z = (d[..., None] - centers) / width
    if torch.is_grad_enabled() and x.requires_grad:
        return torch.exp(-(z * z))
    return z.square_().neg_().exp_()  # the same values in place: this [B, L, L, n] tensor dominates the step


class BiasedBlock(nn.Module):
    def __init__(self, dim: int, heads: int, pair_dim: int):
        super().__init__()
        self.heads, self.dim = heads, dim
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.bias = nn.Linear(pair_dim, heads)
        self.out = nn.Linear(dim, dim)
        self.ff = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, s: Tensor, pair: Tensor, mask: Tensor) -> Tensor:
        B, L, D = s.shape
        q, k, v = self.qkv(self.norm1(s)).view(B, L, 3, self.heads, D // self.heads).unbind(2)
        logits = torch.einsum("bihd,bjhd->bhij", q, k) / (D // self.heads) ** 0.5
        logits = logits + self.bias(pair).permute(0, 3, 1, 2)
        logits = logits.masked_fill(~mask[:, None, None, :], torch.finfo(logits.dtype).min)
        attn = logits.softmax(-1)
        s = s + self.out(torch.einsum("bhij,bjhd->bihd", attn, v).reshape(B, L, D))
        return s + self.ff(self.norm2(s))


class BackboneTransformer(nn.Module):
    """forward(x [B, L, 3], t [B], mask [B, L], self_cond [B, L, 3] | None) -> [B, L, 3]."""

    def __init__(self, dim: int = 128, layers: int = 4, heads: int = 8, pair_bins: int = 32, self_conditioning: bool = True,
                 max_distance: float = 30.0):
        super().__init__()
        self.dim, self.pair_bins, self.self_conditioning = dim, pair_bins, self_conditioning
        self.max_distance = max_distance
        self.coords = nn.Linear(3, dim)
        self.cond = nn.Linear(2 * dim, dim)
        pair_dim = pair_bins * (2 if self_conditioning else 1)
        self.blocks = nn.ModuleList(BiasedBlock(dim, heads, pair_dim) for _ in range(layers))
        self.head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, 3))

    def forward(self, x: Tensor, t: Tensor, mask: Tensor, self_cond: Tensor | None = None) -> Tensor:
        B, L, _ = x.shape
        index = torch.arange(L, device=x.device).expand(B, L)
        cond = torch.cat([sinusoidal_embedding(t * 1000.0, self.dim)[:, None].expand(B, L, self.dim),
                          sinusoidal_embedding(index, self.dim)], dim=-1)
        s = self.coords(x) + self.cond(cond.to(x.dtype))
        pair = distance_features(x, self.pair_bins, self.max_distance)
        if self.self_conditioning:
            if self_cond is None:  # no self-conditioning structure: its features are zero (not computed)
                sc_pair = torch.zeros_like(pair)
            else:
                sc_pair = distance_features(self_cond, self.pair_bins, self.max_distance)
            pair = torch.cat([pair, sc_pair], dim=-1)
        for block in self.blocks:
            s = block(s, pair, mask)
        return self.head(s) * mask[..., None].to(x.dtype)
