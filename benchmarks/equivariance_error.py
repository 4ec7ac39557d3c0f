"""Rotation-equivariance error of the e3nn network per precision: |f(R x) - R f(x)| / |f(x)|.

    python benchmarks/equivariance_error.py [--device cuda] [--sizes demo,paper] [--backend auto]

On a demo-drugs batch (48 molecules, GEOM-DRUGS-shaped) with random proper rotations, for the
untrained network at the paper study's size (and a small one): fp32, and bf16 autocast around the
network (CUDA only: e3nn's Linear refuses CPU autocast's mixed dtypes). fp32 should sit at float
rounding (~1e-6); bf16's 8-bit mantissa gives ~1e-2. Prints the median and worst of 8 rotations.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch
from scipy.spatial.transform import Rotation

from qdiff.data.dataset import ConformerDataset, collate_molecules
from qdiff.models import model_from_spec
from qdiff.train import network_autocast, resolve_device
from sizes import PAPER_MODEL, demo_drugs_store  # benchmarks/sizes.py

SIZES = {"small": {"name": "e3nn", "symmetry": "so3", "scalars": 32, "vectors": 8, "layers": 3}, "paper": PAPER_MODEL}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--sizes", default="small,paper")
    parser.add_argument("--backend", default="auto", choices=("auto", "e3nn", "cueq"))
    parser.add_argument("--store", type=Path, help="a demo-drugs store to reuse (built there when missing)")
    args = parser.parse_args()
    device = resolve_device(args.device)
    precisions = ("fp32", "bf16") if device.type == "cuda" else ("fp32",)
    with tempfile.TemporaryDirectory() as tmp:
        store = demo_drugs_store(args.store, Path(tmp), 48, 2)
        data = ConformerDataset(store)
        batch = {k: v.to(device) for k, v in collate_molecules([data[i % len(data)] for i in range(48)]).items()}
        x, t = batch["pos"], torch.full((48,), 0.5, device=device)
        rotations = torch.tensor(Rotation.random(8, random_state=0).as_matrix(), dtype=torch.float32, device=device)
        for size in args.sizes.split(","):
            torch.manual_seed(0)
            net = model_from_spec(SIZES[size]).to(device).eval()
            net.set_backend(args.backend)
            for precision in precisions:
                errors = []
                with torch.no_grad(), network_autocast(precision, device.type):
                    out = net(batch, x, t).float()
                    for R in rotations:
                        rotated = net(batch, x @ R.T, t).float()
                        errors.append(float((rotated - out @ R.T).norm() / out.norm()))
                print(f"{size:6s} {precision}: relative equivariance error median {statistics.median(errors):.2e}, "
                      f"worst {max(errors):.2e} (8 rotations, batch 48, backend {args.backend})", flush=True)


if __name__ == "__main__":
    main()
