"""Sampling into a samples store and evaluating it: exact cases and the CLI end to end."""
import json
import subprocess
import sys

import numpy as np
import pytest

from qdiff.data.featurize import featurize
from qdiff.data.molecule_store import SAMPLES_SCHEMA, MoleculeStore, MoleculeStoreWriter
from qdiff.data.records import MoleculeRecord
from qdiff.evaluate import evaluate


@pytest.fixture(scope="module")
def drugs(tmp_path_factory):
    path = tmp_path_factory.mktemp("d") / "drugs.h5"
    featurize("demo-drugs", None, path, {"max_molecules": 4, "n_conformers": 3}, progress=False)
    return path


def write_samples(path, reference, transform):
    with MoleculeStore(reference) as ref, MoleculeStoreWriter(path, dataset="demo-drugs", source="test", schema=SAMPLES_SCHEMA,
                                                              settings={"sampler": "ode", "treatment": "quotient"}) as w:
        for row in range(len(ref)):
            m = ref.molecule(row)
            pos = transform(m["positions"])
            w.add(MoleculeRecord(m["id"], m["smiles"], m["atoms"], m["bond_index"], m["bonds"], pos.astype(np.float32),
                                 np.ones(len(pos), np.float32), np.full(len(pos), np.nan)), source_row=row)


def rotate(pos):
    from scipy.spatial.transform import Rotation

    R = Rotation.random(random_state=0).as_matrix()
    return np.concatenate([pos @ R.T + 3.0, pos @ R.T - 1.0])  # 2 x references, rigidly moved


def test_identical_conformers_give_full_coverage(tmp_path, drugs):
    samples = tmp_path / "s.h5"
    write_samples(samples, drugs, rotate)
    result = evaluate(samples, drugs, tmp_path / "m.json", workers=2, progress=False)
    zero = result["metrics"]["zero"]
    assert result["threshold"] == 0.75 and zero["n_failed"] == 0
    assert zero["cov_r_mean"] == 1.0 and zero["cov_p_mean"] == 1.0 and zero["amr_r_mean"] < 1e-3
    assert all(m["n_gen"] == 2 * m["n_ref"] for m in result["molecules"])
    assert json.loads((tmp_path / "m.json").read_text())["metrics"]["skip"]["cov_r_mean"] == 1.0


def test_perturbed_conformers_lose_coverage(tmp_path, drugs):
    rng = np.random.default_rng(0)
    samples = tmp_path / "s.h5"
    write_samples(samples, drugs, lambda p: p + rng.normal(0, 1.0, p.shape))
    result = evaluate(samples, drugs, tmp_path / "m.json", progress=False)
    zero = result["metrics"]["zero"]
    assert zero["amr_r_mean"] > 0.75 and zero["cov_r_mean"] < 0.5
    curve = result["coverage_curve"]
    assert curve["cov_r"][-1] >= curve["cov_r"][0] and curve["threshold"][0] == 0.0


def test_mismatched_samples_are_refused(tmp_path, drugs):
    other = tmp_path / "q.h5"
    featurize("demo-qm9", None, other, {"n_molecules": 4}, progress=False)
    samples = tmp_path / "s.h5"
    write_samples(samples, other, lambda p: p)
    with pytest.raises(ValueError, match="does not match reference"):
        evaluate(samples, drugs, tmp_path / "m.json", progress=False)


@pytest.mark.slow
def test_train_sample_evaluate_cli(tmp_path):
    store = tmp_path / "qm9.h5"
    run = lambda *a: subprocess.run([sys.executable, "-m", "qdiff", *a], capture_output=True, text=True)  # noqa: E731
    assert run("featurize", "demo-qm9", "--out", str(store), "--set", "n_molecules=60").returncode == 0
    out = run("train", "--store", str(store), "--out", str(tmp_path / "run"), "--steps", "10", "--treatment", "quotient",
              "--set", "batch_size=8", "--set", "split=random", "--set", "model={name: egnn, hidden: 16, layers: 2}")
    assert out.returncode == 0, out.stderr
    out = run("sample", "--run", str(tmp_path / "run"), "--out", str(tmp_path / "s.h5"), "--steps", "5")
    assert out.returncode == 0, out.stderr and "NFE per sample" in out.stdout
    out = run("evaluate", "--samples", str(tmp_path / "s.h5"), "--reference", str(store), "--out", str(tmp_path / "m.json"))
    assert out.returncode == 0, out.stderr
    result = json.loads((tmp_path / "m.json").read_text())
    assert result["metrics"]["zero"]["n_molecules"] == 6 and "rmsd_to_reference" in result  # the 10% test split
    bad = run("train", "--store", str(store), "--out", str(tmp_path / "run2"), "--set", "stepz=3")
    assert bad.returncode == 2 and "unknown training settings" in bad.stderr
