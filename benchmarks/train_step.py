"""Training throughput: steps/s and molecules/s of `qdiff train`'s step, conventional vs quotient.

    python benchmarks/train_step.py [--device cuda] [--precision bf16] [--compile] [--sizes demo,paper] [--steps 20]

Builds a demo-drugs store (RDKit ETKDG ensembles of drug-like ligands, GEOM-DRUGS-shaped), then
times full optimizer steps (collate, prior, interpolant, forward, treatment loss, backward, clip,
AdamW, EMA) of the real Trainer on it:
- demo: the demo study's EGNN (hidden 32 x 3 layers), batch 32;
- paper: the e3nn network of studies/paper.yaml (its `models.train.model`, about ET-Flow's size:
  8.7M parameters), batch 48 (ET-Flow's GEOM-DRUGS setting; `--batch` overrides it).
For each size it prints the median step time, steps/s, molecules/s and the quotient treatment's
overhead over the conventional one (the paper: 4.10 vs 4.19 it/s on one A100). The figure to beat
(issue 5): ET-Flow's own network at its GEOM-DRUGS settings trains at 343 molecules/s (batch 48) on
one H200 in fp32.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import yaml

from qdiff.train import Trainer, resolve_config
from sizes import DEMO_MODEL, PAPER_MODEL, demo_drugs_store  # benchmarks/sizes.py

SIZES = {
    "demo": (DEMO_MODEL, 32),
    "paper": (PAPER_MODEL, 48),
}


def time_steps(store: Path, run: Path, model: dict, batch: int, treatment: str, device: str, precision: str, steps: int,
               compile: bool | str = False, backend: str = "auto") -> list[float]:
    config = resolve_config({"model": model, "batch_size": batch, "treatment": treatment, "device": device, "backend": backend,
                             "precision": precision, "compile": compile, "steps": 10**9, "val_every": 0, "checkpoint_every": 10**9,
                             "checkpoint_minutes": 1e9})
    trainer = Trainer(store, run, config, progress=False)
    print(f"{model['name']}: {sum(p.numel() for p in trainer.model.parameters()):,} parameters", flush=True)
    if trainer.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times, data_times, warmup = [], [], 3 if compile else 2
    for k in range(steps + warmup):
        start = time.perf_counter()
        batch = trainer.batch(trainer._next_indices())
        data_times.append(time.perf_counter() - start)
        trainer.train_step(batch)
        if trainer.device.type == "cuda":
            torch.cuda.synchronize()
        if k == 0 and compile:
            print(f"first (compiling) step: {time.perf_counter() - start:.1f} s", flush=True)
        if k >= warmup:
            times.append(time.perf_counter() - start)
    print(f"data (store reads, collate, host-to-device): {1000 * statistics.median(data_times):.1f} ms/step", flush=True)
    if trainer.device.type == "cuda":
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB", flush=True)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--compile", nargs="?", const=True, default=False, metavar="BACKEND",
                        help="torch.compile the network (inductor by default); compile time is excluded")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    parser.add_argument("--sizes", default="demo,paper")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, help="override the size's batch")
    parser.add_argument("--backend", default="auto", choices=("auto", "e3nn", "cueq"),
                        help="the e3nn network's tensor products (paper size only; the demo EGNN has none)")
    parser.add_argument("--model", type=yaml.safe_load, default={}, metavar="YAML",
                        help="settings merged into the size's model, e.g. '{edge_scalars: 64, edge_vectors: 16}'")
    parser.add_argument("--molecules", type=int, default=120, help="demo-drugs molecules to build the store from")
    parser.add_argument("--store", type=Path, help="a demo-drugs store to reuse (built there when missing)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = demo_drugs_store(args.store, Path(tmp), args.molecules, 2)
        for size in args.sizes.split(","):
            model, batch = SIZES[size]
            model, batch = {**model, **args.model}, args.batch or batch
            medians = {}
            for treatment in ("conventional", "quotient"):
                times = time_steps(store, Path(tmp) / f"{size}-{treatment}", model, batch, treatment, args.device, args.precision,
                                   args.steps, args.compile, args.backend if model["name"] == "e3nn" else "auto")
                medians[treatment] = statistics.median(times)
                print(f"{size:6s} {treatment:12s} batch {batch}: {1000 * medians[treatment]:8.1f} ms/step  "
                      f"{1 / medians[treatment]:6.2f} steps/s  {batch / medians[treatment]:7.1f} molecules/s", flush=True)
            overhead = medians["quotient"] / medians["conventional"] - 1
            print(f"{size:6s} quotient overhead over conventional: {100 * overhead:+.1f}% of a step (median of {args.steps} steps)")


if __name__ == "__main__":
    main()
