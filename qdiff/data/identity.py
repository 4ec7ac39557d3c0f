"""A store's identity: the sha256 of its content, recorded in the store when it is written.

Every HDF5 store qdiff writes (datasets, samples) carries `content_sha256`, a digest of its
logical content: every group and dataset by name, with dtype, shape, bytes and attributes, and the
root attributes except `qdiff_version` (a new qdiff that writes the same data writes the same
store) and the digest itself. It is computed once, when the store is written (one read of the
data just written), so checking which store a checkpoint, model, samples or metrics file belongs
to costs one attribute read, whatever the store's size. Stores written before the attribute
existed are hashed on demand (the same digest, `recorded: false`).

The identity (path, dataset, schema, snapshot date where there is one, content sha256) travels
into checkpoints, `model.pt`, samples stores and metrics files; two stores are the same version
exactly when their `content_sha256` agree.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

CONTENT_ATTR = "content_sha256"
# Root attributes left out of the digest: the digest itself, and the version of the writer.
_UNHASHED_ATTRS = (CONTENT_ATTR, "qdiff_version")
_ROWS = 1 << 16


def _plain(value):
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()] if value.dtype == object else value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _attrs_text(attrs, skip=()) -> bytes:
    items = {str(k): _plain(attrs[k]) for k in attrs.keys() if k not in skip}
    return json.dumps(items, sort_keys=True, default=str).encode()


def _feed(h: "hashlib._Hash", tag: str, payload: bytes) -> None:
    h.update(f"{tag}:{len(payload)}:".encode())
    h.update(payload)


def content_sha256(h5) -> str:
    """The content digest of an open h5py File (read or write mode): every object in sorted name
    order; variable-length strings one by one with length prefixes, other data as little-endian
    C-order bytes."""
    import h5py

    h = hashlib.sha256()
    _feed(h, "root-attrs", _attrs_text(h5.attrs, _UNHASHED_ATTRS))
    names: list[str] = []
    h5.visit(names.append)
    for name in sorted(names):
        obj = h5[name]
        if isinstance(obj, h5py.Group):
            _feed(h, f"group {name}", _attrs_text(obj.attrs))
            continue
        _feed(h, f"dataset {name}", json.dumps([str(obj.dtype), list(obj.shape)]).encode() + _attrs_text(obj.attrs))
        if obj.shape == ():
            _feed(h, "scalar", repr(_plain(obj[()])).encode())
            continue
        strings = obj.dtype.kind == "O"  # variable-length strings; fixed-length ones hash as bytes
        for start in range(0, obj.shape[0], _ROWS):
            block = obj[start : start + _ROWS]
            if strings:
                for item in np.asarray(block, dtype=object).ravel():
                    _feed(h, "s", item if isinstance(item, bytes) else str(item).encode())
            else:
                block = np.ascontiguousarray(block)
                h.update(block.astype(block.dtype.newbyteorder("<"), copy=False).tobytes())
    return h.hexdigest()


def compute_content_sha256(path: str | Path) -> str:
    """The content digest of the store at `path`, recomputed from its data (reads the whole file)."""
    import h5py

    with h5py.File(path, "r") as h5:
        return content_sha256(h5)


def store_identity(path: str | Path) -> dict:
    """{path (absolute), dataset, schema, snapshot_date (protein stores), content_sha256, recorded}:
    the recorded digest (one attribute read), or for a store written before digests were recorded
    the digest computed now (`recorded: false`). A StoreError names a missing or unreadable file."""
    import h5py

    from .h5store import StoreError

    path = Path(path)
    if not path.is_file():
        raise StoreError(f"{path}: no such store" + (" (a folder, not a .h5 file)" if path.exists() else ""))
    try:
        with h5py.File(path, "r") as h5:
            attrs = {k: _plain(h5.attrs[k]) for k in ("dataset", "schema", "snapshot_date", CONTENT_ATTR) if k in h5.attrs}
            digest = attrs.get(CONTENT_ATTR) or content_sha256(h5)
    except OSError as err:
        raise StoreError(f"{path}: not a readable HDF5 file ({err})") from err
    identity = {"path": str(path.resolve()), "dataset": attrs.get("dataset", ""), "schema": attrs.get("schema", ""),
                "content_sha256": digest, "recorded": CONTENT_ATTR in attrs}
    if attrs.get("snapshot_date"):
        identity["snapshot_date"] = attrs["snapshot_date"]
    return identity


def short(identity: dict | str | None) -> str:
    """The first 12 hex digits of an identity's digest ('unknown' without one)."""
    digest = identity.get("content_sha256") if isinstance(identity, dict) else identity
    return str(digest)[:12] if digest else "unknown"


def describe(identity: dict | None) -> str:
    """One line for messages: `<dataset> store <sha12> (snapshot D) at <path>`."""
    if not identity:
        return "an unrecorded store (written by an older qdiff)"
    snap = f", snapshot {identity['snapshot_date']}" if identity.get("snapshot_date") else ""
    return f"{identity.get('dataset') or 'a'} store {short(identity)}{snap} at {identity.get('path', '?')}"


def verify_store(path: str | Path) -> tuple[str | None, str]:
    """(recorded digest or None, digest recomputed from the data): equal for an intact store."""
    import h5py

    with h5py.File(path, "r") as h5:
        recorded = _plain(h5.attrs[CONTENT_ATTR]) if CONTENT_ATTR in h5.attrs else None
        return recorded, content_sha256(h5)


def samples_provenance(samples_attrs: dict, samples: str | Path, reference: str | Path) -> dict:
    """The store versions behind a samples store, for its metrics file: {reference_store (identity
    of `reference`), samples_sha256, trained_on (identity of the training store, or None)}. Samples
    drawn for another version of the reference store (their source rows index that version) are
    an InputFileError naming both."""
    from ..errors import InputFileError

    ref = store_identity(reference)
    drawn_for = samples_attrs.get("reference_store_sha256")
    if drawn_for and drawn_for != ref["content_sha256"]:
        raise InputFileError(f"{samples}: drawn for the store version {short(drawn_for)}, but {reference} is {describe(ref)} "
                             "(rewritten since, e.g. by a dataset update): sample again, or pass the store the samples were drawn from")
    trained = samples_attrs.get("trained_on")
    trained = json.loads(trained) if isinstance(trained, str) and trained.strip() else None
    return {"reference_store": ref, "samples_sha256": samples_attrs.get(CONTENT_ATTR), "trained_on": trained or None}
