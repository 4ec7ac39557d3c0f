"""The cuEquivariance backend of the e3nn network computes what e3nn computes: same weights, same
outputs and gradients (to float rounding), same checkpoints. On CPU cuEquivariance runs its plain
PyTorch path; the GPU kernels are measured by benchmarks/gpu_suite.sh."""
import pytest
import torch
from e3nn import o3

pytest.importorskip("cuequivariance_torch")  # installed with qdiff[dev] and qdiff[cuda]

from qdiff.models.cueq import ChannelWiseProduct, check_backend  # noqa: E402
from qdiff.models.equivariant import E3Conformer, _parities, depthwise_paths  # noqa: E402


@pytest.mark.parametrize("symmetry", ["o3", "so3"])
@pytest.mark.parametrize("muls", [(16, 4), (8, 8), (5, 3)])
def test_channelwise_product_equals_e3nn_uvu_product_in_float64(symmetry, muls):
    """Every path, including the pairs that give two outputs (1 x 1 -> 0 + 1 in SO(3) mode), in
    e3nn's instruction order, in float64 and float32."""
    scalars, vectors = muls
    vector, sh = _parities(symmetry)
    irreps_in = o3.Irreps(f"{scalars}x0e + {vectors}x{vector}")
    mid, instructions = depthwise_paths(irreps_in, sh, o3.Irreps(f"{scalars}x0e + {vectors}x0e + {vectors}x{vector}"))
    reference = o3.TensorProduct(irreps_in, sh, mid, instructions, shared_weights=False, internal_weights=False).double()
    product = ChannelWiseProduct(irreps_in, sh, mid, instructions)
    assert product.weight_numel == reference.weight_numel
    gen = torch.Generator().manual_seed(0)
    x1 = torch.randn(11, irreps_in.dim, generator=gen, dtype=torch.float64)
    x2 = torch.randn(11, sh.dim, generator=gen, dtype=torch.float64)
    w = torch.randn(11, reference.weight_numel, generator=gen, dtype=torch.float64)
    expected = reference(x1, x2, w)
    got = product(x1, x2, w)
    assert got.shape == expected.shape and got.dtype == torch.float64
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6 * float(expected.abs().max()))  # its coefficients: float32
    torch.testing.assert_close(product(x1.float(), x2.float(), w.float()).double(), expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))
    assert not product.fused  # no cuequivariance-ops here: its PyTorch fallback
    # each output block moves with its own weights only: zeroing one instruction's weights zeroes its block
    offsets = [0]
    for i1, _, io, *_ in instructions:
        offsets.append(offsets[-1] + irreps_in[i1].mul)
    blocks = [0]
    for _, _, io, *_ in instructions:
        blocks.append(blocks[-1] + mid[io].dim)
    w_cut = w.clone()
    w_cut[:, offsets[1] : offsets[2]] = 0
    cut = product(x1, x2, w_cut)
    assert cut[:, blocks[1] : blocks[2]].abs().max() == 0
    assert cut[:, blocks[2] :].abs().max() > 0


def batch_of(tmp_path, seed=0):
    """Two real molecules with stereo centres (CHFClBr, alanine; stereo inputs for SO(3)) and two
    random graphs, randomly placed."""
    from test_chirality import chiral_store
    from test_models import random_graph_batch

    from qdiff.data.dataset import ConformerDataset, collate_molecules

    data = ConformerDataset(chiral_store(tmp_path / "chiral.h5"))
    randoms = random_graph_batch(seed, B=2)
    items = [data[0], data[1]]
    batch = collate_molecules(items)
    gen = torch.Generator().manual_seed(seed)
    x = (batch["pos"] + 0.3 * torch.randn(batch["pos"].shape, generator=gen)) * batch["mask"][..., None]
    return [(batch, x), (randoms, randoms["pos"])]


@pytest.mark.parametrize("settings", [{"symmetry": "o3"}, {"symmetry": "so3"}, {"edge_scalars": 8, "edge_vectors": 4, "ffn_mult": 2}])
def test_both_backends_give_the_same_network_outputs_gradients_and_checkpoints(settings, tmp_path):
    torch.manual_seed(0)
    reference = E3Conformer(scalars=16, vectors=4, layers=2, cutoff=4.0, backend="e3nn", **settings)
    cueq = E3Conformer(scalars=16, vectors=4, layers=2, cutoff=4.0, **settings)
    cueq.set_backend("cueq")
    assert list(cueq.state_dict()) == list(reference.state_dict())  # checkpoints interchangeable
    cueq.load_state_dict(reference.state_dict())
    for batch, x in batch_of(tmp_path):
        t = torch.tensor([0.3, 0.8])
        same_outputs_and_gradients(reference, cueq, batch, x, t)


def same_outputs_and_gradients(reference, cueq, batch, x, t):
    outputs, grads = [], []
    for net in (reference, cueq):
        net.zero_grad()
        xx = x.clone().requires_grad_(True)
        out = net(batch, xx, t)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        outputs.append(out.detach())
        grads.append([xx.grad] + [p.grad for p in net.parameters()])
    scale = float(outputs[0].abs().max())
    assert scale > 0
    torch.testing.assert_close(outputs[1], outputs[0], rtol=1e-4, atol=1e-5 * scale)
    for g_ref, g_cueq in zip(grads[0], grads[1]):
        if g_ref is None:
            assert g_cueq is None
            continue
        torch.testing.assert_close(g_cueq, g_ref, rtol=1e-4, atol=1e-5 * float(g_ref.abs().max()) + 1e-7)


def test_the_cueq_backend_keeps_rotation_equivariance(tmp_path):
    """Derived independently of e3nn: f(R x) = R f(x) for a random proper rotation."""
    from scipy.spatial.transform import Rotation

    torch.manual_seed(1)
    net = E3Conformer(scalars=16, vectors=4, layers=2, cutoff=4.0, backend="cueq", symmetry="so3")
    batch, x = batch_of(tmp_path, seed=2)[0]
    R = torch.tensor(Rotation.random(random_state=3).as_matrix(), dtype=torch.float32)
    t = torch.tensor([0.5, 0.5])
    with torch.no_grad():
        torch.testing.assert_close(net(batch, x @ R.T, t), net(batch, x, t) @ R.T, atol=2e-5, rtol=1e-4)


def test_backend_choice(monkeypatch):
    """auto: e3nn on CPU, and on CUDA unless cuEquivariance's fused kernel applies (its CUDA ops
    installed, equal multiplicities); cueq: cuEquivariance anywhere; e3nn: never. Decided from the
    device alone, so the CUDA cases are checked here without a GPU (nothing is moved to it)."""
    import qdiff.models.cueq as cueq

    monkeypatch.setattr(cueq, "cueq_kernels_available", lambda: True)  # as on a GPU node with the ops package
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    for edges, fused in (((8, 2), False), ((4, 4), True)):
        net = E3Conformer(scalars=8, vectors=2, layers=2, edge_scalars=edges[0], edge_vectors=edges[1])
        layer = net.layers[1]  # input 8x0e + 2x1o, projected to the edge widths
        assert layer.product(cpu) is layer.tp
        assert (layer.product(cuda) is not layer.tp) == fused
        net.set_backend("cueq")
        assert isinstance(layer.product(cpu), ChannelWiseProduct) and isinstance(layer.product(cuda), ChannelWiseProduct)
        net.set_backend("e3nn")
        assert layer.product(cuda) is layer.tp
    with pytest.raises(ValueError, match="backend 'tensorrt'"):
        check_backend("tensorrt")
    with pytest.raises(ValueError, match="backend"):
        E3Conformer(backend="fast")


def test_backend_is_a_runtime_training_setting_and_sampling_falls_back_without_the_package(tmp_path, monkeypatch):
    """A run trained with backend cueq resumes with e3nn (same weights), and samples on a machine
    without cuEquivariance with e3nn and a warning, not an ImportError."""
    import warnings

    import qdiff.models.cueq as cueq
    from qdiff.sample import load_run
    from qdiff.train import RUNTIME_KEYS, resolve_config, train
    from test_chirality import chiral_store

    assert "backend" in RUNTIME_KEYS
    assert resolve_config({"model": {"name": "e3nn"}, "backend": "cueq"})["backend"] == "cueq"
    with pytest.raises(ValueError, match="backend"):
        resolve_config({"backend": "cuda"})
    with pytest.raises(ValueError, match="e3nn network only"):
        resolve_config({"model": {"name": "egnn"}, "backend": "cueq"})
    with pytest.raises(ValueError, match="backend"):
        resolve_config({"model": {"name": "e3nn", "backend": "cueq"}})  # not a model (science) setting
    store = chiral_store(tmp_path / "c.h5")
    model = {"name": "e3nn", "scalars": 8, "vectors": 2, "layers": 1, "cutoff": 4.0}
    settings = {"model": model, "steps": 2, "batch_size": 2, "val_every": 0, "checkpoint_every": 1}
    train(store, tmp_path / "run", {**settings, "backend": "cueq"}, progress=False)
    train(store, tmp_path / "run", {**settings, "backend": "e3nn"}, progress=False)  # resumes: a runtime setting
    train(store, tmp_path / "run2", {**settings, "backend": "cueq"}, progress=False)
    cueq.cueq_available.cache_clear()
    monkeypatch.setattr(cueq, "cueq_available", lambda: False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        net, config, *_ = load_run(tmp_path / "run2")
    assert config["backend"] == "cueq" and net.backend == "e3nn"
    assert any("not installed here" in str(w.message) for w in caught)

def test_bf16_on_cpu_is_a_clear_error_not_a_dtype_crash(tmp_path):
    """e3nn's Linear (a tensordot with its fp32 weights) refuses CPU autocast's bf16 activations;
    CUDA autocast runs it (benchmarks/gpu_suite.sh measures bf16 there)."""
    from qdiff.train import network_autocast

    net = E3Conformer(scalars=8, vectors=2, layers=1, cutoff=4.0, backend="e3nn")
    batch, x = batch_of(tmp_path)[0]
    with pytest.raises(ValueError, match="bf16 on CPU"), network_autocast("bf16", "cpu"):
        net(batch, x, torch.tensor([0.4, 0.9]))
