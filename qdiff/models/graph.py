"""Batched molecular graphs from padded batches, built on the device with no Python loop over
molecules: the real atoms as one node list, and the edges bond graph ∪ radius graph (ET-Flow's
edge set) as flat index lists, so that message passing costs O(sum_b n_b^2) instead of the padded
O(B N_max^2) and pairs beyond the cutoff cost nothing."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .embeddings import N_BOND_CODES


@dataclass
class MoleculeGraph:
    """node_slot[m]: the padded-batch slot b * N + i of node m; src/dst: node ids of each directed
    edge (messages flow src -> dst); bond: the edge's bond code (0 = not bonded).

    Bucketed graphs (`molecule_graph(..., bucket=True)`) are padded to `bucket_size` nodes and
    edges, so that a compiled network sees a few shapes: the extra nodes read and write slot
    B * N (a zero row, dropped again), and the extra edges, marked False in `edge_valid`, join
    node 0 to itself and must carry zero weight."""

    node_slot: Tensor
    src: Tensor
    dst: Tensor
    bond: Tensor
    edge_valid: Tensor | None = None

    @property
    def n_nodes(self) -> int:
        return self.node_slot.shape[0]

    @property
    def bucketed(self) -> bool:
        return self.edge_valid is not None

    def nodes(self, padded: Tensor) -> Tensor:
        """[B, N, ...] -> [M, ...]: the rows of the real atoms (zeros for a bucket's extra nodes)."""
        flat = padded.reshape(-1, *padded.shape[2:])
        if self.bucketed:
            flat = torch.cat([flat, flat.new_zeros(1, *flat.shape[1:])])
        return flat[self.node_slot]

    def padded(self, nodes: Tensor, shape: tuple[int, int]) -> Tensor:
        """[M, ...] -> [B, N, ...] with zeros on padding."""
        slots = shape[0] * shape[1]
        out = nodes.new_zeros(slots + int(self.bucketed), *nodes.shape[1:])
        return out.index_copy(0, self.node_slot, nodes)[:slots].view(*shape, *nodes.shape[1:])


def bucket_size(n: int, smallest: int = 64, ratio: float = 1.25, multiple: int = 16) -> int:
    """The smallest bucket >= n of the sequence b_0 = smallest, b_k+1 = b_k * ratio rounded up to a
    multiple of `multiple` (64, 80, 112, 144, 192, ...): padding at most 25% of n plus the rounding
    (38% at n = 81, under 30% from a few hundred on), and about 16 shapes up to 2,000."""
    b = smallest
    while b < n:
        b = -(-int(b * ratio) // multiple) * multiple
    return b


def pad_to_buckets(graph: MoleculeGraph, n_slots: int) -> MoleculeGraph:
    """`graph` with nodes and edges padded to `bucket_size` (see MoleculeGraph)."""
    M, E = graph.node_slot.shape[0], graph.src.shape[0]
    extra_nodes, extra_edges = bucket_size(M) - M, bucket_size(E) - E
    device = graph.src.device
    fill = torch.zeros(extra_edges, dtype=graph.src.dtype, device=device)
    return MoleculeGraph(
        node_slot=torch.cat([graph.node_slot, torch.full((extra_nodes,), n_slots, dtype=graph.node_slot.dtype, device=device)]),
        src=torch.cat([graph.src, fill]), dst=torch.cat([graph.dst, fill]), bond=torch.cat([graph.bond, fill.to(graph.bond.dtype)]),
        edge_valid=torch.cat([torch.ones(E, dtype=torch.bool, device=device), torch.zeros(extra_edges, dtype=torch.bool, device=device)]))


def within_molecule_pairs(counts: Tensor) -> tuple[Tensor, Tensor]:
    """All ordered pairs (i, j), i != j, of atoms of the same molecule as node ids, for molecules of
    `counts` atoms laid out consecutively: sum_b n_b (n_b - 1) pairs, vectorized."""
    n = counts.long()
    first = torch.cumsum(n, 0) - n
    squares = n * n
    total = int(squares.sum())
    molecule = torch.repeat_interleave(torch.arange(n.shape[0], device=n.device), squares, output_size=total)
    local = torch.arange(total, device=n.device) - (torch.cumsum(squares, 0) - squares)[molecule]
    i, j = local // n[molecule], local % n[molecule]
    keep = i != j
    return (first[molecule] + i)[keep], (first[molecule] + j)[keep]


@torch.compiler.disable  # data-dependent sizes: built eagerly, the layers on top compile
def molecule_graph(mask: Tensor, x: Tensor, bond_index: Tensor, bond_order: Tensor, cutoff: float,
                   bucket: bool = False) -> MoleculeGraph:
    """Edges: every bond (both directions, at any distance) and every other same-molecule pair
    closer than `cutoff` at the coordinates x [B, N, 3]. `bond_index` [E, 2] holds padded-batch
    slots b * N + i (as `collate_molecules` writes them). `bucket`: nodes and edges padded to
    `bucket_size` (static shapes for torch.compile and CUDA graphs)."""
    B, N = mask.shape
    flat_mask = mask.reshape(-1)
    node_slot = flat_mask.nonzero().squeeze(1)
    node_of_slot = torch.cumsum(flat_mask.long(), 0) - 1
    dst, src = within_molecule_pairs(mask.sum(1))
    M = node_slot.shape[0]
    # Bond codes of the candidate pairs by binary search over the sorted bond keys dst * M + src.
    bonded_a, bonded_b = node_of_slot[bond_index[:, 0]], node_of_slot[bond_index[:, 1]]
    codes = bond_order.long().clamp(max=N_BOND_CODES - 1)
    keys = torch.cat([bonded_a * M + bonded_b, bonded_b * M + bonded_a])
    keys, order = torch.sort(keys)
    codes = torch.cat([codes, codes])[order]
    pair_keys = dst * M + src
    at = torch.searchsorted(keys, pair_keys).clamp(max=max(keys.shape[0] - 1, 0))
    bond = torch.where(keys[at] == pair_keys, codes[at], 0) if keys.numel() else torch.zeros_like(pair_keys)
    with torch.no_grad():
        flat_x = x.reshape(-1, 3)[node_slot]
        near = (flat_x[src] - flat_x[dst]).norm(dim=-1) < cutoff
    keep = near | (bond > 0)
    graph = MoleculeGraph(node_slot, src[keep], dst[keep], bond[keep])
    return pad_to_buckets(graph, B * N) if bucket else graph


def cosine_envelope(dist: Tensor, cutoff: float) -> Tensor:
    """0.5 (cos(pi d / r_c) + 1) for d < r_c, else 0: a weight that takes edges smoothly out of the
    radius graph, so the network stays continuous as pairs cross the cutoff."""
    return torch.where(dist < cutoff, 0.5 * (torch.cos(torch.pi * dist / cutoff) + 1.0), torch.zeros_like(dist))


def scatter_sum(values: Tensor, index: Tensor, n: int) -> Tensor:
    """out[k] = sum of values[e] over edges with index[e] == k."""
    return values.new_zeros(n, *values.shape[1:]).index_add_(0, index, values)
