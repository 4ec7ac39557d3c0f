"""`qdiff fetch`: put a dataset's raw files, verified, into a folder (default resources/<dataset>)."""
from __future__ import annotations

import json
from pathlib import Path

from ..atomic import atomic_write_text
from .download import DownloadError, fetch_file, missing_files, offline_instructions, verify
from .manifest import RemoteFile, source_files

# Dataset name -> (manifest dataset, default source). Demo sets ship with the packages.
FETCHABLE = {"qm9": ("qm9", "figshare"), "geom-qm9": ("geom", "dataverse"), "geom-drugs": ("geom", "dataverse")}
OFFLINE_DATASETS = ("demo-qm9", "demo-drugs", "demo-backbones")
PACKAGE_MARKER = "package_files.json"


def _package_file(remote: RemoteFile) -> Path:
    if remote.package == "qm9pack":
        from .sources.qm9 import qm9pack_data_dir

        return qm9pack_data_dir() / remote.name
    raise ValueError(f"{remote.name}: unknown package {remote.package!r}")


def fetch_dataset(
    dataset: str,
    source: str | None = None,
    dest: str | Path | None = None,
    *,
    offline: bool = False,
    mirror: str | None = None,
    progress: bool = True,
    retries: int = 4,
    backoff: float = 1.0,
) -> list[Path]:
    """Fetch (or, offline, check) every file of `dataset`'s source into `dest`.

    `mirror` is a base URL tried first for every file (`<mirror>/<name>`). Files from a Python
    package are verified in place and listed in `<dest>/package_files.json`. Offline, raises
    DownloadError listing exactly what is missing and where to put it.
    """
    if dataset in OFFLINE_DATASETS:
        return []
    if dataset not in FETCHABLE:
        raise ValueError(f"unknown dataset {dataset!r}; fetchable: {sorted(FETCHABLE)}, offline: {list(OFFLINE_DATASETS)}")
    manifest_name, default = FETCHABLE[dataset]
    files = source_files(manifest_name, source or default)
    dest = Path(dest) if dest is not None else Path("resources") / dataset
    dest.mkdir(parents=True, exist_ok=True)
    if all(f.package for f in files):
        return [_record_package_files(files, dest)]
    if offline:
        missing = missing_files([f for f in files if not f.package], dest)
        if missing:
            raise DownloadError(
                f"offline: {len(missing)} file(s) of {dataset}/{source or default} missing or unverified in {dest}:\n"
                + offline_instructions(missing, dest)
            )
        return [dest / f.name for f in files]
    out = []
    for remote in files:
        if remote.manual:
            if missing_files([remote], dest):
                raise DownloadError(f"{remote.name} cannot be downloaded automatically:\n" + offline_instructions([remote], dest))
            out.append(dest / remote.name)
            continue
        if mirror:
            remote = RemoteFile(**{**remote.__dict__, "urls": (f"{mirror.rstrip('/')}/{remote.name}", *remote.urls)})
        out.append(fetch_file(remote, dest, progress=progress, retries=retries, backoff=backoff))
    return out


def _record_package_files(files: list[RemoteFile], dest: Path) -> Path:
    entries = {}
    for remote in files:
        path = _package_file(remote)
        if not path.is_file():
            raise DownloadError(f"{remote.name}: not found at {path}; install {remote.package}")
        d = verify(path, remote)
        entries[remote.name] = {"path": str(path), "sha256": d.sha256, "size": d.size, "package": remote.package}
    marker = dest / PACKAGE_MARKER
    atomic_write_text(marker, json.dumps(entries, indent=2, sort_keys=True) + "\n")
    return marker
