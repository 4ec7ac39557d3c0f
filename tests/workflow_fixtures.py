"""Helpers for workflow tests: a copy of the repository's tracked files with a tiny study config."""
import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

TINY = {
    "study": "demo",
    "data": {"datasets": ["demo-qm9"], "featurize": {"demo-qm9": {"n_molecules": 40, "seed": 0}}},
    "models": {"datasets": ["demo-qm9"], "treatments": ["quotient"], "seeds": [0], "baselines": ["etkdg"],
               "train": {"steps": 4, "batch_size": 8, "split": "random", "model": {"name": "egnn", "hidden": 16, "layers": 2}},
               "sample": {"steps": 4, "max_molecules": 2}},
    "toy": {
        "targets": ["gaussian", "shape"], "treatments": ["conventional", "quotient"],
        "samplers": ["ode", "sde"], "curvature_ablation": ["plus"], "seeds": [0],
        "samples": 40, "steps": 8, "noise_scale": 1.0, "jitter": 0.1, "mc_draws": 4,
    },
}


def tool_env(**extra) -> dict:
    return dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", DVC_NO_ANALYTICS="1", **extra)


def snakemake(*args, cwd=ROOT, check=True, env=None, timeout=None):
    command = [str(BIN / "snakemake"), *args]
    if timeout:  # the Slurm plugin can ignore SIGTERM; only SIGKILL is sure to stop it
        command = ["timeout", "-s", "KILL", str(timeout), *command]
    return subprocess.run(command, cwd=cwd, env=env or tool_env(), capture_output=True, text=True, check=check)


def copy_workflow(dest: Path, config: dict) -> Path:
    """The repository's tracked and unignored files under dest, with config.yaml replaced."""
    tracked = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for rel in tracked:
        if (ROOT / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            (dest / rel).write_bytes((ROOT / rel).read_bytes())
    (dest / "config.yaml").write_text(yaml.safe_dump(config))
    return dest
