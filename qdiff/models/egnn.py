"""EGNN (Satorras et al. 2021, as in EDM): E(3)-equivariant message passing on the complete graph
of each molecule, with bond orders as edge features. Output: one vector per atom,
sum_layers (x_out - x_in), equivariant under rotations *and reflections* (E(3): it sees only
distances, so f(-x) = -f(x) and it cannot tell enantiomers apart; sampling applies ET-Flow's
post-hoc parity switch, qdiff.eval.chirality) and invariant under translations."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .embeddings import N_BOND_CODES, AtomEncoder, dense_bond_codes


class EGNNLayer(nn.Module):
    def __init__(self, dim: int, edge_dim: int):
        super().__init__()
        self.edge = nn.Sequential(nn.Linear(2 * dim + 1 + edge_dim, dim), nn.SiLU(), nn.Linear(dim, dim), nn.SiLU())
        self.coord = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, 1, bias=False))
        self.node = nn.Sequential(nn.Linear(2 * dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        nn.init.xavier_uniform_(self.coord[-1].weight, gain=1e-3)

    def forward(self, h: Tensor, x: Tensor, edge_attr: Tensor, pair_mask: Tensor) -> tuple[Tensor, Tensor]:
        B, N, D = h.shape
        diff = x[:, :, None, :] - x[:, None, :, :]  # [B, N, N, 3]
        d2 = (diff**2).sum(-1, keepdim=True)
        # The first edge Linear on cat([h_i, h_j, d2, e_ij]), split by input block: h_i and h_j are
        # projected once per atom instead of once per pair (same weights and result, fewer FLOPs).
        first = self.edge[0]
        w_i, w_j, w_d, w_e = first.weight.split([D, D, 1, first.in_features - 2 * D - 1], dim=1)
        pre = torch.nn.functional.linear(edge_attr, w_e, first.bias) + d2 * w_d[:, 0]
        pre = pre + (h @ w_i.T)[:, :, None, :] + (h @ w_j.T)[:, None, :, :]
        m = self.edge[1:](pre) * pair_mask[..., None]
        n_neighbors = pair_mask.sum(-1, keepdim=True).clamp_min(1.0)
        weight = self.coord(m) * pair_mask[..., None]
        x = x + (diff / (torch.sqrt(d2 + 1e-12) + 1.0) * weight).sum(2) / n_neighbors
        h = h + self.node(torch.cat([h, m.sum(2) / n_neighbors], dim=-1))
        return h, x


class EGNN(nn.Module):
    """EGNN over padded batches: forward(batch, x [B, N, 3], t [B]) -> [B, N, 3] (masked)."""

    def __init__(self, hidden: int = 64, layers: int = 4):
        super().__init__()
        self.encoder = AtomEncoder(hidden)
        self.bond = nn.Embedding(N_BOND_CODES, 16)
        self.layers = nn.ModuleList(EGNNLayer(hidden, 16) for _ in range(layers))

    def forward(self, batch: dict[str, Tensor], x: Tensor, t: Tensor) -> Tensor:
        mask = batch["mask"].to(x.dtype)
        pair_mask = mask[:, :, None] * mask[:, None, :] * (1 - torch.eye(x.shape[1], dtype=x.dtype, device=x.device))
        h = self.encoder(batch, t).to(x.dtype)
        edge_attr = self.bond(dense_bond_codes(batch)).to(x.dtype)
        x0 = x
        for layer in self.layers:
            h, x = layer(h, x, edge_attr, pair_mask)
        return (x - x0) * mask[..., None]
