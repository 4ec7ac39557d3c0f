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
from pathlib import Path

import h5py
import numpy as np

from .h5store import STR_DTYPE, H5Store, Spool, StoreError, StoreWriter  # noqa: F401 (StoreError re-exported)
from .records import ATOM_FIELDS, BOND_FIELDS, BOND_ORDERS, MoleculeRecord

SCHEMA = "qdiff.molecules"
SAMPLES_SCHEMA = "qdiff.samples.molecules"
SCHEMA_VERSION = 1


class MoleculeStoreWriter(StoreWriter):
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
        schema: str = SCHEMA,
    ):
        super().__init__(path, {
            "schema": schema,
            "schema_version": SCHEMA_VERSION,
            "length_unit": "angstrom",
            "dataset": dataset,
            "source": source,
            "source_urls": json.dumps(list(source_urls or [])),
            "raw_sha256": json.dumps(dict(sorted((raw_sha256 or {}).items()))),
            "settings": json.dumps(settings or {}, sort_keys=True),
            "bond_order_codes": json.dumps(BOND_ORDERS),
        })
        self.property_units = dict(property_units or {})
        self.ids: list[str] = []
        self.smiles: list[str] = []
        self.properties: dict[str, list[float]] = {k: [] for k in self.property_units}
        self.counts = {"atom": [0], "bond": [0], "conf": [0]}
        self.source_rows: list[int] = []

    def _declare(self, spool: Spool) -> None:
        for name, dtype in ATOM_FIELDS.items():
            spool.declare(f"atoms/{name}", dtype)
        for name, dtype in BOND_FIELDS.items():
            spool.declare(f"bonds/{name}", dtype)
        spool.declare("bonds/index", np.int32, (2,))
        for name, dtype in [("conformers/mol", np.int32), ("conformers/weight", np.float32), ("conformers/energy", np.float64)]:
            spool.declare(name, dtype)
        spool.declare("positions", np.float32, (3,))

    def add(self, record: MoleculeRecord, source_row: int | None = None) -> None:
        """Append one record; `source_row` links a generated molecule to its reference-store row
        (samples stores write /molecules/source_row)."""
        record.validate()
        if source_row is not None:
            self.source_rows.append(int(source_row))
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

    def _write(self, h5: h5py.File) -> None:
        h5.attrs["n_molecules"] = len(self.ids)
        mols = h5.create_group("molecules", track_order=True)
        mols.create_dataset("id", data=np.array(self.ids, dtype=object), dtype=STR_DTYPE)
        mols.create_dataset("smiles", data=np.array(self.smiles, dtype=object), dtype=STR_DTYPE)
        for key, ptr in (("atom_ptr", "atom"), ("bond_ptr", "bond"), ("conf_ptr", "conf")):
            mols.create_dataset(key, data=np.asarray(self.counts[ptr], np.int64))
        if self.source_rows:
            if len(self.source_rows) != len(self.ids):
                raise ValueError("give a source_row for every molecule of a samples store, or for none")
            mols.create_dataset("source_row", data=np.asarray(self.source_rows, np.int64))
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


class MoleculeStore(H5Store):
    """Read access to a molecule store, validated on open. Numeric arrays are memory-mapped."""

    SCHEMA = SCHEMA
    SCHEMA_VERSION = SCHEMA_VERSION
    REQUIRED = (
        "molecules/id", "molecules/smiles", "molecules/atom_ptr", "molecules/bond_ptr", "molecules/conf_ptr",
        "atoms/z", "bonds/index", "conformers/mol", "conformers/weight", "conformers/pos_ptr", "positions",
        "failures/id", "failures/reason",
    )
    POINTERS = (
        ("molecules/atom_ptr", "atoms/z"), ("molecules/bond_ptr", "bonds/index"),
        ("molecules/conf_ptr", "conformers/mol"), ("conformers/pos_ptr", "positions"),
    )

    def __init__(self, path: str | Path, schema: str = SCHEMA):
        super().__init__(path, schema)
        self.atom_ptr = self.array("molecules/atom_ptr")
        self.bond_ptr = self.array("molecules/bond_ptr")
        self.conf_ptr = self.array("molecules/conf_ptr")
        self.pos_ptr = self.array("conformers/pos_ptr")

    def __len__(self) -> int:
        return int(self.h5["molecules/id"].shape[0])

    @property
    def n_conformers(self) -> int:
        return int(self.h5["conformers/mol"].shape[0])

    def ids(self) -> list[str]:
        return self.strings("molecules/id")

    def property_names(self) -> list[str]:
        fixed = {"id", "smiles", "atom_ptr", "bond_ptr", "conf_ptr", "source_row"}
        return [k for k in self.h5["molecules"] if k not in fixed]

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
