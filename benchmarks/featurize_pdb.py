"""Featurize PDB entries from a local cache and print entries/s, residues/s and peak memory.

    python benchmarks/featurize_pdb.py [--cache resources/pdb] [--copies 20] [--workers 2]

With `--cache` it featurizes a folder written by `qdiff fetch pdb`. Without, it builds a cache
from the X-ray entries in ../shared/data/pdb (1A8O, 1GBT, 4CUP, 2XHE), each copied `--copies`
times under distinct IDs. Target (issue): at least 20 entries/s on 2 cores for typical X-ray
entries.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import resource
import shutil
import tempfile
import time
from pathlib import Path

from qdiff.data.featurize import featurize
from qdiff.data.protein_store import ProteinStore

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "pdb"


def build_cache(copies: int) -> Path:
    cache = Path(tempfile.mkdtemp(prefix="qdiff-pdb-bench-"))
    (cache / "entries").mkdir()
    entries = {}
    for k, pid in enumerate(["1A8O", "1GBT", "4CUP", "2XHE"]):
        for c in range(copies):
            new = f"{k + 1}B{c:02d}"
            dst = cache / "entries" / f"{new}.cif.gz"
            shutil.copy(SHARED / f"{pid}.cif.gz", dst)
            entries[new] = {"sha256": hashlib.sha256(dst.read_bytes()).hexdigest()}
    (cache / "snapshot.json").write_text(json.dumps({"snapshot_date": "benchmark", "base_url": "local", "entries": entries}))
    return cache


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache")
    parser.add_argument("--copies", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    cache = Path(args.cache) if args.cache else build_cache(args.copies)
    out = Path(tempfile.mkdtemp(prefix="qdiff-pdb-out-")) / "pdb.h5"
    start = time.perf_counter()
    summary = featurize("pdb", cache, out, {"workers": args.workers, "min_length": 1, "max_length": 100000}, progress=False)
    wall = time.perf_counter() - start
    with ProteinStore(out) as store:
        residues = int(store.residue_ptr[-1])
    n = len(json.loads((cache / "snapshot.json").read_text())["entries"])
    self_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    child_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"featurize pdb: {n} entries -> {summary['structures']} structures, {summary['chains']} chains, {residues} residues, workers={args.workers}")
    print(f"  wall {wall:.2f} s, {n / wall:.1f} entries/s, {residues / wall:.0f} residues/s, "
          f"peak RSS {self_mb:.0f} MB (main) / {child_mb:.0f} MB (largest worker)")


if __name__ == "__main__":
    main()
