"""Earlier versions of a store, kept retrievable beside it.

`qdiff featurize ... --keep-versions [DIR]` links each store it writes into
`DIR/<store name>/<snapshot>_<sha12>.h5` (a hard link: no copy, no extra space while the store is
the current one; a copy where links are not possible) and appends a line to `history.jsonl` there.
When the store is later rewritten at the same path (Snakemake deletes an output before its job
runs), the earlier version stays under DIR, so `qdiff data diff --previous STORE` compares the
store with the version before it, and `qdiff data versions STORE` lists them all.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
from pathlib import Path

from .identity import short, store_identity

HISTORY = "history.jsonl"


def versions_folder(store: str | Path, root: str | Path | None = None) -> Path:
    """Where the versions of `store` are kept: `<root>/<store stem>/`, root default `<store dir>/versions`."""
    store = Path(store)
    return Path(root if root is not None else store.parent / "versions") / store.stem


def _version_name(identity: dict) -> str:
    snap = identity.get("snapshot_date")
    return f"{snap}_{short(identity)}.h5" if snap else f"{short(identity)}.h5"


def keep_version(store: str | Path, root: str | Path | None = None) -> Path:
    """Link (or copy) `store` into its versions folder under a name keyed by its snapshot date and
    content digest, and append it to the folder's history. Returns the version's path."""
    store = Path(store)
    identity = store_identity(store)
    folder = versions_folder(store, root)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / _version_name(identity)
    if not target.is_file():
        tmp = target.with_name(target.name + ".tmp")
        tmp.unlink(missing_ok=True)
        try:
            os.link(store, tmp)
        except OSError:  # another file system, or links not allowed: a copy
            shutil.copyfile(store, tmp)
        os.replace(tmp, target)
    line = {"file": target.name, "content_sha256": identity["content_sha256"], "dataset": identity["dataset"],
            "snapshot_date": identity.get("snapshot_date", ""), "written": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "store": str(store)}
    with open(folder / HISTORY, "a") as fh:
        fh.write(json.dumps(line, sort_keys=True) + "\n")
    return target


def list_versions(store: str | Path, root: str | Path | None = None) -> list[dict]:
    """The history of `store`'s versions, oldest first (one entry per write; `path` set, and
    `present` false where the file has since been deleted)."""
    folder = versions_folder(store, root)
    path = folder / HISTORY
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a crash
        entry["path"] = str(folder / entry["file"])
        entry["present"] = (folder / entry["file"]).is_file()
        out.append(entry)
    return out


def previous_version(store: str | Path, root: str | Path | None = None) -> Path:
    """The version written before the one now at `store` (the latest earlier entry of the history
    with other content, still present). A StoreError says why there is none."""
    from .h5store import StoreError

    current = store_identity(store)["content_sha256"]
    history = list_versions(store, root)
    folder = versions_folder(store, root)
    if not history:
        raise StoreError(f"{store}: no earlier versions kept in {folder} (featurize with --keep-versions keeps them)")
    for entry in reversed(history):
        if entry["content_sha256"] != current and entry["present"]:
            return Path(entry["path"])
    raise StoreError(f"{store}: {folder} holds no version other than the current one ({short(current)})")
