"""Dataset versions as artifacts: a store's content digest travels into checkpoints, model.pt,
samples and metrics; training never resumes on another version of its store; earlier versions
stay retrievable for `qdiff data diff --previous`."""
import json
import os
import shutil

import h5py
import numpy as np
import pytest
import torch

from qdiff import errors
from qdiff.cli import main
from qdiff.data.featurize import featurize
from qdiff.data.identity import CONTENT_ATTR, compute_content_sha256, store_identity, verify_store
from qdiff.train import Trainer, resolve_config, train

SMALL = {"batch_size": 8, "split": "random", "val_every": 0, "checkpoint_every": 1000, "steps": 6,
         "model": {"name": "egnn", "hidden": 16, "layers": 2}}


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """Two versions of a demo-qm9 store (other molecules) and a byte-identical rebuild of the first."""
    folder = tmp_path_factory.mktemp("versions")
    a, b, a2 = folder / "a.h5", folder / "b.h5", folder / "a2.h5"
    featurize("demo-qm9", None, a, {"n_molecules": 40, "seed": 0}, progress=False)
    featurize("demo-qm9", None, b, {"n_molecules": 40, "seed": 1}, progress=False)
    featurize("demo-qm9", None, a2, {"n_molecules": 40, "seed": 0}, progress=False)
    return a, b, a2


def weights(path):
    return torch.load(path, weights_only=True)["ema"]


def same(x, y):
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def put(src, dest):
    """Replace the store at `dest` by a copy of `src` (a new file, as featurize writes it)."""
    tmp = dest.with_name(dest.name + ".new")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dest)


def test_the_identity_is_a_digest_of_the_content(stores, tmp_path):
    a, b, a2 = stores
    ia, ib = store_identity(a), store_identity(b)
    assert ia["recorded"] and len(ia["content_sha256"]) == 64 and ia["dataset"] == "demo-qm9"
    assert ia["content_sha256"] == store_identity(a2)["content_sha256"] != ib["content_sha256"]
    assert verify_store(a) == (ia["content_sha256"], ia["content_sha256"])  # recorded = recomputed from the data
    # One coordinate changed: the recomputed digest differs from the recorded one.
    edited = tmp_path / "edited.h5"
    shutil.copyfile(a, edited)
    with h5py.File(edited, "r+") as h5:
        h5["positions"][0, 0] += np.float32(0.5)
    recorded, computed = verify_store(edited)
    assert recorded == ia["content_sha256"] != computed
    assert main(["data", "info", str(edited), "--verify"]) == errors.EXIT_INPUT
    assert main(["data", "info", str(a), "--verify"]) == 0
    # The writer's version is not content; the digest attribute itself is not hashed; a store of an
    # older qdiff (no digest) gets the same identity, computed on demand.
    legacy = tmp_path / "legacy.h5"
    shutil.copyfile(a, legacy)
    with h5py.File(legacy, "r+") as h5:
        h5.attrs["qdiff_version"] = "0.0.0-other"
        del h5.attrs[CONTENT_ATTR]
    old = store_identity(legacy)
    assert not old["recorded"] and old["content_sha256"] == ia["content_sha256"] == compute_content_sha256(legacy)
    # ... but a changed setting attribute (provenance) is content
    with h5py.File(legacy, "r+") as h5:
        h5.attrs["settings"] = json.dumps({"n_molecules": 40, "seed": 99})
    assert compute_content_sha256(legacy) != ia["content_sha256"]


def test_training_never_resumes_from_a_checkpoint_of_another_store(stores, tmp_path, capsys):
    """Train on store A, replace it by B at the same path, run the same command: the result is a
    fresh run on B (bit for bit what training on B from scratch gives), never A's weights."""
    a, b, _ = stores
    path = tmp_path / "data" / "pdb.h5"
    path.parent.mkdir()
    fresh_a, fresh_b = tmp_path / "fresh-a", tmp_path / "fresh-b"
    train(a, fresh_a, SMALL, progress=False)
    train(b, fresh_b, SMALL, progress=False)
    assert not same(weights(fresh_a / "model.pt"), weights(fresh_b / "model.pt"))

    run = tmp_path / "run"
    shutil.copyfile(a, path)
    train(path, run, SMALL, progress=False)
    assert same(weights(run / "model.pt"), weights(fresh_a / "model.pt"))
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert state["step"] == 6 and json.loads(state["store"])["content_sha256"] == store_identity(a)["content_sha256"]
    model = torch.load(run / "model.pt", weights_only=True)
    assert json.loads(model["store_identity"])["content_sha256"] == store_identity(a)["content_sha256"]

    put(b, path)  # the dataset update: a new store at the same path
    capsys.readouterr()
    assert main(["train", "--store", str(path), "--out", str(run), "--steps", "6", "--set", "batch_size=8",
                 "--set", "split=random", "--set", "val_every=0", "--set", "checkpoint_every=1000",
                 "--set", "model={name: egnn, hidden: 16, layers: 2}"]) == 0
    said = capsys.readouterr().out
    assert "not resumed" in said and store_identity(b)["content_sha256"][:12] in said and "starting at step 0" in said
    assert same(weights(run / "model.pt"), weights(fresh_b / "model.pt"))
    assert json.loads(torch.load(run / "model.pt", weights_only=True)["store_identity"])["content_sha256"] == store_identity(b)["content_sha256"]
    rows = (run / "log.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == [str(s) for s in range(1, 7)]  # one fresh log, not A's rows
    # A's run is kept aside, not deleted: its model is A's.
    kept = run / "superseded" / f"store-{store_identity(a)['content_sha256'][:12]}"
    assert same(weights(kept / "model.pt"), weights(fresh_a / "model.pt")) and (kept / "checkpoints" / "last.pt").is_file()


def test_an_interrupted_run_resumes_only_on_the_same_content(stores, tmp_path):
    a, b, a2 = stores
    path = tmp_path / "store.h5"
    config = resolve_config(SMALL)
    uninterrupted = tmp_path / "full"
    train(a, uninterrupted, SMALL, progress=False)
    # A byte-identical rebuild of the store (a new file, same content) resumes: the same result.
    shutil.copyfile(a, path)
    run = tmp_path / "run"
    Trainer(path, run, config, progress=False).run(stop_at=3)
    put(a2, path)
    train(path, run, SMALL, progress=False)
    assert same(weights(run / "model.pt"), weights(uninterrupted / "model.pt")) and not (run / "superseded").exists()
    # Interrupted on A, the store becomes B: loading the checkpoint directly is refused ...
    run = tmp_path / "run2"
    put(a, path)
    Trainer(path, run, config, progress=False).run(stop_at=3)
    put(b, path)
    trainer = Trainer(path, run, config, progress=False)
    with pytest.raises(errors.InputFileError, match="trained on demo-qm9 store"):
        trainer.load(run / "checkpoints" / "last.pt")
    # ... and a checkpoint that records no store (an older qdiff) is not resumed either.
    train(path, run, SMALL, progress=False)
    fresh_b = tmp_path / "fresh-b"
    train(b, fresh_b, SMALL, progress=False)
    assert same(weights(run / "model.pt"), weights(fresh_b / "model.pt"))
    run3 = tmp_path / "run3"
    Trainer(path, run3, config, progress=False).run(stop_at=3)
    legacy = torch.load(run3 / "checkpoints" / "last.pt", weights_only=True)
    del legacy["store"]
    torch.save(legacy, run3 / "checkpoints" / "last.pt")
    train(path, run3, SMALL, progress=False)
    assert same(weights(run3 / "model.pt"), weights(fresh_b / "model.pt"))
    assert (run3 / "superseded" / "store-unknown" / "checkpoints" / "last.pt").is_file()


def test_samples_and_metrics_record_the_store_versions_and_refuse_a_rewritten_store(stores, tmp_path, capsys):
    a, b, _ = stores
    path = tmp_path / "store.h5"
    shutil.copyfile(a, path)
    run = tmp_path / "run"
    train(path, run, SMALL, progress=False)
    sha_a, sha_b = store_identity(a)["content_sha256"], store_identity(b)["content_sha256"]
    samples = tmp_path / "samples.h5"
    assert main(["sample", "--run", str(run), "--out", str(samples), "--steps", "2", "--max-molecules", "2"]) == 0
    with h5py.File(samples, "r") as h5:
        assert h5.attrs["reference_store_sha256"] == sha_a
        assert json.loads(h5.attrs["trained_on"])["content_sha256"] == sha_a
        samples_sha = h5.attrs[CONTENT_ATTR]
    metrics = tmp_path / "metrics.json"
    assert main(["evaluate", "--samples", str(samples), "--reference", str(path), "--out", str(metrics), "--workers", "1",
                 "--threshold", "0.5"]) == 0
    result = json.loads(metrics.read_text())
    assert result["reference_store"]["content_sha256"] == sha_a and result["trained_on"]["content_sha256"] == sha_a
    assert result["samples_sha256"] == samples_sha
    # A report names the store version of each dataset, and refuses metrics of two versions side by side.
    assert main(["report", "--metrics", str(metrics), "--out", str(tmp_path / "report")]) == 0
    assert json.loads((tmp_path / "report" / "summary.json").read_text())["stores"] == {"demo-qm9": sha_a}
    other = dict(result, seed=1, reference_store={**result["reference_store"], "content_sha256": sha_b})
    (tmp_path / "other.json").write_text(json.dumps(other))
    capsys.readouterr()
    assert main(["report", "--metrics", str(metrics), str(tmp_path / "other.json"), "--out", str(tmp_path / "r2")]) == errors.EXIT_INPUT
    err = capsys.readouterr().err
    assert "different store versions" in err and sha_a[:12] in err and sha_b[:12] in err

    put(b, path)  # the store is updated; the run and its samples are of the old version
    capsys.readouterr()
    assert main(["sample", "--run", str(run), "--out", str(tmp_path / "again.h5"), "--steps", "2", "--max-molecules", "2"]) == errors.EXIT_INPUT
    err = capsys.readouterr().err
    assert "rewritten since" in err and sha_a[:12] in err and sha_b[:12] in err and not (tmp_path / "again.h5").exists()
    assert main(["evaluate", "--samples", str(samples), "--reference", str(path), "--out", str(tmp_path / "m2.json"),
                 "--workers", "1", "--threshold", "0.5"]) == errors.EXIT_INPUT
    assert "drawn for the store version" in capsys.readouterr().err and not (tmp_path / "m2.json").exists()
    # Sampling the old model for the new store is still possible when asked for explicitly, and recorded.
    assert main(["sample", "--run", str(run), "--out", str(tmp_path / "for-b.h5"), "--steps", "2", "--max-molecules", "2",
                 "--store", str(path)]) == 0
    with h5py.File(tmp_path / "for-b.h5", "r") as h5:
        assert h5.attrs["reference_store_sha256"] == sha_b and json.loads(h5.attrs["trained_on"])["content_sha256"] == sha_a


def test_featurize_keeps_versions_for_a_diff_against_the_previous_one(tmp_path, capsys):
    store = tmp_path / "data" / "demo-qm9.h5"
    base = ["featurize", "demo-qm9", "--out", str(store), "--keep-versions"]
    assert main([*base, "--set", "n_molecules=30"]) == 0
    first = store_identity(store)["content_sha256"]
    kept = tmp_path / "data" / "versions" / "demo-qm9" / f"{first[:12]}.h5"
    assert kept.is_file() and os.stat(kept).st_ino == os.stat(store).st_ino  # a hard link, no copy
    capsys.readouterr()
    assert main(["data", "diff", "--previous", str(store)]) == errors.EXIT_INPUT  # only one version so far
    assert "no version other than the current one" in capsys.readouterr().err
    store.unlink()  # as Snakemake does before it re-runs the job
    assert main([*base, "--set", "n_molecules=36"]) == 0
    second = store_identity(store)["content_sha256"]
    assert second != first and verify_store(kept) == (first, first)  # the earlier version is intact
    capsys.readouterr()
    assert main(["data", "diff", "--previous", str(store), "--json"]) == 0
    diff = json.loads(capsys.readouterr().out)
    expected = json.loads(main_json(["data", "diff", str(kept), str(store), "--json"], capsys))
    assert diff == expected and diff["old"] == str(kept)
    # the molecule IDs of the two versions, read straight from the files
    ids = [set(s.decode() for s in h5py.File(p, "r")["molecules/id"][()]) for p in (kept, store)]
    assert diff["added"] == sorted(ids[1] - ids[0]) and diff["removed"] == sorted(ids[0] - ids[1]) and diff["added"]
    assert main(["data", "versions", str(store), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [v["content_sha256"] for v in listed["versions"]] == [first, second] and listed["current"] == second
    assert json.loads(main_json(["data", "info", str(store), "--json"], capsys))["provenance"]["content_sha256"] == second
    assert main(["data", "diff", str(store)]) == errors.EXIT_SETTINGS  # one store needs --previous


def main_json(argv, capsys):
    capsys.readouterr()
    assert main(argv) == 0
    return capsys.readouterr().out
