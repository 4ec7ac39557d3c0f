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
    model = E3Conformer(scalars=8, vectors=4, layers=1, cutoff=5.0, symmetry="o3").eval()
    old = {k: v for k, v in model.state_dict().items() if "stereo" not in k}  # a checkpoint from before the feature
    fresh = E3Conformer(scalars=8, vectors=4, layers=1, cutoff=5.0, symmetry="o3").eval()
    fresh.load_state_dict(old)  # strict
    t = torch.full((3,), 0.5)
    without = {k: v for k, v in batch.items() if k != "stereo"}
    with torch.no_grad():
        np.testing.assert_allclose(fresh(batch, batch["pos"], t).numpy(), model(without, batch["pos"], t).numpy(), atol=1e-6)


def frames_batch(mols, positions=None):
    """A padded batch (stereo signs and frames from the store arrays) of RDKit molecules, at their
    own conformers or at `positions` (one [n, 3] array per molecule)."""
    import torch

    from qdiff.data.dataset import collate_molecules
    from qdiff.data.stereo import stereo_frames

    items = []
    for k, mol in enumerate(mols):
        x = mol.GetConformer().GetPositions() if positions is None else positions[k]
        record = record_from_mol(Chem.Mol(mol), "m", np.asarray(x)[None])
        signs, frames = stereo_frames(record.atoms, record.bond_index, record.bonds["order"])
        atoms = {k: torch.as_tensor(np.asarray(record.atoms[k])) for k in ("z", "formal_charge", "aromatic", "hybridization", "in_ring")}
        items.append({**atoms, "stereo": torch.from_numpy(signs), "stereo_frame": torch.from_numpy(frames),
                      "pos": torch.as_tensor(x, dtype=torch.float64), "bond_index": torch.as_tensor(record.bond_index, dtype=torch.int64),
                      "bond_order": torch.as_tensor(record.bonds["order"]), "row": torch.tensor(k), "conformer": torch.tensor(k)})
    return collate_molecules(items)


def cip_labels(mol, x) -> list:
    """RDKit's CIP labels perceived from the coordinates x (independent of qdiff's volumes)."""
    m = Chem.Mol(mol)
    conf = m.GetConformer()
    for i, p in enumerate(np.asarray(x, dtype=float)):
        conf.SetAtomPosition(i, p.tolist())
    Chem.AssignStereochemistryFrom3D(m)
    return Chem.FindMolChiralCenters(m)


@pytest.mark.parametrize("smiles", MANY_CENTRES)
def test_the_chirality_agreement_is_positive_exactly_when_rdkit_sees_the_reference_labels(smiles):
    """chi > 0 at every centre of conformers with the reference CIP labels and < 0 at every centre of
    their mirror images (RDKit decides which is which); invariant to rotations and translations,
    odd under reflections; the directions g rotate with the molecule, and are unchanged by the
    reflection x -> -x (pseudovectors); moving along g raises chi (a finite difference)."""
    import torch
    from scipy.spatial.transform import Rotation

    from qdiff.models.embeddings import chirality_features

    mol = embedded_mol(smiles)
    x = mol.GetConformer().GetPositions()
    mirror = x * np.array([1.0, -1.0, 1.0])
    reference = cip_labels(mol, x)
    assert reference and all(a[1] != b[1] for a, b in zip(reference, cip_labels(mol, mirror)))
    batch = frames_batch([mol])
    centres = batch["stereo"][0] != 0
    assert int(centres.sum()) == len(reference)
    pos = torch.as_tensor(x)[None]
    chi, g = chirality_features(batch, pos)
    assert (chi[0][centres] > 0.3).all() and (chi[0][~centres] == 0).all()
    chi_m, g_m = chirality_features(batch, torch.as_tensor(mirror)[None])
    assert (chi_m[0][centres] < -0.3).all()
    R = torch.as_tensor(Rotation.random(random_state=1).as_matrix())
    chi_r, g_r = chirality_features(batch, pos @ R.T + torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64))
    torch.testing.assert_close(chi_r, chi)
    torch.testing.assert_close(g_r, g @ R.T)
    chi_i, g_i = chirality_features(batch, -pos)  # inversion: a reflection times a rotation by pi
    torch.testing.assert_close(chi_i, -chi)
    torch.testing.assert_close(g_i, g)
    chi_step, _ = chirality_features(batch, pos + 1e-4 * g)
    assert ((chi_step - chi)[0][centres] > 0).all()
    torch.testing.assert_close(g.sum(1), torch.zeros(1, 3, dtype=torch.float64))  # no net force


def test_the_chirality_agreement_does_not_depend_on_atom_or_bond_order():
    import torch

    from qdiff.models.embeddings import chirality_features

    mol = embedded_mol("C[C@H](O)[C@@H](N)C(=O)O")
    rng = np.random.default_rng(3)
    chi, g = chirality_features(frames_batch([mol]), torch.as_tensor(mol.GetConformer().GetPositions())[None])
    for _ in range(4):
        new, positions, perm = relabelled(mol, rng)
        chi_p, g_p = chirality_features(frames_batch([new], [positions]), torch.as_tensor(positions)[None])
        torch.testing.assert_close(chi_p[0], chi[0][perm])
        torch.testing.assert_close(g_p[0], g[0][perm])


def test_degenerate_centres_give_finite_zero_features():
    """Coplanar neighbours give chi = 0; a neighbour on top of its centre gives finite values;
    a batch without frames (older callers) gives zeros."""
    import torch

    from qdiff.models.embeddings import chirality_features

    mol = embedded_mol("[C@@H](F)(Cl)Br")
    x = mol.GetConformer().GetPositions()
    batch = frames_batch([mol])
    centre = int(batch["stereo"][0].nonzero()[0, 0])
    flat = x.copy()
    flat[:, 2] = 0.0  # every atom in one plane
    chi, g = chirality_features(batch, torch.as_tensor(flat)[None])
    assert abs(float(chi[0, centre])) < 1e-12
    collapsed = x.copy()
    collapsed[int(batch["stereo_frame"][0, centre, 0])] = x[centre]
    chi, g = chirality_features(batch, torch.as_tensor(collapsed)[None])
    assert torch.isfinite(chi).all() and torch.isfinite(g).all()
    bare = {k: v for k, v in batch.items() if k != "stereo_frame"}
    chi, g = chirality_features(bare, torch.as_tensor(x)[None])
    assert not chi.any() and not g.any()


def test_an_so3_network_reading_the_frames_stays_rotation_and_permutation_equivariant():
    """With real stereo centres in the batch: f(Rx + s) = R f(x) exactly, relabelling the atoms
    permutes the output, and the two labels of one centre give different outputs (the network
    reads the label)."""
    import torch
    from scipy.spatial.transform import Rotation

    from qdiff.models.equivariant import E3Conformer

    torch.manual_seed(0)
    model = E3Conformer(scalars=8, vectors=4, layers=2, cutoff=5.0, symmetry="so3").double().eval()
    with torch.no_grad():
        model.chirality.weight.normal_()  # a trained-like chirality weight (it starts at zero)
    mol = embedded_mol("C[C@H](O)[C@@H](N)C(=O)O")
    batch = frames_batch([mol])
    x, t = batch["pos"].double(), torch.tensor([0.4], dtype=torch.float64)
    with torch.no_grad():
        out = model(batch, x, t)
        R = torch.as_tensor(Rotation.random(random_state=2).as_matrix())
        torch.testing.assert_close(model(batch, x @ R.T + 3.0, t), out @ R.T)
        new, positions, perm = relabelled(mol, np.random.default_rng(5))
        moved = frames_batch([new], [positions])  # signs and frames perceived afresh in the new order
        moved["hybridization"] = batch["hybridization"][:, perm]  # RDKit re-perceives O hybridization differently
        torch.testing.assert_close(model(moved, moved["pos"].double(), t)[0], out[0][perm])
        other = dict(batch, stereo=-batch["stereo"])  # the other label at one geometry
        assert (model(other, x, t) - out).abs().max() > 1e-3
