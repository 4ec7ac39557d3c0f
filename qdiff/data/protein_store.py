"""The protein HDF5 store (schema `qdiff.proteins`, DESIGN.md "The HDF5 stores").

/structures: id, method, resolution float32, revision_date, sha256, chain_ptr [n_struct+1];
/chains: id ("1abc_A"), residue_ptr [n_chain+1], sequence, n_breaks int32;
/residues: aatype uint8 (0-19, 20 unknown), resnum int32, icode S1, atom_pos float32 [n, 37, 3],
atom_mask bool [n, 37], b_factor float16 [n, 37], break_before bool;
/splits/<name>/{train,val,test} (chain rows); /failures (id, reason). Root attributes: schema,
atom_layout="atom37", snapshot_date, base_url, provenance. Written and read like the molecule store.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import h5py
import numpy as np

from .h5store import STR_DTYPE, H5Store, Spool, StoreWriter
from .residues import ATOM37
from .sources.mmcif import StructureRecord

SCHEMA = "qdiff.proteins"
PROTEIN_SAMPLES_SCHEMA = "qdiff.samples.proteins"
SCHEMA_VERSION = 1
RESIDUE_FIELDS = {
    "aatype": (np.uint8, ()), "resnum": (np.int32, ()), "icode": ("S1", ()), "atom_pos": (np.float32, (37, 3)),
    "atom_mask": (np.bool_, (37,)), "b_factor": (np.float16, (37,)), "break_before": (np.bool_, ()),
}


class ProteinStoreWriter(StoreWriter):
    """Stream structures (with their chains) into a new protein store; a context manager."""

    def __init__(self, path: str | Path, *, dataset: str, source: str, snapshot_date: str = "",
                 base_url: str = "", settings: dict | None = None, schema: str = SCHEMA):
        super().__init__(path, {
            "schema": schema, "schema_version": SCHEMA_VERSION, "length_unit": "angstrom",
            "atom_layout": "atom37", "atom37_names": json.dumps(ATOM37), "dataset": dataset, "source": source,
            "snapshot_date": snapshot_date, "base_url": base_url, "settings": json.dumps(settings or {}, sort_keys=True),
        })
        self.structures: list[StructureRecord] = []
        self.chain_ids: list[str] = []
        self.sequences: list[str] = []
        self.n_breaks: list[int] = []
        self.chain_ptr = [0]
        self.residue_ptr = [0]
        self.source_rows: list[int] = []

    def _declare(self, spool: Spool) -> None:
        for name, (dtype, tail) in RESIDUE_FIELDS.items():
            spool.declare(f"residues/{name}", dtype, tail)

    def add(self, structure: StructureRecord, source_row: int | None = None) -> None:
        """Append a structure and its (already filtered) chains; chain IDs must be unique.
        `source_row` links generated chains to a reference chain row (samples stores write
        /chains/source_row; -1 when a sample has no reference)."""
        for chain in structure.chains:
            if source_row is not None:
                self.source_rows.append(int(source_row))
            if chain.id in self._row_of:
                raise ValueError(f"duplicate chain id {chain.id!r}")
            self._row_of[chain.id] = len(self.chain_ids)
            self.chain_ids.append(chain.id)
            self.sequences.append(chain.sequence)
            self.n_breaks.append(int(chain.break_before.sum()))
            for name, (dtype, _) in RESIDUE_FIELDS.items():
                self._spool.append(f"residues/{name}", getattr(chain, name), dtype)
            self.residue_ptr.append(self.residue_ptr[-1] + len(chain))
        self.structures.append(StructureRecord(structure.id, structure.method, structure.resolution, structure.release_date,
                                               structure.revision_date, structure.status, structure.sha256))
        self.chain_ptr.append(len(self.chain_ids))

    def _write(self, h5: h5py.File) -> None:
        s = h5.create_group("structures", track_order=True)
        strings = lambda values: np.array(values, dtype=object)  # noqa: E731
        s.create_dataset("id", data=strings([x.id for x in self.structures]), dtype=STR_DTYPE)
        s.create_dataset("method", data=strings([x.method for x in self.structures]), dtype=STR_DTYPE)
        s.create_dataset("resolution", data=np.asarray([x.resolution for x in self.structures], np.float32))
        s.create_dataset("release_date", data=strings([x.release_date for x in self.structures]), dtype=STR_DTYPE)
        s.create_dataset("revision_date", data=strings([x.revision_date for x in self.structures]), dtype=STR_DTYPE)
        s.create_dataset("sha256", data=strings([x.sha256 for x in self.structures]), dtype=STR_DTYPE)
        s.create_dataset("chain_ptr", data=np.asarray(self.chain_ptr, np.int64))
        c = h5.create_group("chains", track_order=True)
        c.create_dataset("id", data=strings(self.chain_ids), dtype=STR_DTYPE)
        c.create_dataset("sequence", data=strings(self.sequences), dtype=STR_DTYPE)
        c.create_dataset("n_breaks", data=np.asarray(self.n_breaks, np.int32))
        c.create_dataset("residue_ptr", data=np.asarray(self.residue_ptr, np.int64))
        if self.source_rows:
            if len(self.source_rows) != len(self.chain_ids):
                raise ValueError("give a source_row for every chain of a samples store, or for none")
            c.create_dataset("source_row", data=np.asarray(self.source_rows, np.int64))
        self._spool.copy_into(h5)
        h5["residues/atom_pos"].attrs["units"] = "angstrom"
        h5.attrs["n_structures"] = len(self.structures)
        h5.attrs["n_chains"] = len(self.chain_ids)


class ProteinStore(H5Store):
    """Read access to a protein store, validated on open; residue arrays are memory-mapped."""

    SCHEMA = SCHEMA
    SCHEMA_VERSION = SCHEMA_VERSION
    REQUIRED = ("structures/id", "structures/chain_ptr", "chains/id", "chains/residue_ptr", "residues/aatype",
                "residues/atom_pos", "residues/atom_mask", "failures/id", "failures/reason")
    POINTERS = (("structures/chain_ptr", "chains/id"), ("chains/residue_ptr", "residues/aatype"))

    def __init__(self, path: str | Path, schema: str = SCHEMA):
        super().__init__(path, schema)
        self.chain_ptr = self.array("structures/chain_ptr")
        self.residue_ptr = self.array("chains/residue_ptr")

    def __len__(self) -> int:
        """Number of chains (the unit of splits and of the Dataset)."""
        return int(self.h5["chains/id"].shape[0])

    @property
    def n_structures(self) -> int:
        return int(self.h5["structures/id"].shape[0])

    def ids(self) -> list[str]:
        return self.strings("chains/id")

    def chain_lengths(self) -> np.ndarray:
        return np.diff(self.residue_ptr)

    def chain(self, row: int) -> dict:
        r0, r1 = int(self.residue_ptr[row]), int(self.residue_ptr[row + 1])
        out = {name: np.asarray(self.array(f"residues/{name}")[r0:r1]) for name in RESIDUE_FIELDS}
        out["id"] = self.h5["chains/id"][row].decode()
        out["sequence"] = self.h5["chains/sequence"][row].decode()
        return out

    def structure_table(self) -> dict[str, dict]:
        """Entry ID -> method, resolution, revision date, sha256 and its chain IDs."""
        ids, chain_ids = self.strings("structures/id"), self.ids()
        methods, revisions, sums = self.strings("structures/method"), self.strings("structures/revision_date"), self.strings("structures/sha256")
        resolution = self.h5["structures/resolution"][()]
        return {
            ids[i]: {"method": methods[i], "resolution": float(resolution[i]), "revision_date": revisions[i], "sha256": sums[i],
                     "chains": chain_ids[self.chain_ptr[i] : self.chain_ptr[i + 1]]}
            for i in range(len(ids))
        }

    def content_hashes(self) -> dict[str, str]:
        """sha256 per chain over its residue types, numbering and atom coordinates and masks."""
        out = {}
        for row, chain_id in enumerate(self.ids()):
            c = self.chain(row)
            h = hashlib.sha256()
            for name in ("aatype", "resnum", "icode", "atom_pos", "atom_mask"):
                h.update(c[name].tobytes())
            out[chain_id] = h.hexdigest()
        return out
