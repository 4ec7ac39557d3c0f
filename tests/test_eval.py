"""Metric definitions pinned by hand-computed cases; RDKit parity; backbone metrics on real and
ideal chains."""
import gzip
import math
from pathlib import Path

import numpy as np
import pytest

from qdiff.eval import backbones as bb
from qdiff.eval.conformers import aggregate, coverage_amr, coverage_curve, molecules_from_positions, rmsd_matrix

PDB_DIR = Path(__file__).resolve().parent / "data" / "pdb"  # real entries, see PROVENANCE.tsv there


def test_coverage_amr_by_hand():
    # 2 references x 3 generated conformers
    rmsd = np.array([[0.2, 0.9, 1.5],
                     [0.8, 0.6, 0.4]])
    m = coverage_amr(rmsd, threshold=0.5)
    # recall: per reference min = [0.2, 0.4] -> both < 0.5; AMR-R = 0.3
    assert m["cov_r"] == 1.0 and m["amr_r"] == pytest.approx(0.3)
    # precision: per generated min = [0.2, 0.6, 0.4] -> 2 of 3 < 0.5; AMR-P = 0.4
    assert m["cov_p"] == pytest.approx(2 / 3) and m["amr_p"] == pytest.approx(0.4)
    # the comparison is strict
    assert coverage_amr(np.array([[0.5]]), 0.5)["cov_r"] == 0.0
    with pytest.raises(ValueError, match="non-empty"):
        coverage_amr(np.zeros((0, 3)), 0.5)


def test_failure_conventions_by_hand():
    a = {"cov_r": 1.0, "amr_r": 0.3, "cov_p": 0.5, "amr_p": 0.4}
    b = {"cov_r": 0.5, "amr_r": 0.7, "cov_p": 0.0, "amr_p": 0.9}
    zero = aggregate([a, b, None], "zero")
    assert zero["cov_r_mean"] == pytest.approx(0.5) and zero["cov_r_median"] == pytest.approx(0.5)
    assert zero["amr_r_mean"] == pytest.approx(0.5) and zero["n_failed"] == 1
    skip = aggregate([a, b, None], "skip")
    assert skip["cov_r_mean"] == pytest.approx(0.75) and skip["amr_p_median"] == pytest.approx(0.65)
    with pytest.raises(ValueError, match="failure convention"):
        aggregate([a], "drop")
    curve = coverage_curve([np.array([[0.2, 0.9]]), None], thresholds=[0.1, 0.5, 1.0])
    assert curve["cov_r"] == [0.0, 0.5, 0.5] and curve["cov_p"] == [0.0, 0.25, 0.5]


def test_rmsd_matrix_matches_rdkit_and_is_symmetry_aware():
    from rdkit import Chem
    from rdkit.Chem import AllChem, rdMolAlign

    mol = Chem.AddHs(Chem.MolFromSmiles("OC(=O)c1ccccc1C"))
    ids = list(AllChem.EmbedMultipleConfs(mol, numConfs=3, randomSeed=7))
    confs = [Chem.Mol(mol, confId=i) for i in ids]
    singles = []
    for m, cid in zip(confs, ids):
        one = Chem.Mol(m)
        one.RemoveAllConformers()
        one.AddConformer(Chem.Conformer(m.GetConformer(cid)), assignId=True)
        singles.append(one)
    R = rmsd_matrix(singles[:2], singles)
    assert R.shape == (2, 3) and R[0, 0] == pytest.approx(0.0, abs=1e-6) and R[1, 1] == pytest.approx(0.0, abs=1e-6)
    direct = rdMolAlign.GetBestRMS(Chem.RemoveHs(singles[2]), Chem.RemoveHs(singles[0]))
    assert R[0, 2] == pytest.approx(direct)
    # Swapping the two carboxyl oxygens (a graph automorphism) does not change the RMSD.
    pos = singles[1].GetConformer().GetPositions()
    o1, o2 = 0, 2
    pos[[o1, o2]] = pos[[o2, o1]]
    (swapped,) = molecules_from_positions(singles[1], pos[None])
    assert rmsd_matrix([singles[0]], [swapped])[0, 0] == pytest.approx(R[0, 1], abs=1e-6)


def ideal(theta_deg, phi_deg, n):
    from qdiff.data.sources.backbones import nerf_chain

    return nerf_chain(np.full(n, np.deg2rad(theta_deg)), np.full(n, np.deg2rad(phi_deg)))


def test_ideal_helix_and_strand_are_assigned():
    helix = ideal(91, 50, 30)
    strand = ideal(123, -170, 12)
    assert bb.secondary_structure(helix)[2:-2] == "H" * 26
    assert bb.secondary_structure(strand)[1:-1] == "E" * 10
    assert bb.ca_bond_stats(helix)["max_abs_dev"] < 1e-6
    assert bb.clash_count(helix) == 0 and bb.clash_count(np.zeros((5, 3))) == 3
    # helix rise 1.5 Å per residue -> Rg of a 30-residue helix close to a rod of length 45 Å
    assert bb.radius_of_gyration(helix) == pytest.approx(math.sqrt(45**2 / 12 + 2.3**2), rel=0.05)


def test_power_law_fit_recovers_exponent():
    n = np.array([50, 100, 200, 400])
    a, nu = bb.fit_power_law(n, 2.2 * n**0.38)
    assert a == pytest.approx(2.2) and nu == pytest.approx(0.38)


def test_histogram_jsd():
    rng = np.random.default_rng(0)
    x, y = rng.normal(0, 1, 5000), rng.normal(0, 1, 5000)
    bins = np.linspace(-4, 4, 41)
    assert bb.histogram_jsd(x, y, bins) < 0.1  # finite-sample noise only
    assert bb.histogram_jsd(x, x + 3, bins) > 0.7
    assert bb.histogram_jsd(x, np.array([100.0]), bins) != bb.histogram_jsd(x, np.array([100.0]), bins)  # NaN


def test_ca_secondary_structure_agrees_with_dssp_on_real_chains(tmp_path):
    import mdtraj as md

    from qdiff.data.residues import CA
    from qdiff.data.sources.mmcif import parse_structure

    for pid, expected in (("1A8O", "H"), ("1GBT", "E")):
        chain = parse_structure((PDB_DIR / f"{pid}.cif.gz").read_bytes(), pid).chains[0]
        ca = chain.atom_pos[chain.atom_mask[:, CA], CA]
        ours = bb.secondary_structure(ca)
        path = tmp_path / f"{pid}.cif"
        path.write_bytes(gzip.decompress((PDB_DIR / f"{pid}.cif.gz").read_bytes()))
        traj = md.load(str(path))
        dssp = md.compute_dssp(traj.atom_slice(traj.topology.select("protein and chainid 0")), simplified=True)[0]
        dssp = "".join(d if d in "HE" else "C" for d in dssp)
        assert ours.count(expected) / len(ours) > 0.5 * dssp.count(expected) / len(dssp)
        # where both call a residue helical or extended they mostly agree
        n = min(len(ours), len(dssp))
        both = [(a, b) for a, b in zip(ours[:n], dssp[:n]) if a != "C" and b != "C"]
        assert sum(a == b for a, b in both) >= 0.8 * len(both)


def test_ca_geometry_matches_mdtraj_on_real_chains(tmp_path):
    """Rg and consecutive Cα distances of real chains agree with mdtraj's own computations."""
    import mdtraj as md

    from qdiff.data.residues import CA
    from qdiff.data.sources.mmcif import parse_structure

    for pid in ("1A8O", "1GBT"):
        chain = parse_structure((PDB_DIR / f"{pid}.cif.gz").read_bytes(), pid).chains[0]
        ca = chain.atom_pos[chain.atom_mask[:, CA], CA].astype(np.float64)
        path = tmp_path / f"{pid}.cif"
        path.write_bytes(gzip.decompress((PDB_DIR / f"{pid}.cif.gz").read_bytes()))
        traj = md.load(str(path))
        sel = traj.topology.select("chainid 0 and name CA and protein")
        ref = traj.atom_slice(sel)
        assert ref.n_atoms == len(ca)
        assert bb.radius_of_gyration(ca) == pytest.approx(10 * float(md.compute_rg(ref)[0]), rel=1e-4)  # nm -> Å
        pairs = np.stack([np.arange(ref.n_atoms - 1), np.arange(1, ref.n_atoms)], axis=1)
        np.testing.assert_allclose(bb.consecutive_distances(ca), 10 * md.compute_distances(ref, pairs)[0], rtol=1e-4)
