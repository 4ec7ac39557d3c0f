"""The Slurm profile through a real scheduler, as a cluster user runs it. `.ci/slurm_up.sh` starts a
single-node Slurm shaped like a site: partitions `cpu` (the default) and `gpu` (a stand-in without
GRES), enforced accounting, and the unprivileged user nobody (QDIFF_SLURM_USER) in the accounts
`ci-default` (its default) and `qdiff`. CI does this and sets QDIFF_SLURM=1. The workflow runs as
that user from a copy it owns, with `--profile slurm --profile qdiff-site`, the site profile in its
~/.config/snakemake naming the account and partitions; every job is then checked in sacct."""
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml
from workflow_fixtures import BIN, TINY, copy_workflow, snakemake, tool_env

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (os.environ.get("QDIFF_SLURM") and shutil.which("sbatch")),
                       reason="needs a running Slurm: run .ci/slurm_up.sh and set QDIFF_SLURM=1 (CI does)"),
]
USER = os.environ.get("QDIFF_SLURM_USER", "nobody")
# Root ignores file permissions and has every association: drop to the CI user as tests/test_bad_input.py does.
AS_USER = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if os.geteuid() == 0 else []
# The site's settings, in a site profile as README "Running on a cluster" describes. request_gpus:
# false because CI's gpu partition has no GRES: GPU rules land there and run on its CPUs.
SITE = {"slurm": {"account": "qdiff", "partition": "cpu", "gpu_partition": "gpu", "request_gpus": False}}
# --cores 2: this node's CPUs, the most one submission (a group of jobs) may ask for.
FAST = ["--profile", "slurm", "--profile", "qdiff-site", "--jobs", "4", "--cores", "2",
        "--slurm-init-seconds-before-status-checks", "5", "--latency-wait", "5"]
GPU_RULES = ("train_model", "sample_model", "sample_sweep")


@pytest.fixture
def as_user():
    """A folder the Slurm user owns (pytest's tmp_path is root's, mode 700), removed afterwards."""
    base = Path(tempfile.mkdtemp(prefix="qdiff-slurm-"))
    base.chmod(0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def user_workflow(base: Path, config: dict, site: dict = SITE) -> Path:
    """A copy of the workflow with `config` as its study, and the user's home with the site profile."""
    work = copy_workflow(base / "repo", config)
    profile = base / "home" / ".config" / "snakemake" / "qdiff-site"
    profile.mkdir(parents=True)
    (profile / "site.yaml").write_text(yaml.safe_dump(site))
    (profile / "config.yaml").write_text("configfile: site.yaml\n")
    if AS_USER:
        subprocess.run(["chown", "-R", "65534:65534", str(base)], check=True)
    return work


def snakemake_as_user(work: Path, *args, timeout: int):
    home = work.parent / "home"
    env = tool_env(HOME=str(home), USER=USER, LOGNAME=USER, XDG_CACHE_HOME=str(home / ".cache"),
                   MPLCONFIGDIR=str(home / ".cache"), OMP_NUM_THREADS="1")
    probe = subprocess.run([*AS_USER, str(BIN / "python"), "-c", "import qdiff, snakemake"], cwd=work, env=env,
                           capture_output=True, text=True)
    if probe.returncode != 0:  # CI's checkout and venv must be readable by the Slurm user (jobs run as it)
        pytest.fail(f"user {USER} cannot run {BIN / 'python'} with this checkout: {probe.stderr.strip()[-500:]}")
    # the Slurm plugin can ignore SIGTERM; only SIGKILL is sure to stop it
    command = ["timeout", "-s", "KILL", str(timeout), *AS_USER, str(BIN / "snakemake"), *args]
    return subprocess.run(command, cwd=work, env=env, capture_output=True, text=True)


def submitted(text: str) -> list[str]:
    return re.findall(r"SLURM jobid (\d+)", text)


def sacct(job_ids: list[str]) -> dict[str, dict[str, str]]:
    fields = ["JobIDRaw", "User", "Account", "Partition", "State", "AllocCPUS", "ReqTRES", "Comment"]
    out = subprocess.run(["sacct", "-X", "--parsable2", "--noheader", f"--format={','.join(fields[:-1])},Comment%400",
                          "-j", ",".join(job_ids)], capture_output=True, text=True, check=True).stdout
    rows = [dict(zip(fields, line.split("|"))) for line in out.splitlines() if line]
    return {row["JobIDRaw"]: row for row in rows}


def study(**models) -> dict:
    """TINY with the models on GPUs (one each) and a one-point NFE sweep, and four seconds-long toy runs."""
    return {**TINY,
            "models": {**TINY["models"], "resources": {"gpus": 1, "cpus_per_gpu": 2}, **models,
                       "sample": {**TINY["models"]["sample"], "nfe_sweep": [2]}},
            "toy": {**TINY["toy"], "targets": ["gaussian", "shape"], "treatments": ["quotient"], "curvature_ablation": []}}


def test_each_job_runs_in_the_partition_and_account_the_site_names(as_user):
    work = user_workflow(as_user, study())
    run = "results/runs/demo-qm9/quotient/seed0"
    toys = [f"results/toy/runs/{t}/quotient/{s}-minus/seed0.json" for t in ("gaussian", "shape") for s in ("ode", "sde")]
    targets = [f"{run}/metrics.json", f"{run}/nfe2/metrics.json", *toys]
    out = snakemake_as_user(work, *FAST, *targets, timeout=1500)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-4000:]
    assert all((work / t).is_file() for t in targets)
    jobs = sacct(submitted(text))
    rules = {job_id: row["Comment"] for job_id, row in jobs.items()}
    # featurize, train, sample, evaluate, sweep sample, sweep evaluation: one submission each; the
    # four toy runs: one group submission
    assert len(jobs) == 7, rules
    toy_jobs = [j for j, comment in rules.items() if "toy_run" in comment]
    assert len(toy_jobs) == 1, rules
    for job_id, row in jobs.items():
        gpu_rule = any(re.match(rf"rule_{r}(_wildcards|$)", row["Comment"]) for r in GPU_RULES)
        assert (row["User"], row["Account"], row["State"]) == (USER, "qdiff", "COMPLETED"), row
        assert row["Partition"] == ("gpu" if gpu_rule else "cpu"), row
        assert "gres/gpu" not in row["ReqTRES"], row  # nothing asks CI's GRES-less node for a GPU
    # A GPU rule's CPUs are its threads: gpus x cpus_per_gpu (1 x 2), which OMP_NUM_THREADS also gets.
    train = next(row for row in jobs.values() if row["Comment"].startswith("rule_train_model"))
    assert train["AllocCPUS"] == "2", train
    assert re.search(r"rule train_model:.*?threads: 2", text, re.S), text[-4000:]
    # The site profile's settings only: the plugin neither guessed an account nor a partition.
    assert "trying to guess" not in text.lower() and "Guessed SLURM account" not in text


def test_without_site_settings_jobs_take_the_users_defaults(as_user):
    """No `slurm` section: nothing is set on the jobs, and Slurm's defaults (the user's default account,
    the default partition) apply, GPU rules included. The contrast that shows the settings above act."""
    work = user_workflow(as_user, study(), site={})
    out = snakemake_as_user(work, *FAST, "results/data/demo-qm9.h5", timeout=900)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-4000:]
    jobs = sacct(submitted(text))
    assert [(r["Account"], r["Partition"], r["State"]) for r in jobs.values()] == [("ci-default", "cpu", "COMPLETED")], jobs


def test_a_failing_job_is_reported_failed_not_hung(as_user):
    # A setting the config schema accepts but the job cannot honour (no GPU on the CI node), so the
    # failure happens inside the Slurm job, not when Snakemake validates the config.
    config = {**TINY, "models": {**TINY["models"], "train": {**TINY["models"]["train"], "device": "cuda"}}}
    work = user_workflow(as_user, config)
    target = "results/runs/demo-qm9/quotient/seed0/model.pt"
    out = snakemake_as_user(work, *FAST, "--retries", "0", target, timeout=900)
    text = out.stdout + out.stderr
    assert out.returncode not in (0, -9, 137), text[-4000:]
    jobs = sacct(submitted(text))
    train = [row for row in jobs.values() if row["Comment"].startswith("rule_train_model")]
    assert [(r["State"], r["Account"], r["User"]) for r in train] == [("FAILED", "qdiff", USER)], jobs
    assert "CUDA is not available" in (work / "logs" / "runs" / "demo-qm9" / "quotient" / "seed0" / "train.log").read_text()
    assert not (work / target).exists()


def test_the_time_limit_warning_signal_makes_training_checkpoint_and_stop(as_user):
    """The profile's `--signal` (here 60 s before a 3-minute limit, so the test is short) reaches the
    trainer inside the job step: it saves a checkpoint and exits 143 before Slurm's limit, so the job
    ends FAILED (a retry resumes), not TIMEOUT with the work since the last checkpoint lost. Slurm
    checks limits every 30 s and signals up to that much early: from 90 s in, time for the trainer
    to start under load."""
    config = study(train={**TINY["models"]["train"], "steps": 10_000_000, "checkpoint_every": 10_000_000,
                                                         "checkpoint_minutes": 600, "val_every": 0})
    work = user_workflow(as_user, config)
    run = work / "results" / "runs" / "demo-qm9" / "quotient" / "seed0"
    out = snakemake_as_user(work, f"{run.relative_to(work)}/model.pt", *FAST, "--retries", "0", "--set-resources",
                            "train_model:runtime=3", "train_model:slurm_extra='--signal=TERM@60'", timeout=900)
    text = out.stdout + out.stderr
    assert out.returncode != 0, text[-4000:]
    log = work / "logs" / "runs" / "demo-qm9" / "quotient" / "seed0" / "train.log"
    assert log.is_file(), text[-4000:]
    log = log.read_text()
    assert re.search(r"pre-empted at step \d+: checkpoint saved, exiting", log), log[-3000:]
    assert (run / "checkpoints" / "last.pt").is_file() and not (run / "model.pt").exists()
    jobs = sacct(submitted(text))
    train = [row for row in jobs.values() if row["Comment"].startswith("rule_train_model")]
    assert [(r["State"], r["Partition"]) for r in train] == [("FAILED", "gpu")], jobs


def test_dvc_repro_runs_the_stage_with_the_slurm_profile(tmp_path):
    """README "DVC": `SNAKEMAKE_PROFILE=slurm dvc repro`. The stage command names no executor;
    Snakemake takes the profile from the environment and submits the stage's jobs through sbatch
    (the cluster's default partition); DVC then records the stage and both tools agree."""
    import sys

    bin_dir = Path(sys.executable).parent
    work = copy_workflow(tmp_path / "repo", TINY)
    git = ["git", "-c", "user.email=ci@example.invalid", "-c", "user.name=ci"]
    for cmd in (["git", "init", "-q", "-b", "main"], ["git", "add", "-A"], [*git, "commit", "-qm", "tiny study"]):
        subprocess.run(cmd, cwd=work, check=True)
    env = tool_env(SNAKEMAKE_PROFILE="slurm")
    out = subprocess.run(["timeout", "-s", "KILL", "900", str(bin_dir / "dvc"), "repro", "data"], cwd=work, env=env,
                         capture_output=True, text=True)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-4000:]
    assert "Using profile slurm" in text or "Using profiles slurm" in text, text[-4000:]
    jobs = submitted(text)
    assert len(jobs) == 1, text[-4000:]  # featurize; the settings stamp and data_info are local rules
    assert {row["State"] for row in sacct(jobs).values()} == {"COMPLETED"}, sacct(jobs)
    # the stage that ran is recorded (the toy and models stages, not run here, are still to do)
    status = subprocess.run([str(bin_dir / "dvc"), "status", "data"], cwd=work, env=env, capture_output=True, text=True)
    assert "Data and pipelines are up to date" in status.stdout, status.stdout
    dry = snakemake("-n", "study_data", cwd=work, env=env)
    assert "Nothing to be done" in dry.stdout + dry.stderr
