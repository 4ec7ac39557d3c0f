"""A study's train -> sample stage on one GPU within a wall-clock budget, every treatment at once.

    python benchmarks/study_on_gpu.py --study studies/qm9-small.yaml --dataset qm9 --store qm9.h5 \
        --out OUT --minutes 5 [--seeds 0] [--treatments conventional,quotient]

For a GPU session whose device time is short: the study's training settings for the dataset
(`models.train` with `per_dataset.<dataset>.train` laid over it, as the workflow does) are used as
they are, except `steps`, which is sized to the budget: each treatment first times 30 steps of
its real Trainer (all treatments running side by side on the GPU, so the timing includes their
contention), then trains for as many steps as fit in `--minutes` (the LR schedule planned for
that many steps). Each run then samples the study's test molecules (`sample.max_molecules`, the
study's sampler and steps, plus its `nfe_sweep`) into `<out>/<treatment>-seed<k>/samples*.h5`
without SDF files (no RDKit needed on the GPU machine). Evaluate the samples afterwards with
`qdiff evaluate` where RDKit is installed. Prints and writes `<out>/timing.json`.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def study_section(study: dict, dataset: str, section: str) -> dict:
    models = study["models"]
    return {**models.get(section, {}), **models.get("per_dataset", {}).get(dataset, {}).get(section, {})}


def train_and_sample(args: argparse.Namespace) -> dict:
    """One (treatment, seed): calibrate, train to the budget, sample."""
    import torch

    from qdiff.sample import sample_molecules
    from qdiff.train import Trainer, resolve_config

    study = yaml.safe_load(Path(args.study).read_text())
    train = study_section(study, args.dataset, "train")
    sample = study_section(study, args.dataset, "sample")
    run = Path(args.out) / f"{args.treatment}-seed{args.seed}"
    base = {**train, "treatment": args.treatment, "seed": args.seed, "device": args.device, "checkpoint_minutes": 1e9}
    timing: dict = {"treatment": args.treatment, "seed": args.seed}
    start = time.perf_counter()
    probe = Trainer(args.store, run / "probe", resolve_config({**base, "steps": 10**6, "val_every": 0, "checkpoint_every": 10**9}),
                    progress=False)
    batches = [probe.batch(probe._next_indices()) for _ in range(30)]
    for b in batches[:5]:
        probe.train_step(b)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for b in batches[5:]:
        probe.train_step(b)
    sync()
    step_s = (time.perf_counter() - t0) / 25
    del probe, batches
    budget = 60 * args.minutes - (time.perf_counter() - start)
    steps = max(100, int(0.9 * budget / step_s))
    timing.update(calibrated_step_s=step_s, steps=steps)
    print(f"{args.treatment} seed {args.seed}: {step_s * 1000:.1f} ms/step -> {steps} steps", flush=True)
    t0 = time.perf_counter()
    Trainer(args.store, run, resolve_config({**base, "steps": steps}), progress=False).run()
    timing["train_s"] = time.perf_counter() - t0
    options = dict(sampler=sample.get("sampler", "ode"), seed=args.seed, max_molecules=sample.get("max_molecules"),
                   multiplier=sample.get("multiplier", 2), device=args.device, sdf=False, progress=False)
    for nfe in [sample.get("steps", 50)] + [n for n in sample.get("nfe_sweep", []) if n != sample.get("steps", 50)]:
        t0 = time.perf_counter()
        name = "samples.h5" if nfe == sample.get("steps", 50) else f"samples-nfe{nfe}.h5"
        summary = sample_molecules(run, run / name, steps=nfe, **options)
        timing[f"sample_nfe{nfe}_s"] = time.perf_counter() - t0
        timing[f"sample_nfe{nfe}_molecules"] = summary["molecules"]
    (run / "timing.json").write_text(json.dumps(timing, indent=2))
    return timing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--study", required=True)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--store", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--minutes", type=float, default=5.0, help="training budget per run (runs go side by side)")
    parser.add_argument("--treatments", help="comma-separated (default: the study's)")
    parser.add_argument("--seeds", help="comma-separated (default: the study's)")
    parser.add_argument("--runs", help="explicit TREATMENT:SEED list, comma-separated (instead of treatments x seeds)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--one", nargs=2, metavar=("TREATMENT", "SEED"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        args.treatment, args.seed = args.one[0], int(args.one[1])
        train_and_sample(args)
        return
    study = yaml.safe_load(Path(args.study).read_text())
    treatments = args.treatments.split(",") if args.treatments else study["models"]["treatments"]
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else study["models"]["seeds"]
    runs = ([(r.split(":")[0], int(r.split(":")[1])) for r in args.runs.split(",")] if args.runs
            else [(t, s) for t in treatments for s in seeds])
    Path(args.out).mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS=str(max(1, (os.cpu_count() or 2) // len(runs))))
    jobs = []
    for treatment, seed in runs:
        log = open(Path(args.out) / f"{treatment}-seed{seed}.log", "w")
        cmd = [sys.executable, __file__, "--study", args.study, "--dataset", args.dataset, "--store", args.store,
               "--out", args.out, "--minutes", str(args.minutes), "--device", args.device, "--one", treatment, str(seed)]
        jobs.append((treatment, seed, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)))
    status = {f"{t}-seed{s}": p.wait() for t, s, p in jobs}
    timing = {"wall_s": time.perf_counter() - start, "exit": status}
    for t, s, _ in jobs:
        path = Path(args.out) / f"{t}-seed{s}" / "timing.json"
        if path.is_file():
            timing[f"{t}-seed{s}"] = json.loads(path.read_text())
    (Path(args.out) / "timing.json").write_text(json.dumps(timing, indent=2))
    print(json.dumps(timing, indent=2))
    if any(status.values()):
        raise SystemExit(f"failed runs: {[k for k, v in status.items() if v]} (see their logs in {args.out})")


if __name__ == "__main__":
    main()
