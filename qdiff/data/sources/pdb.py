"""PDB: per-entry mmCIF downloads into a reusable cache, a dated snapshot manifest, candidate
selection from the wwPDB index files, chain filters, and sequence-cluster splits."""
from __future__ import annotations

import gzip
import json
import re
from concurrent.futures import ThreadPoolExecutor
from datetime import date
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
) -> Path:
    """Download `<base_url>/<ID>.cif.gz` for each ID into `<dest>/entries/` (a cache reused across
    runs unless `refresh`), with a bounded pool of `workers`, and write `<dest>/snapshot.json`:
    snapshot date, base URL, and per entry its sha256, size, release and latest revision dates and
    status, or the error that kept it out. With `clusters_url`, the RCSB sequence-cluster file is
    saved as `<dest>/clusters-by-entity-30.txt` (its sha256 recorded too). Returns the manifest path."""
    dest = Path(dest)
    entries_dir = dest / "entries"
    entries_dir.mkdir(parents=True, exist_ok=True)
    ids = normalize_ids(ids)
    if not ids:
        raise ValueError("no PDB IDs given")
    if snapshot is not None:
        try:
            if not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", str(snapshot)):
                raise ValueError(snapshot)
            date.fromisoformat(snapshot)
        except ValueError:
            raise SettingsError(f"snapshot {snapshot!r}: must be a date YYYY-MM-DD") from None
    snapshot = snapshot or date.today().isoformat()

    def one(pid: str) -> tuple[str, dict]:
        name = f"{pid}.cif.gz"
        if refresh:
            (entries_dir / name).unlink(missing_ok=True)
        remote = RemoteFile(name=name, urls=(f"{base_url.rstrip('/')}/{name}",), checksum_source="none; sha256 recorded in snapshot.json")
        try:
            path = fetch_file(remote, entries_dir, progress=False, retries=retries, validate=_check_gzip_cif, lock=False)
            return pid, _entry_metadata(path, pid)
        except (DownloadError, ValueError) as err:
            return pid, {"error": str(err).splitlines()[-1].strip()}

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = dict(progress_bar(pool.map(one, ids), total=len(ids), desc="pdb", unit="entry", enabled=progress))
    if all("error" in r for r in results.values()):  # nothing fetched: an error, not an empty snapshot
        shown = "; ".join(f"{pid}: {results[pid]['error']}" for pid in ids[:3])
        raise DownloadError(f"every one of the {len(ids)} PDB entries failed ({shown}{'; ...' if len(ids) > 3 else ''}); "
                            f"no {SNAPSHOT_NAME} written. Check the IDs, --base-url and the network")
    manifest = {"snapshot_date": snapshot, "base_url": base_url, "qdiff_version": __version__,
                "entries": {pid: results[pid] for pid in ids}}
    if clusters_url:
        (dest / CLUSTERS_NAME).unlink(missing_ok=True)  # clusters change weekly: always fresh
        remote = RemoteFile(name=CLUSTERS_NAME, urls=(clusters_url,), checksum_source="none; sha256 recorded in snapshot.json")
        path = fetch_file(remote, dest, progress=progress, retries=retries, lock=False)
        manifest["clusters"] = {"url": clusters_url, "sha256": digest(path).sha256}
    path = dest / SNAPSHOT_NAME
    atomic_write_text(path, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return path


# ----------------------------------------------------------------------------- index files
INDEX_URL = "https://files.wwpdb.org/pub/pdb/derived_data/index"
INDEX_FILES = {"resolu.idx": INDEX_URL, "pdb_entry_type.txt": "https://files.wwpdb.org/pub/pdb/derived_data",
               "entries.idx": INDEX_URL, "obsolete.dat": "https://files.wwpdb.org/pub/pdb/data/status"}


def fetch_index_files(dest: str | Path, base_url: str | None = None, retries: int = 3, progress: bool = True) -> Path:
    """Download the wwPDB index files into `<dest>/index/` (fresh each time: they change weekly).
    `base_url` serves all four from one folder (a mirror); default: their wwPDB locations."""
    folder = Path(dest) / "index"
    for name, default in INDEX_FILES.items():
        (folder / name).unlink(missing_ok=True)
        url = f"{(base_url or default).rstrip('/')}/{name}"
        fetch_file(RemoteFile(name=name, urls=(url,), checksum_source="none; changes weekly"), folder,
                   progress=progress, retries=retries, lock=False)
    return folder

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
