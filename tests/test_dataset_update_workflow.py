"""The dataset-update flow of the README, run by a normal (non-root) user through the workflow:
a PDB study fetched from a local server posing as RCSB, a new snapshot date in the study, then
`snakemake` re-runs exactly the jobs that depend on the PDB store (not the other dataset's), the
model is retrained on the new store (never resumed from the old one), `qdiff data diff --previous`
compares the two versions without a hand-made copy, and the README's `snakemake -R fetch_dataset`
works (no ProtectedOutputException)."""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import h5py
import pytest
import torch
import yaml

from http_fixtures import FileServer
from test_data_pdb import REAL, edited, real
from workflow_fixtures import BIN, ROOT, copy_workflow

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
# Where the interpreter lies under a folder only root may enter (e.g. /root/.pyenv), user 65534 keeps
# one capability, CAP_DAC_READ_SEARCH (read and search anywhere), inherited by the jobs Snakemake
# starts. It grants no write access: write protection still stops this user as any other.
READ_ANYWHERE = ["--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search"]
TRAIN = {"steps": 4, "batch_size": 4, "val_every": 0, "coord_scale": 0.1, "parameterization": "denoiser",
         "interpolant": {"name": "linear"},
         "model": {"name": "backbone-transformer", "dim": 16, "layers": 1, "heads": 2, "pair_bins": 8, "max_distance": 3.0}}
# An aggregate rule, as README "DVC" says to run them: every store and model, and every current
# settings stamp of the data and training families, so a changed setting (a new stamp) re-runs its
# jobs and those after them although every input is ancient(). A single file as target would not.
TARGETS = ["study_training"]


def study(url: str, snapshot: str) -> dict:
    return {
        "study": "demo",
        "data": {"datasets": ["pdb", "demo-backbones"],
                 "fetch": {"pdb": {"ids": ",".join(REAL), "base-url": url, "snapshot": snapshot, "retries": 0, "workers": 2}},
                 "featurize": {"pdb": {"min_length": 20, "max_length": 600, "workers": 1},
                               "demo-backbones": {"n_backbones": 12, "seed": 0}}},
        "models": {"datasets": ["pdb", "demo-backbones"], "treatments": ["quotient"], "seeds": [0], "train": TRAIN,
                   "sample": {"steps": 4}},
        "toy": {"targets": ["gaussian"], "treatments": ["quotient"], "samplers": ["ode"], "seeds": [0], "samples": 40,
                "steps": 8, "noise_scale": 1.0, "jitter": 0.1, "mc_draws": 4},
    }


@pytest.mark.slow
def test_a_normal_user_updates_the_pdb_snapshot_and_gets_a_new_store_a_diff_and_retrained_models():
    as_root = hasattr(os, "geteuid") and os.geteuid() == 0
    if as_root and shutil.which("setpriv") is None:
        pytest.fail("setpriv (util-linux) is needed to run the workflow as an unprivileged user")
    user = NOBODY if as_root else []
    base = Path(tempfile.mkdtemp(prefix="qdiff-update-"))
    try:
        with FileServer() as server:
            for pid in REAL:
                server.files[f"/download/{pid}.cif.gz"] = real(pid)
            # The server holds a revision of 1GBT dated after the first snapshot: not in that snapshot.
            server.files["/download/1GBT.cif.gz"] = edited("1GBT", "2011-07-13", "2026-11-25")
            url = server.url + "/download"
            work = copy_workflow(base / "repo", study(url, "2026-11-01"))
            home = base / "home"
            home.mkdir()
            if as_root:
                base.chmod(0o755)
                subprocess.run(["chown", "-R", "65534:65534", str(base)], check=True)
            env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(work), "HOME": str(home),
                   "XDG_CACHE_HOME": str(home / ".cache"), "MPLCONFIGDIR": str(home), "OMP_NUM_THREADS": "1"}

            if as_root:  # the same user for Snakemake and for the jobs it starts (a nested exec)
                nested = ["bash", "-c", f"{sys.executable} -c 'import qdiff.cli, snakemake'"]
                for prefix in (NOBODY, NOBODY + READ_ANYWHERE):
                    if subprocess.run([*prefix, *nested], cwd=work, env=env, capture_output=True).returncode == 0:
                        user = prefix
                        break
                else:
                    pytest.skip("user 65534 cannot run this interpreter, even with CAP_DAC_READ_SEARCH")

            def run(*args, check=True):
                out = subprocess.run([*user, *args], cwd=work, env=env, capture_output=True, text=True, timeout=1200)
                if check:
                    assert out.returncode == 0, (args, out.stdout[-3000:], out.stderr[:3000], out.stderr[-3000:])
                return out

            def snakemake(*args, check=True):
                return run(str(BIN / "snakemake"), *TARGETS, "--cores", "2", *args, check=check)

            snakemake()
            store = work / "results" / "data" / "pdb.h5"
            with h5py.File(store, "r") as h5:
                first = h5.attrs["content_sha256"]
                failures = dict(zip([s.decode() for s in h5["failures/id"][()]], [s.decode() for s in h5["failures/reason"][()]]))
            assert failures["1gbt"].startswith("snapshot 2026-11-01: revised 2026-11-25")
            other_model = work / "results" / "runs" / "demo-backbones" / "quotient" / "seed0" / "model.pt"
            other_bytes, other_mtime = other_model.read_bytes(), other_model.stat().st_mtime_ns

            # The update: a new snapshot date in the study. Exactly the PDB jobs are out of date.
            (work / "config.yaml").write_text(yaml.safe_dump(study(url, "2026-11-30")))
            dry = snakemake("-n", "--quiet", "rules")
            planned = dict(re.findall(r"^(\w+)\s+(\d+)$", dry.stdout, re.M))
            # the new settings stamps of the PDB's fetch, data and training families, then their jobs
            assert planned == {"settings_stamp": "3", "fetch_dataset": "1", "featurize_raw": "1", "data_info": "1",
                               "train_model": "1", "study_training": "1", "total": "8"}, dry.stdout
            out = snakemake()
            assert "ProtectedOutputException" not in out.stdout + out.stderr
            with h5py.File(store, "r") as h5:
                second = h5.attrs["content_sha256"]
                chains = [s.decode() for s in h5["chains/id"][()]]
                assert h5.attrs["snapshot_date"] == "2026-11-30"
            assert second != first
            # The model is retrained on the new store, never resumed from the old one's checkpoint.
            run_dir = work / "results" / "runs" / "pdb" / "quotient" / "seed0"
            model = torch.load(run_dir / "model.pt", weights_only=True)
            assert json.loads(model["store_identity"])["content_sha256"] == second
            log = (work / "logs" / "runs" / "pdb" / "quotient" / "seed0" / "train.log").read_text()
            assert "not resumed" in log and "starting at step 0" in log, log[-2000:]
            assert (run_dir / "superseded" / f"store-{first[:12]}" / "checkpoints" / "last.pt").is_file()
            assert other_model.read_bytes() == other_bytes and other_model.stat().st_mtime_ns == other_mtime
            # The previous version is kept: a diff against it, no hand-made copy.
            diff = json.loads(run(str(BIN / "qdiff"), "data", "diff", "--previous", "results/data/pdb.h5", "--json").stdout)
            assert diff["added"] == sorted(c for c in chains if c.startswith("1gbt_")) and diff["added"]
            assert diff["removed"] == [] and diff["old"].endswith(f"2026-11-01_{first[:12]}.h5")
            listed = run(str(BIN / "qdiff"), "data", "versions", "results/data/pdb.h5").stdout
            assert "snapshot 2026-11-01" in listed and first[:12] in listed and f"* " in listed and second[:12] in listed
            dry = snakemake("-n")
            assert "Nothing to be done" in dry.stdout + dry.stderr, dry.stdout[-2000:]

            # README's recipe for a re-fetch with the same settings: it runs for a normal user, the
            # snapshot's pinned entries come back unchanged, so the store is the same version and the
            # model resumes at its last step (same weights).
            weights = model["ema"]
            out = snakemake("-R", "fetch_dataset")
            assert "ProtectedOutputException" not in out.stdout + out.stderr
            with h5py.File(store, "r") as h5:
                assert h5.attrs["content_sha256"] == second
            again = torch.load(run_dir / "model.pt", weights_only=True)["ema"]
            assert all(torch.equal(weights[k], again[k]) for k in weights)
    finally:
        shutil.rmtree(base, ignore_errors=True)
