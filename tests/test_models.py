"""Networks: rotation/translation equivariance to float tolerance, masks, and shapes."""
import pytest
import torch

from qdiff.data.dataset import collate_molecules
from qdiff.geometry import apply_rotation, random_rotation
from qdiff.models import BackboneTransformer, build_model, count_parameters
from qdiff.models.graph import molecule_graph, within_molecule_pairs


def molecule_batch(B=3, N=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    items = []
    for b in range(B):
        n = N - b
        bonds = torch.stack([torch.arange(n - 1), torch.arange(1, n)], dim=1)
        items.append({
            "z": torch.randint(1, 10, (n,), generator=g, dtype=torch.uint8),
            "formal_charge": torch.zeros(n, dtype=torch.int8), "aromatic": torch.zeros(n, dtype=torch.bool),
            "hybridization": torch.randint(0, 5, (n,), generator=g, dtype=torch.uint8), "in_ring": torch.zeros(n, dtype=torch.bool),
            "chiral_tag": torch.zeros(n, dtype=torch.uint8), "degree": torch.ones(n, dtype=torch.uint8), "num_hs": torch.zeros(n, dtype=torch.uint8),
            "pos": torch.randn(n, 3, generator=g), "bond_index": bonds, "bond_order": torch.ones(n - 1, dtype=torch.uint8),
            "row": torch.tensor(b), "conformer": torch.tensor(b),
        })
    return collate_molecules(items)


@pytest.mark.parametrize("name,settings", [("egnn", {}), ("e3nn", {}), ("e3nn", {"edge_scalars": 8, "edge_vectors": 2, "ffn_mult": 2}),
                                           ("e3nn", {"symmetry": "so3"})])
def test_molecule_networks_are_se3_equivariant(name, settings):
    torch.manual_seed(0)
    model = build_model(name, **settings).double()
    batch = molecule_batch()
    x = batch["pos"].double()
    t = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    out = model(batch, x, t)
    R = random_rotation(3, torch.Generator().manual_seed(1), dtype=torch.float64)
    shift = torch.randn(3, 1, 3, dtype=torch.float64)
    out_rot = model(batch, (apply_rotation(R, x) + shift) * batch["mask"][..., None], t)
    assert torch.allclose(out_rot, apply_rotation(R, out), atol=1e-9)
    assert (out[~batch["mask"]] == 0).all() and out.abs().sum() > 0
    assert count_parameters(model) > 1000


def random_graph_batch(seed: int, B: int = 3):
    """Molecules of 4-9 atoms with random elements, random tree bonds (random orders) plus a few
    ring-closing bonds, and random coordinates spread over ~3 Å."""
    g = torch.Generator().manual_seed(seed)
    items = []
    for b in range(B):
        n = int(torch.randint(4, 10, (1,), generator=g))
        tree = [(i, int(torch.randint(0, i, (1,), generator=g))) for i in range(1, n)]
        extra = {tuple(sorted(torch.randperm(n, generator=g)[:2].tolist())) for _ in range(2)} - {tuple(sorted(e)) for e in tree}
        bonds = torch.tensor(tree + sorted(extra), dtype=torch.int64)
        items.append({
            "z": torch.randint(1, 18, (n,), generator=g, dtype=torch.uint8), "formal_charge": torch.zeros(n, dtype=torch.int8),
            "aromatic": torch.zeros(n, dtype=torch.bool), "hybridization": torch.randint(0, 5, (n,), generator=g, dtype=torch.uint8),
            "in_ring": torch.zeros(n, dtype=torch.bool), "chiral_tag": torch.zeros(n, dtype=torch.uint8),
            "degree": torch.ones(n, dtype=torch.uint8), "num_hs": torch.zeros(n, dtype=torch.uint8),
            "pos": 1.5 * torch.randn(n, 3, generator=g), "bond_index": bonds,
            "bond_order": torch.randint(1, 5, (bonds.shape[0],), generator=g, dtype=torch.uint8),
            "row": torch.tensor(b), "conformer": torch.tensor(b),
        })
    return collate_molecules(items)


SO3 = {"symmetry": "so3", "scalars": 16, "vectors": 6, "layers": 3, "cutoff": 4.0}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_so3_e3nn_is_exactly_rotation_equivariant_and_translation_invariant(seed):
    torch.manual_seed(seed)
    model = build_model("e3nn", **SO3, ffn_mult=2, edge_scalars=8, edge_vectors=4).double()
    batch = random_graph_batch(seed)
    mask = batch["mask"][..., None]
    x = batch["pos"].double()
    t = torch.rand(3, dtype=torch.float64)
    out = model(batch, x, t)
    assert out.abs().max() > 1e-3 and (out[~batch["mask"]] == 0).all()
    for k in range(3):
        R = random_rotation(3, torch.Generator().manual_seed(100 * seed + k), dtype=torch.float64)
        assert torch.allclose(torch.det(R), torch.ones(3, dtype=torch.float64))  # proper rotations only
        assert torch.allclose(model(batch, apply_rotation(R, x) * mask, t), apply_rotation(R, out), atol=1e-10)
    shift = 10.0 * torch.randn(3, 1, 3, dtype=torch.float64)
    assert torch.allclose(model(batch, (x + shift) * mask, t), out, atol=1e-10)


@pytest.mark.parametrize("name,settings", [("egnn", {}), ("e3nn", {}), ("e3nn", {**SO3, "symmetry": "o3"})])
def test_reflection_equivariant_networks_map_a_mirror_image_to_the_mirrored_output(name, settings):
    """E(3) networks: f(-x) = -f(x) to float precision, so they cannot tell enantiomers apart."""
    torch.manual_seed(0)
    model = build_model(name, **settings).double()
    batch = random_graph_batch(3)
    x, t = batch["pos"].double(), torch.rand(3, dtype=torch.float64)
    assert torch.allclose(model(batch, -x, t), -model(batch, x, t), atol=1e-9)
    P = torch.diag(torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64)).expand(3, 3, 3)  # a plane reflection
    assert torch.allclose(model(batch, apply_rotation(P, x), t), apply_rotation(P, model(batch, x, t)), atol=1e-9)


def test_so3_e3nn_does_not_commute_with_reflections():
    torch.manual_seed(0)
    model = build_model("e3nn", **SO3).double()
    batch = random_graph_batch(4)
    x, t = batch["pos"].double(), torch.rand(3, dtype=torch.float64)
    out, mirrored = model(batch, x, t), model(batch, -x, t)
    gap = (mirrored + out).abs().max()
    assert gap > 1e-2 * out.abs().max() and gap > 1e-4, (gap, out.abs().max())


def test_so3_e3nn_adds_the_cross_product_path_that_parity_forbids_in_o3():
    """Each layer's products: O(3) has no 1 x 1 -> 1 path (vector x vector -> vector is a
    pseudovector, not among the 1o targets); SO(3) has it. Otherwise the same paths."""
    def paths(model):
        tp = model.layers[1].tp
        return sorted((tp.irreps_in1[i.i_in1].ir.l, tp.irreps_in2[i.i_in2].ir.l, tp.irreps_out[i.i_out].ir.l) for i in tp.instructions)

    o3_paths = paths(build_model("e3nn", **{**SO3, "symmetry": "o3"}))
    so3_paths = paths(build_model("e3nn", **SO3))
    assert (1, 1, 1) in so3_paths and (1, 1, 1) not in o3_paths
    assert sorted(set(so3_paths) - {(1, 1, 1)}) == sorted(set(o3_paths))
    with pytest.raises(ValueError, match="symmetry"):
        build_model("e3nn", symmetry="se3")


@pytest.mark.parametrize("name", ["egnn", "e3nn"])
def test_padding_does_not_change_the_molecule_output(name):
    torch.manual_seed(0)
    model = build_model(name).double()
    batch = molecule_batch()
    x = batch["pos"].double()
    t = torch.full((3,), 0.3, dtype=torch.float64)
    full = model(batch, x, t)
    x2 = x.clone()
    x2[~batch["mask"]] = 100.0  # garbage in padding
    assert torch.allclose(model(batch, x2, t)[batch["mask"]], full[batch["mask"]], atol=1e-9)


def test_e3nn_output_of_a_molecule_does_not_depend_on_its_batch_companions():
    torch.manual_seed(0)
    model = build_model("e3nn", ffn_mult=2).double()
    batch = molecule_batch()
    t = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    together = model(batch, batch["pos"].double(), t)
    alone = molecule_batch(B=1)  # the first molecule of the same seed, alone in its batch
    assert torch.allclose(alone["pos"][0], batch["pos"][0])
    assert torch.allclose(model(alone, alone["pos"].double(), t[:1])[0], together[0], atol=1e-10)


def test_within_molecule_pairs_lists_every_ordered_pair_of_each_molecule_once():
    src_dst = within_molecule_pairs(torch.tensor([3, 1, 2]))
    pairs = sorted(zip(*(v.tolist() for v in src_dst)))
    expected = sorted((i, j) for lo, hi in [(0, 3), (3, 4), (4, 6)] for i in range(lo, hi) for j in range(lo, hi) if i != j)
    assert pairs == expected


def test_molecule_graph_keeps_bonds_at_any_distance_and_drops_far_unbonded_pairs():
    mask = torch.tensor([[True, True, True, False], [True, True, True, True]])
    x = torch.zeros(2, 4, 3)
    x[0, :3, 0] = torch.tensor([0.0, 20.0, 1.0])  # atom 1 is bonded to atom 0 but 20 Å away
    x[1, :, 0] = torch.tensor([0.0, 1.0, 2.0, 30.0])  # atom 3 is far and unbonded
    bond_index = torch.tensor([[0, 1], [4 + 0, 4 + 1]])
    graph = molecule_graph(mask, x, bond_index, torch.tensor([2, 1]), cutoff=5.0)
    edges = {(int(s), int(d)): int(b) for s, d, b in zip(graph.src, graph.dst, graph.bond)}
    # nodes: molecule 0 -> 0, 1, 2; molecule 1 -> 3, 4, 5, 6
    assert edges[(0, 1)] == edges[(1, 0)] == 2 and edges[(3, 4)] == 1 and edges[(0, 2)] == 0
    assert (1, 2) not in edges and not any(6 in e for e in edges) and (2, 3) not in edges
    assert graph.n_nodes == 7 and graph.padded(graph.nodes(x), (2, 4)).equal(x * mask[..., None])


def test_e3nn_is_continuous_as_a_pair_crosses_the_cutoff():
    torch.manual_seed(0)
    model = build_model("e3nn", cutoff=3.0).double()
    batch = molecule_batch(B=1, N=4)
    batch["bond_index"] = batch["bond_index"][:0]
    batch["bond_order"] = batch["bond_order"][:0]
    x = torch.zeros(1, 4, 3, dtype=torch.float64)
    x[0, 1, 0], x[0, 2, 1], x[0, 3, 2] = 1.0, 1.2, 3.0 - 1e-7  # atom 3 sits on atom 0's cutoff sphere
    t = torch.tensor([0.5], dtype=torch.float64)
    inside = model(batch, x, t)
    x[0, 3, 2] = 3.0 + 1e-7
    assert torch.allclose(model(batch, x, t), inside, atol=1e-6)


def test_backbone_transformer_shapes_masks_and_self_conditioning():
    torch.manual_seed(0)
    model = BackboneTransformer(dim=32, layers=2, heads=4, pair_bins=8)
    x = torch.randn(2, 10, 3) * 5
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[1, 7:] = False
    t = torch.tensor([0.2, 0.8])
    out = model(x, t, mask)
    assert out.shape == (2, 10, 3) and (out[~mask] == 0).all()
    x2 = x.clone()
    x2[1, 7:] = 1e3
    assert torch.allclose(model(x2, t, mask)[1, :7], out[1, :7], atol=1e-4)  # padding is ignored
    assert not torch.allclose(model(x, t, mask, self_cond=x), out)
    with pytest.raises(ValueError, match="go together"):
        build_model("e3nn", edge_scalars=8)
    with pytest.raises(ValueError, match="unknown model"):
        build_model("schnet")


def test_paper_study_molecule_network_is_et_flow_so3_sized():
    """studies/paper.yaml trains the chirality-aware e3nn at ET-Flow(SO(3))'s 9.1M parameters
    (paper-digest section 4.1), within 1%."""
    from pathlib import Path

    import yaml

    spec = yaml.safe_load((Path(__file__).parents[1] / "studies" / "paper.yaml").read_text())["models"]["train"]["model"]
    assert spec["name"] == "e3nn" and spec["symmetry"] == "so3"
    model = build_model(**spec)
    assert abs(count_parameters(model) - 9.1e6) < 0.01 * 9.1e6, count_parameters(model)
