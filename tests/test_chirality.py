"""Chirality: ET-Flow's post-hoc parity switch, the stereo-correct fraction, and (slow) tiny networks
that generate the right enantiomer. Expected handedness is checked against RDKit's own perception
(CIP labels from 3D), not against the module's signed volumes."""
import numpy as np
import pytest

from qdiff.eval.chirality import (chiral_centres, parity_switch, resolve_parity_switch, stereo_correct, stereo_summary,
                                  wrong_parity)


def embedded(smiles: str, seed: int = 0, n_conf: int = 1):
    """(store record, RDKit template molecule in store order) of an ETKDG-embedded molecule."""
    from rdkit import Chem
    from rdkit.Chem import AllChem

    from qdiff.data.chem import mol_from_arrays, record_from_mol

    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    ids = list(AllChem.EmbedMultipleConfs(mol, numConfs=n_conf, randomSeed=seed))
    assert ids, smiles
    positions = np.stack([mol.GetConformer(i).GetPositions() for i in ids])
    record = record_from_mol(mol, smiles, positions, smiles=smiles)
    return record, mol_from_arrays(record.atoms, record.bond_index, record.bonds["order"])


def cip(template, positions) -> list:
    """RDKit's CIP labels perceived from each conformer."""
    from qdiff.eval.conformers import molecules_from_positions
    from qdiff.eval.plausibility import stereo_labels

    return [stereo_labels(m)[0] for m in molecules_from_positions(template, np.asarray(positions))]


def random_rotations(n: int, seed: int) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    return Rotation.random(n, random_state=seed).as_matrix()


@pytest.mark.parametrize("smiles", ["[C@@H](F)(Cl)Br", "[C@H](F)(Cl)Br", "C[C@H](N)C(=O)O", "C[C@H](O)[C@@H](N)C(=O)O",
                                    "OC[C@H]1O[C@@H](O)[C@H](O)[C@@H](O)[C@@H]1O"])
def test_mirror_images_are_switched_back_and_correct_conformers_are_untouched(smiles):
    record, template = embedded(smiles, n_conf=4)
    centres = chiral_centres(record.atoms["chiral_tag"], record.bond_index)
    assert len(centres) == smiles.count("@") - smiles.count("@@")  # every @ or @@ centre, nothing else
    R = random_rotations(4, 1)
    good = np.einsum("sij,snj->sni", R, record.positions) + 2.0  # rotated and moved: still the same enantiomer
    mirror = good * np.array([-1.0, 1.0, 1.0])  # a reflection
    expected = cip(template, record.positions[:1])[0]
    assert expected and all(labels == expected for labels in cip(template, good))
    assert all(labels != expected for labels in cip(template, mirror))
    both = np.concatenate([good, mirror]).astype(np.float32)
    out, flipped = parity_switch(both, centres)
    assert flipped.tolist() == [False] * 4 + [True] * 4
    np.testing.assert_array_equal(out[:4], both[:4])  # untouched, bit for bit
    assert all(labels == expected for labels in cip(template, out))
    assert out.dtype == np.float32
    # mirrored through the centroid: the centroid and every distance are kept
    np.testing.assert_allclose(out[4:].mean(1), both[4:].mean(1), atol=1e-4)
    dist = lambda x: np.linalg.norm(x[:, :, None] - x[:, None], axis=-1)  # noqa: E731
    np.testing.assert_allclose(dist(out[4:]), dist(both[4:]), atol=1e-4)


def test_molecules_without_a_chiral_centre_are_untouched():
    record, _ = embedded("CC(C)O", n_conf=2)  # propan-2-ol: a CH with two equal methyls is no stereocentre
    centres = chiral_centres(record.atoms["chiral_tag"], record.bond_index)
    assert len(centres) == 0
    mirror = -record.positions
    out, flipped = parity_switch(mirror, centres)
    assert not flipped.any() and np.array_equal(out, mirror)


def test_degenerate_centres_do_not_crash_or_flip():
    record, _ = embedded("[C@@H](F)(Cl)Br")
    centres = chiral_centres(record.atoms["chiral_tag"], record.bond_index)
    planar = record.positions.copy()
    planar[..., 2] = 0.0  # the centre and its neighbours in one plane: zero signed volume
    collapsed = np.zeros_like(record.positions)  # every atom on one point
    out, flipped = parity_switch(np.concatenate([planar, collapsed]), centres)
    assert not flipped.any() and np.isfinite(out).all()


def test_an_inverted_bridgehead_of_the_reference_is_not_switched():
    """Bicyclo[1.1.0]butane bridgeheads lie outside their neighbours' tetrahedron: ET-Flow's
    neighbour-only volume contradicts RDKit's tag there (a QM9 molecule, dsgdb9nsd_044001); the
    centre-based volume used here agrees with the tag of the very conformer it came from."""
    record, _ = embedded("O=C1CC23CC2(CC3)C1", n_conf=4)
    centres = chiral_centres(record.atoms["chiral_tag"], record.bond_index)
    assert len(centres) == 2
    assert not wrong_parity(record.positions[:1], centres).any()
    assert wrong_parity(-record.positions[:1], centres).all()


def test_parity_switch_setting_defaults_by_network_and_is_recorded_in_the_run_config():
    from qdiff.train import resolve_config

    assert resolve_parity_switch({"name": "egnn"}) == "post_hoc"
    assert resolve_parity_switch({"name": "e3nn"}) == "post_hoc"
    assert resolve_parity_switch({"name": "e3nn", "symmetry": "so3"}) == "none"
    assert resolve_parity_switch({"name": "backbone-transformer"}) == "none"
    assert resolve_parity_switch({"name": "e3nn", "symmetry": "so3"}, "post_hoc") == "post_hoc"
    assert resolve_parity_switch({"name": "egnn"}, None) == "post_hoc"  # runs from before the setting
    with pytest.raises(ValueError, match="parity_switch"):
        resolve_parity_switch({"name": "egnn"}, "always")
    assert resolve_config({})["parity_switch"] == "post_hoc"
    assert resolve_config({"model": {"name": "e3nn", "symmetry": "so3"}})["parity_switch"] == "none"
    assert resolve_config({"parity_switch": "none"})["parity_switch"] == "none"


def test_stereo_correct_fraction():
    from qdiff.eval.conformers import molecules_from_positions

    record, template = embedded("C[C@H](O)[C@@H](N)C(=O)O", n_conf=4)  # threonine: two centres
    reference = molecules_from_positions(template, record.positions[:1])[0]
    good = molecules_from_positions(template, record.positions)
    mirror = molecules_from_positions(template, -record.positions)
    assert stereo_correct(reference, good) == {"n": 4, "correct": 4, "tetrahedral": 4, "has_stereo": True, "has_tetrahedral": True}
    assert stereo_correct(reference, mirror)["correct"] == 0 and stereo_correct(reference, mirror)["tetrahedral"] == 0
    mixed = stereo_correct(reference, good[:3] + mirror[:1])
    assert mixed["correct"] == 3
    plain, plain_template = embedded("CCO", n_conf=2)
    none = stereo_correct(molecules_from_positions(plain_template, plain.positions[:1])[0],
                          molecules_from_positions(plain_template, -plain.positions))
    assert none == {"n": 2, "correct": 2, "tetrahedral": 2, "has_stereo": False, "has_tetrahedral": False}
    summary = stereo_summary([mixed, none])
    assert summary["correct"] == pytest.approx(5 / 6) and summary["correct_among_stereo"] == pytest.approx(3 / 4)
    assert summary["molecules"] == 2 and summary["molecules_with_stereo"] == 1 and summary["conformers"] == 6


def test_double_bond_geometry_counts_in_stereo_but_not_in_tetrahedral():
    from qdiff.eval.conformers import molecules_from_positions

    e_record, template = embedded("C/C=C/C")
    z_record, _ = embedded("C/C=C\\C")
    assert np.array_equal(e_record.atoms["z"], z_record.atoms["z"])
    reference = molecules_from_positions(template, e_record.positions)[0]
    result = stereo_correct(reference, molecules_from_positions(template, np.concatenate([e_record.positions, z_record.positions])))
    assert result["correct"] == 1 and result["tetrahedral"] == 2 and result["has_stereo"] and not result["has_tetrahedral"]


CHIRAL = ["[C@@H](F)(Cl)Br", "C[C@H](N)C(=O)O"]


def chiral_store(path, smiles=CHIRAL):
    """One MMFF-relaxed conformer of each molecule, tags from that conformer (as featurize does)."""
    from rdkit import Chem
    from rdkit.Chem import AllChem

    from qdiff.data.chem import record_from_mol
    from qdiff.data.molecule_store import MoleculeStoreWriter

    with MoleculeStoreWriter(path, dataset="chiral", source="test") as writer:
        for k, smi in enumerate(smiles):
            mol = Chem.AddHs(Chem.MolFromSmiles(smi))
            AllChem.EmbedMolecule(mol, randomSeed=k)
            AllChem.MMFFOptimizeMolecule(mol)
            writer.add(record_from_mol(mol, f"mol{k}", mol.GetConformer().GetPositions()[None], smiles=smi))
    return path


def right_enantiomer_fraction(reference_store, samples_store) -> float:
    """Share of generated conformers whose RDKit CIP labels (from 3D) equal the reference's."""
    from qdiff.data.chem import mol_from_arrays
    from qdiff.data.molecule_store import SAMPLES_SCHEMA, MoleculeStore
    from qdiff.eval.conformers import molecules_from_positions

    counts = []
    with MoleculeStore(reference_store) as ref, MoleculeStore(samples_store, schema=SAMPLES_SCHEMA) as samples:
        for k in range(len(samples)):
            m, gen = ref.molecule(k), samples.molecule(k)
            template = mol_from_arrays(m["atoms"], m["bond_index"], m["bonds"]["order"])
            result = stereo_correct(molecules_from_positions(template, m["positions"])[0], molecules_from_positions(template, gen["positions"]))
            assert result["has_tetrahedral"]
            counts.append((result["tetrahedral"], result["n"]))
    return sum(c for c, _ in counts) / sum(n for _, n in counts)


def train_and_sample(tmp_path, model: dict, steps: int, smiles=CHIRAL, sample_steps: int = 20, multiplier: int = 20, **settings):
    from qdiff.data.molecule_store import SAMPLES_SCHEMA, MoleculeStore
    from qdiff.sample import sample_molecules
    from qdiff.train import train

    store = chiral_store(tmp_path / "chiral.h5", smiles)
    train(store, tmp_path / "run", {"model": model, "steps": steps, "batch_size": 16, "lr": 3e-3, "warmup_steps": 20, "val_every": 0,
                                    "checkpoint_every": 100_000, "ema": 0.99, "treatment": "conventional", **settings}, progress=False)
    summary = sample_molecules(tmp_path / "run", tmp_path / "samples.h5", multiplier=multiplier, steps=sample_steps, sdf=False, progress=False,
                               device="cpu", all_molecules=True)  # the molecules trained on are the ones to reproduce
    with MoleculeStore(tmp_path / "samples.h5", schema=SAMPLES_SCHEMA) as samples:
        import json

        settings = json.loads(samples.attrs["settings"])
        mirrored = int(samples.attrs["mirrored_by_parity_switch"])
    return right_enantiomer_fraction(store, tmp_path / "samples.h5"), settings, mirrored, summary


@pytest.mark.slow
def test_a_tiny_o3_network_with_the_parity_switch_makes_the_right_enantiomer(tmp_path):
    """EGNN (E(3)) on CHFClBr and alanine: about half the raw samples come out mirrored and are
    switched back; >= 95% of the stored samples have the reference's R/S labels (RDKit)."""
    fraction, settings, mirrored, summary = train_and_sample(tmp_path, {"name": "egnn", "hidden": 32, "layers": 3}, 1000)
    assert settings["parity_switch"] == "post_hoc" and summary["parity_switch"] == "post_hoc"
    assert 0.2 < mirrored / 40 < 0.8, mirrored  # the network itself cannot choose: the switch does
    assert fraction >= 0.95, fraction


BOTH_ENANTIOMERS = ["[C@@H](F)(Cl)Br", "[C@H](F)(Cl)Br"]  # the same graph: only the stereo feature tells them apart
TINY_SO3 = {"name": "e3nn", "symmetry": "so3", "scalars": 16, "vectors": 8, "layers": 3, "cutoff": 5.0}


def test_the_two_enantiomers_differ_only_in_the_stereo_feature(tmp_path):
    from qdiff.data.dataset import ConformerDataset

    data = ConformerDataset(chiral_store(tmp_path / "both.h5", BOTH_ENANTIOMERS))
    a, b = data[0], data[1]
    for key in ("z", "formal_charge", "aromatic", "hybridization", "in_ring", "degree", "num_hs", "bond_index", "bond_order"):
        assert (a[key] == b[key]).all(), key
    assert a["stereo"].abs().sum() == 1 and (a["stereo"] == -b["stereo"]).all()


def test_an_so3_run_samples_without_the_switch_and_records_it(tmp_path):
    """The SO(3) network's runs resolve `parity_switch: auto` to none: nothing is mirrored after
    sampling, and the samples say so (fast; the slow test below checks the handedness)."""
    _, settings, mirrored, summary = train_and_sample(tmp_path, TINY_SO3, 2, smiles=BOTH_ENANTIOMERS, sample_steps=2)
    assert settings["parity_switch"] == "none" and summary["parity_switch"] == "none" and mirrored == 0


@pytest.mark.slow
def test_a_tiny_so3_network_makes_the_right_enantiomer_without_a_switch(tmp_path):
    """Both enantiomers of CHFClBr, one conformer each: the network must read the stereo feature
    (qdiff.data.stereo) to make each molecule's own handedness; >= 95% of 200 samples right (RDKit
    CIP), with ET-Flow's GEOM-DRUGS prior (harmonic, Kabsch-aligned to the data), velocity form and
    the paper's 50 Euler steps. Measured at this size: 98.0 / 99.5% right for training seeds 0 / 1
    after 6,000 steps (95.5-97.5% after 3,000-4,000).

    The prior decides it. A harmonic draw is already bonded, so each centre's handedness is defined
    from t = 0, and the interpolant's marginal turns it early: 63% right at t = 0.2, 88% at 0.5, 99%
    at 0.7; the trained network's ODE follows (58%, 86%, 98%) on states the training covers. From
    the isotropic Gaussian prior (GEOM-QM9's) the marginal stays at 50% to t = 0.4 and turns
    between 0.5 and 0.85, while the atoms already settle into a tetrahedron; a learned field that
    falls slightly behind there leaves well-formed mirror images, states the marginal never holds at
    late t, and they stay mirrored: 55-75% right for 1k-12k steps (measured with this test's
    molecules; README, Fidelity, "Chirality")."""
    model = {**TINY_SO3, "scalars": 32, "vectors": 16}
    fraction, settings, mirrored, _ = train_and_sample(tmp_path, model, 6000, smiles=BOTH_ENANTIOMERS, multiplier=100,
                                                       sample_steps=50, prior="harmonic")
    assert settings["parity_switch"] == "none" and mirrored == 0
    assert fraction >= 0.95, fraction
