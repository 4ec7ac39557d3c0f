"""The colleague story of README "DVC", end to end with real git clones, a local DVC remote and a
second (unprivileged) user: A runs the study and shares it; B pulls it and Snakemake agrees that
nothing is left to do; B changes a dataset setting and exactly the jobs that depend on it re-run;
B goes back to A's commit and gets A's files byte for byte. Plus the static contract of dvc.yaml:
its stages name no dataset (one list: the study's)."""
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml
from workflow_fixtures import TINY, copy_workflow

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
# the jobs that depend on demo-qm9's featurize settings (TINY study), and nothing else; new stamps
# for demo-qm9's data, train, sample and baseline families and the report
DEPENDENT_JOBS = {"settings_stamp": 5, "featurize_offline": 1, "data_info": 1, "train_model": 1, "sample_model": 1,
                  "evaluate_model": 1, "classical_baseline": 1, "evaluate_baseline": 1, "report": 1, "all": 1}


def job_counts(text: str) -> dict[str, int]:
    """The `Job stats` table of a Snakemake dry run as {rule: count} (empty for nothing to do)."""
    counts = {}
    for name, count in re.findall(r"^(\w+)\s+(\d+)$", text.split("Job stats:", 1)[-1], re.M):
        if name != "total":
            counts[name] = int(count)
    return counts if "Job stats:" in text else {}


def tree_hashes(repo: Path) -> dict[str, str]:
    """sha256 of every file under results/ (stores, runs and models, baselines, report, toy)."""
    return {str(p.relative_to(repo)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((repo / "results").rglob("*")) if p.is_file()}


class Clone:
    """A git clone and the tools run in it, as root or (`user`) as uid 65534 with its own HOME."""

    def __init__(self, path: Path, home: Path, user: bool = False):
        self.path, self.prefix = path, NOBODY if user else []
        self.env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", DVC_NO_ANALYTICS="1",
                        PYTHONPATH=str(path),  # the clone's own qdiff, as an installed checkout would be
                        HOME=str(home), MPLCONFIGDIR=str(home / "mpl"), XDG_CACHE_HOME=str(home / "cache"),
                        GIT_AUTHOR_NAME="qdiff", GIT_AUTHOR_EMAIL="ci@example.invalid",
                        GIT_COMMITTER_NAME="qdiff", GIT_COMMITTER_EMAIL="ci@example.invalid")
        # uid 65534 reads the root-owned origin repository (git honours safe.directory only globally)
        (home / ".gitconfig").write_text("[safe]\n\tdirectory = *\n")

    def run(self, *cmd, check=True, cwd=None):
        out = subprocess.run([*self.prefix, *cmd], cwd=cwd or self.path, env=self.env, capture_output=True, text=True,
                             timeout=1800)
        if check:
            assert out.returncode == 0, (cmd, out.stdout[-3000:], out.stderr[-3000:])
        return out

    def git(self, *args, **kw):
        return self.run("git", *args, **kw)

    def dvc(self, *args, **kw):
        return self.run(str(BIN / "dvc"), *args, **kw)

    def snakemake(self, *args, **kw):
        out = self.run(str(BIN / "snakemake"), *args, **kw)
        return out.stdout + out.stderr


def test_dvc_stages_name_no_dataset_and_follow_the_study():
    """dvc.yaml holds no second list: no dataset, treatment or target file of any study, and each
    stage's command is one aggregate rule of the Snakefile, whose inputs are the selected study's."""
    text = (ROOT / "dvc.yaml").read_text()
    stages = yaml.safe_load(text)["stages"]
    names = set()
    for study in [yaml.safe_load((ROOT / "config.yaml").read_text())] + [yaml.safe_load(p.read_text()) for p in (ROOT / "studies").glob("*.yaml")]:
        names |= set(study["data"]["datasets"]) | set(study["models"]["treatments"]) | set(study["toy"]["targets"])
    body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    assert not [n for n in names if re.search(rf"\b{re.escape(n)}\b", body)], body
    for name, stage in stages.items():
        assert re.fullmatch(r"(mkdir -p \S+ && )?snakemake --cores all study_" + name, stage["cmd"]), stage["cmd"]
        assert {"Snakefile", "workflow/rules", "workflow/schemas", "profiles/default", "studies"} <= set(stage["deps"])
        assert {"study", name} <= set(stage["params"][0]["config.yaml"])
        assert all(next(iter(o.values())).get("persist") for o in stage["outs"])
    snakefile = (ROOT / "Snakefile").read_text()
    for rule, helper in (("study_toy", "toy_summary_outputs"), ("study_data", "data_outputs"), ("study_models", "report_outputs")):
        assert re.search(rf"rule {rule}:\n    input:\n        {helper}\(\),", snakefile), rule
    # the Slurm route: Snakemake reads $SNAKEMAKE_PROFILE, so the stage commands carry no executor
    assert "--profile" not in body and "--touch" not in body


def test_dvc_stages_run_the_selected_studys_jobs(tmp_path):
    """What `dvc repro` runs follows `study:` in config.yaml: the data stage's aggregate rule builds
    the demo's offline stores, or fetches and featurizes the paper's four datasets."""
    from workflow_fixtures import snakemake

    for study, rule, datasets in (("demo", "featurize_offline", 3), ("paper", "featurize_raw", 4)):
        config = yaml.safe_load((ROOT / "config.yaml").read_text())
        config["study"] = study
        path = tmp_path / f"{study}.yaml"
        path.write_text(yaml.safe_dump(config))
        dry = snakemake("study_data", "-n", "--configfile", str(path))
        counts = job_counts(dry.stdout + dry.stderr)
        assert counts[rule] == datasets and counts["data_info"] == datasets, counts
        assert ("fetch_dataset" in counts) == (study == "paper") and "train_model" not in counts, counts


def test_report_writes_each_runs_loss_curve_as_data(tmp_path):
    """results/report/curves/<dataset>.<treatment>.seed<seed>.csv, the plot data dvc.yaml declares:
    one per run with a training log (none for a classical baseline), in the log's order."""
    import csv

    from qdiff.report import write_curves

    run = tmp_path / "runs" / "demo-qm9" / "quotient" / "seed0"
    run.mkdir(parents=True)
    (run / "log.csv").write_text("step,epoch,loss,lr,grad_norm,samples_per_s,val_loss,wall_s\n"
                                 "1,0,2.5,0.001,1.0,10,,0.5\n2,0,2.0,0.001,1.0,10,1.9,1.0\n")
    old = tmp_path / "runs" / "demo-qm9" / "conventional" / "seed1"  # a log from before wall_s
    old.mkdir(parents=True)
    (old / "log.csv").write_text("step,epoch,loss,lr,grad_norm,samples_per_s,val_loss\n5,1,0.75,0.001,1.0,10,0.8\n")
    baseline = tmp_path / "baselines" / "demo-qm9" / "etkdg"
    baseline.mkdir(parents=True)
    runs = {("demo-qm9", "quotient", 0): run, ("demo-qm9", "conventional", 1): old, ("demo-qm9", "etkdg", 0): baseline}
    written = write_curves(runs, tmp_path / "curves")
    assert [p.name for p in written] == ["demo-qm9.conventional.seed1.csv", "demo-qm9.quotient.seed0.csv"]
    with open(written[1]) as fh:
        assert list(csv.DictReader(fh)) == [{"step": "1", "loss": "2.5", "val_loss": "", "wall_s": "0.5"},
                                            {"step": "2", "loss": "2.0", "val_loss": "1.9", "wall_s": "1.0"}]
    with open(written[0]) as fh:
        assert list(csv.DictReader(fh)) == [{"step": "5", "loss": "0.75", "val_loss": "0.8", "wall_s": ""}]
    assert sorted(p.name for p in (tmp_path / "curves").iterdir()) == [p.name for p in written]


@pytest.mark.slow
def test_a_colleague_pulls_the_study_changes_a_dataset_and_returns_to_the_shared_results(tmp_path):
    """README "DVC", step by step (TINY study; B is uid 65534 when this runs as root, as in CI)."""
    user = hasattr(os, "geteuid") and os.geteuid() == 0
    if user and shutil.which("setpriv") is None:
        pytest.fail("setpriv (util-linux) is needed to run clone B as another user")
    if user:  # the tools' interpreter must be usable by uid 65534 from a shell, as DVC's stage commands run
        probe = subprocess.run([*NOBODY, "/bin/sh", "-c", f"{BIN / 'python'} -c 'import dvc, snakemake'"],
                               capture_output=True, text=True, cwd="/")
        # (not so with a venv made from an interpreter under /root: B then runs as this user)
        user = probe.returncode == 0
    base = Path(tempfile.mkdtemp(prefix="qdiff-dvc-"))  # not tmp_path: its parents are private to root
    try:
        base.chmod(0o755)
        src = copy_workflow(base / "src", TINY)
        subprocess.run(["git", "init", "-q", "-b", "main"], cwd=src, check=True)
        subprocess.run(["git", "add", "-A"], cwd=src, check=True)
        subprocess.run(["git", "-c", "user.email=ci@example.invalid", "-c", "user.name=ci", "commit", "-qm", "tiny study"], cwd=src, check=True)
        subprocess.run(["git", "clone", "-q", "--bare", str(src), str(base / "origin.git")], check=True)
        remote = base / "remote"
        remote.mkdir()

        # A: a fresh clone runs the study, commits dvc.lock with the remote, pushes data and commit
        (base / "home-a").mkdir()
        a = Clone(base / "A", base / "home-a")
        a.run("git", "clone", "-q", str(base / "origin.git"), str(a.path), cwd=base)
        a.dvc("remote", "add", "-d", "shared", str(remote))
        a.dvc("config", "--local", "core.site_cache_dir", str(base / "home-a" / "dvc-site"))
        a.dvc("repro")
        assert "Data and pipelines are up to date" in a.dvc("status").stdout
        assert "Nothing to be done" in a.snakemake("-n")
        a.git("add", "dvc.lock", ".dvc/config")
        a.git("commit", "-qm", "results of the tiny study")
        a.dvc("push")
        a.git("push", "-q", "origin", "main")
        shared = a.git("rev-parse", "HEAD").stdout.strip()
        hashes = tree_hashes(a.path)
        for part in ("results/data/demo-qm9.h5", "results/runs/demo-qm9/quotient/seed0/model.pt", "results/report/report.html",
                     "results/report/curves/demo-qm9.quotient.seed0.csv", "results/toy/metrics.json"):
            assert part in hashes, part

        # B: another user, another directory: clone, pull, and Snakemake has nothing to do (no --touch)
        home_b = base / "home-b"
        home_b.mkdir()
        if user:
            os.chown(home_b, 65534, 65534)
        b = Clone(home_b / "repo", home_b, user=user)
        b.run("git", "clone", "-q", str(base / "origin.git"), str(b.path), cwd=home_b)
        b.dvc("config", "--local", "core.site_cache_dir", str(home_b / "dvc-site"))
        b.dvc("pull")
        assert tree_hashes(b.path) == hashes
        assert (b.path / "results" / "data" / "demo-qm9.h5").stat().st_uid == (65534 if user else os.geteuid())
        assert not (b.path / ".snakemake" / "metadata").exists() or not any((b.path / ".snakemake" / "metadata").iterdir())
        dry = b.snakemake("-n")
        assert "Nothing to be done" in dry and job_counts(dry) == {}, dry[-3000:]
        assert "Data and pipelines are up to date" in b.dvc("status").stdout

        # B changes one dataset setting: the dry run lists exactly the jobs that depend on it
        config = yaml.safe_load((b.path / "config.yaml").read_text())
        config["data"]["featurize"]["demo-qm9"]["n_molecules"] = 32
        (b.path / "config.yaml").write_text(yaml.safe_dump(config))
        dry = b.snakemake("-n")
        assert job_counts(dry) == DEPENDENT_JOBS, dry[-3000:]
        status = b.dvc("status").stdout
        assert "data:" in status and "toy:" not in status, status
        # ... and DVC runs those: the toy stage is skipped, its results untouched
        out = b.dvc("repro")
        assert "Stage 'toy' didn't change, skipping" in out.stdout, out.stdout[-3000:]
        after = tree_hashes(b.path)
        assert {k: v for k, v in after.items() if k.startswith("results/toy/")} == {k: v for k, v in hashes.items() if k.startswith("results/toy/")}
        # the model too: training does not resume A's pulled checkpoint, which belongs to the old store
        for part in ("results/data/demo-qm9.h5", "results/runs/demo-qm9/quotient/seed0/model.pt",
                     "results/baselines/demo-qm9/etkdg/samples.h5", "results/report/summary.json"):
            assert after[part] != hashes[part], part
        train_log = (b.path / "logs" / "runs" / "demo-qm9" / "quotient" / "seed0" / "train.log").read_text()
        assert "not resumed" in train_log and "starting at step 0" in train_log, train_log[-2000:]
        info = json.loads((b.path / "results" / "data" / "demo-qm9.info.json").read_text())
        assert info["molecules"] == 32
        assert "Nothing to be done" in b.snakemake("-n")
        b.git("commit", "-qam", "demo-qm9 with 32 molecules")

        # metrics and plots compare the two commits (the shared one's read from the DVC cache)
        diff = json.loads(b.dvc("metrics", "diff", shared, "HEAD", "--all", "--json").stdout)
        assert set(diff) == {"results/toy/metrics.json", "results/report/summary.json"}, diff
        plots = json.loads(b.dvc("plots", "diff", shared, "HEAD", "--json").stdout)
        curve = plots["data"]["results/report/curves/demo-qm9.quotient.seed0.csv"][0]
        assert set(curve["revisions"]) == {shared, "HEAD"} and curve["content"]["data"]["values"], curve["revisions"]

        # back to A's commit: its stores, models and report byte for byte, and nothing to do
        b.git("checkout", "-q", shared)
        b.dvc("checkout")
        assert tree_hashes(b.path) == hashes
        dry = b.snakemake("-n")
        assert "Nothing to be done" in dry and job_counts(dry) == {}, dry[-3000:]
        assert "Data and pipelines are up to date" in b.dvc("status").stdout
    finally:
        shutil.rmtree(base, ignore_errors=True)
