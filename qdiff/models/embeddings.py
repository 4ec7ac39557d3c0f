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


def chirality_features(batch: dict[str, Tensor], x: Tensor) -> tuple[Tensor, Tensor]:
    """(chi [B, N], g [B, N, 3]) for the stereo centres of a padded batch at coordinates x.

    For a labelled centre c (batch "stereo": s_c = ±1) with its three lowest-ranked neighbours
    a, b, d in rank order (batch "stereo_frame", molecule-local indices; qdiff.data.stereo), and
    u_k = (x_k - x_c) / |x_k - x_c|:
    - chi_c = s_c u_a · (u_b × u_d): positive where the centre has its reference handedness,
      negative in the mirror image, 0 on unlabelled atoms, coplanar neighbours and padding;
    - g, the directions that raise chi, by the cross products of the triple product's derivative:
      g_a += s_c u_b × u_d, g_b += s_c u_d × u_a, g_d += s_c u_a × u_b, g_c -= (the three), summed
      over every centre an atom takes part in.
    Both are invariant (chi) or equivariant (g) under rotations, translations and atom order, and
    odd under reflections (a pseudoscalar and pseudovectors): only an SO(3) network may read them.
    Zeros when the batch carries no frames."""
    B, N = x.shape[:2]
    if "stereo_frame" not in batch or "stereo" not in batch:
        return x.new_zeros(B, N), x.new_zeros(B, N, 3)
    frame = batch["stereo_frame"].long()
    sign = batch["stereo"].to(x.dtype)
    neighbours = torch.gather(x, 1, frame.reshape(B, N * 3, 1).expand(-1, -1, 3)).view(B, N, 3, 3)
    u = neighbours - x[:, :, None]
    u = u / u.norm(dim=-1, keepdim=True).clamp_min(1e-6)
    ua, ub, ud = u.unbind(dim=2)
    cross = torch.stack([torch.cross(ub, ud, dim=-1), torch.cross(ud, ua, dim=-1), torch.cross(ua, ub, dim=-1)], dim=2)
    chi = sign * (ua * cross[:, :, 0]).sum(-1)
    cross = sign[..., None, None] * cross  # [B, N, 3 neighbours, 3]
    g = -cross.sum(dim=2)  # the centre's own share
    g = g.scatter_add(1, frame.reshape(B, N * 3, 1).expand(-1, -1, 3), cross.reshape(B, N * 3, 3))
    return chi, g


class ChiralityEncoder(nn.Module):
    """(W chi [B, N, dim], g [B, N, 3]) from `chirality_features`; W [dim] is zero at init and
    drawn from no random stream, so an untrained network's scalars do not depend on chi."""

    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(dim))

    def forward(self, batch: dict[str, Tensor], x: Tensor) -> tuple[Tensor, Tensor]:
        chi, g = chirality_features(batch, x)
        return chi[..., None] * self.weight.to(x.dtype), g


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
