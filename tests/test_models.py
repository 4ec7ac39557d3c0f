"""Networks: rotation/translation equivariance to float tolerance, masks, and shapes."""
import pytest
import torch

from qdiff.data.dataset import collate_molecules
from qdiff.geometry import apply_rotation, random_rotation
from qdiff.models import BackboneTransformer, build_model, count_parameters


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


@pytest.mark.parametrize("name", ["egnn", "e3nn"])
def test_molecule_networks_are_se3_equivariant(name):
    torch.manual_seed(0)
    model = build_model(name).double()
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


def test_padding_does_not_change_the_molecule_output():
    torch.manual_seed(0)
    model = build_model("egnn").double()
    batch = molecule_batch()
    x = batch["pos"].double()
    t = torch.full((3,), 0.3, dtype=torch.float64)
    full = model(batch, x, t)
    x2 = x.clone()
    x2[~batch["mask"]] = 100.0  # garbage in padding
    assert torch.allclose(model(batch, x2, t)[batch["mask"]], full[batch["mask"]], atol=1e-9)


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
    with pytest.raises(ValueError, match="unknown model"):
        build_model("schnet")
