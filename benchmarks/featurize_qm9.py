"""Featurize the full QM9 offline from the qm9pack package, then time random-access reads.

    python benchmarks/featurize_qm9.py [--out /tmp/qm9.h5] [--reads 20000]

Prints molecules/s, wall time and peak memory (RSS of this process, which does the work) of
`qdiff featurize qm9` from qm9pack, and samples/s of random access through ConformerDataset.
Targets (issue): featurize < 3 min on 2 cores with peak memory < 3 GB; reads > 20,000/s.
"""
from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from qdiff.data.dataset import ConformerDataset, collate_molecules
from qdiff.data.featurize import featurize
from qdiff.data.fetch import fetch_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=None)
    parser.add_argument("--reads", type=int, default=20000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="qdiff-bench-"))
    out = Path(args.out) if args.out else work / "qm9.h5"
    raw = work / "raw"
    start = time.perf_counter()
    fetch_dataset("qm9", "qm9pack", raw)
    summary = featurize("qm9", raw, out, progress=False)
    wall = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    n = summary["molecules"] + summary["failures"]
    print(f"featurize qm9 (qm9pack): {summary['molecules']} molecules, {summary['failures']} failures")
    print(f"  wall {wall:.1f} s, {n / wall:.0f} molecules/s, peak RSS {peak_mb:.0f} MB, store {out.stat().st_size / 2**20:.0f} MiB")

    ds = ConformerDataset(out, "edm", "train")
    idx = np.random.default_rng(0).integers(len(ds), size=args.reads)
    ds[0]
    start = time.perf_counter()
    for i in idx:
        ds[int(i)]
    rate = args.reads / (time.perf_counter() - start)
    start = time.perf_counter()
    for k in range(0, 4096, 64):
        collate_molecules([ds[int(i)] for i in idx[k : k + 64]])
    batch_rate = 4096 / (time.perf_counter() - start)
    print(f"random access: {rate:.0f} samples/s per process ({batch_rate:.0f} samples/s including collate, batch 64)")


if __name__ == "__main__":
    main()
