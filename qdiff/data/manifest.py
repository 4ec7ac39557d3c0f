"""The committed manifest of remote files (`manifest.yaml` beside this module)."""
from __future__ import annotations

from dataclasses import dataclass, field
import os
from importlib import resources
from pathlib import Path

import yaml


@dataclass(frozen=True)
class RemoteFile:
    """One file: its name on disk, URLs (primary first, then mirrors), and what verifies it."""

    name: str
    urls: tuple[str, ...] = ()
    size: int | None = None
    md5: str | None = None
    sha256: str | None = None
    checksum_source: str = ""
    package: str | None = None
    manual: str | None = None
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def has_checksum(self) -> bool:
        return bool(self.md5 or self.sha256)


_KNOWN = {"name", "urls", "size", "md5", "sha256", "checksum_source", "package", "manual"}


MANIFEST_ENV = "QDIFF_MANIFEST"


def load_manifest(text: str | None = None) -> dict:
    """The manifest as {dataset: {"description", "license", "sources": {source: [RemoteFile]}}}.

    `$QDIFF_MANIFEST` (a YAML path) replaces the committed manifest, e.g. for a private mirror
    with its own checksums."""
    if text is None:
        override = os.environ.get(MANIFEST_ENV)
        text = Path(override).read_text() if override else resources.files(__package__).joinpath("manifest.yaml").read_text()
    raw = yaml.safe_load(text)
    out = {}
    for dataset, spec in raw.items():
        sources = {}
        for source, files in spec["sources"].items():
            entries = []
            for f in files:
                unknown = set(f) - _KNOWN
                if unknown:
                    raise ValueError(f"manifest {dataset}/{source}/{f.get('name')}: unknown keys {sorted(unknown)}")
                entries.append(RemoteFile(
                    name=f["name"], urls=tuple(f.get("urls", ())), size=f.get("size"), md5=f.get("md5"),
                    sha256=f.get("sha256"), checksum_source=f.get("checksum_source", ""),
                    package=f.get("package"), manual=f.get("manual"),
                ))
            sources[source] = entries
        out[dataset] = {"description": spec.get("description", ""), "license": spec.get("license", ""), "sources": sources}
    return out


def source_files(dataset: str, source: str) -> list[RemoteFile]:
    """The files of one source of a dataset; ValueError naming the valid choices otherwise."""
    manifest = load_manifest()
    if dataset not in manifest:
        raise ValueError(f"no dataset {dataset!r} in the manifest; known: {sorted(manifest)}")
    sources = manifest[dataset]["sources"]
    if source not in sources:
        raise ValueError(f"dataset {dataset!r} has no source {source!r}; choose one of {sorted(sources)}")
    return sources[source]
