"""GEOM rdkit_folder (streamed, checksum before unpickling) and demo-drugs."""
import hashlib
import io
import json
import pathlib
import pickle
import tarfile

import numpy as np
import pytest
import yaml
from rdkit import Chem
from rdkit.Chem import AllChem

from qdiff.data.download import ChecksumError
from qdiff.data.featurize import featurize
from qdiff.data.manifest import MANIFEST_ENV
from qdiff.data.molecule_store import MoleculeStore


def conformers(smiles, n, seed=0):
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    ids = AllChem.EmbedMultipleConfs(mol, numConfs=n, randomSeed=seed)
    out = []
    rng = np.random.default_rng(seed)
    weights = rng.random(len(ids))
    weights /= weights.sum()
    for k, cid in enumerate(ids):
        m = Chem.Mol(mol, confId=cid)
        keep = Chem.Mol(m)
        keep.RemoveAllConformers()
        keep.AddConformer(Chem.Conformer(m.GetConformer(cid)), assignId=True)
        out.append({"rd_mol": keep, "boltzmannweight": float(weights[k]), "totalenergy": -10.0 - k, "geom_id": k})
    return out


class Trap:
    """Unpickling this creates a marker file: proof of whether a pickle was loaded."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def write_rdkit_folder(path, marker):
    members = {}
    summary = {}

    def add(stem, smiles, payload):
        members[f"rdkit_folder/drugs/{stem}.pickle"] = payload
        summary[smiles] = {"pickle_path": f"drugs/{stem}.pickle", "totalconfs": 1}

    add("ethanol", "CCO", pickle.dumps({"smiles": "CCO", "conformers": conformers("CCO", 35)}))
    # 34 conformers: more than the cap of 30, to show that a test molecule keeps all of them
    add("ethanol-amide", "NC(=O)CCO", pickle.dumps({"smiles": "NC(=O)CCO", "conformers": conformers("NC(=O)CCO", 34)}))
    add("salt", "CCO.O", pickle.dumps({"smiles": "CCO.O", "conformers": conformers("CCO.O", 2)}))
    add("mismatch", "CCN", pickle.dumps({"smiles": "CCN", "conformers": conformers("CCC", 2)}))
    add("broken", "CCCl", b"\x80\x04not really a pickle")
    add("benzamide", "NC(=O)c1ccccc1", pickle.dumps({"smiles": "NC(=O)c1ccccc1", "conformers": conformers("NC(=O)c1ccccc1", 4)}))
    add("trap", "CC", pickle.dumps({"smiles": "CC", "conformers": [], "x": Trap(marker)}))
    members["rdkit_folder/summary_drugs.json"] = json.dumps(summary).encode()
    members["rdkit_folder/qm9/other.pickle"] = b"ignored"
    with tarfile.open(path, "w:gz") as tar:
        for name in sorted(members, key=lambda n: ("summary" in n, n)):  # summary after the pickles
            info = tarfile.TarInfo(name)
            info.size = len(members[name])
            tar.addfile(info, io.BytesIO(members[name]))


@pytest.fixture
def geom_raw(tmp_path, monkeypatch):
    raw = tmp_path / "raw"
    raw.mkdir()
    marker = tmp_path / "unpickled.marker"
    write_rdkit_folder(raw / "rdkit_folder.tar.gz", marker)
    md5 = hashlib.md5((raw / "rdkit_folder.tar.gz").read_bytes()).hexdigest()
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(yaml.safe_dump({"geom": {"license": "CC0", "sources": {"dataverse": [
        {"name": "rdkit_folder.tar.gz", "urls": ["http://127.0.0.1:9/rdkit_folder.tar.gz"], "md5": md5, "checksum_source": "test"}]}}}))
    monkeypatch.setenv(MANIFEST_ENV, str(manifest))
    return raw, marker


def test_geom_drugs_streamed_with_filters_cap_and_split(tmp_path, geom_raw):
    raw, marker = geom_raw
    # GeoMol split.npy: indices into the sorted pickle list (the '-' sorts before '.').
    names = sorted(f"{s}.pickle" for s in ["ethanol", "ethanol-amide", "salt", "mismatch", "broken", "benzamide", "trap"])
    assert names[:3] == ["benzamide.pickle", "broken.pickle", "ethanol-amide.pickle"]
    np.save(raw / "drugs_split.npy", np.array([np.array([0, 3, 4]), np.array([1, 5]), np.array([2, 6])], dtype=object), allow_pickle=True)
    out = tmp_path / "drugs.h5"
    summary = featurize("geom-drugs", raw, out, progress=False)
    assert summary["molecules"] == 3 and summary["failures"] == 4
    assert marker.exists()  # the trap pickle was loaded only after the checksum verified
    with MoleculeStore(out) as store:
        reasons = dict(store.failures())
        assert "disconnected" in reasons["salt"]
        assert "disagrees with the summary SMILES" in reasons["mismatch"]
        assert "unreadable pickle" in reasons["broken"]
        assert "no conformers" in reasons["trap"]
        ids = store.ids()
        # ET-Flow scripts/prepare_data.py: a train/val molecule keeps its 30 highest Boltzmann
        # weights; a test molecule of the reference split (etflow, as the split file is there)
        # keeps every conformer as its reference set.
        eth = store.molecule(ids.index("ethanol"))
        assert eth["positions"].shape[0] == 30  # etflow train: capped at the 30 highest Boltzmann weights
        assert (np.diff(eth["weights"]) <= 0).all()
        amide = store.molecule(ids.index("ethanol-amide"))
        assert amide["positions"].shape[0] == 34  # etflow test: all conformers, highest weight first
        assert (np.diff(amide["weights"]) <= 0).all()
        assert json.loads(store.attrs["settings"])["reference_split"] == "etflow"
        attrs = store.h5["splits/etflow"].attrs
        assert attrs["test_conformers"] == "all" and attrs["train_conformers"] == attrs["val_conformers"] == "top 30 by Boltzmann weight"
        assert store.h5["splits/random"].attrs["test_conformers"] == "top 30 by Boltzmann weight"
        # sorted: benzamide, broken, ethanol-amide, ethanol, mismatch, salt, trap
        assert [ids[r] for r in store.split("etflow", "train")] == ["benzamide", "ethanol"]
        assert [ids[r] for r in store.split("etflow", "val")] == []
        assert [ids[r] for r in store.split("etflow", "test")] == ["ethanol-amide"]
        assert int(store.h5["splits/etflow"].attrs["dropped_missing"]) == 4
        assert set(store.split_names()) == {"etflow", "random"}
    lock = json.loads((raw / "CHECKSUMS.lock.json").read_text())
    assert "drugs_split.npy" in lock


def test_geom_reference_split_random_and_its_errors(tmp_path, geom_raw):
    raw, _ = geom_raw
    with pytest.raises(ValueError, match="reference_split etflow needs .*drugs_split.npy"):
        featurize("geom-drugs", raw, tmp_path / "a.h5", {"reference_split": "etflow"}, progress=False)
    with pytest.raises(ValueError, match="reference_split 'test'"):
        featurize("geom-drugs", raw, tmp_path / "a.h5", {"reference_split": "test"}, progress=False)
    out = tmp_path / "drugs.h5"
    # No split.npy: "auto" keeps every conformer of the random split's test molecules.
    assert featurize("geom-drugs", raw, out, {"split": [0.0, 0.0, 1.0]}, progress=False)["reference_split"] == "random"
    with MoleculeStore(out) as store:
        ids = store.ids()
        assert store.molecule(ids.index("ethanol"))["positions"].shape[0] == 35
        assert store.molecule(ids.index("ethanol-amide"))["positions"].shape[0] == 34
        assert store.h5["splits/random"].attrs["test_conformers"] == "all"
    featurize("geom-drugs", raw, out, {"split": [0.0, 0.0, 1.0], "reference_split": "none"}, progress=False)
    with MoleculeStore(out) as store:
        assert store.molecule(store.ids().index("ethanol"))["positions"].shape[0] == 30


def test_geom_checksum_is_verified_before_unpickling(tmp_path, geom_raw, monkeypatch):
    raw, marker = geom_raw
    manifest = tmp_path / "bad.yaml"
    manifest.write_text(yaml.safe_dump({"geom": {"license": "CC0", "sources": {"dataverse": [
        {"name": "rdkit_folder.tar.gz", "urls": ["http://127.0.0.1:9/x"], "md5": "0" * 32, "checksum_source": "test"}]}}}))
    monkeypatch.setenv(MANIFEST_ENV, str(manifest))
    with pytest.raises(ChecksumError, match="md5 mismatch"):
        featurize("geom-drugs", raw, tmp_path / "drugs.h5", progress=False)
    assert not marker.exists() and not (tmp_path / "drugs.h5").exists()


def test_geom_missing_archive_says_how_to_fetch(tmp_path):
    with pytest.raises(FileNotFoundError, match="qdiff fetch geom-drugs"):
        featurize("geom-drugs", tmp_path, tmp_path / "x.h5", progress=False)


def test_demo_drugs_is_deterministic_and_labelled(tmp_path):
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    featurize("demo-drugs", None, a, {"max_molecules": 6, "n_conformers": 4}, progress=False)
    featurize("demo-drugs", None, b, {"max_molecules": 6, "n_conformers": 4}, progress=False)
    assert a.read_bytes() == b.read_bytes()
    with MoleculeStore(a) as store:
        assert "stand-in for GEOM-DRUGS" in store.attrs["source"]
        assert len(store) == 6 and store.n_conformers <= 24
        w = store.molecule(0)["weights"]
        assert abs(w.sum() - 1) < 1e-5 and (np.diff(store.molecule(0)["energies"]) >= 0).all()
        for row in range(len(store)):  # real ensembles, not copies of one conformer (RDKit seed 0)
            positions = store.molecule(row)["positions"]
            if positions.shape[0] > 1:
                assert np.abs(positions[1:] - positions[0]).max() > 1e-3


def test_fetch_geom_over_http_then_featurize(tmp_path, geom_raw):
    from http_fixtures import FileServer
    from qdiff.data.fetch import fetch_dataset

    served, _ = geom_raw
    dest = tmp_path / "fetched"
    with FileServer() as server:
        server.files["/geom/rdkit_folder.tar.gz"] = (served / "rdkit_folder.tar.gz").read_bytes()
        server.truncate_once.add("/geom/rdkit_folder.tar.gz")
        (path,) = fetch_dataset("geom-drugs", None, dest, mirror=server.url + "/geom", progress=False, backoff=0)
        assert [r for _, r in server.requests][1].startswith("bytes=")
    assert path.read_bytes() == (served / "rdkit_folder.tar.gz").read_bytes()
    summary = featurize("geom-drugs", dest, tmp_path / "drugs.h5", progress=False)
    assert summary["molecules"] == 3


def test_training_conformer_draw_uniform_or_weighted(tmp_path):
    """ET-Flow (etflow/data/dataset.py, EuclideanDataset.get) draws one stored conformer uniformly
    at random; qdiff's default is the same, "weighted" follows the Boltzmann weights."""
    from qdiff.data.dataset import ConformerDataset

    path = tmp_path / "d.h5"
    featurize("demo-drugs", None, path, {"max_molecules": 3, "n_conformers": 4}, progress=False)
    with MoleculeStore(path) as store:
        row = max(range(len(store)), key=lambda r: int(store.conf_ptr[r + 1] - store.conf_ptr[r]))
        c0, n = int(store.conf_ptr[row]), int(store.conf_ptr[row + 1] - store.conf_ptr[row])
        weights = store.molecule(row)["weights"].astype(float)
    assert n > 1
    epochs = 2000
    for mode, expected in (("uniform", np.full(n, 1 / n)), ("weighted", weights / weights.sum())):
        ds = ConformerDataset(path, None, "train", conformer=mode, seed=0)
        assert ConformerDataset(path, None, "train").conformer == "uniform"
        counts = np.zeros(n)
        for epoch in range(epochs):
            ds.set_epoch(epoch)
            counts[int(ds[list(ds.rows).index(row)]["conformer"]) - c0] += 1
        assert np.abs(counts / epochs - expected).max() < 0.04, (mode, counts / epochs, expected)


def test_twice_as_many_samples_as_references_for_a_full_test_ensemble(tmp_path, geom_raw):
    """ET-Flow scripts/eval.py generates 2 x the reference conformers of each test molecule; with
    every conformer kept for the test molecules, that is 2 x the full ensemble."""
    from qdiff.sample import sample_molecules
    from qdiff.train import train

    raw, _ = geom_raw
    np.save(raw / "drugs_split.npy", np.array([np.array([0, 3, 4]), np.array([1, 5]), np.array([2, 6])], dtype=object), allow_pickle=True)
    store = tmp_path / "drugs.h5"
    featurize("geom-drugs", raw, store, progress=False)
    train(store, tmp_path / "run", {"split": "etflow", "steps": 1, "batch_size": 2, "val_every": 0, "checkpoint_every": 1000,
                                    "model": {"name": "egnn", "hidden": 8, "layers": 1}}, progress=False)
    sample_molecules(tmp_path / "run", tmp_path / "s.h5", steps=1, sdf=False, progress=False)
    with MoleculeStore(tmp_path / "s.h5", "qdiff.samples.molecules") as s:
        assert s.ids() == ["ethanol-amide"] and s.molecule(0)["positions"].shape[0] == 2 * 34
        settings = json.loads(s.attrs["settings"])
    assert settings["reference_conformers"] == "all" and settings["molecules"] == "split etflow: test"
