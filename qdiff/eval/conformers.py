"""Conformer-ensemble metrics with every convention stated.

For one molecule, `rmsd[i, j]` is the heavy-atom RMSD between reference conformer i and generated
conformer j (after optimal, symmetry-aware superposition).
  recall    (reference-side): for each reference, the closest generated conformer;
            COV-R = fraction of references with min_j rmsd[i, j] < threshold, AMR-R = mean of
            those minima.
  precision (generated-side): for each generated conformer, the closest reference;
            COV-P = fraction with min_i rmsd[i, j] < threshold, AMR-P = mean of those minima.
The comparison is strict (<), as in torsional-diffusion and ET-Flow. Papers report the mean and
the median over molecules of these per-molecule values, at 0.5 Å (QM9-type sets) and 0.75 Å
(DRUGS). A molecule the model failed on (no usable conformer) is either counted with coverage 0
and no AMR (torsional-diffusion's convention, "zero") or left out (ET-Flow's, "skip").
"""
from __future__ import annotations

import numpy as np

THRESHOLDS = {"qm9": 0.5, "demo-qm9": 0.5, "geom-qm9": 0.5, "geom-drugs": 0.75, "demo-drugs": 0.75}
THRESHOLD_GRID = np.round(np.arange(0.0, 2.5, 0.125), 3)  # torsional-diffusion's grid
FAILURE_CONVENTIONS = ("zero", "skip")


def coverage_amr(rmsd: np.ndarray, threshold: float) -> dict[str, float]:
    """{cov_r, amr_r, cov_p, amr_p} of one molecule: coverage as a fraction, AMR in Å."""
    rmsd = np.asarray(rmsd, dtype=np.float64)
    if rmsd.ndim != 2 or 0 in rmsd.shape:
        raise ValueError(f"rmsd must be a non-empty [n_reference, n_generated] matrix, got shape {rmsd.shape}")
    best_for_ref = rmsd.min(axis=1)
    best_for_gen = rmsd.min(axis=0)
    return {
        "cov_r": float((best_for_ref < threshold).mean()),
        "amr_r": float(best_for_ref.mean()),
        "cov_p": float((best_for_gen < threshold).mean()),
        "amr_p": float(best_for_gen.mean()),
    }


def aggregate(per_molecule: list[dict[str, float] | None], convention: str = "zero") -> dict[str, float]:
    """Mean and median over molecules of cov_r, amr_r, cov_p, amr_p; `None` marks a molecule the
    model failed on, handled by `convention` ("zero": coverage 0 and AMR left out of the AMR
    averages; "skip": the molecule is left out). Includes the counts used."""
    if convention not in FAILURE_CONVENTIONS:
        raise ValueError(f"failure convention must be one of {FAILURE_CONVENTIONS}, got {convention!r}")
    ok = [m for m in per_molecule if m is not None]
    failed = len(per_molecule) - len(ok)
    out: dict[str, float] = {"n_molecules": len(per_molecule), "n_failed": failed, "convention": convention}
    for key in ("cov_r", "cov_p"):
        values = [m[key] for m in ok] + ([0.0] * failed if convention == "zero" else [])
        out[f"{key}_mean"] = float(np.mean(values)) if values else float("nan")
        out[f"{key}_median"] = float(np.median(values)) if values else float("nan")
    for key in ("amr_r", "amr_p"):
        values = [m[key] for m in ok]
        out[f"{key}_mean"] = float(np.mean(values)) if values else float("nan")
        out[f"{key}_median"] = float(np.median(values)) if values else float("nan")
    return out


def coverage_curve(rmsds: list[np.ndarray | None], thresholds=THRESHOLD_GRID, convention: str = "zero") -> dict[str, list[float]]:
    """Mean COV-R and COV-P over molecules at each threshold (for coverage-threshold plots)."""
    curve = {"threshold": [float(t) for t in thresholds], "cov_r": [], "cov_p": []}
    for t in thresholds:
        agg = aggregate([None if r is None else coverage_amr(r, t) for r in rmsds], convention)
        curve["cov_r"].append(agg["cov_r_mean"])
        curve["cov_p"].append(agg["cov_p_mean"])
    return curve


def rmsd_matrix(reference: list, generated: list, max_matches: int = 10_000) -> np.ndarray:
    """Heavy-atom, symmetry-aware RMSD matrix [n_ref, n_gen] between RDKit molecules (one
    conformer each, same graph), as `rdMolAlign.GetBestRMS` computes it for every pair.

    All conformers go into one molecule and `GetAllConformerBestRMS` computes the whole symmetric
    matrix in C++ (about 7x faster than a Python loop over GetBestRMS, identical values; tested).
    `max_matches` caps the symmetry enumeration so that highly symmetric molecules cannot stall
    an evaluation."""
    from rdkit import Chem
    from rdkit.Chem import rdMolAlign

    n_ref, n_gen = len(reference), len(generated)
    if n_ref == 0 or n_gen == 0:
        return np.empty((n_ref, n_gen))
    combined = Chem.RemoveHs(reference[0])
    combined.RemoveAllConformers()
    for mol in list(reference) + list(generated):
        heavy = Chem.RemoveHs(mol)
        if heavy.GetNumAtoms() != combined.GetNumAtoms():
            raise ValueError("rmsd_matrix needs molecules of the same graph")
        combined.AddConformer(Chem.Conformer(heavy.GetConformer()), assignId=True)
    flat = rdMolAlign.GetAllConformerBestRMS(combined, maxMatches=max_matches)
    n = n_ref + n_gen
    full = np.zeros((n, n))
    rows, cols = np.tril_indices(n, k=-1)  # RDKit's order: (1,0), (2,0), (2,1), (3,0), ...
    order = np.lexsort((cols, rows))
    full[rows[order], cols[order]] = flat
    full = full + full.T
    return full[:n_ref, n_ref:]


def molecules_from_positions(template, positions: np.ndarray) -> list:
    """One RDKit molecule per conformer: `template` (with hydrogens, atoms in store order) with
    coordinates positions [n_conf, n_atoms, 3]."""
    from rdkit import Chem

    out = []
    for pos in np.asarray(positions, dtype=np.float64):
        mol = Chem.Mol(template)
        mol.RemoveAllConformers()
        conf = Chem.Conformer(mol.GetNumAtoms())
        for k, p in enumerate(pos):
            conf.SetAtomPosition(k, p.tolist())
        conf.Set3D(True)
        mol.AddConformer(conf, assignId=True)
        out.append(mol)
    return out
