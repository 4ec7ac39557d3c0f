"""Static shapes for compiled e3nn networks: graphs padded to size buckets give the same outputs and
gradients as the unpadded ones, and a network compiled without dynamic shapes compiles once per
bucket and never again once every bucket has been seen."""
import pytest
import torch

from qdiff.models import compile_network
from qdiff.models.equivariant import E3Conformer
from qdiff.models.graph import bucket_size, molecule_graph


@pytest.fixture(autouse=True)
def restore_recompile_limit():
    """compile_network raises dynamo's global recompile limit; put it back after each test."""
    saved = torch._dynamo.config.recompile_limit
    yield
    torch._dynamo.config.recompile_limit = saved


def test_bucket_sizes_bound_the_padding_and_the_number_of_shapes():
    sizes = [bucket_size(n) for n in range(0, 20001)]
    assert all(b >= n for n, b in enumerate(sizes))
    assert all(b <= max(64, 1.25 * n + 32) for n, b in enumerate(sizes))  # <= 25% over n, plus the rounding to 16
    assert sizes == sorted(sizes)  # monotone: a larger graph never gets a smaller bucket
    assert len(set(sizes[:2001])) <= 17 and len(set(sizes)) <= 28  # a handful of shapes per size range
    assert all(b % 16 == 0 for b in set(sizes))
    assert bucket_size(64) == 64 and bucket_size(65) == 80


def batches(tmp_path):
    from test_chirality import chiral_store
    from test_models import random_graph_batch

    from qdiff.data.dataset import ConformerDataset, collate_molecules

    data = ConformerDataset(chiral_store(tmp_path / "chiral.h5"))
    chiral = collate_molecules([data[0], data[1], data[0]])
    return [(chiral, chiral["pos"] + 0.2), (random_graph_batch(0, B=3), None), (random_graph_batch(1, B=5), None)]


def test_bucketed_graphs_pad_nodes_and_edges_and_mark_the_extra_edges(tmp_path):
    batch, x = batches(tmp_path)[0]
    plain = molecule_graph(batch["mask"], x, batch["bond_index"], batch["bond_order"], 5.0)
    padded = molecule_graph(batch["mask"], x, batch["bond_index"], batch["bond_order"], 5.0, bucket=True)
    M, E = plain.n_nodes, plain.src.shape[0]
    assert padded.n_nodes == bucket_size(M) > M and padded.src.shape[0] == bucket_size(E) > E
    assert torch.equal(padded.node_slot[:M], plain.node_slot) and torch.equal(padded.src[:E], plain.src)
    assert padded.edge_valid[:E].all() and not padded.edge_valid[E:].any() and not plain.bucketed
    values = torch.randn(batch["mask"].shape + (4,)) * batch["mask"][..., None]
    nodes = padded.nodes(values)
    assert (nodes[M:] == 0).all()  # extra nodes read the zero row
    assert torch.equal(padded.padded(nodes, tuple(batch["mask"].shape)), values)  # and write nowhere


@pytest.mark.parametrize("settings", [{"symmetry": "o3"}, {"symmetry": "so3"}, {"symmetry": "so3", "edge_scalars": 8, "edge_vectors": 4, "ffn_mult": 2}])
def test_static_shapes_do_not_change_outputs_or_gradients(settings, tmp_path):
    torch.manual_seed(0)
    net = E3Conformer(scalars=16, vectors=4, layers=2, cutoff=4.0, **settings)
    for batch, x in batches(tmp_path):
        x = batch["pos"] if x is None else x
        t = torch.linspace(0.2, 0.9, x.shape[0])
        results = []
        for static in (False, True):
            net.static_shapes = static
            net.zero_grad()
            xx = x.clone().requires_grad_(True)
            out = net(batch, xx, t)
            (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
            results.append((out.detach(), xx.grad, [p.grad.clone() for p in net.parameters() if p.grad is not None]))
        (out0, gx0, gp0), (out1, gx1, gp1) = results
        assert out0.abs().max() > 0 and (out1[~batch["mask"]] == 0).all()
        torch.testing.assert_close(out1, out0, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(gx1, gx0, rtol=1e-5, atol=1e-6)
        assert len(gp0) == len(gp1)
        for a, b in zip(gp0, gp1):
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)


def test_compiled_without_dynamic_shapes_it_compiles_once_per_bucket(tmp_path):
    """A backend that counts what dynamo hands it: batches of new sizes inside seen buckets and
    repeated batches add no compilation; a new bucket adds one."""
    from test_models import random_graph_batch

    compiled = []

    def counting_backend(graph_module, example_inputs):
        compiled.append(tuple(tuple(v.shape) for v in example_inputs if isinstance(v, torch.Tensor)))
        return graph_module.forward

    torch._dynamo.reset()
    torch.manual_seed(0)
    net = E3Conformer(scalars=8, vectors=2, layers=1, cutoff=4.0)
    assert compile_network(net, counting_backend) is net and net.static_shapes
    small = [random_graph_batch(seed, B=3) for seed in range(4)]  # 12-27 atoms, a few dozen edges
    buckets = {(molecule_graph(b["mask"], b["pos"], b["bond_index"], b["bond_order"], 4.0, bucket=True).n_nodes,
                molecule_graph(b["mask"], b["pos"], b["bond_index"], b["bond_order"], 4.0, bucket=True).src.shape[0]) for b in small}
    for batch in small:
        net(batch, batch["pos"], torch.full((3,), 0.5))
    first = len(compiled)
    assert 1 <= first <= len(buckets) and net.shapes_seen == buckets
    for batch in small + small[::-1]:  # seen buckets, any order: nothing new
        net(batch, batch["pos"] * 1.1, torch.full((3,), 0.3))
    assert len(compiled) == first
    big = random_graph_batch(7, B=40)  # hundreds of atoms: new buckets, compiled once
    for _ in range(3):
        net(big, big["pos"], torch.full((40,), 0.5))
    assert len(compiled) == first + 1
    torch._dynamo.reset()


def test_reduce_overhead_is_for_static_shapes_only(monkeypatch):
    """`compile: reduce-overhead` asks torch.compile for inductor with CUDA graphs on the e3nn
    network's static-shape message passing; a network whose shapes change with every batch (EGNN)
    is refused, since its graphs would be re-recorded for every atom count."""
    from qdiff.models import EGNN

    calls = []
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: calls.append(kw) or fn)
    net = E3Conformer(scalars=8, vectors=2, layers=1)
    compile_network(net, "reduce-overhead")
    assert calls == [{"dynamic": False, "backend": "inductor", "mode": "reduce-overhead"}]
    with pytest.raises(ValueError, match="reduce-overhead"):
        compile_network(EGNN(hidden=8, layers=1), "reduce-overhead")


def test_compiled_network_matches_eager_and_a_deep_copy_keeps_its_own_weights(tmp_path):
    """aot_eager (dynamo + AOTAutograd, no code generation) on bucketed graphs gives the eager
    outputs and gradients; a deep copy made after compiling (an EMA copy, say) computes with its
    own weights."""
    import copy

    torch._dynamo.reset()
    torch.manual_seed(0)
    eager = E3Conformer(scalars=16, vectors=4, layers=2, cutoff=4.0, symmetry="so3")
    compiled = copy.deepcopy(eager)
    compile_network(compiled, "aot_eager")
    for batch, x in batches(tmp_path):
        x = batch["pos"] if x is None else x
        t = torch.linspace(0.2, 0.9, x.shape[0])
        outs = []
        for net in (eager, compiled):
            net.zero_grad()
            out = net(batch, x, t)
            (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
            outs.append((out.detach(), [p.grad.clone() for p in net.parameters() if p.grad is not None]))
        torch.testing.assert_close(outs[1][0], outs[0][0], rtol=1e-5, atol=1e-6)
        for a, b in zip(outs[0][1], outs[1][1]):
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)
    twin = copy.deepcopy(compiled)
    with torch.no_grad():
        for p in twin.parameters():
            p.mul_(0.5)
    batch, x = batches(tmp_path)[0]
    t = torch.full((x.shape[0],), 0.5)
    with torch.no_grad():
        halved = copy.deepcopy(eager)
        for p in halved.parameters():
            p.mul_(0.5)
        torch.testing.assert_close(twin(batch, x, t), halved(batch, x, t), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(compiled(batch, x, t), eager(batch, x, t), rtol=1e-5, atol=1e-6)
    torch._dynamo.reset()


def test_graphs_at_a_bucket_size_without_edges_or_empty_are_unchanged():
    """Counts exactly at a bucket size get no padding (and no extra edges to mark); one-atom
    molecules have no edges (all edges are padding); an empty graph is all padding."""
    from test_models import random_graph_batch

    from qdiff.data.dataset import collate_molecules

    n = 64  # a bucket size: 64 one-atom molecules, no edges at all
    one = {k: v[:1] for k, v in random_graph_batch(0, B=1).items() if k not in ("bond_index", "bond_order", "bond_batch", "mask")}
    items = [{**{k: v[0][:1] for k, v in one.items() if k not in ("row", "conformer")}, "bond_index": torch.zeros(0, 2, dtype=torch.int64),
              "bond_order": torch.zeros(0, dtype=torch.uint8), "row": torch.tensor(i), "conformer": torch.tensor(i)} for i in range(n)]
    batch = collate_molecules(items)
    graph = molecule_graph(batch["mask"], batch["pos"], batch["bond_index"], batch["bond_order"], 4.0, bucket=True)
    assert graph.n_nodes == 64 and graph.src.shape[0] == 64 and not graph.edge_valid.any()
    torch.manual_seed(0)
    net = E3Conformer(scalars=8, vectors=2, layers=2, cutoff=4.0)
    t = torch.full((n,), 0.5)
    with torch.no_grad():
        plain = net(batch, batch["pos"], t)
        net.static_shapes = True
        padded = net(batch, batch["pos"], t)
    assert torch.isfinite(padded).all()
    torch.testing.assert_close(padded, plain)
    empty = molecule_graph(torch.zeros(2, 3, dtype=torch.bool), torch.zeros(2, 3, 3), torch.zeros(0, 2, dtype=torch.int64),
                           torch.zeros(0, dtype=torch.uint8), 4.0, bucket=True)
    assert empty.n_nodes == 64 and (empty.node_slot == 6).all() and not empty.edge_valid.any()
