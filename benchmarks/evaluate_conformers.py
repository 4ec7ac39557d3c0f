"""Time `qdiff evaluate` (RDKit RMSD matrices + COV/AMR) on drug-like molecules.

    python benchmarks/evaluate_conformers.py [--molecules 200] [--conformers 10] [--workers 2]

Builds a demo-drugs store (RDKit ETKDGv3 + MMFF ensembles of the ligands shipped in the RDKit
wheel), writes a samples store with 2 x references perturbed conformers per molecule, and prints
molecules/s of the evaluation. Target (issue): the 1,000-molecule GEOM-DRUGS test set (about 100
references and 200 samples per molecule there) in under 10 minutes on 2 cores; scale the printed
rate by the RMSD pairs per molecule to compare.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from qdiff.data.featurize import featurize
from qdiff.data.molecule_store import SAMPLES_SCHEMA, MoleculeStore, MoleculeStoreWriter
from qdiff.data.records import MoleculeRecord
from qdiff.evaluate import evaluate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--molecules", type=int, default=200)
    parser.add_argument("--conformers", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--geom-references", type=int, default=100, help="assumed references per GEOM-DRUGS test molecule")
    parser.add_argument("--plausibility", type=int, default=2, help="conformers per molecule checked for plausibility (0: off)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="qdiff-eval-bench-"))
    ref = work / "ref.h5"
    featurize("demo-drugs", None, ref, {"max_molecules": args.molecules, "n_conformers": args.conformers}, progress=False)
    samples = work / "samples.h5"
    rng = np.random.default_rng(0)
    pairs = 0
    with MoleculeStore(ref) as r, MoleculeStoreWriter(samples, dataset="demo-drugs", source="benchmark", schema=SAMPLES_SCHEMA) as w:
        for row in range(len(r)):
            m = r.molecule(row)
            pos = np.concatenate([m["positions"], m["positions"]]) + rng.normal(0, 0.3, (2 * len(m["positions"]),) + m["positions"].shape[1:])
            pairs += len(m["positions"]) * len(pos)
            w.add(MoleculeRecord(m["id"], m["smiles"], m["atoms"], m["bond_index"], m["bonds"], pos.astype(np.float32),
                                 np.ones(len(pos), np.float32), np.full(len(pos), np.nan)), source_row=row)
        n = len(r)
    start = time.perf_counter()
    result = evaluate(samples, ref, work / "metrics.json", workers=args.workers, plausibility_per_molecule=args.plausibility, progress=False)
    wall = time.perf_counter() - start
    print(f"evaluate: {n} molecules, {pairs} RMSD pairs, plausibility on {result['plausibility_conformers']} conformers, "
          f"workers={args.workers}: {wall:.1f} s, {n / wall:.1f} molecules/s, {pairs / wall:.0f} pairs/s; "
          f"failed {result['metrics']['zero']['n_failed']}")
    if args.plausibility:
        print("(the projection below needs --plausibility 0: RMSD cost scales with pairs, plausibility with molecules)")
    else:
        refs = args.geom_references
        geom_pairs = 1000 * refs * 2 * refs  # 1,000 test molecules, `refs` references each, 2 x references samples
        print(f"projected RMSD part for the GEOM-DRUGS test set (1,000 molecules x {refs} references x {2 * refs} samples, "
              f"an assumption: --geom-references): {geom_pairs / (pairs / wall) / 60:.1f} min (target < 10 min on 2 cores)")


if __name__ == "__main__":
    main()
