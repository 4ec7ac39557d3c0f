"""Verified, resumable HTTP downloads of manifest files.

`fetch_file` streams a file into `<dest>/<name>.part` with a progress bar, resumes a partial file
with an HTTP Range request, retries transient failures with exponential backoff, falls back to
the next mirror, and renames the file into place only after its size and checksums verify. An
answer that is not the file — HTTP 202 (figshare's bot challenge), an empty body, an HTML page —
is a failure with a clear message, never a file.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import EXIT_DOWNLOAD


from ..atomic import atomic_write_text
from ..progress import progress_bar
from .manifest import RemoteFile

LOCK_NAME = "CHECKSUMS.lock.json"
_CHUNK = 1 << 20
_HTML_MARKERS = (b"<!doctype html", b"<html", b"<head", b"<?xml")


class DownloadError(RuntimeError):
    """A file could not be fetched from any of its URLs; the message lists every attempt."""

    exit_status = EXIT_DOWNLOAD  # the CLI's status for it (qdiff.errors.classify)


class ChecksumError(DownloadError):
    """Downloaded bytes do not match the manifest (or the lock); the bad file is deleted."""


class _Transient(Exception):
    """Worth retrying: connection errors, timeouts, 5xx, truncated bodies."""


class _Refused(Exception):
    """Not worth retrying at this URL: 4xx, challenge pages, empty bodies."""


@dataclass
class FileDigest:
    size: int
    md5: str
    sha256: str


def digest(path: str | Path) -> FileDigest:
    md5, sha = hashlib.md5(), hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            md5.update(chunk)
            sha.update(chunk)
            size += len(chunk)
    return FileDigest(size, md5.hexdigest(), sha.hexdigest())


def _read_lock(dest: Path) -> dict:
    path = dest / LOCK_NAME
    return json.loads(path.read_text()) if path.is_file() else {}


def _write_lock(dest: Path, lock: dict) -> None:
    atomic_write_text(dest / LOCK_NAME, json.dumps(lock, indent=2, sort_keys=True) + "\n")


def verify(path: Path, remote: RemoteFile, dest: Path | None = None) -> FileDigest:
    """Check size and checksums against the manifest, or against the lock for files without a
    published checksum. Raises ChecksumError naming the file and both values."""
    d = digest(path)
    expected = []
    if remote.size is not None:
        expected.append(("size", str(remote.size), str(d.size)))
    if remote.md5:
        expected.append(("md5", remote.md5, d.md5))
    if remote.sha256:
        expected.append(("sha256", remote.sha256, d.sha256))
    if not remote.has_checksum and dest is not None:
        locked = _read_lock(dest).get(remote.name)
        if locked:
            expected.append(("sha256 (locked on first download)", locked["sha256"], d.sha256))
    for what, want, got in expected:
        if want != got:
            raise ChecksumError(f"{remote.name}: {what} mismatch: expected {want}, got {got} ({path})")
    return d


def lock_on_first_use(path: Path, dest: Path, origin: str, d: FileDigest | None = None) -> FileDigest:
    """Record the sha256 of a file without a published checksum in `<dest>/CHECKSUMS.lock.json`
    the first time it is seen; afterwards raise ChecksumError if the file differs from the lock."""
    d = d or digest(path)
    table = _read_lock(dest)
    locked = table.get(path.name)
    if locked is None:
        table[path.name] = {"sha256": d.sha256, "md5": d.md5, "size": d.size, "url": origin}
        _write_lock(dest, table)
    elif locked["sha256"] != d.sha256:
        raise ChecksumError(f"{path}: sha256 {d.sha256} differs from the one locked on first use {locked['sha256']}")
    return d


def _looks_like_html(head: bytes) -> bool:
    return head.lstrip()[:64].lower().startswith(_HTML_MARKERS)


def _stream(url: str, part: Path, timeout: float, progress: bool, name: str) -> None:
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "qdiff-fetch/1 (+https://github.com/)"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:
            return  # the partial file is already complete; verification decides
        if err.code >= 500 or err.code == 429:
            raise _Transient(f"HTTP {err.code}") from err
        raise _Refused(f"HTTP {err.code} {err.reason}") from err
    except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as err:
        raise _Transient(f"{type(err).__name__}: {err}") from err
    with response:
        status = response.status
        if status == 202:
            raise _Refused("HTTP 202 Accepted with no file (a bot challenge, e.g. figshare's WAF); try a mirror or download by hand")
        if status not in (200, 206):
            raise _Refused(f"unexpected HTTP {status}")
        resume = status == 206 and offset > 0
        if not resume:
            offset = 0
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None else None
        content_type = response.headers.get("Content-Type", "")
        mode = "ab" if resume else "wb"
        received = 0
        first = True
        with open(part, mode) as fh, progress_bar(
            total=total, initial=offset, unit="B", unit_scale=True, desc=name, enabled=progress, leave=False
        ) as bar:
            while True:
                try:
                    chunk = response.read(_CHUNK)
                except (TimeoutError, ConnectionError, OSError) as err:
                    raise _Transient(f"connection lost after {offset + received} bytes: {err}") from err
                if first:
                    first = False
                    if not resume and not chunk:
                        raise _Refused("empty body (HTTP 200 with no content): not the file")
                    if not resume and ("text/html" in content_type or _looks_like_html(chunk)):
                        raise _Refused(f"got an HTML page ({content_type or 'no content type'}), not the file")
                if not chunk:
                    break
                fh.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
        if total is not None and offset + received < total:
            raise _Transient(f"truncated: {offset + received} of {total} bytes")


def fetch_file(
    remote: RemoteFile,
    dest: str | Path,
    *,
    retries: int = 4,
    backoff: float = 1.0,
    timeout: float = 60.0,
    progress: bool = True,
    sleep: Callable[[float], None] = time.sleep,
    validate: Callable[[Path], None] | None = None,
    lock: bool = True,
) -> Path:
    """Download `remote` into `dest` (verified), or return the verified file already there.

    `validate(path)` is an extra content check (raise ValueError to reject the bytes, e.g. a gzip
    CRC check); `lock=False` skips lock-on-first-download for files whose contents legitimately
    change (PDB entries are revised; their sha256 goes into the snapshot manifest instead)."""
    def check(path: Path) -> FileDigest:
        d = verify(path, remote, dest if lock else None)
        if validate is not None:
            try:
                validate(path)
            except ValueError as err:
                raise ChecksumError(f"{remote.name}: {err}") from err
        return d

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    final = dest / remote.name
    if final.is_file():
        try:
            check(final)
            return final
        except ChecksumError:
            final.unlink()
    if not remote.urls:
        raise DownloadError(f"{remote.name}: no URL in the manifest; {offline_instructions([remote], dest)}")
    part = final.with_name(final.name + ".part")
    attempts = []
    for url in remote.urls:
        for attempt in range(retries + 1):
            try:
                _stream(url, part, timeout, progress, remote.name)
                d = check(part)
            except _Transient as err:
                attempts.append(f"{url} (try {attempt + 1}): {err}")
                if attempt < retries:
                    sleep(backoff * 2**attempt)
                continue
            except _Refused as err:
                attempts.append(f"{url}: {err}")
                part.unlink(missing_ok=True)
                break
            except ChecksumError as err:
                attempts.append(f"{url}: {err}")
                part.unlink(missing_ok=True)
                break
            os.replace(part, final)
            if lock and not remote.has_checksum:
                lock_on_first_use(final, dest, url, d)
            return final
    raise DownloadError(f"{remote.name}: every URL failed:\n  " + "\n  ".join(attempts))


def missing_files(files: list[RemoteFile], dest: str | Path) -> list[RemoteFile]:
    """The files that are not in `dest` with verified contents (offline check)."""
    dest = Path(dest)
    out = []
    for remote in files:
        path = dest / remote.name
        try:
            if not path.is_file():
                raise FileNotFoundError
            verify(path, remote, dest)
        except (FileNotFoundError, ChecksumError):
            out.append(remote)
    return out


def offline_instructions(files: list[RemoteFile], dest: str | Path) -> str:
    """What to put where, by hand, for each missing file."""
    lines = []
    for remote in files:
        where = Path(dest) / remote.name
        origin = remote.manual or (remote.urls[0] if remote.urls else "(no URL known)")
        sums = ", ".join(f"{k} {v}" for k, v in (("md5", remote.md5), ("sha256", remote.sha256)) if v) or "no published checksum"
        lines.append(f"- {remote.name}: download {origin} and save it as {where} ({sums})")
    return "\n".join(lines)
