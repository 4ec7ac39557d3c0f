"""Shared input embeddings: sinusoidal time / index encodings and molecular graph features."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

N_ELEMENTS = 100
N_HYBRIDIZATION = 8
N_BOND_CODES = 5  # 0 = no bond, 1-3 = single/double/triple, 4 = aromatic


def sinusoidal_embedding(values: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    """[..., dim] sin/cos features of `values` at geometrically spaced frequencies."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=values.device) / max(half, 1))
    angles = values.float()[..., None] * freqs
    emb = torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)
    return emb if dim % 2 == 0 else torch.cat([emb, torch.zeros_like(emb[..., :1])], dim=-1)


class AtomEncoder(nn.Module):
    """Scalar per-atom features from the store's graph features and the time t in [0, 1]."""

    def __init__(self, dim: int, time_dim: int = 32):
        super().__init__()
        self.element = nn.Embedding(N_ELEMENTS, dim)
        self.hybrid = nn.Embedding(N_HYBRIDIZATION, dim)
        self.time_dim = time_dim
        self.mix = nn.Sequential(nn.Linear(dim + 3 + time_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, batch: dict[str, Tensor], t: Tensor) -> Tensor:
        z = batch["z"].long().clamp(max=N_ELEMENTS - 1)
        h = self.element(z) + self.hybrid(batch["hybridization"].long().clamp(max=N_HYBRIDIZATION - 1))
        flags = torch.stack([batch["aromatic"].float(), batch["in_ring"].float(), batch["formal_charge"].float()], dim=-1)
        time = sinusoidal_embedding(t * 1000.0, self.time_dim)[:, None, :].expand(-1, z.shape[1], -1)
        return self.mix(torch.cat([h, flags, time], dim=-1))


def dense_bond_codes(batch: dict[str, Tensor]) -> Tensor:
    """[B, N, N] bond order codes (0 where there is no bond) from the collated bond list."""
    B, N = batch["mask"].shape
    codes = torch.zeros(B * N * N, dtype=torch.long, device=batch["mask"].device)
    idx = batch["bond_index"]
    if idx.numel():
        b = idx[:, 0] // N
        i, j = idx[:, 0] % N, idx[:, 1] % N
        order = batch["bond_order"].long().clamp(max=N_BOND_CODES - 1)
        codes[b * N * N + i * N + j] = order
        codes[b * N * N + j * N + i] = order
    return codes.view(B, N, N)
