"""The molecule HDF5 store (schema `qdiff.molecules`, DESIGN.md "The HDF5 stores").

Layout: /molecules (id, smiles, atom_ptr, bond_ptr, conf_ptr [n_mol+1] int64, per-molecule
properties), /atoms (z, formal_charge, ... one entry per atom), /bonds (index [n_bond, 2] int32
molecule-local, order, ...), /conformers (mol int32, weight float32, energy float64, pos_ptr
[n_conf+1] int64), /positions float32 [n_conf_atoms, 3], /splits/<name>/{train,val,test} int64
molecule rows, /failures (id, reason). Root attributes carry provenance.

Writing streams: arrays are spooled to raw files beside the target and copied into contiguous
HDF5 datasets at the end, into `<name>.tmp`, which is renamed only when complete. The same inputs
and settings give byte-identical files. Reading memory-maps the contiguous numeric datasets, so
random access is fast and memory does not grow with the dataset.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Iterable

import h5py
import numpy as np

from .. import __version__
from ..atomic import atomic_path
from .records import ATOM_FIELDS, BOND_FIELDS, BOND_ORDERS, MoleculeRecord

SCHEMA = "qdiff.molecules"
SCHEMA_VERSION = 1
SPLIT_PARTS = ("train", "val", "test")
_STR = h5py.string_dtype(encoding="utf-8")
_COPY_ROWS = 1 << 20


class StoreError(ValueError):
    """A store that is missing, of another schema or version, or internally inconsistent."""


def id_list_sha256(ids: Iterable[str]) -> str:
    """sha256 of the IDs joined by newlines (the fingerprint stored with every split)."""
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()


class _Spool:
    """Append-only raw binary spools of fixed-dtype arrays, one file per dataset name."""

    def __init__(self, folder: Path):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.meta: dict[str, tuple[np.dtype, tuple[int, ...], int]] = {}
        self.handles = {}

    def append(self, name: str, array: np.ndarray, dtype) -> None:
        array = np.ascontiguousarray(array, dtype=dtype)
        dt, tail, rows = self.meta.get(name, (np.dtype(dtype), array.shape[1:], 0))
        if array.shape[1:] != tail:
            raise ValueError(f"{name}: row shape {array.shape[1:]} differs from {tail}")
        if name not in self.handles:
            self.handles[name] = open(self.folder / name.replace("/", "__"), "wb")
        self.handles[name].write(array.tobytes())
        self.meta[name] = (dt, tail, rows + array.shape[0])

    def declare(self, name: str, dtype, tail: tuple[int, ...] = ()) -> None:
        self.meta.setdefault(name, (np.dtype(dtype), tail, 0))

    def copy_into(self, h5: h5py.File) -> None:
        for handle in self.handles.values():
            handle.close()
        for name in sorted(self.meta):
            dt, tail, rows = self.meta[name]
            dset = h5.create_dataset(name, shape=(rows, *tail), dtype=dt)
            if rows == 0:
                continue
            data = np.memmap(self.folder / name.replace("/", "__"), dtype=dt, mode="r", shape=(rows, *tail))
            for start in range(0, rows, _COPY_ROWS):
                dset[start : start + _COPY_ROWS] = data[start : start + _COPY_ROWS]
            del data


class MoleculeStoreWriter:
    """Stream molecule records into a new store; use as a context manager.

    `add` validates and appends one record; `add_failure` records a skipped input with its reason;
    `add_split` registers a split by molecule IDs (IDs that did not make it into the store are
    dropped and counted). Nothing appears at `path` unless the block completes.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        dataset: str,
        source: str,
        source_urls: list[str] | None = None,
        raw_sha256: dict[str, str] | None = None,
        settings: dict | None = None,
        property_units: dict[str, str] | None = None,
    ):
        self.path = Path(path)
        self.attrs = {
            "schema": SCHEMA,
            "schema_version": SCHEMA_VERSION,
            "length_unit": "angstrom",
            "dataset": dataset,
            "source": source,
            "source_urls": json.dumps(list(source_urls or [])),
            "raw_sha256": json.dumps(dict(sorted((raw_sha256 or {}).items()))),
            "qdiff_version": __version__,
            "settings": json.dumps(settings or {}, sort_keys=True),
            "bond_order_codes": json.dumps(BOND_ORDERS),
        }
        self.property_units = dict(property_units or {})
        self.ids: list[str] = []
        self.smiles: list[str] = []
        self.properties: dict[str, list[float]] = {k: [] for k in self.property_units}
        self.counts = {"atom": [0], "bond": [0], "conf": [0]}
        self.n_positions = 0
        self.failures: list[tuple[str, str]] = []
        self.splits: dict[str, tuple[dict[str, list[str]], dict]] = {}
        self._row_of: dict[str, int] = {}
        self._spool_dir = self.path.with_name(self.path.name + ".spool")
        self._spool: _Spool | None = None

    def __enter__(self) -> "MoleculeStoreWriter":
        shutil.rmtree(self._spool_dir, ignore_errors=True)
        self._spool = _Spool(self._spool_dir)
        for name, dtype in ATOM_FIELDS.items():
            self._spool.declare(f"atoms/{name}", dtype)
        for name, dtype in BOND_FIELDS.items():
            self._spool.declare(f"bonds/{name}", dtype)
        self._spool.declare("bonds/index", np.int32, (2,))
        for name, dtype in [("conformers/mol", np.int32), ("conformers/weight", np.float32), ("conformers/energy", np.float64)]:
            self._spool.declare(name, dtype)
        self._spool.declare("positions", np.float32, (3,))
        return self

    def add(self, record: MoleculeRecord) -> None:
        record.validate()
        if record.id in self._row_of:
            raise ValueError(f"duplicate molecule id {record.id!r}")
        row = len(self.ids)
        self._row_of[record.id] = row
        self.ids.append(record.id)
        self.smiles.append(record.smiles)
        for key in self.properties:
            self.properties[key].append(float(record.properties.get(key, np.nan)))
        sp = self._spool
        for name, dtype in ATOM_FIELDS.items():
            sp.append(f"atoms/{name}", record.atoms[name], dtype)
        sp.append("bonds/index", record.bond_index, np.int32)
        for name, dtype in BOND_FIELDS.items():
            sp.append(f"bonds/{name}", record.bonds[name], dtype)
        n_conf = record.positions.shape[0]
        sp.append("conformers/mol", np.full(n_conf, row), np.int32)
        sp.append("conformers/weight", record.weights, np.float32)
        sp.append("conformers/energy", record.energies, np.float64)
        sp.append("positions", record.positions.reshape(-1, 3), np.float32)
        self.counts["atom"].append(self.counts["atom"][-1] + record.n_atoms)
        self.counts["bond"].append(self.counts["bond"][-1] + record.bond_index.shape[0])
        self.counts["conf"].append(self.counts["conf"][-1] + n_conf)

    def add_failure(self, mol_id: str, reason: str) -> None:
        self.failures.append((str(mol_id), str(reason)))

    def add_split(self, name: str, parts: dict[str, list[str]], **attrs) -> None:
        unknown = set(parts) - set(SPLIT_PARTS)
        if unknown:
            raise ValueError(f"split {name!r}: unknown parts {sorted(unknown)}; use {SPLIT_PARTS}")
        self.splits[name] = (parts, attrs)

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                self._finish()
        finally:
            shutil.rmtree(self._spool_dir, ignore_errors=True)

    def _finish(self) -> None:
        with atomic_path(self.path) as tmp:
            with h5py.File(tmp, "w", libver=("earliest", "v110"), track_order=True) as h5:
                for key, value in self.attrs.items():
                    h5.attrs[key] = value
                h5.attrs["n_molecules"] = len(self.ids)
                mols = h5.create_group("molecules", track_order=True)
                mols.create_dataset("id", data=np.array(self.ids, dtype=object), dtype=_STR)
                mols.create_dataset("smiles", data=np.array(self.smiles, dtype=object), dtype=_STR)
                for key, ptr in (("atom_ptr", "atom"), ("bond_ptr", "bond"), ("conf_ptr", "conf")):
                    mols.create_dataset(key, data=np.asarray(self.counts[ptr], np.int64))
                for key, values in self.properties.items():
                    mols.create_dataset(key, data=np.asarray(values, np.float64))
                    mols[key].attrs["units"] = self.property_units[key]
                n_conf = self.counts["conf"][-1]
                self._spool.copy_into(h5)
                atom_ptr = np.asarray(self.counts["atom"], np.int64)
                conf_mol = h5["conformers/mol"][:] if n_conf else np.zeros(0, np.int64)
                sizes = np.diff(atom_ptr)[conf_mol] if n_conf else np.zeros(0, np.int64)
                h5.create_dataset("conformers/pos_ptr", data=np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64))
                h5["positions"].attrs["units"] = "angstrom"
                self._write_splits(h5)
                fails = h5.create_group("failures", track_order=True)
                fails.create_dataset("id", data=np.array([f[0] for f in self.failures], dtype=object), dtype=_STR)
                fails.create_dataset("reason", data=np.array([f[1] for f in self.failures], dtype=object), dtype=_STR)

    def _write_splits(self, h5: h5py.File) -> None:
        group = h5.create_group("splits", track_order=True)
        for name in sorted(self.splits):
            parts, attrs = self.splits[name]
            g = group.create_group(name, track_order=True)
            dropped = 0
            for part in SPLIT_PARTS:
                ids = parts.get(part, [])
                kept = [i for i in ids if i in self._row_of]
                dropped += len(ids) - len(kept)
                dset = g.create_dataset(part, data=np.asarray([self._row_of[i] for i in kept], np.int64))
                dset.attrs["sha256"] = id_list_sha256(kept)
                dset.attrs["requested"] = len(ids)
            g.attrs["dropped_missing"] = dropped
            for key, value in sorted(attrs.items()):
                g.attrs[key] = value if isinstance(value, (int, float, str)) else json.dumps(value)


class MoleculeStore:
    """Read access to a molecule store, validated on open. Numeric arrays are memory-mapped."""

    REQUIRED = (
        "molecules/id", "molecules/smiles", "molecules/atom_ptr", "molecules/bond_ptr", "molecules/conf_ptr",
        "atoms/z", "bonds/index", "conformers/mol", "conformers/weight", "conformers/pos_ptr", "positions",
        "failures/id", "failures/reason",
    )

    def __init__(self, path: str | Path, schema: str = SCHEMA):
        self.path = Path(path)
        if not self.path.is_file():
            raise StoreError(f"{self.path}: no such store")
        try:
            self.h5 = h5py.File(self.path, "r")
        except OSError as err:
            raise StoreError(f"{self.path}: not a readable HDF5 file ({err})") from err
        self._validate(schema)
        self._cache: dict[str, np.ndarray] = {}
        self.atom_ptr = self.array("molecules/atom_ptr")
        self.bond_ptr = self.array("molecules/bond_ptr")
        self.conf_ptr = self.array("molecules/conf_ptr")
        self.pos_ptr = self.array("conformers/pos_ptr")

    def _validate(self, schema: str) -> None:
        attrs = self.h5.attrs
        found = attrs.get("schema")
        if found != schema:
            raise StoreError(f"{self.path}: schema {found!r}, expected {schema!r}")
        version = int(attrs.get("schema_version", -1))
        if version != SCHEMA_VERSION:
            raise StoreError(
                f"{self.path}: schema_version {version}, this qdiff reads {SCHEMA_VERSION}; "
                "re-run `qdiff featurize` to rebuild the store"
            )
        missing = [name for name in self.REQUIRED if name not in self.h5]
        if missing:
            raise StoreError(f"{self.path}: missing datasets {missing}")
        n = self.h5["molecules/id"].shape[0]
        for ptr, target in (("atom_ptr", "atoms/z"), ("bond_ptr", "bonds/index"), ("conf_ptr", "conformers/mol")):
            p = self.h5[f"molecules/{ptr}"]
            if p.shape != (n + 1,) or p[0] != 0 or p[-1] != self.h5[target].shape[0]:
                raise StoreError(f"{self.path}: molecules/{ptr} does not index {target}")
        pp = self.h5["conformers/pos_ptr"]
        if pp.shape != (self.h5["conformers/mol"].shape[0] + 1,) or pp[-1] != self.h5["positions"].shape[0]:
            raise StoreError(f"{self.path}: conformers/pos_ptr does not index positions")

    # ------------------------------------------------------------------ raw arrays
    def array(self, name: str) -> np.ndarray:
        """A numeric dataset as a read-only memmap (contiguous, allocated) or an in-memory copy."""
        if name not in self._cache:
            dset = self.h5[name]
            offset = dset.id.get_offset()
            if offset is not None and dset.chunks is None and dset.compression is None and dset.size:
                self._cache[name] = np.memmap(self.path, dtype=dset.dtype, mode="r", offset=offset, shape=dset.shape)
            else:
                self._cache[name] = dset[()]
        return self._cache[name]

    def strings(self, name: str) -> list[str]:
        return [s.decode() if isinstance(s, bytes) else s for s in self.h5[name][()]]

    # ------------------------------------------------------------------ contents
    def __len__(self) -> int:
        return int(self.h5["molecules/id"].shape[0])

    @property
    def n_conformers(self) -> int:
        return int(self.h5["conformers/mol"].shape[0])

    @property
    def attrs(self) -> dict:
        return {k: (v.item() if hasattr(v, "item") else v) for k, v in self.h5.attrs.items()}

    def ids(self) -> list[str]:
        return self.strings("molecules/id")

    def property_names(self) -> list[str]:
        fixed = {"id", "smiles", "atom_ptr", "bond_ptr", "conf_ptr"}
        return [k for k in self.h5["molecules"] if k not in fixed]

    def split_names(self) -> list[str]:
        return list(self.h5["splits"]) if "splits" in self.h5 else []

    def split(self, name: str, part: str) -> np.ndarray:
        """Molecule rows of a split part; KeyError naming the available splits if absent."""
        if name not in self.split_names():
            raise KeyError(f"{self.path}: no split {name!r}; available: {self.split_names()}")
        return self.h5[f"splits/{name}/{part}"][()]

    def failures(self) -> list[tuple[str, str]]:
        return list(zip(self.strings("failures/id"), self.strings("failures/reason")))

    def n_atoms(self) -> np.ndarray:
        return np.diff(self.atom_ptr)

    def conformer_positions(self, conf: int) -> np.ndarray:
        return self.array("positions")[self.pos_ptr[conf] : self.pos_ptr[conf + 1]]

    def molecule(self, row: int) -> dict:
        """Atoms, bonds and all conformers of molecule `row` as numpy arrays."""
        a0, a1 = self.atom_ptr[row], self.atom_ptr[row + 1]
        b0, b1 = self.bond_ptr[row], self.bond_ptr[row + 1]
        c0, c1 = self.conf_ptr[row], self.conf_ptr[row + 1]
        return {
            "id": self.h5["molecules/id"][row].decode(),
            "smiles": self.h5["molecules/smiles"][row].decode(),
            "atoms": {k: np.asarray(self.array(f"atoms/{k}")[a0:a1]) for k in self.h5["atoms"]},
            "bond_index": np.asarray(self.array("bonds/index")[b0:b1]),
            "bonds": {k: np.asarray(self.array(f"bonds/{k}")[b0:b1]) for k in self.h5["bonds"] if k != "index"},
            "positions": np.asarray(self.array("positions")[self.pos_ptr[c0] : self.pos_ptr[c1]]).reshape(c1 - c0, a1 - a0, 3),
            "weights": np.asarray(self.array("conformers/weight")[c0:c1]),
            "energies": np.asarray(self.array("conformers/energy")[c0:c1]),
        }

    def content_hashes(self) -> dict[str, str]:
        """sha256 per molecule ID over its SMILES, atoms, bonds and coordinates (for `data diff`)."""
        out = {}
        smiles = self.h5["molecules/smiles"]
        for row, mol_id in enumerate(self.ids()):
            m = self.molecule(row)
            h = hashlib.sha256(smiles[row])
            for key in sorted(m["atoms"]):
                h.update(m["atoms"][key].tobytes())
            h.update(m["bond_index"].tobytes())
            h.update(m["positions"].tobytes())
            out[mol_id] = h.hexdigest()
        return out

    def close(self) -> None:
        self._cache.clear()
        self.h5.close()

    def __enter__(self) -> "MoleculeStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
