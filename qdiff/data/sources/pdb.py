"""PDB: per-entry mmCIF downloads into a reusable cache, a dated snapshot manifest, candidate
selection from the wwPDB index files, chain filters, and sequence-cluster splits."""
from __future__ import annotations

import gzip
import json
import re
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime, timezone
from pathlib import Path

import numpy as np

from ... import __version__
from ...atomic import atomic_write_text
from ...errors import SettingsError
from ...progress import progress_bar
from ..download import DownloadError, digest, fetch_file
from ..manifest import RemoteFile
from .mmcif import parse_structure, read_cif, _dates, _first

DEFAULT_BASE_URL = "https://files.rcsb.org/download"
CLUSTERS_URL = "https://cdn.rcsb.org/resources/sequence/clusters/clusters-by-entity-30.txt"
CLUSTERS_NAME = "clusters-by-entity-30.txt"
SNAPSHOT_NAME = "snapshot.json"
_ID = re.compile(r"^[0-9][A-Za-z0-9]{3}$")


def normalize_ids(ids: list[str]) -> list[str]:
    """Upper-case 4-character PDB IDs, sorted and unique; ValueError naming a malformed one."""
    out = set()
    for raw in ids:
        pid = raw.strip()
        if not pid:
            continue
        if not _ID.match(pid):
            raise ValueError(f"not a PDB ID: {raw!r}")
        out.add(pid.upper())
    return sorted(out)


def read_ids_file(path: str | Path) -> list[str]:
    """IDs separated by whitespace or commas; '#' starts a comment."""
    text = "\n".join(line.split("#")[0] for line in Path(path).read_text().splitlines())
    return normalize_ids(re.split(r"[\s,]+", text))


def _check_gzip_cif(path: Path) -> None:
    try:
        with gzip.open(path, "rb") as fh:
            head = fh.read(64)
            while fh.read(1 << 20):
                pass
    except (OSError, EOFError) as err:
        raise ValueError(f"corrupt or truncated gzip ({err})") from err
    if not head.lstrip().startswith(b"data_"):
        raise ValueError("not an mmCIF file (no data_ block)")


def _entry_metadata(path: Path, pid: str) -> dict:
    d = read_cif(path.read_bytes(), pid)
    release, revision = _dates(d)
    fd = digest(path)
    return {"sha256": fd.sha256, "size": fd.size, "release_date": release, "revision_date": revision,
            "status": _first(d, "_pdbx_database_status.status_code", "")}


CACHE_INDEX = "entries.json"  # per cached entry: sha256 and the UTC date it was downloaded
PINS_DIR = "snapshots"  # <dest>/snapshots/<date>.json: the manifest each snapshot date was first fetched with


def _today() -> str:
    return datetime.now(timezone.utc).date().isoformat()


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}


def read_pin(dest: str | Path, snapshot: str) -> dict:
    """The manifest recorded when `snapshot` was first fetched into `dest` ({} if never)."""
    return _read_json(Path(dest) / PINS_DIR / f"{snapshot}.json")


def check_snapshot_date(snapshot: str | None) -> str:
    """A YYYY-MM-DD snapshot date (default: today, UTC); SettingsError for anything else."""
    if snapshot is None:
        return _today()
    try:
        if not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", str(snapshot)):
            raise ValueError(snapshot)
        date.fromisoformat(snapshot)
    except ValueError:
        raise SettingsError(f"snapshot {snapshot!r}: must be a date YYYY-MM-DD") from None
    return snapshot


def snapshot_problem(meta: dict, snapshot: str, pinned: dict | None) -> str | None:
    """Why an entry (its metadata from the file) is not the version the snapshot saw, or None:
    released or revised after the snapshot date, or other bytes than the snapshot recorded."""
    if meta.get("release_date") and meta["release_date"] > snapshot:
        return f"released {meta['release_date']}, after the snapshot {snapshot}"
    if meta.get("revision_date") and meta["revision_date"] > snapshot:
        return (f"revised {meta['revision_date']}, after the snapshot {snapshot}: the server holds only the newer "
                "version, not the one current at the snapshot")
    if pinned and pinned.get("sha256") and pinned["sha256"] != meta["sha256"]:
        return (f"sha256 {meta['sha256'][:12]}... differs from {pinned['sha256'][:12]}..., recorded when snapshot {snapshot} "
                f"was first fetched (revision {pinned.get('revision_date') or '?'}): the file changed without a new revision date")
    return None


def fetch_pdb(
    ids: list[str],
    dest: str | Path,
    *,
    base_url: str = DEFAULT_BASE_URL,
    snapshot: str | None = None,
    workers: int = 8,
    retries: int = 3,
    progress: bool = True,
    refresh: bool = False,
    clusters_url: str | None = None,
    index_files: dict | None = None,
) -> Path:
    """Download `<base_url>/<ID>.cif.gz` for each ID into `<dest>/entries/` (a cache reused across
    runs unless `refresh`), with a bounded pool of `workers`, and write `<dest>/snapshot.json`:
    snapshot date, base URL, and per entry its sha256, size, release and latest revision dates and
    status, or the error that kept it out. With `clusters_url`, the RCSB sequence-cluster file is
    saved as `<dest>/clusters-by-entity-30.txt` (its sha256 recorded too). Returns the manifest path.

    The snapshot date pins what is used (the server only has each entry's latest version):
    - a cached entry is reused only if it was downloaded on or after the snapshot date (so it was
      the latest version at the snapshot, or revised later: see below) and its bytes are those the
      cache index `entries.json` recorded; otherwise it is downloaded again;
    - an entry released or revised after the snapshot date is kept out, with the reason
      (`excluded` in snapshot.json; featurize records it as a failure);
    - the first fetch of a snapshot date records its manifest in `snapshots/<date>.json`; a later
      fetch of the same date must find the same bytes (sha256) for every entry recorded there, or
      keeps the entry out with the reason, and reuses the cluster file recorded there."""
    dest = Path(dest)
    entries_dir = dest / "entries"
    entries_dir.mkdir(parents=True, exist_ok=True)
    ids = normalize_ids(ids)
    if not ids:
        raise ValueError("no PDB IDs given")
    snapshot = check_snapshot_date(snapshot)
    pin = read_pin(dest, snapshot)
    pinned = pin.get("entries", {})
    cache = _read_json(dest / CACHE_INDEX)
    today = _today()

    def one(pid: str) -> tuple[str, dict]:
        name = f"{pid}.cif.gz"
        path = entries_dir / name
        known = cache.get(pid, {})
        reuse = (not refresh and path.is_file() and known.get("downloaded", "") >= snapshot
                 and known.get("sha256") == digest(path).sha256)
        if not reuse:
            path.unlink(missing_ok=True)
        remote = RemoteFile(name=name, urls=(f"{base_url.rstrip('/')}/{name}",), checksum_source="none; sha256 recorded in snapshot.json")
        try:
            path = fetch_file(remote, entries_dir, progress=False, retries=retries, validate=_check_gzip_cif, lock=False)
            meta = _entry_metadata(path, pid)
        except (DownloadError, ValueError) as err:
            return pid, {"error": str(err).splitlines()[-1].strip()}
        meta["downloaded"] = known.get("downloaded") if reuse else today
        meta["from_cache"] = reuse
        problem = snapshot_problem(meta, snapshot, pinned.get(pid))
        if problem:
            meta["excluded"] = problem
        return pid, meta

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = dict(progress_bar(pool.map(one, ids), total=len(ids), desc="pdb", unit="entry", enabled=progress))
    for pid, r in results.items():  # the cache index: what each cached file is and when it came
        if "sha256" in r:
            cache[pid] = {"sha256": r["sha256"], "downloaded": r["downloaded"], "revision_date": r.get("revision_date", "")}
    atomic_write_text(dest / CACHE_INDEX, json.dumps(cache, indent=2, sort_keys=True) + "\n")
    if all("error" in r for r in results.values()):  # nothing fetched: an error, not an empty snapshot
        shown = "; ".join(f"{pid}: {results[pid]['error']}" for pid in ids[:3])
        raise DownloadError(f"every one of the {len(ids)} PDB entries failed ({shown}{'; ...' if len(ids) > 3 else ''}); "
                            f"no {SNAPSHOT_NAME} written. Check the IDs, --base-url and the network")
    manifest = {"snapshot_date": snapshot, "base_url": base_url, "qdiff_version": __version__, "fetched": today,
                "entries": {pid: results[pid] for pid in ids}}
    if index_files:
        manifest["index_files"] = index_files
    if clusters_url:
        path = dest / CLUSTERS_NAME
        recorded = pin.get("clusters", {}).get("sha256")
        if not (recorded and path.is_file() and digest(path).sha256 == recorded):
            path.unlink(missing_ok=True)  # clusters change weekly: fresh, unless this snapshot recorded the file here
            remote = RemoteFile(name=CLUSTERS_NAME, urls=(clusters_url,), checksum_source="none; sha256 recorded in snapshot.json")
            path = fetch_file(remote, dest, progress=progress, retries=retries, lock=False)
        manifest["clusters"] = {"url": clusters_url, "sha256": digest(path).sha256}
        if recorded and manifest["clusters"]["sha256"] != recorded:
            manifest["clusters"]["warning"] = (f"differs from the cluster file recorded for snapshot {snapshot} ({recorded[:12]}...): "
                                               "RCSB recomputes clusters weekly; cluster splits may differ")
    path = dest / SNAPSHOT_NAME
    atomic_write_text(path, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    # The snapshot's record: entries first seen for this date are added; recorded ones never change.
    usable = {pid: {k: r[k] for k in ("sha256", "revision_date", "release_date")} for pid, r in results.items()
              if "error" not in r and "excluded" not in r}
    record = {"snapshot_date": snapshot, "base_url": pin.get("base_url", base_url), "entries": {**usable, **pinned}}
    if "clusters" in pin or "clusters" in manifest:
        record["clusters"] = pin.get("clusters") or {k: v for k, v in manifest["clusters"].items() if k != "warning"}
    if "index_files" in pin or index_files:
        record["index_files"] = pin.get("index_files") or index_files
    atomic_write_text(dest / PINS_DIR / f"{snapshot}.json", json.dumps(record, indent=2, sort_keys=True) + "\n")
    return path


# ----------------------------------------------------------------------------- index files
INDEX_URL = "https://files.wwpdb.org/pub/pdb/derived_data/index"
INDEX_FILES = {"resolu.idx": INDEX_URL, "pdb_entry_type.txt": "https://files.wwpdb.org/pub/pdb/derived_data",
               "entries.idx": INDEX_URL, "obsolete.dat": "https://files.wwpdb.org/pub/pdb/data/status"}


def fetch_index_files(dest: str | Path, base_url: str | None = None, retries: int = 3, progress: bool = True,
                      snapshot: str | None = None) -> Path:
    """Download the wwPDB index files into `<dest>/index/` (fresh each time: they change weekly;
    for a `snapshot` date already fetched into `dest`, the files recorded for it are kept when they
    are still there unchanged). `base_url` serves all four from one folder (a mirror); default:
    their wwPDB locations."""
    folder = Path(dest) / "index"
    recorded = read_pin(dest, snapshot).get("index_files", {}) if snapshot else {}
    for name, default in INDEX_FILES.items():
        path = folder / name
        if recorded.get(name) and path.is_file() and digest(path).sha256 == recorded[name]:
            continue
        path.unlink(missing_ok=True)
        url = f"{(base_url or default).rstrip('/')}/{name}"
        fetch_file(RemoteFile(name=name, urls=(url,), checksum_source="none; changes weekly"), folder,
                   progress=progress, retries=retries, lock=False)
    return folder


def index_file_hashes(folder: str | Path) -> dict[str, str]:
    """{name: sha256} of the wwPDB index files present in `folder` (recorded in snapshot.json)."""
    return {name: digest(Path(folder) / name).sha256 for name in INDEX_FILES if (Path(folder) / name).is_file()}


def parse_resolu_idx(text: str) -> dict[str, float]:
    """`resolu.idx`: `IDCODE ; RESOLUTION` lines after a header; negative or missing -> NaN."""
    out = {}
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(";")]
        if len(parts) == 2 and _ID.match(parts[0]):
            try:
                value = float(parts[1])
            except ValueError:
                value = float("nan")
            out[parts[0].upper()] = value if value > 0 else float("nan")
    return out


def parse_entry_type(text: str) -> dict[str, tuple[str, str]]:
    """`pdb_entry_type.txt`: `id<TAB>type(prot, nuc, prot-nuc, other)<TAB>method`."""
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3 and _ID.match(parts[0]):
            out[parts[0].upper()] = (parts[1], parts[2])
    return out


def parse_entries_idx(text: str) -> dict[str, str]:
    """`entries.idx`: ID -> deposition date (ISO) from the tab-separated table (2 header lines)."""
    out = {}
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) >= 3 and _ID.match(parts[0].strip()):
            m = re.match(r"(\d\d)/(\d\d)/(\d\d)", parts[2].strip())
            if m:
                mm, dd, yy = (int(x) for x in m.groups())
                out[parts[0].strip().upper()] = f"{1900 + yy if yy > 70 else 2000 + yy:04d}-{mm:02d}-{dd:02d}"
    return out


def parse_obsolete(text: str) -> set[str]:
    """`obsolete.dat`: `OBSLTE dd-MON-yy OLDID [NEWIDS...]`."""
    return {line.split()[2].upper() for line in text.splitlines() if line.startswith("OBSLTE") and len(line.split()) >= 3}


def select_candidates(index_dir: str | Path, *, methods=("diffraction", "EM", "NMR"), max_resolution=None,
                      before: str | None = None) -> tuple[list[str], dict[str, str]]:
    """Candidate IDs from the wwPDB index files in `index_dir` (resolu.idx, pdb_entry_type.txt,
    entries.idx, obsolete.dat; the last two optional): protein-only entries of the given methods,
    resolution <= max_resolution, deposited before `before` (the snapshot date), not obsolete.
    Returns (kept IDs, {dropped ID: reason})."""
    index_dir = Path(index_dir)
    types = parse_entry_type((index_dir / "pdb_entry_type.txt").read_text())
    resolution = parse_resolu_idx((index_dir / "resolu.idx").read_text())
    dates = parse_entries_idx((index_dir / "entries.idx").read_text()) if (index_dir / "entries.idx").is_file() else {}
    obsolete = parse_obsolete((index_dir / "obsolete.dat").read_text()) if (index_dir / "obsolete.dat").is_file() else set()
    kept, dropped = [], {}
    for pid in sorted(types):
        kind, method = types[pid]
        res = resolution.get(pid, float("nan"))
        if pid in obsolete:
            dropped[pid] = "obsolete"
        elif kind != "prot":
            dropped[pid] = f"entry type {kind}, not protein-only"
        elif method not in methods:
            dropped[pid] = f"method {method} not in {list(methods)}"
        elif max_resolution is not None and method != "NMR" and not (res <= max_resolution):
            dropped[pid] = f"resolution {res} Å worse than {max_resolution} Å (or unknown)"
        elif before and dates.get(pid, "") >= before:
            dropped[pid] = f"deposited {dates.get(pid) or 'on an unknown date'}, not before the snapshot {before}"
        else:
            kept.append(pid)
    return kept, dropped


# ----------------------------------------------------------------------------- splits
def read_clusters(path: str | Path) -> dict[str, int]:
    """RCSB `clusters-by-entity-NN.txt`: one cluster of `ENTRY_ENTITY` IDs per line ->
    {"1abc_1": cluster index}."""
    out = {}
    for k, line in enumerate(Path(path).read_text().splitlines()):
        for member in line.split():
            out[member.lower()] = k
    return out


def cluster_split(chain_entities: dict[str, str], clusters: dict[str, int] | None, fractions, seed: int) -> dict[str, list[str]]:
    """Assign whole clusters to train/val/test (shuffled with seed) until each part holds its
    fraction of the chains. Chains are "<entry>_<chain>" with entity "<entry>_<entity_id>"; a
    chain whose entity is in no cluster forms its own cluster. Without a cluster file every entry
    is its own cluster (chains of one entry never straddle parts)."""
    groups: dict[str, list[str]] = {}
    for chain, entity in sorted(chain_entities.items()):
        entry = chain.split("_")[0]
        if clusters is None:
            key = f"entry:{entry}"
        else:
            c = clusters.get(entity.lower())
            key = f"cluster:{c}" if c is not None else f"entity:{entity.lower()}"
        groups.setdefault(key, []).append(chain)
    keys = sorted(groups)
    order = np.random.default_rng(seed).permutation(len(keys))
    total = sum(len(v) for v in groups.values())
    targets = [fractions[0] * total, (fractions[0] + fractions[1]) * total]
    parts = {"train": [], "val": [], "test": []}
    count = 0
    for i in order:
        chains = groups[keys[i]]
        part = "train" if count < targets[0] else "val" if count < targets[1] else "test"
        parts[part].extend(chains)
        count += len(chains)
    return parts


__all__ = ["fetch_pdb", "select_candidates", "cluster_split", "read_clusters", "parse_structure"]
