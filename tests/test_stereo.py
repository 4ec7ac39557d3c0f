"""The permutation-invariant stereo feature (qdiff.data.stereo): unchanged by relabelling atoms and
reordering bonds, flipped by the mirror image, consistent with RDKit's CIP R/S within a scaffold,
zero without tags; carried by the dataset and read by the atom encoder (old checkpoints load)."""
import numpy as np
import pytest

from qdiff.data.stereo import stereo_signs

Chem = pytest.importorskip("rdkit.Chem")
from rdkit.Chem import AllChem  # noqa: E402

from qdiff.data.chem import record_from_mol  # noqa: E402


def embedded_mol(smiles: str, seed: int = 0):
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    assert AllChem.EmbedMolecule(mol, randomSeed=seed) == 0
    return mol


def signs_of(mol, positions) -> np.ndarray:
    """Tags perceived from `positions` (record_from_mol), then the feature from the store arrays only."""
    record = record_from_mol(Chem.Mol(mol, True), "m", np.asarray(positions)[None])  # no conformer: tags from these positions
    return stereo_signs(record.atoms, record.bond_index, record.bonds["order"])


def relabelled(mol, rng):
    """The same molecule with atoms in a random order and bonds listed in a random order (and
    direction); (new molecule, positions in the new order, perm with new atom k = old atom perm[k])."""
    n = mol.GetNumAtoms()
    perm = rng.permutation(n)
    inverse = np.argsort(perm)
    rw = Chem.RWMol()
    for k in perm:
        old = mol.GetAtomWithIdx(int(k))
        atom = Chem.Atom(old.GetAtomicNum())
        atom.SetFormalCharge(old.GetFormalCharge())
        atom.SetNoImplicit(True)
        rw.AddAtom(atom)
    bonds = list(mol.GetBonds())
    for b in rng.permutation(len(bonds)):
        bond = bonds[int(b)]
        i, j = int(inverse[bond.GetBeginAtomIdx()]), int(inverse[bond.GetEndAtomIdx()])
        if rng.random() < 0.5:
            i, j = j, i
        rw.AddBond(i, j, bond.GetBondType())
    new = rw.GetMol()
    Chem.SanitizeMol(new)
    return new, mol.GetConformer().GetPositions()[perm], perm


MANY_CENTRES = ["[C@@H](F)(Cl)Br", "C[C@H](N)C(=O)O", "C[C@H](O)[C@@H](N)C(=O)O", "OC[C@H]1O[C@@H](O)[C@H](O)[C@@H](O)[C@@H]1O",
                "C[C@@H]1CC[C@H](C(C)C)[C@@H](O)C1"]


@pytest.mark.parametrize("smiles", MANY_CENTRES)
def test_relabelling_atoms_and_reordering_bonds_leaves_every_atoms_feature_unchanged(smiles):
    mol = embedded_mol(smiles)
    reference = signs_of(mol, mol.GetConformer().GetPositions())
    assert np.count_nonzero(reference) == smiles.count("@") - smiles.count("@@")
    rng = np.random.default_rng(0)
    flipped_tags = 0
    for _ in range(6):
        new, positions, perm = relabelled(mol, rng)
        record = record_from_mol(new, "m", positions[None])
        original = record_from_mol(Chem.Mol(mol), "m", mol.GetConformer().GetPositions()[None])
        flipped_tags += int((record.atoms["chiral_tag"] != original.atoms["chiral_tag"][perm]).any())
        np.testing.assert_array_equal(stereo_signs(record.atoms, record.bond_index, record.bonds["order"]), reference[perm])
    assert flipped_tags > 0  # the raw CW/CCW tags did change under relabelling: the feature does not


@pytest.mark.parametrize("smiles", MANY_CENTRES)
def test_the_mirror_image_gets_the_opposite_sign_at_every_centre(smiles):
    mol = embedded_mol(smiles)
    x = mol.GetConformer().GetPositions()
    signs = signs_of(mol, x)
    assert np.count_nonzero(signs) > 0
    np.testing.assert_array_equal(signs_of(mol, x * np.array([-1.0, 1.0, 1.0])), -signs)


@pytest.mark.parametrize("scaffold", [("N[C@@H](C)C(=O)O", "N[C@H](C)C(=O)O"), ("[C@@H](F)(Cl)Br", "[C@H](F)(Cl)Br"),
                                      ("C[C@@H](O)CC", "C[C@H](O)CC")])
def test_r_and_s_centres_get_opposite_signs_consistently_within_a_scaffold(scaffold):
    by_label = {}
    for smiles in scaffold:
        for seed in range(3):
            mol = embedded_mol(smiles, seed)
            record = record_from_mol(mol, "m", mol.GetConformer().GetPositions()[None])
            signs = stereo_signs(record.atoms, record.bond_index, record.bonds["order"])
            labelled = Chem.Mol(mol)
            Chem.AssignStereochemistryFrom3D(labelled)
            (centre, label), = Chem.FindMolChiralCenters(labelled)
            assert np.count_nonzero(signs) == 1 and signs[centre] != 0
            by_label.setdefault(label, set()).add(int(signs[centre]))
    assert set(by_label) == {"R", "S"}
    assert len(by_label["R"]) == 1 and by_label["S"] == {-s for s in by_label["R"]}


@pytest.mark.parametrize("smiles", ["CCO", "CC(C)O", "c1ccccc1", "C[C@H](N)C(=O)O"])
def test_no_tag_gives_zeros(smiles):
    mol = embedded_mol(smiles)
    record = record_from_mol(mol, "m", mol.GetConformer().GetPositions()[None])
    atoms = dict(record.atoms)
    if "@" in smiles:
        atoms["chiral_tag"] = np.zeros_like(atoms["chiral_tag"])  # the same molecule stored without tags
    assert not stereo_signs(atoms, record.bond_index, record.bonds["order"]).any()


def test_the_dataset_carries_the_feature_and_old_checkpoints_load(tmp_path):
    import torch

    from qdiff.data.dataset import ConformerDataset, collate_molecules
    from qdiff.data.molecule_store import MoleculeStoreWriter
    from qdiff.models.equivariant import E3Conformer

    path = tmp_path / "s.h5"
    mols = [embedded_mol(s) for s in ("C[C@H](N)C(=O)O", "C[C@@H](N)C(=O)O", "CCO")]
    with MoleculeStoreWriter(path, dataset="t", source="test") as writer:
        for k, mol in enumerate(mols):
            writer.add(record_from_mol(mol, f"m{k}", mol.GetConformer().GetPositions()[None]))
    data = ConformerDataset(path)
    items = [data[k] for k in range(3)]
    assert [int(item["stereo"].abs().sum()) for item in items] == [1, 1, 0]
    assert (items[0]["stereo"] == -items[1]["stereo"]).all()  # the two enantiomers, atoms in the same order
    batch = collate_molecules(items)
    assert batch["stereo"].shape == batch["z"].shape and batch["stereo"].dtype == torch.int8

    torch.manual_seed(0)
    model = E3Conformer(scalars=8, vectors=4, layers=1, cutoff=5.0, symmetry="so3").eval()
    old = {k: v for k, v in model.state_dict().items() if "stereo" not in k}  # a checkpoint from before the feature
    fresh = E3Conformer(scalars=8, vectors=4, layers=1, cutoff=5.0, symmetry="so3").eval()
    fresh.load_state_dict(old)  # strict
    t = torch.full((3,), 0.5)
    without = {k: v for k, v in batch.items() if k != "stereo"}
    with torch.no_grad():
        np.testing.assert_allclose(fresh(batch, batch["pos"], t).numpy(), model(without, batch["pos"], t).numpy(), atol=1e-6)
