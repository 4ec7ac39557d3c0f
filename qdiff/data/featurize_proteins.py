"""`qdiff featurize pdb` and `qdiff featurize demo-backbones`: protein stores."""
from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from ..progress import progress_bar
from .download import digest
from .protein_store import ProteinStoreWriter
from .residues import CA, UNKNOWN
from .sources.backbones import generate_backbones
from .sources.mmcif import ChainRecord, StructureRecord, parse_structure
from .sources.pdb import CLUSTERS_NAME, SNAPSHOT_NAME, cluster_split, read_clusters

PDB_DEFAULTS = {
    "methods": ["X-RAY DIFFRACTION", "ELECTRON MICROSCOPY", "SOLUTION NMR"],
    "max_resolution": None, "min_length": 32, "max_length": 256, "max_unknown_fraction": 0.1,
    "max_chains": None, "model": None, "cluster_file": None, "released_before": None, "split": [0.8, 0.1, 0.1],
    "seed": 0, "workers": None,
}
BACKBONE_DEFAULTS = {"n_backbones": 300, "seed": 0, "min_length": 32, "max_length": 128, "split": [0.8, 0.1, 0.1]}
SYNTHETIC_SOURCE = "synthetic idealized Cα backbones (qdiff demo-backbones generator; not PDB data)"


def _parse_job(args) -> StructureRecord | str:
    path, pid, model, expected_sha = args
    try:
        if digest(path).sha256 != expected_sha:
            return f"sha256 of {path.name} differs from snapshot.json (cache changed since the fetch)"
        record = parse_structure(path.read_bytes(), pid, model)
        record.sha256 = expected_sha
        return record
    except (OSError, ValueError) as err:
        return str(err)


def _chain_problem(chain: ChainRecord, s: dict) -> str | None:
    n = len(chain)
    if not s["min_length"] <= n <= s["max_length"]:
        return f"length {n} outside [{s['min_length']}, {s['max_length']}]"
    unknown = float((chain.aatype == UNKNOWN).mean())
    if unknown > s["max_unknown_fraction"]:
        return f"unknown-residue fraction {unknown:.2f} above {s['max_unknown_fraction']}"
    if not chain.atom_mask[:, CA].any():
        return "no CA atom"
    return None


def _structure_problem(record: StructureRecord, s: dict) -> str | None:
    if record.status == "OBS":
        return "obsolete entry (status OBS)"
    if s["methods"] and record.method not in s["methods"]:
        return f"method {record.method} not in {s['methods']}"
    if s["max_resolution"] is not None and record.method != "SOLUTION NMR" and not (record.resolution <= s["max_resolution"]):
        return f"resolution {record.resolution} Å worse than {s['max_resolution']} Å (or unknown)"
    if s["released_before"] and record.release_date and record.release_date >= s["released_before"]:
        return f"released {record.release_date}, not before {s['released_before']}"
    if not record.chains:
        return "no protein chain (polypeptide(L) entity)"
    if s["max_chains"] is not None and len(record.chains) > s["max_chains"]:
        return f"{len(record.chains)} protein chains, more than max_chains={s['max_chains']}"
    return None


def featurize_pdb(raw: Path, out: Path, settings: dict, progress: bool = True) -> dict:
    """A protein store from `<raw>/snapshot.json` and the cached entries it lists."""
    s = {**PDB_DEFAULTS, **settings}
    snapshot_path = raw / SNAPSHOT_NAME
    if not snapshot_path.is_file():
        raise FileNotFoundError(f"{snapshot_path}: missing; run `qdiff fetch pdb --ids ... --dest {raw}` first")
    try:
        snapshot = json.loads(snapshot_path.read_text())
        entries = snapshot["entries"]
        if not isinstance(entries, dict):
            raise TypeError("`entries` is not a mapping")
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as err:
        from ..errors import InputFileError

        raise InputFileError(f"{snapshot_path}: not a snapshot of `qdiff fetch pdb` ({type(err).__name__}: {err}); "
                             f"re-run `qdiff fetch pdb --dest {raw}`") from err
    ok_ids = [pid for pid in sorted(entries) if "error" not in entries[pid] and "excluded" not in entries[pid]]
    jobs = [(raw / "entries" / f"{pid}.cif.gz", pid, s["model"], entries[pid]["sha256"]) for pid in ok_ids]
    workers = int(s["workers"] or min(os.cpu_count() or 1, 8))
    cluster_file = s["cluster_file"] or (raw / CLUSTERS_NAME if (raw / CLUSTERS_NAME).is_file() else None)
    clusters = read_clusters(cluster_file) if cluster_file else None
    n_structures = n_chains = 0
    chain_entities: dict[str, str] = {}
    with ProteinStoreWriter(out, dataset="pdb", source="rcsb", snapshot_date=snapshot.get("snapshot_date", ""),
                            base_url=snapshot.get("base_url", ""), settings=s) as writer:
        for pid in sorted(entries):
            if "error" in entries[pid]:
                writer.add_failure(pid.lower(), f"download: {entries[pid]['error']}")
            elif "excluded" in entries[pid]:  # not the version the snapshot saw (qdiff.data.sources.pdb.fetch_pdb)
                writer.add_failure(pid.lower(), f"snapshot {snapshot.get('snapshot_date', '')}: {entries[pid]['excluded']}")
        if workers > 1 and len(jobs) > 1:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                results = list(progress_bar(pool.map(_parse_job, jobs, chunksize=4), total=len(jobs), desc="pdb", unit="entry", enabled=progress))
        else:
            results = [_parse_job(j) for j in progress_bar(jobs, desc="pdb", unit="entry", enabled=progress)]
        for (_, pid, _, _), record in zip(jobs, results):
            if isinstance(record, str):
                writer.add_failure(pid.lower(), record)
                continue
            problem = _structure_problem(record, s)
            if problem:
                writer.add_failure(record.id, problem)
                continue
            kept = []
            for chain in record.chains:
                reason = _chain_problem(chain, s)
                if reason:
                    writer.add_failure(chain.id, reason)
                else:
                    kept.append(chain)
            if not kept:
                writer.add_failure(record.id, "no chain passed the chain filters")
                continue
            record.chains = kept
            writer.add(record)
            n_structures += 1
            n_chains += len(kept)
            chain_entities.update({c.id: f"{record.id}_{c.entity}" for c in kept})
        method = "RCSB sequence clusters, whole clusters per part" if clusters else "whole entries per part (no cluster file)"
        writer.add_split("cluster" if clusters else "entry", cluster_split(chain_entities, clusters, s["split"], int(s["seed"])),
                         method=method, seed=int(s["seed"]), fractions=s["split"])
    return {"structures": n_structures, "chains": n_chains, "failures": len(entries) - n_structures, "source": "rcsb"}


def featurize_demo_backbones(out: Path, settings: dict, progress: bool = True) -> dict:
    """The synthetic Cα set: one chain per structure, CA only, residue type unknown."""
    s = {**BACKBONE_DEFAULTS, **settings}
    chains = generate_backbones(int(s["n_backbones"]), int(s["seed"]), int(s["min_length"]), int(s["max_length"]))
    with ProteinStoreWriter(out, dataset="demo-backbones", source=SYNTHETIC_SOURCE, settings=s) as writer:
        for name, motif, ca in progress_bar(chains, desc="demo-backbones", unit="chain", enabled=progress):
            n = ca.shape[0]
            pos = np.zeros((n, 37, 3), np.float32)
            pos[:, CA] = ca
            mask = np.zeros((n, 37), bool)
            mask[:, CA] = True
            chain = ChainRecord(f"{name}_A", "1", np.full(n, UNKNOWN, np.uint8), np.arange(1, n + 1, dtype=np.int32),
                                np.full(n, b" ", "S1"), pos, mask, np.zeros((n, 37), np.float16), np.zeros(n, bool))
            writer.add(StructureRecord(name, f"synthetic:{motif}", float("nan"), "", "", "SYNTHETIC", "", [chain]))
        writer.add_split("random", cluster_split({f"{c[0]}_A": f"{c[0]}_1" for c in chains}, None, s["split"], int(s["seed"])),
                         method="seeded random, one chain per structure", seed=int(s["seed"]))
    return {"structures": len(chains), "chains": len(chains), "failures": 0, "source": SYNTHETIC_SOURCE}
