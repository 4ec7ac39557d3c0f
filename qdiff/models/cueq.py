"""NVIDIA cuEquivariance as an optional backend for the e3nn network's per-edge tensor products.

The expensive op of `equivariant.E3Layer` is a depthwise ("uvu") tensor product with per-edge
weights from the radial MLP: no parameters of its own. cuEquivariance's ChannelWiseTensorProduct
computes the same product (e3nn's "component" irrep and "element" path normalization, the only
ones it implements; layout mul_ir, as e3nn) with fused CUDA kernels when
`cuequivariance-ops-torch-cu12`/`-cu13` is installed, and with plain PyTorch ops otherwise (CPU).
It orders its output segments by irrep (stable in path order) where e3nn keeps instruction
order, so `ChannelWiseProduct` permutes the weights in and the output back: the two backends
take the same weights, give the same numbers (to float rounding) and share checkpoints.

Backends (the runtime setting `backend`, qdiff.train): "e3nn" (portable reference), "cueq"
(cuEquivariance on any device; an error if it is not installed) and "auto" (cuEquivariance only
where its fused kernel applies: on CUDA, installed, and every input irrep of the product with the
same multiplicity, e.g. edge_scalars == edge_vectors; e3nn otherwise, since its PyTorch fallback
is slower than e3nn). Install with `pip install 'qdiff[cuda]'` plus the ops package that matches
the cluster's CUDA (`cuequivariance-ops-torch-cu12` or `-cu13`).
"""
from __future__ import annotations

import copy
import functools

import torch
from e3nn import o3
from torch import Tensor, nn

BACKENDS = ("auto", "e3nn", "cueq")


@functools.cache
def cueq_available() -> bool:
    """True when cuequivariance-torch imports."""
    try:
        import cuequivariance  # noqa: F401
        import cuequivariance_torch  # noqa: F401
    except ImportError:
        return False
    return True


@functools.cache
def cueq_kernels_available() -> bool:
    """True when cuEquivariance's CUDA kernels (cuequivariance-ops-torch-cu12/-cu13) are installed;
    without them it runs plain PyTorch ops."""
    import importlib.util

    return importlib.util.find_spec("cuequivariance_ops_torch") is not None


def check_backend(backend: str) -> None:
    """ValueError for an unknown name; ImportError naming the install for "cueq" without the package."""
    if backend not in BACKENDS:
        raise ValueError(f"backend {backend!r}: choose one of {BACKENDS}")
    if backend == "cueq" and not cueq_available():
        raise ImportError("backend 'cueq' needs cuEquivariance: pip install 'qdiff[cuda]' (and cuequivariance-ops-torch-cu12 "
                          "or -cu13 for its CUDA kernels), or use backend e3nn / auto")


class ChannelWiseProduct:
    """(x1 [E, irreps_in1.dim], x2 [E, irreps_in2.dim], weight [E, weight_numel]) ->
    [E, irreps_out.dim], equal to e3nn's o3.TensorProduct(irreps_in1, irreps_in2, irreps_out,
    instructions) with every instruction "uvu", trainable, and per-edge (external) weights.

    Deliberately not an nn.Module: cuEquivariance keeps its coefficients as buffers, which would
    put backend-specific keys into the network's state_dict. It holds one copy per device instead,
    made on first use, so checkpoints are the same whichever backend trained or loads them."""

    def __init__(self, irreps_in1: o3.Irreps, irreps_in2: o3.Irreps, irreps_out: o3.Irreps, instructions: list):
        import cuequivariance as cue
        import cuequivariance_torch as cuet
        from cuequivariance import descriptors

        if any(ins[3] != "uvu" or irreps_in2[ins[1]].mul != 1 for ins in instructions):
            raise ValueError("ChannelWiseProduct: only 'uvu' instructions with multiplicity-1 second operands")
        in1, in2 = cue.Irreps("O3", str(irreps_in1)), cue.Irreps("O3", str(irreps_in2))
        wanted = sorted({cue.O3.from_string(str(irreps_out[ins[2]].ir)) for ins in instructions})
        expr = descriptors.channelwise_tensor_product(in1, in2, wanted)
        paths = expr.polynomial.operations[0][1].paths  # indices: (weight, in1, in2, out) segments
        cue_out = [(mul, str(ir)) for mul, ir in expr.operands[-1].irreps]
        segment = {(p.indices[1], p.indices[2], cue_out[p.indices[3]][1]): (p.indices[0], p.indices[3]) for p in paths}
        if len(segment) != len(instructions):
            raise ValueError(f"cuEquivariance has {len(segment)} paths for {len(instructions)} e3nn instructions")
        weight_at, out_at = [0], [0]  # e3nn's flat offsets of each instruction's weights and outputs
        for i1, _, io, *_ in instructions:
            weight_at.append(weight_at[-1] + irreps_in1[i1].mul)
            out_at.append(out_at[-1] + irreps_out[io].dim)
        cue_out_at = torch.tensor([0] + [mul * o3.Irrep(ir).dim for mul, ir in cue_out]).cumsum(0).tolist()
        weight_blocks, out_index = {}, []
        for k, (i1, i2, io, *_) in enumerate(instructions):
            w_seg, o_seg = segment[(i1, i2, str(irreps_out[io].ir))]
            weight_blocks[w_seg] = range(weight_at[k], weight_at[k + 1])
            if cue_out_at[o_seg + 1] - cue_out_at[o_seg] != out_at[k + 1] - out_at[k]:
                raise ValueError(f"instruction {k}: cuEquivariance segment {o_seg} has another size")
            out_index.extend(range(cue_out_at[o_seg], cue_out_at[o_seg + 1]))
        self.weight_index = torch.tensor([i for s in sorted(weight_blocks) for i in weight_blocks[s]])
        self.out_index = torch.tensor(out_index)
        self.weight_numel = weight_at[-1]
        product = cuet.ChannelWiseTensorProduct(in1, in2, wanted, layout=cue.mul_ir, shared_weights=False, internal_weights=False)
        # its CUDA kernel applies (installed, and equal multiplicities), not its PyTorch fallback
        self.fused = product.method != "naive" and cueq_kernels_available()
        self._on: dict[torch.device, tuple[nn.Module, Tensor, Tensor]] = {torch.device("cpu"): (product, self.weight_index, self.out_index)}

    def _for(self, device: torch.device) -> tuple[nn.Module, Tensor, Tensor]:
        if device not in self._on:
            product, w, o = self._on[torch.device("cpu")]
            self._on[device] = (copy.deepcopy(product).to(device), w.to(device), o.to(device))
        return self._on[device]

    def __call__(self, x1: Tensor, x2: Tensor, weight: Tensor) -> Tensor:
        product, weight_index, out_index = self._for(x1.device)
        return product(x1, x2, weight.index_select(-1, weight_index)).index_select(-1, out_index)
