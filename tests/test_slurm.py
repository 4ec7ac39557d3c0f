"""The Slurm profile through a real scheduler: `.ci/slurm_up.sh` starts a single-node Slurm with
slurmdbd (CI does this and sets QDIFF_SLURM=1); jobs go through sbatch and are checked in sacct."""
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from workflow_fixtures import TINY, copy_workflow, snakemake, tool_env

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (os.environ.get("QDIFF_SLURM") and shutil.which("sbatch")),
                       reason="needs a running Slurm: run .ci/slurm_up.sh and set QDIFF_SLURM=1 (CI does)"),
]
FAST = ["--profile", "slurm", "--jobs", "2", "--slurm-init-seconds-before-status-checks", "5", "--latency-wait", "5"]


def submitted(text: str) -> list[str]:
    return re.findall(r"SLURM jobid (\d+)", text)


def sacct_states(job_ids: list[str]) -> dict[str, str]:
    out = subprocess.run(["sacct", "-X", "--parsable2", "--noheader", "--format=JobIdRaw,State", "-j", ",".join(job_ids)],
                         capture_output=True, text=True, check=True).stdout
    return dict(line.split("|")[:2] for line in out.splitlines() if line)


def test_profile_submits_jobs_through_sbatch(tmp_path):
    work = copy_workflow(tmp_path / "repo", TINY)
    env = tool_env(SBATCH_PARTITION="debug")  # the user's partition, set outside the repository
    targets = ["results/data/demo-qm9.h5", "results/data/demo-qm9.info.json", "results/toy/runs/gaussian/quotient/ode-minus/seed0.json"]
    out = snakemake(*FAST, *targets, cwd=work, env=env, check=False, timeout=600)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-4000:]
    jobs = submitted(text)
    assert len(jobs) == 2, text[-4000:]  # featurize + toy run; data_info is a local rule
    assert set(sacct_states(jobs).values()) == {"COMPLETED"}
    assert all((work / t).is_file() for t in targets)
    logs = list((work / "logs" / "slurm").rglob("*.log"))
    assert logs and any("SLURM" in p.read_text(errors="replace") or p.stat().st_size > 0 for p in logs)


def test_a_failing_job_is_reported_failed_not_hung(tmp_path):
    # A setting the config schema accepts but the job cannot honour (no GPU on the CI node), so the
    # failure happens inside the Slurm job, not when Snakemake validates the config.
    config = {**TINY, "models": {**TINY["models"], "train": {**TINY["models"]["train"], "device": "cuda"}}}
    work = copy_workflow(tmp_path / "repo", config)
    target = "results/runs/demo-qm9/quotient/seed0/model.pt"
    out = snakemake(*FAST, "--retries", "0", target, cwd=work, env=tool_env(SBATCH_PARTITION="debug"), check=False, timeout=600)
    text = out.stdout + out.stderr
    assert out.returncode not in (0, -9, 137), text[-4000:]
    train_jobs = re.findall(r"rule train_model.*?SLURM jobid (\d+)", text, re.S)
    assert train_jobs and sacct_states(train_jobs[-1:])[train_jobs[-1]] == "FAILED", text[-4000:]
    assert "CUDA is not available" in (work / "logs" / "runs" / "demo-qm9" / "quotient" / "seed0" / "train.log").read_text()
    assert not (work / target).exists()


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
    assert set(sacct_states(jobs).values()) == {"COMPLETED"}
    status = subprocess.run([str(bin_dir / "dvc"), "status"], cwd=work, env=env, capture_output=True, text=True)
    assert "Data and pipelines are up to date" in status.stdout, status.stdout
    dry = snakemake("-n", "study_data", cwd=work, env=env)
    assert "Nothing to be done" in dry.stdout + dry.stderr
