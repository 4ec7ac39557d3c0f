"""No silent fallbacks: sampling a run without a split, and evaluating a dataset without a known
coverage threshold, are errors naming the fix, unless the choice is made explicitly; the explicit
choice is recorded in the samples and the metrics."""
import json

import numpy as np
import pytest

from qdiff.cli import main
from qdiff.data.featurize import featurize
from qdiff.data.molecule_store import SAMPLES_SCHEMA, MoleculeStore, MoleculeStoreWriter
from qdiff.data.records import MoleculeRecord
from qdiff.sample import sample_backbones
from qdiff.train import train

TINY = {"batch_size": 4, "steps": 2, "val_every": 0, "checkpoint_every": 1000, "split": None,
        "model": {"name": "egnn", "hidden": 8, "layers": 1}}


@pytest.fixture(scope="module")
def no_split_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("nosplit")
    featurize("demo-qm9", None, root / "qm9.h5", {"n_molecules": 10}, progress=False)
    train(root / "qm9.h5", root / "run", TINY, progress=False)
    return root


def test_sampling_a_run_without_split_needs_all_molecules(no_split_run, tmp_path, capsys):
    run, store = no_split_run / "run", no_split_run / "qm9.h5"
    code = main(["sample", "--run", str(run), "--out", str(tmp_path / "s.h5"), "--steps", "2"])
    err = capsys.readouterr().err
    assert code == 2 and not (tmp_path / "s.h5").exists()
    assert "trained without a split" in err and "--all-molecules" in err and "split=random" in err
    assert main(["sample", "--run", str(run), "--out", str(tmp_path / "s.h5"), "--steps", "2", "--all-molecules"]) == 0
    with MoleculeStore(tmp_path / "s.h5", SAMPLES_SCHEMA) as s:
        settings = json.loads(s.attrs["settings"])
        assert len(s) == 10  # every molecule of the store, training ones included
    assert settings["all_molecules"] is True and "training rows included" in settings["molecules"]
    assert main(["evaluate", "--samples", str(tmp_path / "s.h5"), "--reference", str(store), "--out", str(tmp_path / "m.json"),
                 "--workers", "1", "--plausibility", "0"]) == 0
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["all_molecules"] is True and "training rows included" in metrics["molecules_sampled"]
    assert metrics["threshold"] == 0.5 and metrics["threshold_source"] == "default for demo-qm9"


def test_backbones_without_split_need_all_molecules_or_lengths(tmp_path):
    store = tmp_path / "bb.h5"
    featurize("demo-backbones", None, store, {"n_backbones": 6}, progress=False)
    train(store, tmp_path / "run", {**TINY, "coord_scale": 0.1, "model": {"name": "backbone-transformer", "dim": 16, "layers": 1,
                                                                          "heads": 2, "pair_bins": 4, "max_distance": 3.0}}, progress=False)
    with pytest.raises(ValueError, match="trained without a split.*--all-molecules"):
        sample_backbones(tmp_path / "run", tmp_path / "a.h5", steps=1, progress=False)
    assert sample_backbones(tmp_path / "run", tmp_path / "b.h5", steps=1, lengths=[8], progress=False)["backbones"] == 1
    assert sample_backbones(tmp_path / "run", tmp_path / "c.h5", steps=1, all_molecules=True, progress=False)["backbones"] == 6


def test_unknown_dataset_needs_an_explicit_threshold(tmp_path, capsys):
    """No 0.75 Å default for a dataset the paper gives no threshold for."""
    demo = tmp_path / "demo.h5"
    featurize("demo-drugs", None, demo, {"max_molecules": 2, "n_conformers": 2}, progress=False)
    reference, samples = tmp_path / "ref.h5", tmp_path / "s.h5"
    with MoleculeStore(demo) as src:
        mols = [src.molecule(row) for row in range(len(src))]
    with MoleculeStoreWriter(reference, dataset="my-ligands", source="test") as w:
        for m in mols:
            w.add(MoleculeRecord(m["id"], m["smiles"], m["atoms"], m["bond_index"], m["bonds"], m["positions"], m["weights"], m["energies"]))
    with MoleculeStoreWriter(samples, dataset="my-ligands", source="test", schema=SAMPLES_SCHEMA, settings={"sampler": "ode"}) as w:
        for row, m in enumerate(mols):
            pos = np.concatenate([m["positions"], m["positions"]]).astype(np.float32)
            w.add(MoleculeRecord(m["id"], m["smiles"], m["atoms"], m["bond_index"], m["bonds"], pos, np.ones(len(pos), np.float32),
                                 np.full(len(pos), np.nan)), source_row=row)
    args = ["evaluate", "--samples", str(samples), "--reference", str(reference), "--out", str(tmp_path / "m.json"),
            "--workers", "1", "--plausibility", "0"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "no coverage threshold is known for dataset 'my-ligands'" in err and "--threshold" in err
    assert not (tmp_path / "m.json").exists()
    assert main(args + ["--threshold", "0.6"]) == 0
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["threshold"] == 0.6 and metrics["threshold_source"] == "explicit (--threshold)"
    assert metrics["metrics"]["zero"]["cov_r_mean"] == 1.0
