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


def test_report_shows_published_numbers_on_the_same_dataset_and_every_figure(tmp_path, drugs):
    """Metrics relabelled as GEOM-DRUGS get the paper's Table 2 rows beside them; demo sets do not."""
    from qdiff.report import FIGURES, write_report

    samples = tmp_path / "s.h5"
    write_samples(samples, drugs, rotate)
    paths = []
    for treatment, dataset in (("quotient", "geom-drugs"), ("conventional", "geom-drugs"), ("quotient", "demo-drugs")):
        run = tmp_path / dataset / treatment
        run.mkdir(parents=True)
        result = evaluate(samples, drugs, run / "metrics.json", progress=False)
        result.update(dataset=dataset, treatment=treatment)
        (run / "metrics.json").write_text(json.dumps(result))
        (run / "log.csv").write_text("step,epoch,loss,lr,grad_norm,samples_per_s,val_loss\n1,0,2.0,1e-4,1.0,10,\n2,0,1.5,1e-4,1.0,10,1.4\n")
        paths.append(run / "metrics.json")
    write_report(paths, tmp_path / "report")
    md = (tmp_path / "report" / "summary.md").read_text()
    sections = {part.split()[0]: part for part in md.split("### ")[1:]}
    geom, demo = sections["geom-drugs"], sections["demo-drugs"]
    assert "ET-Flow(SO(3)) + quotient-space diffusion* (published) | | 78.50 / 84.20" in geom
    assert "(published)" not in demo and "stand-in for GEOM-DRUGS" in demo
    # a demo section says what its numbers mean and where the real-data result is; a real dataset's does not
    assert "docs/results/qm9-small/RESULTS.md" in demo and "docs/results/qm9-small" not in geom
    assert "| qdiff quotient (ode) | 1 | 100.0 ± 0.0 / 100.0 |" in geom and "| 100 |" in geom  # plausible %
    page = (tmp_path / "report" / "report.html").read_text()
    assert page.count("<table>") == 2 and all(name in page for name in FIGURES)
    for name in FIGURES:
        assert (tmp_path / "report" / name).read_bytes()[:4] == b"\x89PNG", name


def test_plausibility_passes_references_and_flags_distorted_and_mirrored_conformers(tmp_path, drugs):
    from rdkit import Chem

    from qdiff.data.chem import mol_from_arrays
    from qdiff.eval.conformers import molecules_from_positions
    from qdiff.eval.plausibility import STEREO_CHECK, plausibility

    with MoleculeStore(drugs) as ref:
        chiral = next(m for m in (ref.molecule(r) for r in range(len(ref))) if "@" in m["smiles"])
    template = mol_from_arrays(chiral["atoms"], chiral["bond_index"], chiral["bonds"]["order"])
    refs = molecules_from_positions(template, chiral["positions"])
    same = plausibility(refs[0], refs[1:3])
    assert same["all"] == 1.0 and same[STEREO_CHECK] == 1.0 and same["n_checked"] == 2
    mirrored = plausibility(refs[0], molecules_from_positions(template, chiral["positions"][:2] * np.array([-1.0, 1.0, 1.0])))
    assert mirrored[STEREO_CHECK] == 0.0 and mirrored["bond_lengths"] == 1.0  # a perfect mirror image: only chirality is wrong
    noisy = np.random.default_rng(0).normal(0, 0.4, chiral["positions"][:2].shape)
    distorted = plausibility(refs[0], molecules_from_positions(template, chiral["positions"][:2] + noisy))
    assert distorted["bond_lengths"] < 1.0 and distorted["all"] == 0.0
    assert Chem.MolToSmiles(template)  # the template itself is a valid molecule


def test_evaluate_reports_plausibility(tmp_path, drugs):
    samples = tmp_path / "s.h5"
    write_samples(samples, drugs, rotate)
    result = evaluate(samples, drugs, tmp_path / "m.json", plausibility_per_molecule=1, progress=False)
    assert result["plausibility"]["all"] == 1.0 and result["plausibility_conformers"] == 4 and not result["plausibility_errors"]
    off = evaluate(samples, drugs, tmp_path / "m0.json", plausibility_per_molecule=0, progress=False)
    assert off["plausibility"] == {} and off["plausibility_conformers"] == 0


def test_evaluation_resumes_from_partial_results(tmp_path, drugs, monkeypatch):
    """Molecules finished before an interruption are not recomputed; the result is the same."""
    import qdiff.evaluate as ev

    samples = tmp_path / "s.h5"
    write_samples(samples, drugs, lambda p: p + np.random.default_rng(1).normal(0, 0.5, p.shape))
    full = evaluate(samples, drugs, tmp_path / "full.json", workers=1, plausibility_per_molecule=0, progress=False)
    assert not (tmp_path / "full.json.partial").exists()

    def interrupted(items, **kw):
        for k, item in enumerate(items):
            if k == 2:
                raise KeyboardInterrupt  # the run dies while waiting for the third molecule
            yield item

    monkeypatch.setattr(ev, "progress_bar", interrupted)
    with pytest.raises(KeyboardInterrupt):
        evaluate(samples, drugs, tmp_path / "m.json", workers=1, plausibility_per_molecule=0, progress=False)
    assert not (tmp_path / "m.json").exists() and len(list((tmp_path / "m.json.partial").glob("*.npz"))) == 2
    computed = []

    def counting(items, **kw):
        for item in items:
            computed.append(item[1] is not None)  # (molecule id, pending job or None when loaded)
            yield item

    monkeypatch.setattr(ev, "progress_bar", counting)
    resumed = evaluate(samples, drugs, tmp_path / "m.json", workers=1, plausibility_per_molecule=0, progress=False)
    assert computed == [False, False, True, True]  # only the two molecules not finished before
    assert resumed["metrics"] == full["metrics"] and not (tmp_path / "m.json.partial").exists()
