"""Sampling throughput: conformers/s at 50 NFE (ODE, Euler) for a run of the demo or paper size.

    python benchmarks/sample.py [--device cuda] [--precision bf16] [--compile] [--sizes demo,paper] [--molecules 20]

Trains nothing: the networks keep their initial weights (speed does not depend on them). Builds a
demo-drugs store, writes a run folder with an untrained model.pt, and times `qdiff sample`'s
`sample_molecules` (2 x references conformers per molecule, batched over molecules) for the
conventional and quotient samplers. The figure to beat (issue 5): ET-Flow samples 29 conformers/s at
50 NFE on one H200.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import h5py
import torch
import yaml

from qdiff.models import model_from_spec
from qdiff.sample import sample_molecules
from qdiff.train import resolve_config
from sizes import DEMO_MODEL, PAPER_MODEL, demo_drugs_store  # benchmarks/sizes.py

SIZES = {"demo": DEMO_MODEL, "paper": PAPER_MODEL}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--compile", nargs="?", const=True, default=False, metavar="BACKEND",
                        help="torch.compile the network (inductor by default); compile time is excluded")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    parser.add_argument("--sizes", default="demo,paper")
    parser.add_argument("--backend", default="auto", choices=("auto", "e3nn", "cueq"),
                        help="the e3nn network's tensor products (paper size only; the demo EGNN has none)")
    parser.add_argument("--model", type=yaml.safe_load, default={}, metavar="YAML",
                        help="settings merged into the size's model, e.g. '{edge_scalars: 64, edge_vectors: 64}'")
    parser.add_argument("--molecules", type=int, default=20)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--store", type=Path, help="a demo-drugs store to reuse (built there when missing)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = demo_drugs_store(args.store, Path(tmp), max(args.molecules, 10), 5)
        for size in args.sizes.split(","):
            for treatment in ("conventional", "quotient"):
                run = Path(tmp) / f"{size}-{treatment}"
                run.mkdir()
                model_spec = {**SIZES[size], **args.model}
                backend = args.backend if model_spec["name"] == "e3nn" else "auto"
                config = resolve_config({"model": model_spec, "treatment": treatment, "backend": backend})
                model = model_from_spec(config["model"])
                torch.save({"ema": model.state_dict(), "config": json.dumps(config), "store": str(store), "step": 0}, run / "model.pt")
                if args.compile:  # compile outside the timed run
                    start = time.perf_counter()
                    sample_molecules(run, run / "warmup.h5", steps=2, max_molecules=args.molecules, device=args.device, all_molecules=True,
                                     sdf=False, compile=args.compile, precision=args.precision, progress=False)
                    print(f"warm-up (compiling) run: {time.perf_counter() - start:.1f} s", flush=True)
                start = time.perf_counter()
                sample_molecules(run, run / "s.h5", steps=args.steps, max_molecules=args.molecules, device=args.device, all_molecules=True,
                                 sdf=False, compile=args.compile, precision=args.precision, progress=False)
                elapsed = time.perf_counter() - start
                with h5py.File(run / "s.h5") as h5:
                    n = int(h5["conformers/mol"].shape[0])
                print(f"{size:6s} {treatment:12s}: {n} conformers in {elapsed:6.1f} s = {n / elapsed:7.2f} conformers/s "
                      f"at {args.steps} NFE", flush=True)


if __name__ == "__main__":
    main()
