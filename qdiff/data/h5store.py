"""Shared machinery of the HDF5 stores: streamed writing into contiguous datasets, splits and
failure tables, and a validated, memory-mapped reader base class."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Iterable

import h5py
import numpy as np

from ..errors import InputFileError
from .identity import CONTENT_ATTR, content_sha256

SPLIT_PARTS = ("train", "val", "test")
STR_DTYPE = h5py.string_dtype(encoding="utf-8")
_COPY_ROWS = 1 << 20


class StoreError(InputFileError):
    """A store that is missing, of another schema or version, or internally inconsistent (a
    ValueError, as before; exit status 3 at the command line)."""


def id_list_sha256(ids: Iterable[str]) -> str:
    """sha256 of the IDs joined by newlines (the fingerprint stored with every split)."""
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()


class Spool:
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



def write_splits(h5: h5py.File, splits: dict, row_of: dict[str, int]) -> None:
    """/splits/<name>/<part>: int64 rows of the IDs present (missing IDs dropped and counted),
    each part with the sha256 of its ID list."""
    group = h5.create_group("splits", track_order=True)
    for name in sorted(splits):
        parts, attrs = splits[name]
        g = group.create_group(name, track_order=True)
        dropped = 0
        for part in SPLIT_PARTS:
            ids = parts.get(part, [])
            kept = [i for i in ids if i in row_of]
            dropped += len(ids) - len(kept)
            dset = g.create_dataset(part, data=np.asarray([row_of[i] for i in kept], np.int64))
            dset.attrs["sha256"] = id_list_sha256(kept)
            dset.attrs["requested"] = len(ids)
        g.attrs["dropped_missing"] = dropped
        for key, value in sorted(attrs.items()):
            g.attrs[key] = value if isinstance(value, (int, float, str)) else json.dumps(value)


def write_failures(h5: h5py.File, failures: list[tuple[str, str]]) -> None:
    fails = h5.create_group("failures", track_order=True)
    fails.create_dataset("id", data=np.array([f[0] for f in failures], dtype=object), dtype=STR_DTYPE)
    fails.create_dataset("reason", data=np.array([f[1] for f in failures], dtype=object), dtype=STR_DTYPE)


class StoreWriter:
    """Base of the streaming writers: provenance attributes, failures, splits by ID, the spool
    folder's lifecycle and the atomic rename. Subclasses declare spooled arrays in `_declare`,
    keep `self._row_of` (ID -> row) and write their own groups in `_write(h5)`."""

    def __init__(self, path: str | Path, attrs: dict):
        from .. import __version__

        self.path = Path(path)
        self.attrs = {**attrs, "qdiff_version": __version__}
        self.failures: list[tuple[str, str]] = []
        self.splits: dict[str, tuple[dict[str, list[str]], dict]] = {}
        self._row_of: dict[str, int] = {}
        self._spool_dir = self.path.with_name(self.path.name + ".spool")
        self._spool: Spool | None = None

    def _declare(self, spool: "Spool") -> None: ...

    def _write(self, h5: h5py.File) -> None: ...

    def __enter__(self):
        shutil.rmtree(self._spool_dir, ignore_errors=True)
        self._spool = Spool(self._spool_dir)
        self._declare(self._spool)
        return self

    def add_failure(self, item_id: str, reason: str) -> None:
        """Record a skipped input and why; the store's /failures table lists them."""
        self.failures.append((str(item_id), str(reason)))

    def add_split(self, name: str, parts: dict[str, list[str]], **attrs) -> None:
        """Register a split by IDs; IDs absent from the store are dropped and counted at the end."""
        unknown = set(parts) - set(SPLIT_PARTS)
        if unknown:
            raise ValueError(f"split {name!r}: unknown parts {sorted(unknown)}; use {SPLIT_PARTS}")
        self.splits[name] = (parts, attrs)

    def __exit__(self, exc_type, exc, tb) -> None:
        from ..atomic import atomic_path

        try:
            if exc_type is None:
                with atomic_path(self.path) as tmp:
                    with h5py.File(tmp, "w", libver=("earliest", "v110"), track_order=True) as h5:
                        for key, value in self.attrs.items():
                            h5.attrs[key] = value
                        self._write(h5)
                        write_splits(h5, self.splits, self._row_of)
                        write_failures(h5, self.failures)
                        # the store's identity (qdiff.data.identity): one read of what was just written
                        h5.attrs[CONTENT_ATTR] = content_sha256(h5)
        finally:
            shutil.rmtree(self._spool_dir, ignore_errors=True)


class H5Store:
    """Open a store read-only and validate schema, version, required datasets and CSR pointers.
    Subclasses set SCHEMA, SCHEMA_VERSION, REQUIRED and POINTERS ((pointer, indexed dataset))."""

    SCHEMA = ""
    SCHEMA_VERSION = 1
    REQUIRED: tuple[str, ...] = ()
    POINTERS: tuple[tuple[str, str], ...] = ()

    def __init__(self, path: str | Path, schema: str | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise StoreError(f"{self.path}: no such store" + (" (a folder, not a .h5 file)" if self.path.exists() else ""))
        try:
            self.h5 = h5py.File(self.path, "r")
        except OSError as err:
            raise StoreError(f"{self.path}: not a readable HDF5 file ({err})") from err
        self._cache: dict[str, np.ndarray] = {}
        try:
            self._validate(schema or self.SCHEMA)
        except StoreError:
            self.h5.close()
            raise

    def _validate(self, schema: str) -> None:
        attrs = self.h5.attrs
        found = attrs.get("schema")
        if found != schema:
            raise StoreError(f"{self.path}: schema {found!r}, expected {schema!r}")
        version = int(attrs.get("schema_version", -1))
        if version != self.SCHEMA_VERSION:
            raise StoreError(
                f"{self.path}: schema_version {version}, this qdiff reads {self.SCHEMA_VERSION}; "
                "re-run `qdiff featurize` to rebuild the store"
            )
        missing = [name for name in self.REQUIRED if name not in self.h5]
        if missing:
            raise StoreError(f"{self.path}: missing datasets {missing}")
        for ptr, target in self.POINTERS:
            p = self.h5[ptr]
            if p.ndim != 1 or p.shape[0] < 1 or p[0] != 0 or p[-1] != self.h5[target].shape[0] or (np.diff(p[()]) < 0).any():
                raise StoreError(f"{self.path}: {ptr} does not index {target}")

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

    @property
    def attrs(self) -> dict:
        return {k: (v.item() if hasattr(v, "item") else v) for k, v in self.h5.attrs.items()}

    def split_names(self) -> list[str]:
        return list(self.h5["splits"]) if "splits" in self.h5 else []

    def split(self, name: str, part: str) -> np.ndarray:
        """Rows of a split part; KeyError naming the available splits if absent."""
        if name not in self.split_names():
            raise KeyError(f"{self.path}: no split {name!r}; available: {self.split_names()}")
        return self.h5[f"splits/{name}/{part}"][()]

    def split_attrs(self, name: str) -> dict:
        """The attributes a featurizer recorded on split `name` (e.g. `test_conformers`); {} if absent."""
        if name not in self.split_names():
            return {}
        return {k: (v.item() if hasattr(v, "item") else v) for k, v in self.h5[f"splits/{name}"].attrs.items()}

    def failures(self) -> list[tuple[str, str]]:
        return list(zip(self.strings("failures/id"), self.strings("failures/reason")))

    def close(self) -> None:
        self._cache.clear()
        self.h5.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
