"""An equivariant conformer network with e3nn (NequIP-style interaction blocks) on the sparse
molecular graph (bonds ∪ radius graph, `graph.molecule_graph`): depthwise ("uvu") tensor
products of neighbour features with the spherical harmonics (l <= 2) of relative positions,
weighted per edge by a radial MLP of the distance and the bond order, averaged over neighbours
with a smooth cosine cutoff weight, mixed by an equivariant linear layer, gated nonlinearities,
an optional per-atom feed-forward block on the scalars (width ffn_mult x scalars, where most of
a large model's parameters sit at no per-edge cost), and a final l = 1 vector per atom.
`edge_scalars`/`edge_vectors` project the atom features down before the per-edge product, whose
memory traffic dominates the step (e3nn's elementwise products over [edges, 4 S + 7 V] numbers).

Depthwise products keep the per-edge weights at one per (channel, path) instead of a fully
connected product's (channel_in x channel_out) per path: 264 instead of 17,856 numbers per edge at
96x0e + 24x1o.

Symmetry (`symmetry`):
- "o3" (default): scalars 0e, vectors 1o, spherical harmonics 0e + 1o + 2e. The network is
  E(3)-equivariant (rotations, translations *and* reflections): f(-x) = -f(x) exactly, so it
  cannot tell a molecule from its mirror image (ET-Flow(O(3)); pair it with the post-hoc parity
  switch, qdiff.eval.chirality).
- "so3": every irrep is labelled parity-even (0e, 1e, and the harmonics relabelled 0e + 1e + 2e;
  their values are unchanged). Rotations act by the same Wigner matrices, so the network stays
  exactly SO(3)-equivariant, but e3nn's parity selection rule now also admits the antisymmetric
  1 x 1 -> 1 path (the cross product of a vector feature with Y1(r)), whose output does not
  change sign under x -> -x while the other vector paths do: reflections no longer commute and
  the network can tell enantiomers apart (ET-Flow(SO(3)), its `so3_equivariant` flag, which
  likewise adds cross-product terms: etflow/networks/torchmd_net/model_dynamics.py).
  It also reads the stereo centres directly (embeddings.chirality_features): each labelled
  centre's agreement chi = s det[u_a, u_b, u_c] with its label enters the scalars, and the
  pseudovectors g that raise chi (cross products of the unit vectors to its rank-ordered
  neighbours) enter as one extra l = 1 input channel. Both are rotation-invariant/-equivariant and
  odd under reflections, so the network can tell which centres have the wrong handedness and in
  which direction to move them without first composing a triple product from its own layers."""
from __future__ import annotations

import contextlib
import logging

import e3nn
import torch
from e3nn import o3
from e3nn.math import soft_one_hot_linspace
from e3nn.nn import Gate
from torch import Tensor, nn

from .cueq import ChannelWiseProduct, check_backend, cueq_available
from .embeddings import N_BOND_CODES, AtomEncoder, ChiralityEncoder
from .graph import MoleculeGraph, cosine_envelope, molecule_graph, scatter_sum

logger = logging.getLogger(__name__)


def depthwise_paths(irreps_in: o3.Irreps, irreps_sh: o3.Irreps, targets: o3.Irreps) -> tuple[o3.Irreps, list]:
    """Output irreps and "uvu" instructions of every path irreps_in x irreps_sh -> an irrep in targets."""
    wanted = {ir for _, ir in targets}
    mid, instructions = [], []
    for i, (mul, ir_in) in enumerate(irreps_in):
        for j, (_, ir_sh) in enumerate(irreps_sh):
            for ir_out in ir_in * ir_sh:
                if ir_out in wanted:
                    instructions.append((i, j, len(mid), "uvu", True))
                    mid.append((mul, ir_out))
    return o3.Irreps(mid), instructions


@contextlib.contextmanager
def _traceable_e3nn():
    """Build e3nn modules without TorchScript'd fx code, which torch.compile cannot trace (eager
    speed is the same: 104 vs 105 ms per step measured on CPU)."""
    saved = e3nn.get_optimization_defaults()
    e3nn.set_optimization_defaults(jit_script_fx=False)
    try:
        yield
    finally:
        e3nn.set_optimization_defaults(**saved)


SYMMETRIES = ("o3", "so3")


def _parities(symmetry: str) -> tuple[str, o3.Irreps]:
    """(label of the l = 1 channels, irreps of the spherical harmonics l <= 2 as the tensor products
    see them). SO(3): all even, so no path is forbidden by parity; the harmonics' values are those
    of o3.spherical_harmonics either way (computed with the true 0e + 1o + 2e irreps)."""
    if symmetry not in SYMMETRIES:
        raise ValueError(f"symmetry {symmetry!r}: choose one of {SYMMETRIES}")
    if symmetry == "o3":
        return "1o", o3.Irreps.spherical_harmonics(2)
    return "1e", o3.Irreps("1x0e + 1x1e + 1x2e")


class E3Layer(nn.Module):
    """h' = Gate(Linear(sum_e w_e TP(h_src, Y(r_e); R(edge_e)) / max(sum_e w_e, 1))) + Linear(h), then
    s' += FFN(s') on the scalar channels when ffn_mult > 0."""

    def __init__(self, irreps_in: o3.Irreps, scalars: int, vectors: int, n_radial: int, edge_dim: int, ffn_mult: int = 0,
                 edge_width: tuple[int, int] | None = None, symmetry: str = "o3", backend: str = "auto"):
        super().__init__()
        vector, self.sh = _parities(symmetry)
        self.gate = Gate(f"{scalars}x0e", [nn.functional.silu], f"{vectors}x0e", [torch.sigmoid], f"{vectors}x{vector}")
        # Optional per-atom down-projection before the per-edge product (MACE/Allegro-style): the
        # edge work, which dominates the step, scales with the edge width, not the node width.
        irreps_edge = irreps_in if edge_width is None else o3.Irreps(
            [(edge_width[0] if ir.l == 0 else edge_width[1], ir) for _, ir in irreps_in])
        self.down = None if edge_width is None else o3.Linear(irreps_in, irreps_edge)
        irreps_mid, instructions = depthwise_paths(irreps_edge, self.sh, self.gate.irreps_in)
        self.tp = o3.TensorProduct(irreps_edge, self.sh, irreps_mid, instructions, shared_weights=False, internal_weights=False)
        # the same product by cuEquivariance (qdiff.models.cueq): no parameters, not in the state_dict
        self.backend, self._tp_args, self._tp_cueq = backend, (irreps_edge, self.sh, irreps_mid, instructions), None
        self.radial = nn.Sequential(nn.Linear(n_radial + edge_dim, 64), nn.SiLU(), nn.Linear(64, self.tp.weight_numel))
        self.mix = o3.Linear(irreps_mid, self.gate.irreps_in)
        self.self_interaction = o3.Linear(irreps_in, self.gate.irreps_out)
        self.irreps_out = self.gate.irreps_out
        self.scalars = scalars
        self.ffn = (nn.Sequential(nn.LayerNorm(scalars), nn.Linear(scalars, ffn_mult * scalars), nn.SiLU(),
                                  nn.Linear(ffn_mult * scalars, scalars)) if ffn_mult > 0 else None)

    def product(self, device: torch.device):
        """The per-edge tensor product for `device`: e3nn's, or cuEquivariance's (made on first use;
        `auto` takes it only on CUDA where its fused kernel applies, qdiff.models.cueq)."""
        auto = self.backend == "auto"
        if self.backend == "e3nn" or (auto and (device.type != "cuda" or not cueq_available())):
            return self.tp
        if self._tp_cueq is None:
            self._tp_cueq = ChannelWiseProduct(*self._tp_args)
        return self.tp if auto and not self._tp_cueq.fused else self._tp_cueq

    def forward(self, h: Tensor, sh: Tensor, edge_features: Tensor, weight: Tensor, graph: MoleculeGraph) -> Tensor:
        source = h if self.down is None else self.down(h)
        messages = self.product(h.device)(source[graph.src], sh, self.radial(edge_features)) * weight[:, None]
        norm = scatter_sum(weight, graph.dst, h.shape[0]).clamp_min(1.0)
        agg = scatter_sum(messages, graph.dst, h.shape[0]) / norm[:, None]
        out = self.gate(self.mix(agg)) + self.self_interaction(h)
        if self.ffn is not None:
            s = out[:, : self.scalars]
            out = torch.cat([s + self.ffn(s), out[:, self.scalars:]], dim=-1)
        return out


class E3Conformer(nn.Module):
    """forward(batch, x [B, N, 3], t [B]) -> [B, N, 3]: an equivariant vector per atom (zero on
    padding), message passing over bonds ∪ pairs closer than `cutoff` (Å). `symmetry` "o3":
    E(3)-equivariant (mirror images give mirrored outputs); "so3": equivariant to rotations and
    translations only, chirality-aware (see the module docstring). `backend`: who computes the
    per-edge tensor products, "e3nn", "cueq" (cuEquivariance) or "auto" (cuEquivariance where its
    fused CUDA kernel applies; `set_backend` changes it): same weights, same checkpoints, outputs
    equal to float rounding (qdiff.models.cueq)."""

    def __init__(self, scalars: int = 32, vectors: int = 8, layers: int = 3, n_radial: int = 16, cutoff: float = 10.0,
                 ffn_mult: int = 0, edge_scalars: int | None = None, edge_vectors: int | None = None, symmetry: str = "o3",
                 backend: str = "auto"):
        super().__init__()
        vector, _ = _parities(symmetry)
        check_backend(backend)
        self.backend = backend
        self.symmetry = symmetry
        if (edge_scalars is None) != (edge_vectors is None):
            raise ValueError("edge_scalars and edge_vectors go together (or neither: edges at the node width)")
        edge_width = None if edge_scalars is None else (int(edge_scalars), int(edge_vectors))
        self.encoder = AtomEncoder(scalars)
        self.bond = nn.Embedding(N_BOND_CODES, 8)
        self.n_radial, self.cutoff = n_radial, cutoff
        # SO(3): the stereo centres' pseudovectors g (embeddings.chirality_features) enter as one
        # extra l = 1 input channel beside the atom scalars
        irreps = o3.Irreps(f"{scalars}x0e" if symmetry == "o3" else f"{scalars}x0e + 1x{vector}")
        blocks = []
        with _traceable_e3nn():
            for _ in range(layers):
                block = E3Layer(irreps, scalars, vectors, n_radial, 8, ffn_mult, edge_width, symmetry, backend)
                blocks.append(block)
                irreps = block.irreps_out
            self.layers = nn.ModuleList(blocks)
            self.head = o3.Linear(irreps, f"1x{vector}")
        # SO(3) only: the reflection-odd agreement of each stereo centre with its label enters the scalars
        self.chirality = ChiralityEncoder(scalars) if symmetry == "so3" else None
        # Graphs padded to size buckets (set by qdiff.models.compile_network): static shapes for
        # torch.compile without dynamic shapes and for CUDA graphs; outputs unchanged.
        self.static_shapes = False
        self.shapes_seen: set[tuple[int, int]] = set()
        self.compiled_message_passing = None  # torch.compile(E3Conformer.message_passing), by compile_network

    def set_backend(self, backend: str) -> None:
        """Who computes the per-edge tensor products from now on (a runtime choice: the weights
        and the checkpoint are the same for every backend)."""
        check_backend(backend)
        self.backend = backend
        for layer in self.layers:
            layer.backend = backend

    def forward(self, batch: dict[str, Tensor], x: Tensor, t: Tensor) -> Tensor:
        if x.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            raise ValueError("precision bf16 on CPU: the e3nn network runs bf16 on CUDA only (e3nn's Linear refuses "
                             "CPU autocast's mixed dtypes); use precision fp32 on CPU")
        graph, pos, h = self.node_inputs(batch, x, t)
        if self.compiled_message_passing is not None:  # the class's function, compiled: a deep copy stays itself
            out = self.compiled_message_passing(self, graph, pos, h)
        else:
            out = self.message_passing(graph, pos, h)
        return self.unpad(graph, out, batch["mask"])

    @torch.compiler.disable  # per-batch [B, N] shapes: eager, so a compiled network sees only the graph's
    def node_inputs(self, batch: dict[str, Tensor], x: Tensor, t: Tensor) -> tuple[MoleculeGraph, Tensor, Tensor]:
        """(graph, node positions [M, 3], node features [M, irreps]) of a padded batch; with
        `static_shapes` the graph is padded to size buckets and each new (nodes, edges) bucket is
        logged (`shapes_seen`), so recompiles can be told from the buckets' first sight."""
        graph = molecule_graph(batch["mask"], x, batch["bond_index"], batch["bond_order"], self.cutoff, bucket=self.static_shapes)
        if self.static_shapes:
            shape = (graph.n_nodes, int(graph.src.shape[0]))
            if shape not in self.shapes_seen:
                self.shapes_seen.add(shape)
                logger.info("e3nn static shapes: new bucket %s nodes x %s edges (%d seen)", *shape, len(self.shapes_seen))
        for layer in self.layers:  # choose (and build) the tensor products here, outside any compiled region
            layer.product(x.device)
        h = self.encoder(batch, t).to(x.dtype)
        if self.chirality is not None:
            agreement, directions = self.chirality(batch, x)
            h = torch.cat([h + agreement, directions], dim=-1)
        return graph, graph.nodes(x), graph.nodes(h)

    @torch.compiler.disable
    def unpad(self, graph: MoleculeGraph, out: Tensor, mask: Tensor) -> Tensor:
        return graph.padded(out, tuple(mask.shape))

    def message_passing(self, graph: MoleculeGraph, pos: Tensor, h: Tensor) -> Tensor:
        """Node vectors [M, 3] from node features: the layers and the head, on the graph's shapes only."""
        rel = pos[graph.src] - pos[graph.dst]  # x_j - x_i for the message j -> i
        if graph.bucketed:  # a bucket's extra edges (node 0 to itself): a unit vector, weight 0
            rel = torch.where(graph.edge_valid[:, None], rel, rel.new_tensor([1.0, 0.0, 0.0]).expand_as(rel))
        dist = rel.norm(dim=-1)
        # The true harmonics (0e + 1o + 2e); in SO(3) mode the layers read them as 0e + 1e + 2e.
        sh = o3.spherical_harmonics(o3.Irreps.spherical_harmonics(2), rel, normalize=True, normalization="component")
        radial = soft_one_hot_linspace(dist, 0.0, self.cutoff, self.n_radial, basis="smooth_finite", cutoff=True)
        edge = torch.cat([radial * self.n_radial**0.5, self.bond(graph.bond).to(pos.dtype)], dim=-1)
        weight = torch.where(graph.bond > 0, torch.ones_like(dist), cosine_envelope(dist, self.cutoff))
        if graph.bucketed:
            weight = weight * graph.edge_valid.to(weight.dtype)
        for layer in self.layers:
            h = layer(h, sh, edge, weight, graph)
        return self.head(h)
