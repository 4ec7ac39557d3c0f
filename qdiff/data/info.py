"""`qdiff data info` and `qdiff data diff` for molecule stores."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .molecule_store import MoleculeStore


def store_info(path: str | Path) -> dict:
    """Counts, split sizes, atom-count histogram, failures by reason and provenance."""
    with MoleculeStore(path) as store:
        attrs = store.attrs
        n_atoms = store.n_atoms()
        hist = {}
        if len(n_atoms):
            edges = np.arange(0, int(n_atoms.max()) + 6, 5)
            counts, _ = np.histogram(n_atoms, bins=edges)
            hist = {f"{int(a)}-{int(b) - 1}": int(c) for a, b, c in zip(edges[:-1], edges[1:], counts) if c}
        splits = {name: {part: int(store.h5[f"splits/{name}/{part}"].shape[0]) for part in store.h5[f"splits/{name}"]}
                  for name in store.split_names()}
        reasons: dict[str, int] = {}
        for _, reason in store.failures():
            key = reason.rsplit(": ", 1)[-1][:80]
            reasons[key] = reasons.get(key, 0) + 1
        return {
            "path": str(path),
            "schema": f"{attrs['schema']} v{attrs['schema_version']}",
            "dataset": attrs["dataset"],
            "source": attrs["source"],
            "molecules": len(store),
            "conformers": store.n_conformers,
            "atoms": int(store.atom_ptr[-1]),
            "bonds": int(store.bond_ptr[-1]),
            "atoms_per_molecule": {"min": int(n_atoms.min()) if len(n_atoms) else 0, "mean": float(n_atoms.mean()) if len(n_atoms) else 0.0, "max": int(n_atoms.max()) if len(n_atoms) else 0},
            "atom_count_histogram": hist,
            "splits": splits,
            "failures": len(store.failures()),
            "failure_reasons": reasons,
            "properties": store.property_names(),
            "provenance": {k: attrs[k] for k in ("source_urls", "raw_sha256", "qdiff_version", "settings") if k in attrs},
        }


def format_info(info: dict) -> str:
    lines = [
        f"{info['path']}: {info['schema']}, dataset {info['dataset']} (source {info['source']})",
        f"  molecules {info['molecules']:,}  conformers {info['conformers']:,}  atoms {info['atoms']:,}  bonds {info['bonds']:,}",
        f"  atoms per molecule: min {info['atoms_per_molecule']['min']}, mean {info['atoms_per_molecule']['mean']:.1f}, max {info['atoms_per_molecule']['max']}",
        "  atom-count histogram: " + ", ".join(f"{k}: {v}" for k, v in info["atom_count_histogram"].items()),
    ]
    for name, parts in info["splits"].items():
        lines.append(f"  split {name}: " + ", ".join(f"{p} {n:,}" for p, n in parts.items()))
    lines.append(f"  failures {info['failures']:,}" + "".join(f"\n    {n:6d}  {r}" for r, n in sorted(info["failure_reasons"].items(), key=lambda kv: -kv[1])))
    lines.append(f"  properties: {', '.join(info['properties']) or '-'}")
    for key, value in info["provenance"].items():
        lines.append(f"  {key}: {value}")
    return "\n".join(lines)


def store_diff(old: str | Path, new: str | Path) -> dict:
    """Molecules added, removed and changed (by ID and a content hash) between two stores."""
    with MoleculeStore(old) as a, MoleculeStore(new) as b:
        ha, hb = a.content_hashes(), b.content_hashes()
        split_changes = {}
        for name in sorted(set(a.split_names()) | set(b.split_names())):
            sa = {p: a.h5[f"splits/{name}/{p}"].attrs["sha256"] for p in a.h5[f"splits/{name}"]} if name in a.split_names() else None
            sb = {p: b.h5[f"splits/{name}/{p}"].attrs["sha256"] for p in b.h5[f"splits/{name}"]} if name in b.split_names() else None
            if sa != sb:
                split_changes[name] = {"old": sa, "new": sb}
    added = sorted(set(hb) - set(ha))
    removed = sorted(set(ha) - set(hb))
    changed = sorted(k for k in set(ha) & set(hb) if ha[k] != hb[k])
    return {"old": str(old), "new": str(new), "added": added, "removed": removed, "changed": changed,
            "unchanged": len(set(ha) & set(hb)) - len(changed), "splits_changed": split_changes}


def format_diff(diff: dict, limit: int = 20) -> str:
    lines = [f"{diff['old']} -> {diff['new']}: +{len(diff['added'])} added, -{len(diff['removed'])} removed, "
             f"~{len(diff['changed'])} changed, {diff['unchanged']} unchanged"]
    for key, sign in (("added", "+"), ("removed", "-"), ("changed", "~")):
        for mol in diff[key][:limit]:
            lines.append(f"  {sign} {mol}")
        if len(diff[key]) > limit:
            lines.append(f"  ... {len(diff[key]) - limit} more {key}")
    for name, change in diff["splits_changed"].items():
        lines.append(f"  split {name} changed: {json.dumps(change)}")
    return "\n".join(lines)
