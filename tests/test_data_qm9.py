"""QM9: fetch from a local HTTP server, featurize each raw format, and check the store."""
import hashlib
import json
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch
import yaml

from http_fixtures import FileServer
from qm9_fixtures import real_entries, uncharacterized_text, write_gdb9_tarball, write_xyz_tarball, xyz_text
from qdiff.data.dataset import ConformerDataset, collate_molecules
from qdiff.data.download import DownloadError
from qdiff.data.featurize import featurize
from qdiff.data.fetch import fetch_dataset
from qdiff.data.info import store_diff, store_info
from qdiff.data.manifest import MANIFEST_ENV
from qdiff.data.molecule_store import MoleculeStore, StoreError
from qdiff.data.sources import qm9

N = 40


@pytest.fixture(scope="module")
def entries():
    return real_entries(N)


@pytest.fixture
def figshare_files(tmp_path, entries):
    """A QM9 xyz tarball (Mathematica numbers, one malformed member) and uncharacterized.txt."""
    folder = tmp_path / "serve"
    folder.mkdir()
    bad = xyz_text(entries[1]).replace(f"gdb {entries[1].index}", "gdb")  # broken property line
    extra = {"dsgdb9nsd_999999.xyz": bad}
    write_xyz_tarball(folder / "dsgdb9nsd.xyz.tar.bz2", entries, extra)
    (folder / "uncharacterized.txt").write_text(uncharacterized_text([entries[3].index]))
    return folder


def serve(server, folder, prefix="/qm9"):
    for path in folder.iterdir():
        server.files[f"{prefix}/{path.name}"] = path.read_bytes()


def test_parse_xyz_quirks(entries):
    e = entries[2]
    parsed = qm9.parse_xyz(xyz_text(e), "x.xyz")
    assert parsed.index == e.index and parsed.elements == e.elements
    assert np.allclose(parsed.positions, e.positions)
    assert parsed.mulliken[0] == pytest.approx(3.2e-6)
    assert parsed.properties["U0"] == pytest.approx(e.properties["U0"])
    assert qm9.parse_number("1.2*^-6") == pytest.approx(1.2e-6) and qm9.parse_number("0.") == 0.0
    with pytest.raises(ValueError, match="bad.xyz: malformed"):
        qm9.parse_xyz("3\ngdb 1\t1\nC\t0\t0\t0\t0\n", "bad.xyz")


def test_fetch_figshare_from_a_mirror_and_featurize(tmp_path, figshare_files, entries):
    raw = tmp_path / "raw"
    with FileServer() as server:
        serve(server, figshare_files)
        server.challenge.add("/blocked/dsgdb9nsd.xyz.tar.bz2")
        paths = fetch_dataset("qm9", "figshare", raw, mirror=server.url + "/qm9", progress=False, retries=0)
    assert sorted(p.name for p in paths) == ["dsgdb9nsd.xyz.tar.bz2", "uncharacterized.txt"]
    assert (raw / "CHECKSUMS.lock.json").is_file()
    out = tmp_path / "qm9.h5"
    summary = featurize("qm9", raw, out, progress=False)
    assert summary == {"molecules": N - 1, "failures": 1, "source": "figshare"}
    with MoleculeStore(out) as store:
        ids = store.ids()
        assert qm9.mol_id(entries[3].index) not in ids  # uncharacterized: excluded
        assert store.failures()[0][0] == "dsgdb9nsd_999999" and "malformed" in store.failures()[0][1]
        row = ids.index(qm9.mol_id(entries[0].index))
        mol = store.molecule(row)
        assert np.allclose(mol["positions"][0], entries[0].positions, atol=1e-6)
        assert store.attrs["length_unit"] == "angstrom" and store.attrs["source"] == "figshare"
        assert store.split_names() == []  # the EDM split needs the full QM9
    # Offline: everything verified, nothing missing.
    assert len(fetch_dataset("qm9", "figshare", raw, offline=True)) == 2


def test_offline_fetch_lists_what_is_missing(tmp_path):
    with pytest.raises(DownloadError) as err:
        fetch_dataset("qm9", "figshare", tmp_path, offline=True)
    text = str(err.value)
    assert "dsgdb9nsd.xyz.tar.bz2" in text and str(tmp_path) in text and "figshare.com" in text


def test_deepchem_mirror_checksum_and_featurize(tmp_path, entries, monkeypatch):
    folder = tmp_path / "serve"
    folder.mkdir()
    write_gdb9_tarball(folder / "gdb9.tar.gz", entries)
    (folder / "uncharacterized.txt").write_text(uncharacterized_text([entries[3].index]))
    raw = tmp_path / "raw"
    with FileServer() as server:
        serve(server, folder)
        # The committed manifest pins the real archive's md5: our test archive must be refused.
        with pytest.raises(DownloadError, match="md5 mismatch"):
            fetch_dataset("qm9", "deepchem", raw, mirror=server.url + "/qm9", progress=False, retries=0)
        assert not (raw / "gdb9.tar.gz").exists()
        # A private manifest with this archive's checksum (what a mirror operator would write).
        md5 = hashlib.md5((folder / "gdb9.tar.gz").read_bytes()).hexdigest()
        manifest = tmp_path / "manifest.yaml"
        manifest.write_text(yaml.safe_dump({"qm9": {"license": "test", "sources": {"deepchem": [
            {"name": "gdb9.tar.gz", "urls": [server.url + "/qm9/gdb9.tar.gz"], "md5": md5, "checksum_source": "test"},
            {"name": "uncharacterized.txt", "urls": [server.url + "/qm9/uncharacterized.txt"], "checksum_source": "test"},
        ]}}}))
        monkeypatch.setenv(MANIFEST_ENV, str(manifest))
        fetch_dataset("qm9", "deepchem", raw, progress=False)
    summary = featurize("qm9", raw, tmp_path / "gdb9.h5", progress=False)
    assert summary["molecules"] == N - 1 and summary["source"] == "deepchem"
    assert not list(raw.glob("gdb9-*"))  # the extraction folder is removed
    a = store_diff_ids(tmp_path / "gdb9.h5")
    assert qm9.mol_id(entries[3].index) not in a


def store_diff_ids(path):
    with MoleculeStore(path) as store:
        return set(store.ids())


def test_corrupt_archive_is_a_clear_error_and_leaves_no_store(tmp_path, figshare_files):
    raw = tmp_path / "raw"
    shutil.copytree(figshare_files, raw)
    data = (raw / "dsgdb9nsd.xyz.tar.bz2").read_bytes()
    (raw / "dsgdb9nsd.xyz.tar.bz2").write_bytes(data[: len(data) // 2])
    out = tmp_path / "qm9.h5"
    with pytest.raises(ValueError, match="corrupt or truncated archive"):
        featurize("qm9", raw, out, progress=False)
    assert not list(tmp_path.glob("qm9.h5*"))


def test_interrupted_featurization_leaves_nothing(tmp_path, figshare_files, monkeypatch):
    calls = {"n": 0}
    original = qm9.record_from_entry

    def dying(entry):
        calls["n"] += 1
        if calls["n"] == 10:
            raise KeyboardInterrupt  # what a killed job looks like from inside
        return original(entry)

    monkeypatch.setattr(qm9, "record_from_entry", dying)
    with pytest.raises(KeyboardInterrupt):
        featurize("qm9", figshare_files, tmp_path / "qm9.h5", progress=False)
    assert not list(tmp_path.glob("qm9.h5*"))


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "demo.h5"
    featurize("demo-qm9", None, out, {"n_molecules": 300}, progress=False)
    return out


def test_demo_store_is_deterministic_and_validated(tmp_path, demo_store):
    again = tmp_path / "again.h5"
    featurize("demo-qm9", None, again, {"n_molecules": 300}, progress=False)
    assert again.read_bytes() == demo_store.read_bytes()
    info = store_info(demo_store)
    assert info["molecules"] == 300 and info["splits"]["random"] == {"train": 240, "val": 30, "test": 30}
    with MoleculeStore(demo_store) as store:
        train = store.split("random", "train")
        assert len(set(train) & set(store.split("random", "test"))) == 0
        assert store.h5["splits/random/train"].attrs["sha256"]
        with pytest.raises(KeyError, match="no split 'edm'"):
            store.split("edm", "train")
    # Schema checks: another version, another schema, not HDF5 at all.
    for attr, value, message in (("schema_version", 99, "schema_version 99"), ("schema", "qdiff.proteins", "expected 'qdiff.molecules'")):
        bad = tmp_path / f"bad_{attr}.h5"
        shutil.copy(demo_store, bad)
        with h5py.File(bad, "r+") as h5:
            h5.attrs[attr] = value
        with pytest.raises(StoreError, match=message):
            MoleculeStore(bad)
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5")
    with pytest.raises(StoreError, match="not a readable HDF5"):
        MoleculeStore(junk)


def test_dataset_and_collate(demo_store):
    ds = ConformerDataset(demo_store, "random", "val")
    assert len(ds) == 30
    item = ds[0]
    assert item["pos"].shape == (item["z"].shape[0], 3) and item["pos"].dtype == torch.float32
    batch = collate_molecules([ds[i] for i in range(5)])
    n_max = batch["mask"].shape[1]
    assert batch["pos"].shape == (5, n_max, 3)
    assert (batch["z"][~batch["mask"]] == 0).all()
    assert (batch["bond_index"] // n_max == batch["bond_batch"][:, None]).all()
    import pickle

    clone = pickle.loads(pickle.dumps(ds))
    assert clone._store is None and torch.equal(clone[3]["pos"], ds[3]["pos"])
    loader = torch.utils.data.DataLoader(ds, batch_size=8, num_workers=2, collate_fn=collate_molecules)
    assert sum(b["mask"].shape[0] for b in loader) == 30


def test_data_diff_reports_added_removed_changed(tmp_path, demo_store):
    other = tmp_path / "other.h5"
    featurize("demo-qm9", None, other, {"n_molecules": 300, "seed": 1}, progress=False)
    diff = store_diff(demo_store, other)
    assert diff["added"] and diff["removed"] and len(diff["added"]) == len(diff["removed"])
    assert diff["changed"] == [] and diff["unchanged"] == 300 - len(diff["added"])
    same = store_diff(demo_store, demo_store)
    assert same["added"] == same["removed"] == same["changed"] == []
    out = subprocess.run([sys.executable, "-m", "qdiff", "data", "diff", str(demo_store), str(other)], capture_output=True, text=True, check=True)
    assert f"+{len(diff['added'])} added" in out.stdout
    info = subprocess.run([sys.executable, "-m", "qdiff", "data", "info", str(demo_store)], capture_output=True, text=True, check=True)
    assert "molecules 300" in info.stdout and "split random" in info.stdout


def test_edm_split_sizes_and_determinism():
    included = np.setdiff1d(np.arange(1, qm9.N_GDB9 + 1), np.arange(5, qm9.N_GDB9, 43)[: qm9.N_UNCHARACTERIZED])
    split = qm9.edm_split(included)
    assert {k: len(v) for k, v in split.items()} == {"train": 100_000, "val": 17_748, "test": 13_083}
    assert len(set().union(*split.values())) == len(included)
    assert qm9.edm_split(included[::-1]) == split  # depends on the set, not the input order
    with pytest.raises(ValueError, match="needs the full QM9"):
        qm9.edm_split(included[:1000])


def _full_qm9_items(entries):
    """Raw items for all 130,831 characterized indices (the real molecules, cycled: parsing is what
    is cheap, RDKit featurizes only the kept ones), plus the index list they stand for."""
    import dataclasses

    included = np.setdiff1d(np.arange(1, qm9.N_GDB9 + 1), np.arange(5, qm9.N_GDB9, 43)[: qm9.N_UNCHARACTERIZED])
    items = [dataclasses.replace(entries[i % len(entries)], index=int(index)) for i, index in enumerate(included)]
    return items, included


def test_edm_subset_featurizes_the_first_molecules_of_each_edm_part(tmp_path, entries, monkeypatch):
    """`edm_subset`: the EDM split is computed on the full index list, then only the first N of
    each part (EDM order) are featurized; the store's `edm` split is EDM's, restricted to them."""
    import qdiff.data.featurize as featurize_module
    from qdiff.errors import EmptyResultError

    items, included = _full_qm9_items(entries)
    monkeypatch.setattr(featurize_module, "_qm9_entries", lambda raw, progress: ("qm9pack", ["u"], {"f": "0"}, iter(items), set()))
    featurized = []
    record_from_entry = qm9.record_from_entry
    monkeypatch.setattr(qm9, "record_from_entry", lambda e: featurized.append(e.index) or record_from_entry(e))
    subset = {"train": 6, "val": 3, "test": 4}
    out = tmp_path / "qm9.h5"
    summary = featurize("qm9", tmp_path, out, {"edm_subset": subset}, progress=False)
    edm = qm9.edm_split(included)  # independently, on the full list
    assert len(featurized) == 13 and summary["molecules"] + summary["failures"] == 13
    with MoleculeStore(out) as store:
        ids = store.ids()
        for part, n in subset.items():
            assert [ids[r] for r in store.split("edm", part)] == edm[part][:n]  # the first N, in EDM order
        kept_test = ids[store.split("edm", "test")[0]]
        assert kept_test in edm["test"] and kept_test not in edm["train"] + edm["val"]
        attrs = store.split_attrs("edm")
        assert json.loads(attrs["subset"]) == subset and "EDM order" in attrs["subset_order"] and attrs["seed"] == 0
        assert json.loads(store.attrs["settings"]) == {"edm_subset": subset}
    # A part left out is kept whole (here only its count is checked: no featurizing of 100k).
    counted = []
    monkeypatch.setattr(featurize_module, "_qm9_records", lambda items, *a: counted.append(len(items)) or ([], []))
    with pytest.raises(EmptyResultError):
        featurize("qm9", tmp_path, tmp_path / "b.h5", {"edm_subset": {"train": 1, "val": 1}}, progress=False)
    assert counted == [1 + 1 + len(edm["test"])]


def test_edm_subset_settings_are_checked(tmp_path, entries, monkeypatch):
    import qdiff.data.featurize as featurize_module
    from qdiff.errors import InputFileError, SettingsError

    for bad, words in (({"edm_subset": {"tset": 1}}, "edm_subset.tset"), ({"edm_subset": {"test": 0}}, "must be >= 1"),
                       ({"edm_subset": 8}, "is not an object"), ({"subset": {"test": 1}}, "unknown setting 'subset'")):
        with pytest.raises(SettingsError, match=words):
            featurize("qm9", tmp_path, tmp_path / "x.h5", bad, progress=False)
    # a partial archive has no EDM split to take a subset of: a clear error before any RDKit work
    monkeypatch.setattr(featurize_module, "_qm9_entries", lambda raw, progress: ("figshare", ["u"], {"f": "0"}, iter(entries), set()))
    with pytest.raises(InputFileError, match="edm_subset needs the full QM9.*40 of the 130831"):
        featurize("qm9", tmp_path, tmp_path / "x.h5", {"edm_subset": {"test": 1}}, progress=False)
    assert not (tmp_path / "x.h5").exists()


@pytest.mark.slow
def test_full_qm9_from_qm9pack_offline(tmp_path):
    raw = tmp_path / "raw"
    fetch_dataset("qm9", "qm9pack", raw)
    out = tmp_path / "qm9.h5"
    summary = featurize("qm9", raw, out, progress=False)
    assert summary["molecules"] + summary["failures"] == 130_831
    with MoleculeStore(out) as store:
        sizes = {p: len(store.split("edm", p)) for p in ("train", "val", "test")}
        dropped = int(store.h5["splits/edm"].attrs["dropped_missing"])
        assert sum(sizes.values()) + dropped == 130_831 and dropped == summary["failures"]
        assert sizes["test"] + sizes["val"] + sizes["train"] == len(store)
