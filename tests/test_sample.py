"""Sampling outputs (molecule SDF, backbone store + PDB), self-conditioning, bf16 autocast,
TensorBoard logs, and invariance of the quotient loss and sampler to rigid-motion output errors."""
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from qdiff.data.featurize import featurize
from qdiff.data.molecule_store import SAMPLES_SCHEMA, MoleculeStore
from qdiff.data.protein_store import PROTEIN_SAMPLES_SCHEMA, ProteinStore
from qdiff.data.residues import CA
from qdiff.sample import NetworkCall, _run_sampler, sample, sample_backbones
from qdiff.train import Trainer, resolve_config, train

MOLECULE = {"batch_size": 8, "split": "random", "val_every": 0, "checkpoint_every": 1000, "model": {"name": "egnn", "hidden": 16, "layers": 2}}
BACKBONE = {"batch_size": 4, "split": "random", "val_every": 0, "checkpoint_every": 1000, "coord_scale": 0.1,
            "model": {"name": "backbone-transformer", "dim": 32, "layers": 2, "heads": 4, "pair_bins": 8, "max_distance": 3.0}}


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("stores")
    featurize("demo-qm9", None, root / "qm9.h5", {"n_molecules": 60}, progress=False)
    featurize("demo-backbones", None, root / "bb.h5", {"n_backbones": 20}, progress=False)
    return root


@pytest.fixture(scope="module")
def runs(stores, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    train(stores / "qm9.h5", root / "mol", {**MOLECULE, "steps": 20}, progress=False)
    train(stores / "bb.h5", root / "bb", {**BACKBONE, "steps": 20, "parameterization": "denoiser"}, progress=False)
    return root


def test_molecule_samples_store_and_sdf_agree(tmp_path, runs, stores):
    from rdkit import Chem

    out = tmp_path / "s.h5"
    summary = sample(runs / "mol", out, steps=4, max_molecules=3, seed=1)
    assert summary["kind"] == "molecules" and summary["molecules"] == 3
    supplier = Chem.SDMolSupplier(str(tmp_path / "s.sdf"), removeHs=False, sanitize=False)
    entries = [m for m in supplier]
    assert all(m is not None for m in entries)
    with MoleculeStore(out, SAMPLES_SCHEMA) as s, MoleculeStore(stores / "qm9.h5") as ref:
        assert len(entries) == s.n_conformers == summary["sdf_entries"]
        first = s.molecule(0)
        reference = ref.molecule(int(s.array("molecules/source_row")[0]))
        assert first["smiles"] == reference["smiles"]
        assert first["positions"].shape[0] == 2 * reference["positions"].shape[0]  # ET-Flow's 2 x references
        mol = entries[0]
        assert mol.GetProp("_Name") == first["id"] and mol.GetNumBonds() == len(first["bond_index"])
        np.testing.assert_allclose(mol.GetConformer().GetPositions(), first["positions"][0], atol=1e-3)


def test_molecule_batches_do_not_change_samples(tmp_path, runs):
    """Packing several molecules into one padded batch gives the same conformers as one by one
    (the padding is masked and the prior draws are taken in the same order)."""
    from qdiff.sample import sample_molecules

    a = sample_molecules(runs / "mol", tmp_path / "a.h5", steps=3, max_molecules=3, batch_samples=1, sdf=False, progress=False)
    b = sample_molecules(runs / "mol", tmp_path / "b.h5", steps=3, max_molecules=3, batch_samples=512, sdf=False, progress=False)
    assert a["molecules"] == b["molecules"] == 3
    with MoleculeStore(tmp_path / "a.h5", SAMPLES_SCHEMA) as sa, MoleculeStore(tmp_path / "b.h5", SAMPLES_SCHEMA) as sb:
        assert sa.ids() == sb.ids()
        np.testing.assert_allclose(np.asarray(sa.array("positions")), np.asarray(sb.array("positions")), atol=1e-4)


def test_bf16_sampling_autocasts_the_network_only(tmp_path, runs):
    from qdiff.sample import sample_molecules

    kw = dict(steps=3, max_molecules=2, sdf=False, progress=False)
    sample_molecules(runs / "mol", tmp_path / "fp32.h5", **kw)
    sample_molecules(runs / "mol", tmp_path / "bf16.h5", precision="bf16", **kw)
    with h5py.File(tmp_path / "fp32.h5") as a, h5py.File(tmp_path / "bf16.h5") as b:
        x32, x16 = a["positions"][:], b["positions"][:]
        assert json.loads(b.attrs["settings"])["precision"] == "bf16"
    assert np.isfinite(x16).all() and 0 < np.abs(x16 - x32).max() < 0.5  # bf16 rounding, not garbage
    with pytest.raises(ValueError, match="precision"):
        sample_molecules(runs / "mol", tmp_path / "x.h5", precision="fp8", **kw)


def test_backbone_samples_store_and_pdb_files(tmp_path, runs, stores):
    from Bio.PDB import PDBParser

    out = tmp_path / "bb.h5"
    # 5 steps: the temperature-1 schedule (Proteína's overshoots at so few steps, see the next test)
    summary = sample(runs / "bb", out, lengths=[12, 30], per_length=2, steps=5, seed=0, sampler="sde", noise_scale=0.4,
                     sde_schedule="eta")
    assert summary["kind"] == "backbones" and summary["backbones"] == 4 and summary["nfe"] == 5
    assert summary["pdb_skipped"] == {}
    with ProteinStore(out, PROTEIN_SAMPLES_SCHEMA) as s:
        assert sorted(s.chain_lengths().tolist()) == [12, 12, 30, 30]
        assert (s.array("chains/source_row")[:] == -1).all()
        chain = s.chain(0)
        assert chain["atom_mask"][:, CA].all() and chain["atom_mask"].sum() == len(chain["aatype"])
        pdb = PDBParser(QUIET=True).get_structure("x", summary["pdb_dir"] + f"/{chain['id'][:-2]}.pdb")
        ca = np.array([atom.coord for atom in pdb.get_atoms()])
        np.testing.assert_allclose(ca, chain["atom_pos"][:, CA], atol=1e-3)
    ca_gaps = np.linalg.norm(np.diff(chain["atom_pos"][:, CA], axis=0), axis=1)
    assert np.isfinite(ca_gaps).all()


def test_a_backbone_the_pdb_format_cannot_hold_is_kept_in_the_store_and_its_pdb_skipped(tmp_path, runs):
    from qdiff.data.ca_pdb import read_ca, write_ca_pdb

    # Proteína's SDE at 5 steps overshoots (g(0) dt ~ 93): every sample is in the store, and each
    # one either has its PDB file or a recorded reason
    summary = sample(runs / "bb", tmp_path / "bb.h5", lengths=[12, 30], per_length=2, steps=5, sampler="sde", noise_scale=0.4)
    pdbs = {p.stem for p in Path(summary["pdb_dir"]).glob("*.pdb")}
    assert summary["backbones"] == 4 and len(pdbs) + len(summary["pdb_skipped"]) == 4 and not pdbs & set(summary["pdb_skipped"])
    with ProteinStore(tmp_path / "bb.h5", PROTEIN_SAMPLES_SCHEMA) as s:
        assert len(s.chain_lengths()) == 4 and json.loads(s.attrs["pdb_skipped"]) == summary["pdb_skipped"]

    ca = np.cumsum(np.full((5, 3), 2.0), axis=0)
    write_ca_pdb(ca, tmp_path / "ok.pdb")
    np.testing.assert_allclose(read_ca(tmp_path / "ok.pdb"), ca, atol=1e-3)
    for bad in (ca * 1e4, np.where(np.arange(15).reshape(5, 3) == 7, np.nan, ca), -ca * 600):
        with pytest.raises(ValueError, match="outside what a PDB file holds"):
            write_ca_pdb(bad, tmp_path / "bad.pdb")
        assert not (tmp_path / "bad.pdb").exists()


def test_backbone_lengths_default_to_the_reference_test_split(tmp_path, runs, stores):
    out = tmp_path / "bb.h5"
    summary = sample_backbones(runs / "bb", out, steps=2, progress=False)
    with ProteinStore(stores / "bb.h5") as ref, ProteinStore(out, PROTEIN_SAMPLES_SCHEMA) as s:
        rows = s.array("chains/source_row")[:]
        assert summary["backbones"] == len(ref.array("splits/random/test")) == len(rows)
        assert sorted(s.chain_lengths().tolist()) == sorted(ref.chain_lengths()[rows].tolist())


def test_options_of_the_other_kind_are_refused(tmp_path, runs):
    with pytest.raises(ValueError, match="do not apply to a molecules run"):
        sample(runs / "mol", tmp_path / "x.h5", lengths=[10])
    with pytest.raises(ValueError, match="sde_schedule"):
        sample(runs / "mol", tmp_path / "x.h5", sampler="sde", sde_schedule="edm")


def test_sde_sampling_of_a_velocity_run_with_the_harmonic_prior(stores, tmp_path):
    """`qdiff sample --sampler sde` on a velocity-parameterized, harmonic-prior molecule run (the
    study's molecule default): the score comes from the velocity through the prior's covariance;
    both SDE schedules run and are recorded in the samples' settings."""
    import subprocess
    import sys

    run = tmp_path / "harmonic"
    train(stores / "qm9.h5", run, {**MOLECULE, "steps": 6, "prior": "harmonic", "parameterization": "velocity"}, progress=False)
    cmd = [sys.executable, "-m", "qdiff", "sample", "--run", str(run), "--out", str(tmp_path / "eta.h5"), "--sampler", "sde",
           "--steps", "5", "--max-molecules", "2", "--noise-scale", "0.5", "--device", "cpu"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    import qdiff.sample as sampling

    seen, real = [], sampling._run_sampler

    def spy(*args, **kwargs):
        seen.append(kwargs["prior"])
        return real(*args, **kwargs)

    sampling._run_sampler = spy
    try:
        sample(run, tmp_path / "proteina.h5", sampler="sde", sde_schedule="proteina", steps=5, max_molecules=2, noise_scale=0.5,
               sdf=False, progress=False)
    finally:
        sampling._run_sampler = real
    # the harmonic prior's covariance reaches the velocity-to-score conversion: a basis per cloud,
    # finite positive variances on the valid atoms (the bond Laplacian's inverse eigenvalues)
    assert seen and all(p is not None and not p.isotropic for p in seen)
    assert all(p.basis.shape[-1] == p.basis.shape[-2] == p.variance.shape[-1] for p in seen)
    assert all(bool((p.variance > 0).all()) and bool(torch.isfinite(p.variance).all()) for p in seen)
    for schedule in ["eta", "proteina"]:
        with MoleculeStore(tmp_path / f"{schedule}.h5", SAMPLES_SCHEMA) as s:
            settings = json.loads(s.attrs["settings"])
            assert settings["sampler"] == "sde" and settings["sde_schedule"] == schedule and settings["noise_scale"] == 0.5
            assert all(np.isfinite(s.molecule(i)["positions"]).all() for i in range(2))


def test_self_conditioning_feeds_the_first_pass_estimate(stores, tmp_path):
    """With self_condition = 1 every step runs the no-grad first pass and the second pass sees a
    non-zero x̂1; with 0 it never does. Both train, and the runs differ."""
    seen = []
    config = resolve_config({**BACKBONE, "steps": 2, "self_condition": 1.0})
    trainer = Trainer(stores / "bb.h5", tmp_path / "sc1", config, progress=False)
    original = trainer.task.predict

    def spy(model, batch, x, t, self_cond=None):
        seen.append(self_cond is not None)
        return original(model, batch, x, t, self_cond)

    trainer.task.predict = spy
    trainer.run()
    assert seen == [False, True, False, True]  # first pass without, second with, per step
    seen.clear()
    config0 = resolve_config({**BACKBONE, "steps": 2, "self_condition": 0.0})
    trainer0 = Trainer(stores / "bb.h5", tmp_path / "sc0", config0, progress=False)
    trainer0.task.predict = spy
    trainer0.run()
    assert seen == [False, False]
    with pytest.raises(ValueError, match="self_condition"):
        resolve_config({"self_condition": 2})


def test_bf16_autocast_and_tensorboard(stores, tmp_path):
    pytest.importorskip("tensorboard")
    run = tmp_path / "bf16"
    train(stores / "qm9.h5", run, {**MOLECULE, "steps": 3, "precision": "bf16", "tensorboard": True}, progress=False)
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    log = (run / "log.csv").read_text().splitlines()
    assert len(log) == 4 and all(np.isfinite(float(line.split(",")[2])) for line in log[1:])
    with pytest.raises(ValueError, match="precision"):
        resolve_config({"precision": "fp8"})


def test_runtime_settings_may_change_on_resume(stores, tmp_path):
    run = tmp_path / "r"
    train(stores / "qm9.h5", run, {**MOLECULE, "steps": 2}, progress=False)
    train(stores / "qm9.h5", run, {**MOLECULE, "steps": 2, "device": "cpu", "checkpoint_every": 7}, progress=False)
    assert json.loads((run / "config.json").read_text())["steps"] == 2


def test_a_checkpoint_from_before_the_newer_settings_resumes_with_what_it_computed(stores, tmp_path):
    """A run written before loss_reduction / conformer / parity_switch / t_distribution /
    denoiser_weight_floor existed drew Boltzmann-weighted conformers with the squared loss: it
    resumes with those settings, and a different setting is refused by name."""
    from qdiff.train import Trainer, resolve_config

    run = tmp_path / "old"
    Trainer(stores / "qm9.h5", run, resolve_config({**MOLECULE, "steps": 3, "conformer": "weighted"}), progress=False).run(stop_at=2)
    last = run / "checkpoints" / "last.pt"
    state = torch.load(last, weights_only=True)
    assert state["step"] == 2
    config = json.loads(state["config"])
    for key in ("loss_reduction", "conformer", "parity_switch", "t_distribution", "denoiser_weight_floor"):
        config.pop(key)
    state["config"] = json.dumps(config)
    torch.save(state, last)
    with pytest.raises(ValueError, match="conformer: 'weighted' in the checkpoint, 'uniform' now"):
        train(stores / "qm9.h5", run, {**MOLECULE, "steps": 3}, progress=False)
    train(stores / "qm9.h5", run, {**MOLECULE, "steps": 3, "conformer": "weighted", "parity_switch": "none"}, progress=False)
    assert torch.load(run / "model.pt", weights_only=True)["step"] == 3


class WithRigidMotion(torch.nn.Module):
    """A network whose velocity output carries an extra rigid-motion field A x + b (A skew),
    different for every structure: the part a quotient model need not learn."""

    def __init__(self, base, seed=0):
        super().__init__()
        self.base, self.seed = base, seed

    def forward(self, batch, x, t):
        g = torch.Generator().manual_seed(self.seed)
        B = x.shape[0]
        w = torch.randn(B, 3, generator=g)
        A = torch.zeros(B, 3, 3)
        A[:, 0, 1], A[:, 0, 2], A[:, 1, 2] = -w[:, 2], w[:, 1], -w[:, 0]
        A = A - A.transpose(1, 2)
        b = torch.randn(B, 1, 3, generator=g)
        return self.base(batch, x, t) + (x @ A.transpose(1, 2) + b) * batch["mask"][..., None]


def test_quotient_loss_and_sampler_ignore_rigid_motions_in_the_output(stores, tmp_path):
    config = resolve_config({**MOLECULE, "steps": 1, "treatment": "quotient", "parameterization": "velocity"})
    trainer = Trainer(stores / "qm9.h5", tmp_path / "q", config, progress=False)
    batch = trainer.batch(list(range(8)))
    state = trainer.gen.get_state()
    plain = trainer.loss(trainer.model, batch)
    trainer.gen.set_state(state)
    moved = trainer.loss(WithRigidMotion(trainer.model), batch)
    torch.testing.assert_close(moved, plain, rtol=1e-4, atol=1e-5)
    # a conventional loss does see the extra field
    trainer.config = {**config, "treatment": "conventional"}
    trainer.gen.set_state(state)
    conventional = trainer.loss(trainer.model, batch)
    trainer.gen.set_state(state)
    assert float(trainer.loss(WithRigidMotion(trainer.model), batch).detach()) > float(conventional.detach()) + 1.0

    model = trainer.model.eval()
    results = []
    for net in (model, WithRigidMotion(model)):
        call = NetworkCall(lambda x, t, sc, net=net: net(batch, x, t), "velocity", False, False)
        x0 = trainer.task.sample_prior(batch, torch.zeros(batch["pos"].shape), torch.Generator().manual_seed(3), align=False)
        with torch.no_grad():
            results.append(_run_sampler(call, config, x0, batch["mask"], sampler="ode", steps=8, noise_scale=1.0,
                                        generator=torch.Generator()).x)
    torch.testing.assert_close(results[1], results[0], rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="module")
def one_molecule(stores, tmp_path_factory):
    """16 copies of the smallest demo-qm9 molecule (one conformer): a set a tiny model can memorize."""
    from qdiff.data.molecule_store import MoleculeStoreWriter
    from qdiff.data.records import MoleculeRecord

    path = tmp_path_factory.mktemp("one") / "one.h5"
    with MoleculeStore(stores / "qm9.h5") as ref, MoleculeStoreWriter(path, dataset="one", source="test") as writer:
        m = ref.molecule(int(np.argmin(ref.n_atoms())))
        for k in range(16):
            writer.add(MoleculeRecord(f"copy{k}", m["smiles"], m["atoms"], m["bond_index"], m["bonds"], m["positions"][:1],
                                      m["weights"][:1], m["energies"][:1]))
    return path, m


def heavy_atom_rmsd(m, reference, generated):
    """Symmetry-aware heavy-atom RMSD (RDKit GetBestRMS) of each generated cloud to the reference."""
    from rdkit import Chem
    from rdkit.Geometry import Point3D

    from qdiff.data.chem import mol_from_arrays
    from qdiff.eval.conformers import rmsd_matrix

    def molecule(positions):
        mol = mol_from_arrays(m["atoms"], m["bond_index"], m["bonds"]["order"])
        conf = Chem.Conformer(mol.GetNumAtoms())
        for i, p in enumerate(np.asarray(positions, float)):
            conf.SetAtomPosition(i, Point3D(*p))
        mol.AddConformer(conf)
        return mol

    return rmsd_matrix([molecule(reference)], [molecule(x) for x in generated])[0]


@pytest.mark.slow
@pytest.mark.parametrize("treatment", ["conventional", "align-geodiff", "align-af3", "quotient"])
def test_a_tiny_model_overfits_one_molecule(one_molecule, tmp_path, treatment):
    """Loss falls by more than 10x and ODE samples land on the memorized conformer (median heavy-atom
    RMSD < 0.5 Å, against ~1.5 Å for the untrained model)."""
    import csv

    path, m = one_molecule
    config = resolve_config({"treatment": treatment, "steps": 1000, "batch_size": 16, "lr": 3e-3, "warmup_steps": 20,
                             "val_every": 0, "checkpoint_every": 10_000, "ema": 0.99, "parameterization": "denoiser",
                             "interpolant": {"name": "linear"}, "model": {"name": "egnn", "hidden": 32, "layers": 3}})
    trainer = Trainer(path, tmp_path / "run", config, progress=False)
    untrained = copy_model(trainer.model)
    trainer.run()
    loss = np.array([float(r["loss"]) for r in csv.DictReader(open(tmp_path / "run" / "log.csv"))])
    assert loss[:20].mean() / loss[-20:].mean() > 10
    batch = trainer.task.collate([trainer.dataset[0]] * 8)
    medians = []
    for model in (untrained, trainer.ema.eval()):
        call = NetworkCall(lambda x, t, sc, model=model: model(batch, x, t), "denoiser", False, False)
        gen = torch.Generator().manual_seed(1)
        x0 = trainer.task.sample_prior(batch, torch.zeros(batch["pos"].shape), gen, align=False)
        with torch.no_grad():
            x = _run_sampler(call, config, x0, batch["mask"], sampler="ode", steps=50, noise_scale=1.0, generator=gen).x
        medians.append(float(np.median(heavy_atom_rmsd(m, m["positions"][0], x.numpy()))))
    assert medians[1] < 0.5 < medians[0], medians


def copy_model(model):
    import copy

    return copy.deepcopy(model).eval()


@pytest.fixture(scope="module")
def one_backbone(stores, tmp_path_factory):
    """16 copies of the first 16 residues of a demo backbone."""
    from qdiff.data.protein_store import ProteinStoreWriter
    from qdiff.data.sources.mmcif import ChainRecord, StructureRecord

    path = tmp_path_factory.mktemp("onebb") / "one.h5"
    with ProteinStore(stores / "bb.h5") as ref, ProteinStoreWriter(path, dataset="one", source="test") as writer:
        c = {k: (v[:16] if isinstance(v, np.ndarray) else v) for k, v in ref.chain(0).items()}
        for k in range(16):
            chain = ChainRecord(f"s{k}_A", "1", c["aatype"], c["resnum"], c["icode"], c["atom_pos"], c["atom_mask"], c["b_factor"], c["break_before"])
            writer.add(StructureRecord(f"s{k}", "test", 1.0, "", "", "", "", [chain]))
    return path, c["atom_pos"][:, CA]


GEODIFF_NON_EQUIVARIANT = (
    "GeoDiff's loss aligns the target onto the prediction, so a non-equivariant network's output orientation is "
    "unconstrained and drifts with t; the ODE path then does not reach the chain (measured: 6.8 Å trained vs 3.5 Å "
    "untrained). The loss still falls (asserted before this point)."
)


@pytest.mark.slow
@pytest.mark.parametrize("treatment", ["conventional", pytest.param("align-geodiff", marks=pytest.mark.xfail(strict=True, reason=GEODIFF_NON_EQUIVARIANT)),
                                       "align-af3", "quotient"])
def test_a_tiny_model_overfits_one_backbone(one_backbone, tmp_path, treatment):
    """Without rotation augmentation (a non-equivariant network memorizing one orientation), the
    Cα transformer's loss falls by more than 10x and its ODE samples land near the chain
    (median Cα RMSD < 1.5 Å, against > 5 Å untrained). With augmentation the same tiny model
    needs far longer (it must learn rotation equivariance), which this check is not about."""
    import csv

    from qdiff.geometry import rmsd

    path, target = one_backbone
    config = resolve_config({**BACKBONE, "split": None, "treatment": treatment, "steps": 1000, "batch_size": 16, "lr": 2e-3, "warmup_steps": 20,
                             "ema": 0.99, "parameterization": "denoiser", "interpolant": {"name": "linear"},
                             "rotation_augmentation": False})
    trainer = Trainer(path, tmp_path / "run", config, progress=False)
    untrained = copy_model(trainer.model)
    trainer.run()
    loss = np.array([float(r["loss"]) for r in csv.DictReader(open(tmp_path / "run" / "log.csv"))])
    assert loss[:20].mean() / loss[-20:].mean() > 10, "loss"
    batch = trainer.task.collate([trainer.dataset[0]] * 8)
    medians = []
    for model in (untrained, trainer.ema.eval()):
        call = NetworkCall(lambda x, t, sc, model=model: model(x, t, batch["mask"], sc), "denoiser", True, False)
        gen = torch.Generator().manual_seed(1)
        x0 = trainer.task.sample_prior(batch, torch.zeros(batch["pos"].shape), gen, align=False)
        with torch.no_grad():
            x = _run_sampler(call, config, x0, batch["mask"], sampler="ode", steps=50, noise_scale=1.0, generator=gen).x
        reference = torch.tensor(np.array(target), dtype=torch.float32).expand(8, -1, -1)
        medians.append(float(rmsd(x.float() / config["coord_scale"], reference).median()))
    assert medians[1] < 1.5 < 5 < medians[0], medians


def test_molecules_are_packed_by_size_within_cloud_and_pair_budgets():
    from qdiff.sample import pack_molecules

    counts, sizes = [4, 4, 4, 4, 40], [30, 10, 31, 11, 12]
    groups = pack_molecules(counts, sizes, max_clouds=10, max_pairs=10 * 31**2)
    assert sorted(j for g in groups for j in g) == [0, 1, 2, 3, 4]
    assert groups[0] == [1, 3] and [4] in groups and [0, 2] in groups  # similar sizes together; the big one alone
    assert pack_molecules(counts, sizes, max_clouds=100, max_pairs=8 * 31**2) == [[1, 3, 4], [0, 2]]  # 48 x 12² fits, 52 x 30² not
