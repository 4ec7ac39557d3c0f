"""`qdiff data info` and `qdiff data diff` for molecule stores."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .molecule_store import MoleculeStore


def store_schema(path: str | Path) -> str:
    """The `schema` attribute of an HDF5 store ('' if absent); a StoreError names an unreadable file."""
    import h5py

    from .h5store import StoreError

    if not Path(path).is_file():
        raise StoreError(f"{path}: no such store" + ("" if not Path(path).exists() else " (a folder, not a .h5 file)"))
    try:
        with h5py.File(path, "r") as h5:
            return str(h5.attrs.get("schema", ""))
    except OSError as err:
        raise StoreError(f"{path}: not a readable HDF5 file ({err})") from err


def _histogram(values: np.ndarray, width: int) -> dict[str, int]:
    if not len(values):
        return {}
    edges = np.arange(0, int(values.max()) + width + 1, width)
    counts, _ = np.histogram(values, bins=edges)
    return {f"{int(a)}-{int(b) - 1}": int(c) for a, b, c in zip(edges[:-1], edges[1:], counts) if c}


def _failure_reasons(failures) -> dict[str, int]:
    reasons: dict[str, int] = {}
    for _, reason in failures:
        key = reason.rsplit(": ", 1)[-1][:80]
        reasons[key] = reasons.get(key, 0) + 1
    return reasons


def _splits(store) -> dict:
    return {name: {part: int(store.h5[f"splits/{name}/{part}"].shape[0]) for part in store.h5[f"splits/{name}"]}
            for name in store.split_names()}


def store_info(path: str | Path) -> dict:
    """Counts, split sizes, size histogram, failures by reason and provenance (either schema)."""
    schema = store_schema(path)
    if schema in ("qdiff.proteins", "qdiff.samples.proteins"):
        return protein_info(path, schema)
    with MoleculeStore(path, "qdiff.samples.molecules" if schema == "qdiff.samples.molecules" else "qdiff.molecules") as store:
        attrs = store.attrs
        n_atoms = store.n_atoms()
        hist = _histogram(n_atoms, 5)
        splits = _splits(store)
        reasons = _failure_reasons(store.failures())
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
            "provenance": {k: attrs[k] for k in ("content_sha256", "source_urls", "raw_sha256", "qdiff_version", "settings") if k in attrs},
        }


def protein_info(path: str | Path, schema: str = "qdiff.proteins") -> dict:
    from .protein_store import ProteinStore

    with ProteinStore(path, schema) as store:
        attrs = store.attrs
        lengths = store.chain_lengths()
        return {
            "path": str(path), "schema": f"{attrs['schema']} v{attrs['schema_version']}", "dataset": attrs["dataset"],
            "source": attrs["source"], "snapshot_date": attrs.get("snapshot_date", ""), "structures": store.n_structures,
            "chains": len(store), "residues": int(store.residue_ptr[-1]),
            "residues_per_chain": {"min": int(lengths.min()) if len(lengths) else 0, "mean": float(lengths.mean()) if len(lengths) else 0.0,
                                   "max": int(lengths.max()) if len(lengths) else 0},
            "length_histogram": _histogram(lengths, 32), "splits": _splits(store), "failures": len(store.failures()),
            "failure_reasons": _failure_reasons(store.failures()),
            "provenance": {k: attrs[k] for k in ("content_sha256", "base_url", "qdiff_version", "settings") if k in attrs},
        }


def format_info(info: dict) -> str:
    if "chains" in info:
        lines = [
            f"{info['path']}: {info['schema']}, dataset {info['dataset']} (source {info['source']}), snapshot {info['snapshot_date'] or '-'}",
            f"  structures {info['structures']:,}  chains {info['chains']:,}  residues {info['residues']:,}",
            f"  residues per chain: min {info['residues_per_chain']['min']}, mean {info['residues_per_chain']['mean']:.1f}, max {info['residues_per_chain']['max']}",
            "  chain-length histogram: " + ", ".join(f"{k}: {v}" for k, v in info["length_histogram"].items()),
        ]
        return "\n".join(lines + _common_lines(info))
    lines = [
        f"{info['path']}: {info['schema']}, dataset {info['dataset']} (source {info['source']})",
        f"  molecules {info['molecules']:,}  conformers {info['conformers']:,}  atoms {info['atoms']:,}  bonds {info['bonds']:,}",
        f"  atoms per molecule: min {info['atoms_per_molecule']['min']}, mean {info['atoms_per_molecule']['mean']:.1f}, max {info['atoms_per_molecule']['max']}",
        "  atom-count histogram: " + ", ".join(f"{k}: {v}" for k, v in info["atom_count_histogram"].items()),
    ]
    lines.append(f"  properties: {', '.join(info['properties']) or '-'}")
    return "\n".join(lines + _common_lines(info))


def _common_lines(info: dict) -> list[str]:
    lines = [f"  split {name}: " + ", ".join(f"{p} {n:,}" for p, n in parts.items()) for name, parts in info["splits"].items()]
    lines.append(f"  failures {info['failures']:,}" + "".join(f"\n    {n:6d}  {r}" for r, n in sorted(info["failure_reasons"].items(), key=lambda kv: -kv[1])))
    lines += [f"  {key}: {value}" for key, value in info["provenance"].items()]
    return lines


def store_diff(old: str | Path, new: str | Path) -> dict:
    """Items (molecules, or chains) added, removed and changed (by ID and a content hash) between
    two stores; for protein stores also the entries whose latest revision date changed."""
    schema = store_schema(old)
    if store_schema(new) != schema:
        raise ValueError(f"cannot diff a {schema!r} store against a {store_schema(new)!r} store")
    proteins = schema in ("qdiff.proteins", "qdiff.samples.proteins")
    if proteins:
        from .protein_store import ProteinStore as Store
    else:
        Store = MoleculeStore
    revised = []
    with Store(old, schema) as a, Store(new, schema) as b:
        ha, hb = a.content_hashes(), b.content_hashes()
        if proteins:
            ta, tb = a.structure_table(), b.structure_table()
            revised = sorted(k for k in set(ta) & set(tb) if ta[k]["revision_date"] != tb[k]["revision_date"] or ta[k]["sha256"] != tb[k]["sha256"])
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
            "unchanged": len(set(ha) & set(hb)) - len(changed), "revised_entries": revised, "splits_changed": split_changes}


def format_diff(diff: dict, limit: int = 20) -> str:
    lines = [f"{diff['old']} -> {diff['new']}: +{len(diff['added'])} added, -{len(diff['removed'])} removed, "
             f"~{len(diff['changed'])} changed, {diff['unchanged']} unchanged"]
    for key, sign in (("added", "+"), ("removed", "-"), ("changed", "~")):
        for mol in diff[key][:limit]:
            lines.append(f"  {sign} {mol}")
        if len(diff[key]) > limit:
            lines.append(f"  ... {len(diff[key]) - limit} more {key}")
    for entry in diff.get("revised_entries", [])[:limit]:
        lines.append(f"  r {entry} (new revision or new file)")
    for name, change in diff["splits_changed"].items():
        lines.append(f"  split {name} changed: {json.dumps(change)}")
    return "\n".join(lines)
