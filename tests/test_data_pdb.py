"""PDB: a local HTTP server posing as files.rcsb.org, real entries, and independent parses."""
import gzip
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from http_fixtures import FileServer
from qdiff.data.dataset import BackboneDataset, collate_backbones
from qdiff.data.featurize import featurize
from qdiff.data.info import store_diff, store_info
from qdiff.data.protein_store import ProteinStore
from qdiff.data.residues import CA, MODIFIED_PARENT, RESTYPES_3
from qdiff.data.sources import pdb
from qdiff.data.sources.backbones import clashes

PDB_DIR = Path(__file__).resolve().parent / "data" / "pdb"  # real entries, see PROVENANCE.tsv there
REAL = ["1A8O", "1GBT", "2BEG", "2XHE", "4CUP"]
SETTINGS = {"min_length": 20, "max_length": 600, "workers": 1}


def real(pid):
    return (PDB_DIR / f"{pid}.cif.gz").read_bytes()


def edited(pid, old, new):
    text = gzip.decompress(real(pid)).decode()
    assert old in text
    return gzip.compress(text.replace(old, new, 1).encode(), mtime=0)


@pytest.fixture
def rcsb():
    with FileServer() as server:
        for pid in REAL:
            server.files[f"/download/{pid}.cif.gz"] = real(pid)
        server.files["/download/9ZZZ.cif.gz"] = real("1GBT")[:5000]  # truncated gzip
        server.files["/download/7OBS.cif.gz"] = edited("1A8O", "_pdbx_database_status.status_code      REL", "_pdbx_database_status.status_code      OBS")
        server.files["/download/6NOP.cif.gz"] = edited("1A8O", "'polypeptide(L)'", "polydeoxyribonucleotide")
        yield server


def test_fetch_snapshot_and_cache(tmp_path, rcsb):
    dest = tmp_path / "pdb"
    ids = REAL + ["9ZZZ", "8ABC", "7OBS", "6NOP"]
    path = pdb.fetch_pdb(ids, dest, base_url=rcsb.url + "/download", snapshot="2026-11-25", workers=4, retries=0, progress=False)
    snap = json.loads(path.read_text())
    assert snap["snapshot_date"] == "2026-11-25" and snap["base_url"].endswith("/download")
    entries = snap["entries"]
    assert "corrupt or truncated gzip" in entries["9ZZZ"]["error"]
    assert "HTTP 404" in entries["8ABC"]["error"]
    assert entries["1GBT"]["revision_date"] == "2011-07-13" and len(entries["1GBT"]["sha256"]) == 64
    assert entries["7OBS"]["status"] == "OBS"
    assert not list((dest / "entries").glob("*.part"))
    # The cache is reused: a second run asks the server only for what failed.
    rcsb.requests.clear()
    pdb.fetch_pdb(ids, dest, base_url=rcsb.url + "/download", workers=2, retries=0, progress=False)
    assert sorted(p for p, _ in rcsb.requests) == ["/download/8ABC.cif.gz", "/download/9ZZZ.cif.gz"]


def biopython_chains(pid):
    """Independent parse: Bio.PDB.MMCIFParser, first model, residues with a CA that are standard
    or known modified amino acids; highest-occupancy altloc (Biopython's default)."""
    import io
    import warnings

    from Bio.PDB import MMCIFParser

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        structure = MMCIFParser(QUIET=True).get_structure(pid, io.StringIO(gzip.decompress(real(pid)).decode()))
    model = next(iter(structure))
    out = {}
    for chain in model:
        residues = [r for r in chain if "CA" in r and (r.get_resname() in RESTYPES_3 or r.get_resname() in MODIFIED_PARENT) and r.id[0] != "W"]
        if residues:
            out[f"{pid.lower()}_{chain.id}"] = residues
    return out


def test_featurized_chains_match_an_independent_parse(tmp_path, rcsb):
    dest = tmp_path / "pdb"
    rcsb.files["/clusters.txt"] = b"2BEG_1\n1A8O_1 1GBT_1\n2XHE_1 2XHE_2\n"
    pdb.fetch_pdb(REAL + ["7OBS", "6NOP"], dest, base_url=rcsb.url + "/download", retries=0, progress=False,
                  clusters_url=rcsb.url + "/clusters.txt")
    assert json.loads((dest / "snapshot.json").read_text())["clusters"]["sha256"]
    out = tmp_path / "pdb.h5"
    summary = featurize("pdb", dest, out, SETTINGS, progress=False)
    assert summary["structures"] == 5
    with ProteinStore(out) as store:
        reasons = dict(store.failures())
        assert "obsolete" in reasons["7obs"] and "no protein chain" in reasons["6nop"]
        ids = store.ids()
        for pid in REAL:
            for chain_id, residues in biopython_chains(pid).items():
                c = store.chain(ids.index(chain_id))
                with_ca = c["atom_mask"][:, CA]
                assert with_ca.sum() == len(residues), chain_id
                ours = c["atom_pos"][with_ca, CA]
                theirs = np.array([r["CA"].get_coord() for r in residues])
                assert np.allclose(ours, theirs, atol=1e-3), chain_id
                keys = [(int(n), i.decode().strip()) for n, i in zip(c["resnum"][with_ca], c["icode"][with_ca])]
                assert keys == [(r.id[1], r.id[2].strip()) for r in residues], chain_id
        gbt = store.chain(ids.index("1gbt_A"))
        assert (gbt["icode"] != b" ").any()  # insertion codes kept
        a8o = store.chain(ids.index("1a8o_A"))
        assert "M" in store.chain(ids.index("1a8o_A"))["sequence"] and a8o["atom_mask"][:, 18].any()  # MSE -> MET, SE -> SD
        assert len([i for i in ids if i.startswith("2beg_")]) == 5  # NMR: first model, 5 chains
        table = store.structure_table()
        assert table["2beg"]["method"] == "SOLUTION NMR" and np.isnan(table["2beg"]["resolution"])
        assert table["1a8o"]["resolution"] == pytest.approx(1.70)
        assert store.split_names() == ["cluster"]  # the fetched cluster file is used
        where = {ids[r]: p for p in ("train", "val", "test") for r in store.split("cluster", p)}
        assert where["1a8o_A"] == where["1gbt_A"] and where["2xhe_A"] == where["2xhe_B"]
    assert featurize("pdb", dest, tmp_path / "again.h5", SETTINGS, progress=False)
    assert (tmp_path / "again.h5").read_bytes() == out.read_bytes()


def test_snapshot_diff_reports_added_removed_revised(tmp_path, rcsb):
    old, new = tmp_path / "old", tmp_path / "new"
    pdb.fetch_pdb(["1A8O", "1GBT"], old, base_url=rcsb.url + "/download", progress=False)
    rcsb.files["/download/1GBT.cif.gz"] = edited("1GBT", "2011-07-13", "2026-11-25")
    pdb.fetch_pdb(["1GBT", "4CUP"], new, base_url=rcsb.url + "/download", progress=False)
    featurize("pdb", old, tmp_path / "old.h5", SETTINGS, progress=False)
    featurize("pdb", new, tmp_path / "new.h5", SETTINGS, progress=False)
    diff = store_diff(tmp_path / "old.h5", tmp_path / "new.h5")
    assert diff["added"] == ["4cup_A"] and diff["removed"] == ["1a8o_A"]
    assert diff["revised_entries"] == ["1gbt"] and diff["changed"] == []
    info = store_info(tmp_path / "new.h5")
    assert info["chains"] == 2 and info["structures"] == 2


def test_filters_record_their_reasons(tmp_path, rcsb):
    dest = tmp_path / "pdb"
    pdb.fetch_pdb(REAL, dest, base_url=rcsb.url + "/download", progress=False)
    out = tmp_path / "f.h5"
    featurize("pdb", dest, out, {"min_length": 32, "max_length": 256, "max_resolution": 2.5, "workers": 2,
                                 "released_before": "2014-01-01"}, progress=False)
    with ProteinStore(out) as store:
        reasons = dict(store.failures())
        assert "released 2014-04-02" in reasons["4cup"]
        assert "resolution 2.8" in reasons["2xhe"]
        assert "length 26" in reasons["2beg_A"] and "no chain passed" in reasons["2beg"]
        assert set(store.ids()) == {"1a8o_A", "1gbt_A"}


def test_index_files_select_candidates(tmp_path):
    (tmp_path / "pdb_entry_type.txt").write_text("101m\tprot\tdiffraction\n1abc\tnuc\tdiffraction\n2abc\tprot\tNMR\n3abc\tprot\tdiffraction\n4abc\tprot\tdiffraction\n")
    (tmp_path / "resolu.idx").write_text("PDB ID LIST WITH RESOLUTIONS\n\nIDCODE\t\t;\tRESOLUTION\n------\t\t;\t----------\n101M\t;\t2.07\n1ABC\t;\t1.5\n2ABC\t;\t-1.00\n3ABC\t;\t3.9\n4ABC\t;\t1.2\n")
    (tmp_path / "entries.idx").write_text("IDCODE\tHEADER\tACCESSION DATE\tCOMPOUND\tSOURCE\tAUTHOR LIST\tRESOLUTION\tEXPERIMENT TYPE\n------\n101M\tOXYGEN\t12/13/97\tMYOGLOBIN\tWHALE\tA\t2.07\tX-RAY\n2ABC\tX\t01/02/27\tX\tX\tX\tNOT\tNMR\n3ABC\tX\t01/02/03\tX\tX\tX\t3.9\tX-RAY\n4ABC\tX\t01/02/03\tX\tX\tX\t1.2\tX-RAY\n")
    (tmp_path / "obsolete.dat").write_text("LIST OF OBSOLETE COORDINATE ENTRIES AND SUCCESSORS\nOBSLTE    26-SEP-06 4ABC     5ABC\n")
    kept, dropped = pdb.select_candidates(tmp_path, max_resolution=3.0, before="2026-11-25")
    assert kept == ["101M"]
    assert dropped["1ABC"].startswith("entry type nuc") and "resolution 3.9" in dropped["3ABC"]
    assert dropped["4ABC"] == "obsolete" and "not before the snapshot" in dropped["2ABC"]
    assert pdb.read_ids_file(_write(tmp_path / "ids.txt", "1abc, 2ABC # comment\n3abc\n")) == ["1ABC", "2ABC", "3ABC"]
    with pytest.raises(ValueError, match="not a PDB ID"):
        pdb.normalize_ids(["12345"])


def _write(path, text):
    path.write_text(text)
    return path


def test_cluster_split_keeps_clusters_together(tmp_path):
    chains = {f"{e}_A": f"{e}_1" for e in ["1aaa", "1bbb", "1ccc", "1ddd", "1eee", "1fff"]} | {"1aaa_B": "1aaa_2"}
    clusters = pdb.read_clusters(_write(tmp_path / "clusters.txt", "1AAA_1 1BBB_1 1CCC_1\n1DDD_1\n1EEE_1 1AAA_2\n"))
    parts = pdb.cluster_split(chains, clusters, [0.5, 0.25, 0.25], seed=0)
    where = {c: p for p, cs in parts.items() for c in cs}
    assert where["1aaa_A"] == where["1bbb_A"] == where["1ccc_A"] and where["1eee_A"] == where["1aaa_B"]
    assert sorted(where) == sorted(chains)


def test_demo_backbones(tmp_path):
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    featurize("demo-backbones", None, a, {"n_backbones": 30}, progress=False)
    featurize("demo-backbones", None, b, {"n_backbones": 30}, progress=False)
    assert a.read_bytes() == b.read_bytes()
    with ProteinStore(a) as store:
        assert "synthetic" in store.attrs["source"] and "not PDB data" in store.attrs["source"]
        lengths = store.chain_lengths()
        assert lengths.min() >= 32 and lengths.max() <= 128
        for row in range(len(store)):
            ca = store.chain(row)["atom_pos"][:, CA]
            assert np.allclose(np.linalg.norm(np.diff(ca, axis=0), axis=-1), 3.8, atol=1e-4)
            assert not clashes(ca)
    ds = BackboneDataset(a, "random", "train", max_length=40)
    item = ds[0]
    assert item["pos"].shape[0] <= 40 and torch.allclose(item["pos"][item["mask"]].mean(0), torch.zeros(3), atol=1e-4)
    batch = collate_backbones([ds[i] for i in range(4)])
    assert batch["pos"].shape[0] == 4 and batch["mask"].shape == batch["pos"].shape[:2]


def test_cli_fetch_from_downloaded_index_files(tmp_path, rcsb):
    import subprocess
    import sys

    rcsb.files["/idx/pdb_entry_type.txt"] = b"1a8o\tprot\tdiffraction\n1gbt\tprot\tdiffraction\n2beg\tprot\tNMR\n1abc\tnuc\tdiffraction\n"
    rcsb.files["/idx/resolu.idx"] = b"IDCODE ; RESOLUTION\n1A8O\t;\t1.70\n1GBT\t;\t2.00\n2BEG\t;\t-1.00\n1ABC\t;\t1.0\n"
    rcsb.files["/idx/entries.idx"] = b"IDCODE\tHEADER\tACCESSION DATE\n------\n1A8O\tX\t03/03/98\n1GBT\tX\t09/01/93\n2BEG\tX\t05/04/05\n"
    rcsb.files["/idx/obsolete.dat"] = b"LIST OF OBSOLETE COORDINATE ENTRIES AND SUCCESSORS\n"
    dest = tmp_path / "pdb"
    cmd = [sys.executable, "-m", "qdiff", "fetch", "pdb", "--index-url", rcsb.url + "/idx", "--max-resolution", "1.8",
           "--base-url", rcsb.url + "/download", "--dest", str(dest), "--snapshot", "2026-11-25"]
    out = subprocess.run(cmd, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "2 entries cached, 0 failed" in out.stdout  # 1A8O (X-ray 1.7 Å) and 2BEG (NMR, no resolution)
    dropped = json.loads((dest / "dropped.json").read_text())
    assert "resolution 2.0" in dropped["1GBT"] and "nuc" in dropped["1ABC"]
    bad = subprocess.run([sys.executable, "-m", "qdiff", "fetch", "pdb", "--ids", "12345"], capture_output=True, text=True)
    assert bad.returncode == 2 and "not a PDB ID" in bad.stderr


def provenance_revisions():
    """Latest revision date of each test entry, from PROVENANCE.tsv (recorded when they were taken)."""
    rows = [line.split("\t") for line in (PDB_DIR / "PROVENANCE.tsv").read_text().splitlines()[1:]]
    return {row[0]: row[1] for row in rows}


def test_a_snapshot_keeps_out_entries_released_or_revised_after_it(tmp_path, rcsb):
    """The server has only each entry's latest version: an entry revised (or released) after the
    snapshot date is not what the snapshot saw, and is kept out with the reason, not used."""
    revisions = provenance_revisions()
    snapshot = "2012-01-01"
    dest = tmp_path / "old"
    snap = json.loads(pdb.fetch_pdb(REAL, dest, base_url=rcsb.url + "/download", snapshot=snapshot, retries=0, progress=False).read_text())
    for pid in REAL:
        reason = snap["entries"][pid].get("excluded")
        if revisions[pid] > snapshot:
            assert reason and f"after the snapshot {snapshot}" in reason, (pid, reason)
        else:
            assert reason is None, (pid, reason)
    assert {pid for pid in REAL if revisions[pid] > snapshot} == {"2XHE", "4CUP"}  # the cases above both occur
    out = tmp_path / "old.h5"
    featurize("pdb", dest, out, SETTINGS, progress=False)
    with ProteinStore(out) as store:
        reasons = dict(store.failures())
        assert reasons["4cup"].startswith(f"snapshot {snapshot}: ") and f"after the snapshot {snapshot}" in reasons["4cup"]
        assert {c.split("_")[0] for c in store.ids()} == {"1a8o", "1gbt", "2beg"}

    # A revision after the snapshot, served now for 1GBT: kept out of the 2026-11-01 snapshot, in the 2026-11-30 one.
    rcsb.files["/download/1GBT.cif.gz"] = edited("1GBT", "2011-07-13", "2026-11-25")
    dest = tmp_path / "new"
    snap = json.loads(pdb.fetch_pdb(REAL, dest, base_url=rcsb.url + "/download", snapshot="2026-11-01", retries=0, progress=False).read_text())
    assert snap["entries"]["1GBT"]["excluded"].startswith("revised 2026-11-25, after the snapshot 2026-11-01")
    assert [pid for pid in REAL if "excluded" in snap["entries"][pid]] == ["1GBT"]
    rcsb.requests.clear()
    snap = json.loads(pdb.fetch_pdb(REAL, dest, base_url=rcsb.url + "/download", snapshot="2026-11-30", retries=0, progress=False).read_text())
    assert not any("excluded" in e for e in snap["entries"].values())
    assert rcsb.requests == []  # downloaded today, after 2026-11-30: every cached entry is the version of that date


def test_cached_entries_are_reused_only_when_they_can_be_the_snapshots_version(tmp_path, rcsb):
    dest = tmp_path / "pdb"
    snapshot = "2026-11-25"
    pdb.fetch_pdb(REAL, dest, base_url=rcsb.url + "/download", snapshot=snapshot, retries=0, progress=False)
    cache = json.loads((dest / "entries.json").read_text())
    assert set(cache) == set(REAL) and all(len(c["sha256"]) == 64 for c in cache.values())
    # 1A8O's cached copy predates the snapshot (a revision in between would be missing) and 2BEG's
    # cached bytes are not the ones downloaded: both are fetched again, the others reused.
    cache["1A8O"]["downloaded"] = "2026-10-01"
    (dest / "entries.json").write_text(json.dumps(cache))
    (dest / "entries" / "2BEG.cif.gz").write_bytes(real("1GBT"))
    rcsb.requests.clear()
    snap = json.loads(pdb.fetch_pdb(REAL, dest, base_url=rcsb.url + "/download", snapshot=snapshot, retries=0, progress=False).read_text())
    assert sorted(p for p, _ in rcsb.requests) == ["/download/1A8O.cif.gz", "/download/2BEG.cif.gz"]
    assert (dest / "entries" / "2BEG.cif.gz").read_bytes() == real("2BEG")
    assert {pid for pid, e in snap["entries"].items() if e["from_cache"]} == {"1GBT", "2XHE", "4CUP"}


def test_a_snapshot_date_pins_the_bytes_of_its_entries_and_its_cluster_file(tmp_path, rcsb):
    """The first fetch of a snapshot date records each entry's sha256 (snapshots/<date>.json); a
    later fetch of that date that gets other bytes (a file re-issued without a new revision date)
    keeps the entry out with the reason, and reuses the cluster file recorded for the date."""
    dest = tmp_path / "pdb"
    snapshot = "2026-11-25"
    rcsb.files["/clusters.txt"] = b"1A8O_1 1GBT_1\n"
    kwargs = dict(base_url=rcsb.url + "/download", snapshot=snapshot, retries=0, progress=False, clusters_url=rcsb.url + "/clusters.txt")
    pdb.fetch_pdb(REAL, dest, **kwargs)
    pin = json.loads((dest / "snapshots" / f"{snapshot}.json").read_text())
    assert pin["entries"]["1A8O"]["sha256"] == hashlib.sha256(real("1A8O")).hexdigest()
    assert pin["clusters"]["sha256"] == hashlib.sha256(b"1A8O_1 1GBT_1\n").hexdigest()
    reissued = gzip.compress(gzip.decompress(real("1A8O")).replace(b"data_1A8O", b"data_1A8O\n# re-issued", 1), mtime=0)
    rcsb.files["/download/1A8O.cif.gz"] = reissued
    rcsb.files["/clusters.txt"] = b"1A8O_1\n1GBT_1\n"
    rcsb.requests.clear()
    snap = json.loads(pdb.fetch_pdb(REAL, dest, refresh=True, **kwargs).read_text())
    assert "/clusters.txt" not in [p for p, _ in rcsb.requests]  # the date's own cluster file, kept
    assert (dest / "clusters-by-entity-30.txt").read_bytes() == b"1A8O_1 1GBT_1\n"
    reason = snap["entries"]["1A8O"]["excluded"]
    assert "differs from" in reason and f"snapshot {snapshot}" in reason
    assert [pid for pid in REAL if "excluded" in snap["entries"][pid]] == ["1A8O"]
    assert json.loads((dest / "snapshots" / f"{snapshot}.json").read_text())["entries"] == pin["entries"]  # never rewritten
    featurize("pdb", dest, tmp_path / "p.h5", SETTINGS, progress=False)
    with ProteinStore(tmp_path / "p.h5") as store:
        assert "differs from" in dict(store.failures())["1a8o"] and not any(c.startswith("1a8o") for c in store.ids())
    # A new snapshot date takes the file as it is now, and the current cluster file.
    snap = json.loads(pdb.fetch_pdb(REAL, dest, **{**kwargs, "snapshot": "2026-11-30"}).read_text())
    assert "excluded" not in snap["entries"]["1A8O"] and snap["entries"]["1A8O"]["sha256"] == hashlib.sha256(reissued).hexdigest()
    assert (dest / "clusters-by-entity-30.txt").read_bytes() == b"1A8O_1\n1GBT_1\n"
