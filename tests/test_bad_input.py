"""Bad input never passes silently (issue 17): a table of hostile-but-ordinary inputs fed to the
CLI, each asserting the exit status of its class (qdiff.errors), a one-line message naming the
setting or the file, no traceback, and nothing complete-looking left behind. Plus the recoveries:
a damaged resume checkpoint falls back to the previous one, PDB folders are replaced whole, a run
records its store's absolute path."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from qm9_fixtures import real_entries, uncharacterized_text, write_xyz_tarball

from qdiff import errors
from qdiff.cli import main
from qdiff.data.featurize import featurize
from qdiff.data.molecule_store import MoleculeStoreWriter
from qdiff.data.sources import qm9
from qdiff.data.splits import random_split
from qdiff.train import train

ROOT = Path(__file__).resolve().parents[1]
TINY_EGNN = {"batch_size": 4, "split": "random", "val_every": 0, "checkpoint_every": 1, "model": {"name": "egnn", "hidden": 8, "layers": 1}}
TINY_BACKBONE = {"batch_size": 4, "split": "random", "val_every": 0, "checkpoint_every": 1000, "parameterization": "denoiser",
                 "model": {"name": "backbone-transformer", "dim": 8, "layers": 1, "heads": 2, "pair_bins": 4, "max_distance": 3.0}}


def molecule_store(path: Path, n: int = 16) -> Path:
    """A small real-QM9 store with a random split, without scanning all of qm9pack."""
    records = [qm9.record_from_entry(e) for e in real_entries(n)]
    with MoleculeStoreWriter(path, dataset="demo-qm9", source="test", settings={}) as writer:
        for record in records:
            writer.add(record)
        writer.add_split("random", random_split([r.id for r in records], [0.5, 0.25, 0.25], 0), method="test", seed=0)
    return path


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    store = molecule_store(root / "mol.h5")
    backbones = root / "bb.h5"
    featurize("demo-backbones", None, backbones, {"n_backbones": 8, "min_length": 24, "max_length": 40}, progress=False)
    train(store, root / "run", {**TINY_EGNN, "steps": 2}, progress=False)
    train(backbones, root / "bbrun", {**TINY_BACKBONE, "steps": 2}, progress=False)
    assert main(["sample", "--run", str(root / "run"), "--out", str(root / "samples.h5"), "--steps", "2", "--device", "cpu"]) == 0
    metrics = root / "metrics.json"
    assert main(["evaluate", "--samples", str(root / "samples.h5"), "--reference", str(store), "--out", str(metrics),
                 "--workers", "1", "--plausibility", "0"]) == 0
    (root / "list.yaml").write_text("- steps: 3\n- lr: 1e-4\n")
    (root / "broken.yaml").write_text("train: {steps: 3\n")
    (root / "garbage.h5").write_bytes(b"not an hdf5 file at all\n" * 10)
    (root / "notjson.json").write_text("{\n  \"dataset\": \n")
    (root / "afolder").mkdir()
    return root


def truncated_copy(src: Path, dest: Path, keep: float = 0.5) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    data = src.read_bytes()
    dest.write_bytes(data[: int(len(data) * keep)])
    return dest


def copy_run(src: Path, dest: Path) -> Path:
    import shutil

    shutil.copytree(src, dest)
    return dest


# (case id, argv builder (ctx, tmp) -> list[str], exit status, substrings the one-line message must contain)
S, I, O, D, M, E = (errors.EXIT_SETTINGS, errors.EXIT_INPUT, errors.EXIT_IO, errors.EXIT_DOWNLOAD, errors.EXIT_RESOURCES,
                    errors.EXIT_EMPTY)


def _train(c, t, *extra):
    return ["train", "--store", str(c / "mol.h5"), "--out", str(t / "newrun"), "--set", "model={name: egnn, hidden: 8, layers: 1}",
            "--set", "batch_size=4", *extra]


def _truncated_model(c, t):
    run = copy_run(c / "run", t / "run")
    truncated_copy(c / "run" / "model.pt", run / "model.pt")
    return ["sample", "--run", str(run), "--out", str(t / "s.h5"), "--steps", "2"]


def _garbage_model(c, t):
    run = copy_run(c / "run", t / "run")
    (run / "model.pt").write_text("hello\n")
    return ["sample", "--run", str(run), "--out", str(t / "s.h5"), "--steps", "2"]


def _truncated_checkpoint(c, t):
    run = copy_run(c / "run", t / "run")
    (run / "model.pt").unlink()
    (run / "checkpoints" / "previous.pt").unlink(missing_ok=True)
    truncated_copy(c / "run" / "checkpoints" / "last.pt", run / "checkpoints" / "last.pt", 0.3)
    return ["train", "--store", str(c / "mol.h5"), "--out", str(run), "--steps", "4", "--set", "batch_size=4",
            "--set", "split=random", "--set", "val_every=0", "--set", "checkpoint_every=1", "--set", "model={name: egnn, hidden: 8, layers: 1}"]


def _empty_pdb_snapshot(c, t):
    raw = t / "pdbraw"
    raw.mkdir()
    (raw / "snapshot.json").write_text(json.dumps({"snapshot_date": "2026-01-07", "base_url": "x", "entries": {}}))
    return ["featurize", "pdb", "--raw", str(raw), "--out", str(t / "pdb.h5")]


def _garbage_pdb_snapshot(c, t):
    raw = t / "pdbraw"
    raw.mkdir()
    (raw / "snapshot.json").write_text("<html>not json</html>")
    return ["featurize", "pdb", "--raw", str(raw), "--out", str(t / "pdb.h5")]


def _read_only_out(c, t):
    locked = t / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    return ["featurize", "demo-backbones", "--set", "n_backbones=4", "--out", str(locked / "sub" / "bb.h5")]


CASES = [
    # bad settings: rejected with the key and the allowed values, never replaced by a default
    ("prior-uniform", lambda c, t: _train(c, t, "--set", "prior=uniform"), S, ["prior", "'uniform'", "gaussian, harmonic"]),
    ("grad-clip-mode", lambda c, t: _train(c, t, "--set", "grad_clip={mode: sometimes}"), S, ["grad_clip.mode", "adaptive, norm, none"]),
    ("ema-2", lambda c, t: _train(c, t, "--set", "ema=2"), S, ["ema", "<= 1"]),
    ("steps-negative", lambda c, t: _train(c, t, "--set", "steps=-1"), S, ["steps", ">= 1"]),
    ("steps-zero-flag", lambda c, t: _train(c, t, "--steps", "0"), S, ["--steps", "positive"]),
    ("unknown-key", lambda c, t: _train(c, t, "--set", "batchsize=32"), S, ["batchsize"]),
    ("model-typo", lambda c, t: _train(c, t, "--set", "model={name: egnn, hiden: 8}"), S, ["model.hiden", "hidden"]),
    ("lr-text", lambda c, t: _train(c, t, "--set", "lr=fast"), S, ["lr", "'fast'", "number"]),
    ("set-no-equals", lambda c, t: _train(c, t, "--set", "steps"), S, ["--set", "KEY=VALUE"]),
    ("config-yaml-list", lambda c, t: _train(c, t, "--config", str(c / "list.yaml")), S, ["list.yaml", "mapping"]),
    ("config-broken-yaml", lambda c, t: _train(c, t, "--config", str(c / "broken.yaml")), S, ["broken.yaml", "YAML"]),
    ("evaluate-threshold", lambda c, t: ["evaluate", "--samples", str(c / "samples.h5"), "--reference", str(c / "mol.h5"),
                                         "--out", str(t / "m.json"), "--threshold", "-1"], S, ["--threshold", "positive"]),
    ("evaluate-timeout", lambda c, t: ["evaluate", "--samples", str(c / "samples.h5"), "--reference", str(c / "mol.h5"),
                                       "--out", str(t / "m.json"), "--timeout", "-1"], S, ["--timeout", "positive"]),
    ("snapshot-yesterday", lambda c, t: ["fetch", "pdb", "--ids", "1abc", "--dest", str(t / "pdb"), "--snapshot", "yesterday"], S,
     ["--snapshot", "YYYY-MM-DD"]),
    ("featurize-zero", lambda c, t: ["featurize", "demo-backbones", "--out", str(t / "bb.h5"), "--set", "n_backbones=0"], S,
     ["n_backbones", ">= 1"]),
    ("featurize-unknown", lambda c, t: ["featurize", "demo-backbones", "--out", str(t / "bb.h5"), "--set", "n_backbone=3"], S,
     ["n_backbone"]),
    ("sample-lengths", lambda c, t: ["sample", "--run", str(c / "bbrun"), "--out", str(t / "s.h5"), "--lengths", "a,b"], S, ["--lengths"]),
    # sample and evaluate settings (qdiff/schemas/sample.schema.yaml, evaluate.schema.yaml: the CLI's choices come from them)
    ("sample-sampler", lambda c, t: ["sample", "--run", str(c / "run"), "--out", str(t / "s.h5"), "--sampler", "langevin"], S,
     ["--sampler", "langevin", "ode", "sde"]),
    ("sample-sde-schedule", lambda c, t: ["sample", "--run", str(c / "run"), "--out", str(t / "s.h5"), "--sde-schedule", "edm"], S,
     ["--sde-schedule", "edm", "eta", "proteina"]),
    ("sample-precision", lambda c, t: ["sample", "--run", str(c / "run"), "--out", str(t / "s.h5"), "--precision", "fp16"], S,
     ["--precision", "fp16", "fp32", "bf16"]),
    ("sample-max-molecules-zero", lambda c, t: ["sample", "--run", str(c / "run"), "--out", str(t / "s.h5"), "--max-molecules", "0"], S,
     ["--max-molecules", "positive"]),
    ("sample-noise-negative", lambda c, t: ["sample", "--run", str(c / "run"), "--out", str(t / "s.h5"), "--noise-scale", "-0.5"], S,
     ["--noise-scale", ">= 0"]),
    ("sample-out-is-the-store", lambda c, t: ["sample", "--run", str(c / "run"), "--out", str(c / "mol.h5"), "--steps", "2"], S,
     ["--out", "mol.h5", "input"]),
    ("evaluate-workers-zero", lambda c, t: ["evaluate", "--samples", str(c / "samples.h5"), "--reference", str(c / "mol.h5"),
                                            "--out", str(t / "m.json"), "--workers", "0"], S, ["--workers", "positive"]),
    ("evaluate-plausibility-negative", lambda c, t: ["evaluate", "--samples", str(c / "samples.h5"), "--reference", str(c / "mol.h5"),
                                                     "--out", str(t / "m.json"), "--plausibility", "-1"], S, ["--plausibility", ">= 0"]),
    ("evaluate-out-is-the-samples", lambda c, t: ["evaluate", "--samples", str(c / "samples.h5"), "--reference", str(c / "mol.h5"),
                                                  "--out", str(c / "samples.h5")], S, ["--out", "samples.h5", "input"]),
    # missing, unreadable, corrupt or mismatched input files: named, with the way out
    ("store-missing", lambda c, t: ["train", "--store", str(t / "nope.h5"), "--out", str(t / "r")], I, ["nope.h5", "no such store"]),
    ("store-folder", lambda c, t: ["train", "--store", str(c / "afolder"), "--out", str(t / "r")], I, ["afolder", "folder"]),
    ("store-garbage", lambda c, t: ["train", "--store", str(c / "garbage.h5"), "--out", str(t / "r")], I, ["garbage.h5", "HDF5"]),
    ("run-missing", lambda c, t: ["sample", "--run", str(t / "norun"), "--out", str(t / "s.h5")], I, ["norun", "qdiff train"]),
    ("model-truncated", _truncated_model, I, ["model.pt", "corrupt or truncated", "delete"]),
    ("model-garbage", _garbage_model, I, ["model.pt", "corrupt or truncated", "delete"]),
    ("checkpoint-truncated", _truncated_checkpoint, I, ["last.pt", "corrupt or truncated", "delete"]),
    ("model-store-mismatch", lambda c, t: ["train", "--store", str(c / "mol.h5"), "--out", str(t / "r"), "--model", "backbone-transformer"],
     I, ["mol.h5", "backbone-transformer", "molecules"]),
    ("harmonic-backbones", lambda c, t: ["train", "--store", str(c / "bb.h5"), "--out", str(t / "r"), "--model", "backbone-transformer",
                                         "--set", "prior=harmonic"], I, ["bb.h5", "harmonic"]),
    ("sample-store-mismatch", lambda c, t: ["sample", "--run", str(c / "run"), "--out", str(t / "s.h5"), "--store", str(c / "bb.h5")], I,
     ["bb.h5", "egnn"]),
    ("evaluate-wrong-reference", lambda c, t: ["evaluate", "--samples", str(c / "samples.h5"), "--reference", str(c / "bb.h5"),
                                               "--out", str(t / "m.json")], I, ["bb.h5", "schema"]),
    ("report-not-json", lambda c, t: ["report", "--metrics", str(c / "notjson.json"), "--out", str(t / "rep")], I,
     ["notjson.json", "not a metrics file"]),
    ("report-missing", lambda c, t: ["report", "--metrics", str(t / "gone.json"), "--out", str(t / "rep")], I, ["gone.json"]),
    ("config-is-folder", lambda c, t: _train(c, t, "--config", str(c / "afolder")), I, ["afolder", "folder"]),
    ("pdb-snapshot-garbage", _garbage_pdb_snapshot, I, ["snapshot.json", "qdiff fetch pdb"]),
    # empty or degenerate results
    ("featurize-empty-source", _empty_pdb_snapshot, E, ["featurize pdb", "0 chains", "no store written"]),
    ("report-same-file-twice", lambda c, t: ["report", "--metrics", str(c / "metrics.json"), str(c / "metrics.json"), "--out", str(t / "rep")],
     E, ["metrics.json", "once"]),
    # downloads
    ("fetch-every-entry-failed", lambda c, t: ["fetch", "pdb", "--ids", "1abc,2xyz", "--dest", str(t / "pdb"), "--retries", "0",
                                               "--base-url", "http://127.0.0.1:9"], D, ["every one of the 2", "1ABC"]),
    ("fetch-offline-missing", lambda c, t: ["fetch", "qm9", "--offline", "--dest", str(t / "raw")], D, ["offline", "missing"]),
    # resources
    ("out-of-memory", lambda c, t: _train(c, t, "--steps", "1", "--set", "model={name: egnn, hidden: 10000000, layers: 1}"), M,
     ["out of memory", "batch_size"]),
]
if hasattr(os, "geteuid") and os.geteuid() != 0:  # root ignores permissions
    CASES.append(("read-only-out", _read_only_out, O, ["locked", "ermission"]))


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_fails_with_its_status_and_a_message_naming_the_cause(case, ctx, tmp_path, capsys, monkeypatch):
    name, argv, status, needles = case
    monkeypatch.delenv("QDIFF_DEBUG", raising=False)
    args = argv(ctx, tmp_path)
    capsys.readouterr()
    try:
        code = main(args)
    except SystemExit as stop:  # argparse's own usage errors
        code = stop.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("qdiff ")]
    assert code == status, (name, code, err[-2000:])
    assert "Traceback" not in err
    assert lines and all(n in lines[-1] for n in needles), (name, err[-2000:])
    # nothing complete-looking left behind
    for out in ("newrun/model.pt", "r/model.pt", "s.h5", "bb.h5", "pdb.h5", "pdb/snapshot.json", "rep/summary.csv", "m.json"):
        assert not (tmp_path / out).exists(), (name, out)


def _sample_api(c, t, **kw):
    from qdiff.sample import sample

    return sample(c / "run", t / "s.h5", device="cpu", progress=False, **kw)


def _evaluate_api(c, t, **kw):
    from qdiff.evaluate import evaluate

    return evaluate(c / "samples.h5", c / "mol.h5", t / "m.json", progress=False, **kw)


def _evaluate_backbones_api(c, t, **kw):
    from qdiff.evaluate_backbones import evaluate_backbones

    return evaluate_backbones(c / "samples.h5", c / "bb.h5", t / "m.json", progress=False, **kw)


def _sample_backbones_api(c, t, **kw):
    from qdiff.sample import sample_backbones

    return sample_backbones(c / "bbrun", t / "s.h5", device="cpu", progress=False, **kw)


# The runners check their settings themselves, whoever calls them (Python API, other CLIs): the
# same declarations, the same exit status and a message naming the key and the allowed values.
# (case id, call (ctx, tmp), substrings of the message)
RUNNER_CASES = [
    ("sample-sampler", lambda c, t: _sample_api(c, t, sampler="langevin"), ["(sample)", "sampler", "'langevin'", "ode, sde"]),
    ("sample-steps-zero", lambda c, t: _sample_api(c, t, steps=0), ["(sample)", "steps 0", ">= 1"]),
    ("sample-sde-schedule", lambda c, t: _sample_api(c, t, sampler="sde", sde_schedule="edm"), ["sde_schedule", "eta, proteina"]),
    ("sample-precision", lambda c, t: _sample_api(c, t, precision="fp16"), ["precision", "fp32, bf16"]),
    ("sample-multiplier-text", lambda c, t: _sample_api(c, t, multiplier="two"), ["multiplier", "'two'", "integer"]),
    ("sample-noise-nan", lambda c, t: _sample_api(c, t, noise_scale=float("nan")), ["noise_scale", ">= 0"]),
    ("backbones-length-one", lambda c, t: _sample_backbones_api(c, t, lengths=[10, 1]), ["lengths[1]", ">= 2"]),
    ("backbones-per-length-zero", lambda c, t: _sample_backbones_api(c, t, per_length=0), ["per_length", ">= 1"]),
    ("evaluate-threshold", lambda c, t: _evaluate_api(c, t, threshold=-1.0), ["(evaluate)", "threshold", "> 0"]),
    ("evaluate-timeout", lambda c, t: _evaluate_api(c, t, timeout_s=0), ["timeout_s", "> 0"]),
    ("evaluate-workers", lambda c, t: _evaluate_api(c, t, workers=0, plausibility_per_molecule=-1),
     ["workers 0", ">= 1", "plausibility_per_molecule -1", ">= 0"]),
    ("evaluate-designability", lambda c, t: _evaluate_backbones_api(c, t, designability=-2), ["designability", ">= 0"]),
]


@pytest.mark.parametrize("case", RUNNER_CASES, ids=[c[0] for c in RUNNER_CASES])
def test_the_runners_check_their_declared_settings(case, ctx, tmp_path):
    name, call, needles = case
    with pytest.raises(errors.SettingsError) as info:
        call(ctx, tmp_path)
    status, message = errors.classify(info.value)
    assert status == errors.EXIT_SETTINGS and all(n in message for n in needles), (name, message)
    assert not list(tmp_path.iterdir()), name  # nothing written


def test_the_cli_choices_are_the_declared_ones():
    from qdiff.cli import build_parser
    from qdiff.settings import schema

    declared = schema("sample")["properties"]
    sample = next(p for p in __import__("qdiff.cli", fromlist=["_leaf_parsers"])._leaf_parsers(build_parser()) if p.prog.endswith(" sample"))
    choices = {a.dest: list(a.choices) for a in sample._actions if a.choices}
    assert choices == {k: declared[k]["enum"] for k in ("sampler", "sde_schedule", "precision")}


def test_the_settings_are_not_replaced_by_defaults_and_nothing_is_recorded(ctx, tmp_path):
    assert main(_train(ctx, tmp_path, "--set", "prior=uniform")) == errors.EXIT_SETTINGS
    assert not (tmp_path / "newrun").exists()  # no config.json recording what the user typed


def test_a_damaged_resume_checkpoint_falls_back_to_the_previous_one(ctx, tmp_path, capsys):
    run = copy_run(ctx / "run", tmp_path / "run")
    (run / "model.pt").unlink()
    assert (run / "checkpoints" / "previous.pt").is_file()  # kept by every save after the first
    truncated_copy(ctx / "run" / "checkpoints" / "last.pt", run / "checkpoints" / "last.pt", 0.3)
    argv = ["train", "--store", str(ctx / "mol.h5"), "--out", str(run), "--steps", "2", "--set", "batch_size=4",
            "--set", "split=random", "--set", "val_every=0", "--set", "checkpoint_every=1",
            "--set", "model={name: egnn, hidden: 8, layers: 1}"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "corrupt or truncated" in err and "previous.pt" in err
    assert torch.load(run / "model.pt", weights_only=True)["step"] == 2


def test_debug_shows_the_traceback_and_a_bug_keeps_its_own(ctx, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("QDIFF_DEBUG", None)
    run = lambda *a, **kw: subprocess.run([sys.executable, "-m", "qdiff", *a], capture_output=True, text=True, env={**env, **kw})  # noqa: E731
    argv = ["report", "--metrics", str(ctx / "notjson.json"), "--out", str(tmp_path / "rep")]
    plain = run(*argv)
    assert plain.returncode == errors.EXIT_INPUT and "Traceback" not in plain.stderr
    assert plain.stderr.strip().splitlines()[-1].startswith("qdiff report: error: ") and len(plain.stderr.strip().splitlines()) == 1
    for out in (run("--debug", *argv), run(*argv, "--debug"), run(*argv, QDIFF_DEBUG="1")):
        assert out.returncode == errors.EXIT_INPUT and "Traceback" in out.stderr and "notjson.json" in out.stderr.splitlines()[-1]


def test_an_unexpected_exception_keeps_its_traceback(monkeypatch, tmp_path):
    import qdiff.report

    def broken(*args, **kwargs):
        raise TypeError("a bug")

    monkeypatch.setattr(qdiff.report, "write_report", broken)
    with pytest.raises(TypeError, match="a bug") as info:
        main(["report", "--metrics", "x.json", "--out", str(tmp_path)])
    assert any("please report it" in note for note in getattr(info.value, "__notes__", []))


def test_out_of_memory_errors_are_classified():
    for err in (MemoryError(), torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"),
                RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")):
        assert errors.classify(err)[0] == errors.EXIT_RESOURCES
    assert errors.classify(RuntimeError("something else")) is None
    assert errors.classify(TypeError("x")) is None


def test_every_exit_status_is_documented():
    readme = (ROOT / "README.md").read_text()
    for code in errors.EXIT_STATUSES:
        assert f"| {code} |" in readme, code
    assert "--debug" in readme and "QDIFF_DEBUG" in readme


def test_the_run_records_its_store_absolutely_and_samples_from_elsewhere(ctx, tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    (work / "mol.h5").write_bytes((ctx / "mol.h5").read_bytes())
    monkeypatch.chdir(work)
    assert main(["train", "--store", "mol.h5", "--out", "run", "--steps", "1", "--set", "batch_size=4", "--set", "split=random",
                 "--set", "model={name: egnn, hidden: 8, layers: 1}"]) == 0
    assert Path(torch.load(work / "run" / "model.pt", weights_only=True)["store"]) == (work / "mol.h5").resolve()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["sample", "--run", str(work / "run"), "--out", "s.h5", "--steps", "2", "--max-molecules", "1"]) == 0


def test_backbone_pdb_folders_are_replaced_whole_and_a_failed_run_leaves_none(ctx, tmp_path, monkeypatch):
    import qdiff.sample

    out, pdbs = tmp_path / "bb_samples.h5", tmp_path / "bb_samples"
    argv = ["sample", "--run", str(ctx / "bbrun"), "--out", str(out), "--lengths", "10,12", "--steps", "2"]
    pdbs.mkdir()
    (pdbs / "sample00099_L30.pdb").write_text("stale\n")  # a file of an earlier run
    assert main(argv) == 0
    assert sorted(p.name for p in pdbs.iterdir()) == ["sample00000_L10.pdb", "sample00001_L12.pdb"]
    assert not Path(str(pdbs) + ".tmp").exists()
    # killed half-way: no store, no PDB folder that looks complete
    out.unlink()
    import shutil

    shutil.rmtree(pdbs)
    calls = []

    def dying(x, path):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(x, path)

    real = qdiff.sample.write_ca_pdb
    monkeypatch.setattr(qdiff.sample, "write_ca_pdb", dying)
    with pytest.raises(KeyboardInterrupt):
        main(argv)
    assert not out.exists() and not pdbs.exists() and not Path(str(pdbs) + ".tmp").exists()
    # a folder with other files is not replaced
    monkeypatch.setattr(qdiff.sample, "write_ca_pdb", real)
    pdbs.mkdir()
    (pdbs / "notes.txt").write_text("mine\n")
    assert main(argv) == errors.EXIT_SETTINGS and (pdbs / "notes.txt").is_file()


def test_a_partial_qm9_archive_is_recorded_as_such(tmp_path, monkeypatch, capsys):
    import h5py

    raw = tmp_path / "raw"
    raw.mkdir()
    entries = real_entries(6)
    write_xyz_tarball(raw / "dsgdb9nsd.xyz.tar.bz2", entries)  # 6 molecules, not 133,885
    (raw / "uncharacterized.txt").write_text(uncharacterized_text([entries[0].index]))
    assert main(["featurize", "qm9", "--raw", str(raw), "--out", str(tmp_path / "qm9.h5")]) == 0
    err = capsys.readouterr().err
    assert "warning: partial QM9" in err and "edm" in err
    with h5py.File(tmp_path / "qm9.h5") as h5:
        assert "partial QM9" in h5.attrs["warning"] and not list(h5.get("splits", {}))


def test_study_schema_rejects_unknown_and_bad_train_and_sample_settings_before_any_job(tmp_path):
    import copy

    import yaml
    from workflow_fixtures import TINY, copy_workflow, snakemake

    work = copy_workflow(tmp_path / "repo", TINY)
    for broken, needle in ((lambda c: c["models"].update(train={"batchsize": 32}), "batchsize"),
                           (lambda c: c["models"].setdefault("per_dataset", {}).update({"demo-qm9": {"train": {"grad_clip": {"mode": "sometimes"}}}}),
                            "sometimes"),
                           (lambda c: c["data"]["featurize"]["demo-qm9"].update(n_molecules=0), "n_molecules"),
                           (lambda c: c["models"].setdefault("per_dataset", {}).update({"demo-qm9": {"sample": {"sampler": "langevin"}}}),
                            "langevin"),
                           (lambda c: c["models"].update(sample={"steps": 50, "max_molecule": 10}), "max_molecule")):
        config = copy.deepcopy(TINY)
        broken(config)
        (work / "config.yaml").write_text(yaml.safe_dump(config))
        out = snakemake("-n", cwd=work, check=False)
        assert out.returncode != 0 and needle in out.stdout + out.stderr, needle
    # the paper study's settings (e3nn, backbone transformer, PDB featurize) pass the same declarations
    assert snakemake("-n", "--config", "study=paper", cwd=work, check=False).returncode == 0


NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="the read-only case runs in the table for non-root users")
def test_a_folder_an_unprivileged_user_cannot_write_is_an_os_error(tmp_path_factory):
    """CI runs as root, which ignores permissions: drop to user 65534 (nobody) with setpriv and
    write under a root-owned folder. One line naming the folder, the OS status, no traceback, and
    nothing left behind."""
    import shutil
    import tempfile

    if shutil.which("setpriv") is None:
        pytest.fail("setpriv (util-linux) is needed to run this check as an unprivileged user")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HOME": "/tmp", "MPLCONFIGDIR": "/tmp"}
    probe = subprocess.run([*NOBODY, sys.executable, "-c", "import qdiff.cli"], env=env, capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"user 65534 cannot read this checkout or interpreter: {probe.stderr.strip()[-200:]}")
    base = Path(tempfile.mkdtemp(prefix="qdiff-locked-"))
    try:
        base.chmod(0o755)  # root's, readable by everyone, writable by root only
        out = base / "sub" / "bb.h5"
        result = subprocess.run([*NOBODY, sys.executable, "-m", "qdiff", "featurize", "demo-backbones", "--set", "n_backbones=4",
                                 "--out", str(out)], env=env, capture_output=True, text=True, cwd="/tmp", timeout=300)
        assert result.returncode == errors.EXIT_IO, (result.returncode, result.stderr[-2000:])
        lines = [line for line in result.stderr.splitlines() if "error" in line]
        assert len(lines) == 1 and str(base) in lines[0] and "ermission" in lines[0], result.stderr[-2000:]
        assert "Traceback" not in result.stderr
        assert list(base.iterdir()) == []
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_a_failed_sdf_write_leaves_no_samples_store_and_a_rerun_starts_clean(ctx, tmp_path, monkeypatch):
    """The SDF is written before the samples store is committed, and a rerun first removes the
    outputs of the earlier one: a store on disk always has the SDF of the same run beside it."""
    import qdiff.sample

    out, sdf = tmp_path / "s.h5", tmp_path / "s.sdf"
    argv = ["sample", "--run", str(ctx / "run"), "--out", str(out), "--steps", "2", "--max-molecules", "2"]
    assert main(argv) == 0 and out.is_file() and sdf.is_file()
    from qdiff.atomic import atomic_path

    def dying(records, path):  # killed half-way through the SDF
        with atomic_path(path) as tmp:
            tmp.write_text("half an SDF\n")
            raise KeyboardInterrupt

    monkeypatch.setattr(qdiff.sample, "write_sdf", dying)
    with pytest.raises(KeyboardInterrupt):
        main(argv)
    assert not out.exists() and not sdf.exists()  # neither the new outputs nor the earlier run's
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob("*.spool"))


def test_a_failed_report_leaves_no_report_page_and_none_of_the_earlier_files(ctx, tmp_path, monkeypatch):
    import qdiff.report_plots

    rep = tmp_path / "rep"
    argv = ["report", "--metrics", str(ctx / "metrics.json"), "--out", str(rep)]
    assert main(argv) == 0 and (rep / "report.html").is_file()
    (rep / "notes.txt").write_text("mine\n")  # not a report file: kept

    def dying(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(qdiff.report_plots, "loss_curves", dying)
    with pytest.raises(KeyboardInterrupt):
        main(argv)
    assert not (rep / "report.html").exists() and not (rep / "loss_curves.png").exists()
    assert not (rep / "examples.png").exists()  # the earlier report's, removed at the start
    assert (rep / "notes.txt").is_file()


def test_a_resumed_run_logs_each_step_once(tmp_path):
    """The rows a killed run logged after its last checkpoint, and a half-written last line, go
    when the run resumes from that checkpoint; the training clock continues from the last kept row."""
    from qdiff.train import trim_log

    log = tmp_path / "log.csv"
    header = "step,epoch,loss,lr,grad_norm,samples_per_s,val_loss,wall_s\n"
    log.write_text(header + "".join(f"{s},0,0.5,0.001,1.0,10.0,,{2.5 * s}\n" for s in range(1, 6)) + "6,0,0.4")
    assert trim_log(log, 3) == 7.5
    assert log.read_text() == header + "".join(f"{s},0,0.5,0.001,1.0,10.0,,{2.5 * s}\n" for s in range(1, 4))  # newlines read as \n
    assert not (tmp_path / "log.csv.tmp").exists()


def test_a_log_from_before_the_wall_clock_column_is_resumed_with_it(tmp_path):
    from qdiff.train import trim_log

    log = tmp_path / "log.csv"
    log.write_text("step,epoch,loss,lr,grad_norm,samples_per_s,val_loss\n1,0,0.5,0.001,1.0,10.0,\n2,0,0.4,0.001,1.0,10.0,0.3\n")
    assert trim_log(log, 2) == 0.0
    assert log.read_text().splitlines() == ["step,epoch,loss,lr,grad_norm,samples_per_s,val_loss,wall_s",
                                            "1,0,0.5,0.001,1.0,10.0,,", "2,0,0.4,0.001,1.0,10.0,0.3,"]
