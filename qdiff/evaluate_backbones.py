"""`qdiff evaluate` on a backbone samples store: weight-free Cα metrics against the reference store.

Per sample: length, consecutive Cα-Cα distance statistics, clashes (Cα pairs |i-j| >= 3 closer than
3 Å), radius of gyration, P-SEA-like secondary structure from Cα. Over the set:
- geometry: mean Cα-Cα, fraction of samples whose consecutive distances all lie within 3.8 ± 0.5 Å,
  clash rate (fraction of samples with a clash) and clashes per 100 residues;
- Rg ~ a N^ν fitted on samples and on the reference set;
- secondary-structure composition (H / E / C fractions) of samples and reference;
- distribution distances: Jensen-Shannon distance (base 2) between the samples' and the reference's
  Cα pair-distance histograms (|i-j| >= 3, 1 Å bins to 60 Å) and between their Rg / N^0.38 histograms;
- TM-score (TM-align through `tmtools`): diversity = mean pairwise TM-score among samples (each pair
  normalized by the shorter chain; lower is more diverse), greedy clusters at TM 0.5 per sample, and
  novelty = mean over samples of the highest TM-score to a reference training chain (normalized by the
  sample's length; lower is more novel). A diverged sample (non-finite coordinates, or Rg above
  ten times the compact size 2.2 N^0.38 Å for its length) is left out of both: TM-align on such a
  cloud says nothing and can take minutes per chain (1e3-1e4 Å coordinates). The chains left out and
  why are recorded (metrics.tm_skipped, tm_skipped_chains); the geometry metrics keep them.
The reference set is the store's test split (or all chains); novelty uses its training split.
With `designability > 0`, the first that many samples go through the optional ProteinMPNN + ESMFold
tier (qdiff.eval.designability); without the tools it is recorded as skipped with the reason.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .atomic import atomic_write_text, check_not_an_input
from .data.identity import samples_provenance
from .data.protein_store import PROTEIN_SAMPLES_SCHEMA, ProteinStore
from .data.residues import CA
from .eval.backbones import (CA_CA, RG_EXPONENT, RG_PREFACTOR, ca_bond_stats, clash_count, fit_power_law, histogram_jsd, pair_distances,
                             radius_of_gyration, secondary_structure)
from .progress import progress_bar
from .settings import check_declared

PAIR_BINS = np.arange(0.0, 61.0, 1.0)
RG_BINS = np.linspace(0.0, 6.0, 31)
TM_CLUSTER = 0.5
DIVERGED_RG_FACTOR = 10.0


def diverged(ca: np.ndarray) -> str | None:
    """Why TM-align is skipped for a sample (non-finite or far beyond any folded size), else None."""
    if not np.isfinite(ca).all():
        return "non-finite coordinates"
    rg, bound = radius_of_gyration(ca), DIVERGED_RG_FACTOR * RG_PREFACTOR * len(ca) ** RG_EXPONENT
    if rg > bound:
        return f"diverged: Rg {rg:.0f} Å > {bound:.0f} Å ({DIVERGED_RG_FACTOR:g} x 2.2 N^0.38)"
    return None


def ca_traces(store: ProteinStore, rows) -> list[np.ndarray]:
    """Cα coordinates [n, 3] of the resolved residues of each chain row."""
    out = []
    for row in rows:
        chain = store.chain(int(row))
        out.append(np.asarray(chain["atom_pos"][chain["atom_mask"][:, CA], CA], dtype=np.float64))
    return out


def _reference_split(store: ProteinStore, settings: dict) -> str | None:
    """The split whose test chains are the reference set: the run's (recorded by `qdiff sample`),
    else the store's first. Samples drawn with --all-molecules compare with every chain (as
    recorded). A store without splits is otherwise an error."""
    names = store.split_names()
    if settings.get("all_molecules"):
        return None
    if settings.get("split") in names:
        return settings["split"]
    if names:
        return names[0]
    raise ValueError(f"{store.path}: the reference store has no split, so there are no test chains to compare with; "
                     "featurize with a split, or sample with --all-molecules to compare with every chain (recorded)")


def _split_rows(store: ProteinStore, part: str, split: str | None = None) -> np.ndarray:
    if split is None:
        return np.arange(len(store))
    return store.split(split, part)


def per_sample(ca: np.ndarray) -> dict:
    ss = secondary_structure(ca)
    stats = ca_bond_stats(ca)
    return {"length": len(ca), "ca_ca_mean": stats["mean"], "ca_ca_max_abs_dev": stats["max_abs_dev"], "clashes": clash_count(ca),
            "rg": radius_of_gyration(ca), "helix": ss.count("H") / len(ss), "strand": ss.count("E") / len(ss), "coil": ss.count("C") / len(ss)}


def tm_score(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(TM-score normalized by a's length, by b's length) from TM-align (tmtools)."""
    from tmtools import tm_align

    result = tm_align(np.ascontiguousarray(a), np.ascontiguousarray(b), "G" * len(a), "G" * len(b))
    return float(result.tm_norm_chain1), float(result.tm_norm_chain2)


def tm_diversity(traces: list[np.ndarray], max_pairs: int, rng: np.random.Generator) -> dict:
    n = len(traces)
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    if len(pairs) > max_pairs:
        pairs = [pairs[k] for k in rng.choice(len(pairs), max_pairs, replace=False)]
    scores = {}
    for i, j in pairs:
        s_i, s_j = tm_score(traces[i], traces[j])
        scores[(i, j)] = s_i if len(traces[i]) <= len(traces[j]) else s_j
    clusters: list[int] = []  # greedy: a sample joins the first cluster whose centre it matches at TM >= 0.5
    for i in range(n):
        if not any(scores.get((min(c, i), max(c, i)), 0.0) >= TM_CLUSTER for c in clusters):
            clusters.append(i)
    return {"pairwise_tm_mean": float(np.mean(list(scores.values()))) if scores else float("nan"), "pairs": len(scores),
            "clusters": len(clusters), "clusters_per_sample": len(clusters) / n if n else float("nan"),
            "clusters_exact": len(scores) == n * (n - 1) // 2}


def designability_tier(generated: list[np.ndarray], names: list[str], count: int, workdir: Path) -> dict:
    """Write the first `count` samples as Cα PDB files and run the designability tier on them."""
    from .data.ca_pdb import write_ca_pdb
    from .eval.designability import designability, designability_tools

    tools = designability_tools()
    if tools is None:
        return designability([], None, workdir)
    pdbs = []
    for ca, name in list(zip(generated, names))[:count]:
        path = workdir / "backbones" / f"{name}.pdb"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_ca_pdb(ca, path)
        pdbs.append(path)
    return designability(pdbs, tools, workdir)


def evaluate_backbones(samples: str | Path, reference: str | Path, out: str | Path, *, max_pairs: int = 2000,
                       novelty_reference: int = 200, seed: int = 0, designability: int = 0, progress: bool = True) -> dict:
    check_declared({"max_pairs": max_pairs, "novelty_reference": novelty_reference, "designability": designability}, "evaluate")
    check_not_an_input(out, samples, reference)
    rng = np.random.default_rng(seed)
    with ProteinStore(samples, PROTEIN_SAMPLES_SCHEMA) as s, ProteinStore(reference) as r:
        stores = samples_provenance(s.attrs, samples, reference)  # the store versions behind them, checked
        generated = ca_traces(s, range(len(s)))
        names = s.ids()
        settings = json.loads(s.attrs.get("settings", "{}"))
        split = _reference_split(r, settings)
        reference_set = ca_traces(r, _split_rows(r, "test", split))
        train_rows = _split_rows(r, "train", split)
        if len(train_rows) > novelty_reference:
            train_rows = rng.choice(train_rows, novelty_reference, replace=False)
        training = ca_traces(r, train_rows)
        meta = {"nfe_per_sample": s.attrs.get("nfe_per_sample"), "mean_path_length": s.attrs.get("mean_path_length"), **stores}
        dataset = r.attrs["dataset"]
    if not generated:
        raise ValueError(f"{samples}: no samples")
    rows = [per_sample(ca) for ca in progress_bar(generated, desc="geometry", unit="chain", enabled=progress)]
    ref_rows = [per_sample(ca) for ca in reference_set]
    lengths, rgs = np.array([x["length"] for x in rows]), np.array([x["rg"] for x in rows])

    def power_law(rs):
        if len({x["length"] for x in rs}) < 2:
            return {"a": float("nan"), "nu": float("nan")}
        a, nu = fit_power_law([x["length"] for x in rs], [x["rg"] for x in rs])
        return {"a": a, "nu": nu}

    skipped = {name: why for name, why in ((name, diverged(ca)) for name, ca in zip(names, generated)) if why}
    alignable = [ca for name, ca in zip(names, generated) if name not in skipped]
    novelty = []
    for ca in progress_bar(alignable, desc="novelty", unit="chain", enabled=progress and bool(training)):
        novelty.append(max((tm_score(ca, ref)[0] for ref in training), default=float("nan")))
    metrics = {
        "n_samples": len(rows),
        "ca_ca_mean": float(np.mean([x["ca_ca_mean"] for x in rows])),
        "valid_ca_geometry": float(np.mean([x["ca_ca_max_abs_dev"] <= 0.5 for x in rows])),
        "clash_rate": float(np.mean([x["clashes"] > 0 for x in rows])),
        "clashes_per_100_residues": float(100 * sum(x["clashes"] for x in rows) / lengths.sum()),
        "rg_power_law": power_law(rows), "reference_rg_power_law": power_law(ref_rows),
        "secondary_structure": {k: float(np.mean([x[k] for x in rows])) for k in ("helix", "strand", "coil")},
        "reference_secondary_structure": {k: float(np.mean([x[k] for x in ref_rows])) if ref_rows else float("nan")
                                          for k in ("helix", "strand", "coil")},
        "pair_distance_jsd": histogram_jsd(np.concatenate([pair_distances(ca) for ca in generated]),
                                           np.concatenate([pair_distances(ca) for ca in reference_set]) if reference_set else [], PAIR_BINS),
        "rg_jsd": histogram_jsd(rgs / lengths**RG_EXPONENT, [x["rg"] / x["length"] ** RG_EXPONENT for x in ref_rows], RG_BINS),
        "tm_diversity": tm_diversity(alignable, max_pairs, rng),
        "novelty_max_tm_mean": float(np.nanmean(novelty)) if novelty and training else float("nan"),
        "novelty_reference_chains": len(training),
        "tm_skipped": len(skipped),
    }
    result = {
        "kind": "backbones", "dataset": dataset, "samples": str(samples), "reference": str(reference),
        "sampler": settings.get("sampler"), "treatment": settings.get("treatment"), "seed": settings.get("seed"),
        "steps": settings.get("steps"), **meta, "ideal_ca_ca": CA_CA, "reference_chains": len(reference_set),
        "reference_split": split if split is not None else "none: every chain (--all-molecules)",
        "all_molecules": bool(settings.get("all_molecules", False)), "lengths_from": settings.get("lengths_from", "not recorded"),
        "metrics": metrics, "per_sample": rows, "tm_skipped_chains": skipped,
    }
    if designability:
        result["designability"] = designability_tier(generated, names, designability, Path(out).with_suffix(".designability"))
    atomic_write_text(out, json.dumps(result, indent=2, sort_keys=True, default=float) + "\n")
    return result
