"""`qdiff featurize`: raw files -> a molecule store (one runner per dataset)."""
from __future__ import annotations

import json
import shutil
import tarfile
import tempfile
from pathlib import Path

import numpy as np
from rdkit import RDLogger

from ..progress import progress_bar
from .download import verify
from .fetch import PACKAGE_MARKER
from .manifest import source_files
from .molecule_store import MoleculeStoreWriter
from .sources import qm9 as qm9_source
from .splits import random_split
from ..errors import EmptyResultError, InputFileError
from ..settings import check_section as check_settings

DEFAULTS = {
    # edm_subset: None = every molecule; {train: N, val: N, test: N} = only the first N molecules of
    # each EDM part, in EDM order (see featurize_qm9); a part left out is kept whole.
    "qm9": {"edm_subset": None},
    "demo-qm9": {"n_molecules": 2000, "seed": 0, "split": [0.8, 0.1, 0.1]},
    # reference_split: the split whose test molecules keep every conformer (ET-Flow's protocol);
    # "auto" = etflow when the split.npy is there, else random; "none" caps every molecule.
    "geom-drugs": {"max_conformers": 30, "drop_disconnected": True, "seed": 0, "split": [0.8, 0.1, 0.1], "reference_split": "auto"},
    "geom-qm9": {"max_conformers": 30, "drop_disconnected": False, "seed": 0, "split": [0.8, 0.1, 0.1], "reference_split": "auto"},
    "demo-drugs": {"n_conformers": 10, "max_molecules": 200, "timeout_s": 5, "seed": 0, "split": [0.8, 0.1, 0.1]},
}
_PROTEIN = {"pdb", "demo-backbones"}


def featurize(dataset: str, raw: str | Path | None, out: str | Path, settings: dict | None = None, progress: bool = True) -> dict:
    """Build the store for `dataset` from the raw folder; returns a summary dict. A store with no
    molecules (or chains) is an EmptyResultError naming the source, and no store is left behind."""
    check_settings(settings or {}, "featurize", dataset)
    summary = _featurize(dataset, raw, out, settings, progress)
    count = summary.get("chains", summary.get("molecules"))
    if not count:
        Path(out).unlink(missing_ok=True)
        what = "chains" if "chains" in summary else "molecules"
        raise EmptyResultError(f"featurize {dataset}: 0 {what} from {raw or 'the default source'} ({summary.get('failures', 0)} "
                               "failed); no store written. "
                               "Check the raw files (re-run `qdiff fetch`) and the settings")
    return summary


def _featurize(dataset, raw, out, settings, progress) -> dict:
    RDLogger.DisableLog("rdApp.*")
    if dataset in _PROTEIN:
        from .featurize_proteins import BACKBONE_DEFAULTS, PDB_DEFAULTS, featurize_demo_backbones, featurize_pdb

        known = PDB_DEFAULTS if dataset == "pdb" else BACKBONE_DEFAULTS
        unknown = set(settings or {}) - set(known)
        if unknown:
            raise ValueError(f"featurize {dataset}: unknown settings {sorted(unknown)}; known: {sorted(known)}")
        if dataset == "pdb":
            return featurize_pdb(Path(raw) if raw else Path("resources/pdb"), Path(out), settings or {}, progress)
        return featurize_demo_backbones(Path(out), settings or {}, progress)
    unknown = set(settings or {}) - set(DEFAULTS.get(dataset, {}))
    if unknown:
        raise ValueError(f"featurize {dataset}: unknown settings {sorted(unknown)}; known: {sorted(DEFAULTS.get(dataset, {}))}")
    settings = {**DEFAULTS.get(dataset, {}), **(settings or {})}
    if dataset == "qm9":
        return featurize_qm9(Path(raw) if raw else Path("resources/qm9"), Path(out), settings, progress)
    if dataset == "demo-qm9":
        return featurize_demo_qm9(Path(out), settings, progress)
    if dataset in ("geom-drugs", "geom-qm9"):
        return featurize_geom(dataset, Path(raw) if raw else Path("resources") / dataset, Path(out), settings, progress)
    if dataset == "demo-drugs":
        from .sources.demo_drugs import featurize_demo_drugs

        return featurize_demo_drugs(Path(out), settings, progress)
    raise ValueError(f"featurize: dataset {dataset!r} is not supported yet; supported: qm9, demo-qm9, geom-drugs, geom-qm9, demo-drugs")


def _package_csvs(raw: Path) -> dict[str, Path]:
    """The qm9pack CSVs recorded by `qdiff fetch qm9 --source qm9pack`, re-verified."""
    marker = json.loads((raw / PACKAGE_MARKER).read_text())
    for remote in source_files("qm9", "qm9pack"):
        if remote.name not in marker:
            raise ValueError(f"{raw / PACKAGE_MARKER}: no entry for {remote.name}; re-run qdiff fetch qm9 --source qm9pack")
        verify(Path(marker[remote.name]["path"]), remote)
    return {name: Path(entry["path"]) for name, entry in marker.items()}


def _qm9_entries(raw: Path, progress: bool):
    """(source name, urls, raw sha256s, iterator of QM9Entry | (id, error), excluded indices)."""
    if (raw / PACKAGE_MARKER).is_file():
        csvs = _package_csvs(raw)
        folder = next(iter(csvs.values())).parent
        sums = {name: json.loads((raw / PACKAGE_MARKER).read_text())[name]["sha256"] for name in csvs}
        return "qm9pack", ["https://pypi.org/project/qm9pack/1.0.3/"], sums, qm9_source.iter_qm9pack(folder), set()
    unchar = raw / "uncharacterized.txt"
    if (raw / "dsgdb9nsd.xyz.tar.bz2").is_file():
        files = {f.name: f for f in source_files("qm9", "figshare")}
        sums = {name: verify(raw / name, files[name], raw).sha256 for name in files}
        excluded = qm9_source.read_uncharacterized(unchar)

        def entries():
            for name, text, error in qm9_source.iter_xyz_tarball(raw / "dsgdb9nsd.xyz.tar.bz2"):
                stem = Path(name).stem
                if error:
                    yield (stem, error)
                    continue
                try:
                    yield qm9_source.parse_xyz(text, name)
                except ValueError as err:
                    yield (stem, str(err))

        return "figshare", [u for f in files.values() for u in f.urls[:1]], sums, entries(), excluded
    if (raw / "gdb9.tar.gz").is_file():
        files = {f.name: f for f in source_files("qm9", "deepchem")}
        sums = {name: verify(raw / name, files[name], raw).sha256 for name in files}  # before extracting
        excluded = qm9_source.read_uncharacterized(unchar)
        tmp = Path(tempfile.mkdtemp(prefix="gdb9-", dir=raw))
        try:
            with tarfile.open(raw / "gdb9.tar.gz") as tar:
                for member in tar.getmembers():
                    if member.name in ("gdb9.sdf", "gdb9.sdf.csv") and member.isfile():
                        tar.extract(member, tmp, filter="data")
        except (tarfile.TarError, EOFError, OSError) as err:
            shutil.rmtree(tmp, ignore_errors=True)
            raise InputFileError(f"{raw / 'gdb9.tar.gz'}: corrupt archive ({err}); delete it and re-run `qdiff fetch qm9 --source deepchem`") from err
        if not (tmp / "gdb9.sdf").is_file() or not (tmp / "gdb9.sdf.csv").is_file():
            shutil.rmtree(tmp, ignore_errors=True)
            raise InputFileError(f"{raw / 'gdb9.tar.gz'}: gdb9.sdf or gdb9.sdf.csv missing from the archive")

        def entries():
            try:
                for item in qm9_source.iter_gdb9_sdf(tmp / "gdb9.sdf", tmp / "gdb9.sdf.csv"):
                    yield item
            finally:
                shutil.rmtree(tmp, ignore_errors=True)

        return "deepchem", [u for f in files.values() for u in f.urls[:1]], sums, entries(), excluded
    raise FileNotFoundError(
        f"{raw}: no QM9 raw files; run `qdiff fetch qm9` (figshare), `--source deepchem`, or `--source qm9pack` (offline)"
    )


def _qm9_records(items, excluded: set[int], progress: bool, total: int | None):
    records, failures = [], []
    for item in progress_bar(items, total=total, desc="qm9", unit="mol", enabled=progress):
        if isinstance(item, tuple) and isinstance(item[0], str):
            failures.append(item)
            continue
        if isinstance(item, tuple):  # gdb9 SDF: (entry, RDKit mol with bonds from the SDF)
            entry, mol = item
            if entry.index in excluded:
                continue
            from .chem import record_from_mol

            records.append(record_from_mol(mol, qm9_source.mol_id(entry.index), entry.positions,
                                           smiles=entry.smiles[0], properties=entry.properties))
            continue
        entry = item
        if entry.index in excluded:
            continue
        try:
            records.append(qm9_source.record_from_entry(entry))
        except ValueError as err:
            failures.append((qm9_source.mol_id(entry.index), str(err)))
    records.sort(key=lambda r: r.id)
    return records, sorted(failures)


EDM_METHOD = "EDM/Cormorant: np.random.seed(0) permutation of the 130,831 characterized molecules; 100000/17748/13083"
EDM_SUBSET_ORDER = "the first N molecules of each EDM part in EDM order (the order of the seeded permutation)"


def _index_of(mol: str) -> int | None:
    """The GDB-9 index of a molecule ID `dsgdb9nsd_NNNNNN`, None when the ID carries none."""
    return int(mol.split("_")[1]) if mol.split("_")[-1].isdigit() else None


def _item_index(item, excluded: set[int]) -> int | None:
    """The GDB-9 index of a raw item (QM9Entry, (entry, mol) or (id, error)) that counts as a
    characterized molecule of the raw files, as `featurize_qm9` counts them after featurizing."""
    if isinstance(item, tuple) and isinstance(item[0], str):
        return _index_of(item[0])
    entry = item[0] if isinstance(item, tuple) else item
    return None if entry.index in excluded else entry.index


def _edm_subset(items, excluded: set[int], subset: dict, total: int, progress: bool):
    """(the raw items of the kept molecules, the EDM parts restricted to them) for `edm_subset`.

    The EDM split is computed on the full list of characterized indices in the raw files, exactly
    as without a subset (parsing is cheap; RDKit's bond perception is what costs), then each part
    named in `subset` keeps its first N molecules in EDM order; only those are featurized. EDM order
    is a seeded permutation, so a kept part is a uniform sample of its part, and the first 1,000
    test molecules of a subset store are the first 1,000 of the full store."""
    items = list(progress_bar(items, total=total, desc="qm9 (parse)", unit="mol", enabled=progress))
    included = sorted({i for i in (_item_index(item, excluded) for item in items) if i is not None})
    expected = qm9_source.N_GDB9 - qm9_source.N_UNCHARACTERIZED
    if len(included) != expected:
        raise InputFileError(f"featurize qm9: edm_subset needs the full QM9 to compute the EDM split, but the raw files hold "
                             f"{len(included)} of the {expected} characterized molecules; re-fetch them (`qdiff fetch qm9`) "
                             "or featurize without edm_subset")
    parts = {part: ids[: subset[part]] if subset.get(part) is not None else ids
             for part, ids in qm9_source.edm_split(included).items()}
    keep = {_index_of(i) for ids in parts.values() for i in ids}
    kept = [item for item in items
            if (i := _item_index(item, excluded)) in keep or (i is None and isinstance(item, tuple) and isinstance(item[0], str))]
    return kept, parts


def featurize_qm9(raw: Path, out: Path, settings: dict, progress: bool = True) -> dict:
    """The QM9 store with the EDM split; `edm_subset` ({part: N}) featurizes only the first N
    molecules of each EDM part (in EDM order), the split being computed on the full set first."""
    source, urls, sums, items, excluded = _qm9_entries(raw, progress)
    total = qm9_source.N_GDB9 - qm9_source.N_UNCHARACTERIZED if source == "qm9pack" else qm9_source.N_GDB9
    subset = settings.get("edm_subset") or None
    subset_parts = None
    if subset:
        items, subset_parts = _edm_subset(items, excluded, subset, total, progress)
        total = len(items)
    records, failures = _qm9_records(items, excluded, progress, total)
    included = sorted({_index_of(r.id) for r in records} | {i for f in failures if (i := _index_of(f[0])) is not None})
    with MoleculeStoreWriter(out, dataset="qm9", source=source, source_urls=urls, raw_sha256=sums,
                             settings=settings, property_units=qm9_source.PROPERTY_UNITS) as writer:
        for record in records:
            writer.add(record)
        for mol, reason in failures:
            writer.add_failure(mol, reason)
        expected = qm9_source.N_GDB9 - qm9_source.N_UNCHARACTERIZED
        warning = None
        if subset_parts is not None:
            writer.add_split("edm", subset_parts, method=EDM_METHOD, seed=0, subset=dict(sorted(subset.items())),
                             subset_order=EDM_SUBSET_ORDER)
        elif len(included) == expected:
            writer.add_split("edm", qm9_source.edm_split(included), method=EDM_METHOD, seed=0)
        else:  # a partial archive: a store of what is there, marked as such, without the EDM split
            warning = (f"partial QM9: {len(included)} of the {expected} characterized molecules in the raw files, so no "
                       "`edm` split was written; re-fetch the archive (`qdiff fetch qm9`) for the full set")
            writer.attrs["warning"] = warning
    if warning:
        import sys

        print(f"qdiff featurize: warning: {warning} (recorded in the store's `warning` attribute)", file=sys.stderr)
    summary = {"molecules": len(records), "failures": len(failures), "source": source}
    return {**summary, "edm_subset": dict(sorted(subset.items()))} if subset else summary


def featurize_demo_qm9(out: Path, settings: dict, progress: bool = True) -> dict:
    """A seeded subset of real QM9 molecules from qm9pack (offline), with a seeded random split."""
    n, seed = int(settings["n_molecules"]), int(settings["seed"])
    folder = qm9_source.qm9pack_data_dir()
    remotes = {f.name: f for f in source_files("qm9", "qm9pack")}
    sums = {name: verify(folder / name, remotes[name]).sha256 for name in remotes}
    entries = [e for e in qm9_source.iter_qm9pack(folder) if not isinstance(e, tuple)]
    entries.sort(key=lambda e: e.index)
    chosen = np.random.default_rng(seed).choice(len(entries), size=min(n, len(entries)), replace=False)
    records, failures = _qm9_records([entries[i] for i in np.sort(chosen)], set(), progress, len(chosen))
    with MoleculeStoreWriter(out, dataset="demo-qm9", source="qm9pack", source_urls=["https://pypi.org/project/qm9pack/1.0.3/"],
                             raw_sha256=sums, settings=settings, property_units=qm9_source.PROPERTY_UNITS) as writer:
        for record in records:
            writer.add(record)
        for mol, reason in failures:
            writer.add_failure(mol, reason)
        writer.add_split("random", random_split([r.id for r in records], settings["split"], seed), method="seeded random permutation of molecule IDs", seed=seed, fractions=settings["split"])
    return {"molecules": len(records), "failures": len(failures), "source": "qm9pack"}


def _split_file(raw: Path, subset: str) -> tuple[Path, str] | None:
    """The GeoMol/torsional-diffusion split.npy for a GEOM subset, locked on first use."""
    from .download import ChecksumError, lock_on_first_use

    path = raw / f"{subset}_split.npy"
    if not path.is_file():
        return None
    try:
        return path, lock_on_first_use(path, raw, "placed by hand").sha256
    except ChecksumError as err:
        raise ValueError(str(err)) from err


GEOM_REFERENCE_SPLITS = ("auto", "etflow", "random", "none")


def featurize_geom(dataset: str, raw: Path, out: str | Path, settings: dict, progress: bool = True) -> dict:
    """GEOM-DRUGS / GEOM-QM9 from rdkit_folder.tar.gz, streamed (checksum verified first).

    ET-Flow's data protocol (its scripts/prepare_data.py): train and validation molecules keep the
    30 conformers of highest Boltzmann weight, a test molecule keeps every conformer as its
    reference set. The splits are therefore decided from a first pass over the archive's member
    names (nothing unpickled) before any conformer is written; `reference_split` names the split
    whose test part keeps every conformer, recorded in the store's settings and on the split
    (`test_conformers`)."""
    from .sources import geom

    subset = geom.SUBSETS[dataset]
    out = Path(out)
    archive = raw / "rdkit_folder.tar.gz"
    if not archive.is_file():
        raise FileNotFoundError(f"{archive}: missing; run `qdiff fetch {dataset}` (or place it there by hand)")
    remote = {f.name: f for f in source_files("geom", "dataverse")}["rdkit_folder.tar.gz"]
    sums = {archive.name: verify(archive, remote, raw).sha256}  # before anything is unpickled
    summary_bytes, summary_name, names = geom.list_archive(archive, subset)
    if summary_bytes is None:
        raise ValueError(f"{archive}: no summary_{subset}.json in the archive")
    summary = geom.read_summary(summary_bytes, summary_name)
    split_file = _split_file(raw, subset)
    if split_file:
        sums[split_file[0].name] = split_file[1]
    reference_split = settings.get("reference_split", "auto")
    if reference_split not in GEOM_REFERENCE_SPLITS:
        raise ValueError(f"featurize {dataset}: reference_split {reference_split!r}; choose one of {GEOM_REFERENCE_SPLITS}")
    if reference_split == "auto":
        reference_split = "etflow" if split_file else "random"
    if reference_split == "etflow" and not split_file:
        raise ValueError(f"featurize {dataset}: reference_split etflow needs {raw / f'{subset}_split.npy'} "
                         "(GeoMol/torsional-diffusion split.npy, placed by hand); or set reference_split: random")
    splits: dict[str, tuple[dict, dict]] = {}
    if split_file:
        from .splits import split_from_index_file

        indices = np.load(split_file[0], allow_pickle=True)  # locked checksum verified above
        ordered = [n[: -len(".pickle")] for n in sorted(f"{n}.pickle" for n in names)]
        splits["etflow"] = (split_from_index_file(ordered, indices),
                            {"method": "GeoMol/torsional-diffusion split.npy: indices into the sorted pickle list", "source_sha256": split_file[1]})
    splits["random"] = (random_split(names, settings["split"], int(settings["seed"])),
                        {"method": "seeded random permutation of molecule IDs (per molecule)", "seed": int(settings["seed"])})
    keep_all = set(splits[reference_split][0]["test"]) if reference_split != "none" else set()
    settings = {**settings, "reference_split": reference_split}
    options = geom.GeomSettings(int(settings["max_conformers"]), bool(settings["drop_disconnected"]))
    n_ok = n_fail = 0
    with MoleculeStoreWriter(out, dataset=dataset, source="dataverse", source_urls=list(remote.urls),
                             raw_sha256=sums, settings=settings) as writer:
        items = (x for x in geom.iter_archive(archive, subset) if x[0] == "pickle")
        for _, name, data in progress_bar(items, total=len(names), desc=dataset, unit="mol", enabled=progress):
            stem = Path(name).stem
            try:
                writer.add(geom.record_from_pickle(stem, data, summary.get(stem), options, keep_all=stem in keep_all))
                n_ok += 1
            except ValueError as err:
                writer.add_failure(stem, str(err))
                n_fail += 1
        cap = f"top {options.max_conformers} by Boltzmann weight"
        for name, (parts, attrs) in splits.items():
            test = "all" if name == reference_split else cap
            writer.add_split(name, parts, **attrs, train_conformers=cap, val_conformers=cap, test_conformers=test)
    return {"molecules": n_ok, "failures": n_fail, "source": "dataverse", "reference_split": reference_split}
