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
    """Scalar per-atom features from the store's graph features and the time t in [0, 1].

    `stereo` (batch key "stereo", -1/0/+1 per atom, qdiff.data.stereo: the handedness of a tagged
    centre, invariant to atom and bond order) enters through a 3-way embedding, zero at init (a
    random init made no measured difference to learning handedness, and it would shift every later
    parameter's random init). Checkpoints saved before it existed still load strictly:
    the missing weight is filled with zeros, which gives exactly their old outputs. Batches without the key
    (older callers) get 0 everywhere. It is a reflection-invariant scalar: O(3) networks stay
    reflection-equivariant; SO(3) networks can use it to choose the enantiomer."""

    def __init__(self, dim: int, time_dim: int = 32):
        super().__init__()
        self.element = nn.Embedding(N_ELEMENTS, dim)
        self.hybrid = nn.Embedding(N_HYBRIDIZATION, dim)
        # zero-initialized and drawn from no random stream: every other parameter is initialized
        # exactly as before the feature existed (same seeds, same runs), and an untrained network's
        # output does not depend on the label
        self.stereo = nn.Embedding(3, dim, _weight=torch.zeros(3, dim))
        self.time_dim = time_dim
        self.mix = nn.Sequential(nn.Linear(dim + 3 + time_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, batch: dict[str, Tensor], t: Tensor) -> Tensor:
        z = batch["z"].long().clamp(max=N_ELEMENTS - 1)
        h = self.element(z) + self.hybrid(batch["hybridization"].long().clamp(max=N_HYBRIDIZATION - 1))
        if "stereo" in batch:
            h = h + self.stereo(batch["stereo"].long().clamp(-1, 1) + 1)
        flags = torch.stack([batch["aromatic"].float(), batch["in_ring"].float(), batch["formal_charge"].float()], dim=-1)
        time = sinusoidal_embedding(t * 1000.0, self.time_dim)[:, None, :].expand(-1, z.shape[1], -1)
        return self.mix(torch.cat([h, flags, time], dim=-1))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "stereo.weight"
        if key not in state_dict and prefix + "element.weight" in state_dict:  # saved before the stereo feature
            state_dict[key] = torch.zeros_like(self.stereo.weight)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


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
