"""GEOM (`rdkit_folder.tar.gz`, Harvard Dataverse): summary JSON + one pickle per molecule.

The archive is streamed: pickles are read from the tar one at a time, never extracted to disk,
and only after the archive's checksum has been verified by the caller (unpickling runs code).
Each pickle is {"smiles", "conformers": [{"rd_mol", "boltzmannweight", "totalenergy", ...}]}.
Molecule IDs are the pickle file stems; the GeoMol / torsional-diffusion `split.npy` indexes the
sorted list of pickle paths of one subset and is converted to these IDs.

Conformers follow ET-Flow's protocol (its `scripts/prepare_data.py`, `process_mol` /
`process_test_mol`): a train or validation molecule keeps its 30 conformers of highest Boltzmann
weight, a test molecule keeps every conformer as its reference set. The featurizer therefore
decides each molecule's split before it reads the pickles (`list_archive`).
"""
from __future__ import annotations

import json
import pickle
import tarfile
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Iterator

import numpy as np
from rdkit import Chem

from ..chem import record_from_mol
from ..records import MoleculeRecord

SUBSETS = {"geom-drugs": "drugs", "geom-qm9": "qm9"}


@dataclass
class GeomSettings:
    # ET-Flow scripts/prepare_data.py (process_mol): train/val molecules keep the 30 conformers of
    # highest Boltzmann weight; test molecules keep all of them (`record_from_pickle(keep_all=True)`).
    max_conformers: int = 30
    drop_disconnected: bool = True  # DRUGS: molecules with '.' in the SMILES are dropped


def canonical_graph_smiles(mol: Chem.Mol) -> str:
    """Canonical SMILES without hydrogens and stereo: the graph identity used for checks."""
    return Chem.MolToSmiles(Chem.RemoveHs(mol, sanitize=False), isomericSmiles=False)


def canonical_smiles(smiles: str) -> str | None:
    mol = Chem.MolFromSmiles(smiles)
    return None if mol is None else Chem.MolToSmiles(mol, isomericSmiles=False)


def _subset_members(path, subset: str, read_pickles: bool) -> Iterator[tuple[str, str, PurePosixPath, bytes | None]]:
    """(kind, member name, path, bytes) for the subset's summary JSON ("summary", always read) and
    its pickles ("pickle", read only with `read_pickles`), in archive order, streamed; a corrupt
    archive raises ValueError naming it."""
    try:
        with tarfile.open(path, mode="r|*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                p = PurePosixPath(member.name)
                if p.name == f"summary_{subset}.json":
                    yield "summary", member.name, p, tar.extractfile(member).read()
                elif p.suffix == ".pickle" and p.parent.name == subset:
                    yield "pickle", member.name, p, tar.extractfile(member).read() if read_pickles else None
    except (tarfile.TarError, EOFError, OSError) as err:
        raise ValueError(f"{path}: corrupt or truncated archive ({err})") from err


def iter_archive(path, subset: str) -> Iterator[tuple[str, str, bytes]]:
    """(kind, member name, bytes) for the subset's summary JSON ("summary") and its pickles
    ("pickle"), in archive order; a corrupt archive raises ValueError naming it."""
    for kind, name, _, data in _subset_members(path, subset, read_pickles=True):
        yield kind, name, data


def list_archive(path, subset: str) -> tuple[bytes | None, str | None, list[str]]:
    """(summary JSON bytes, its member name, pickle stems of the subset in archive order) from one
    streamed pass that reads no pickle (so nothing is unpickled); ValueError for a corrupt archive."""
    summary, summary_name, stems = None, None, []
    for kind, name, p, data in _subset_members(path, subset, read_pickles=False):
        if kind == "summary":
            summary, summary_name = data, name
        else:
            stems.append(p.stem)
    return summary, summary_name, stems


def record_from_pickle(
    mol_id: str, data: bytes, summary_smiles: str | None, settings: GeomSettings, keep_all: bool = False
) -> MoleculeRecord:
    """One GEOM molecule; ValueError with the reason if it must be dropped. Conformers are sorted
    by Boltzmann weight (highest first); all are kept with `keep_all` (an ET-Flow test molecule's
    reference set), else the first `settings.max_conformers`."""
    try:
        entry = pickle.loads(data)
    except Exception as err:  # a damaged pickle can raise almost anything
        raise ValueError(f"unreadable pickle ({type(err).__name__}: {err})") from err
    if not isinstance(entry, dict) or not entry.get("conformers"):
        raise ValueError("pickle holds no conformers")
    smiles = summary_smiles or entry.get("smiles")
    if not smiles:
        raise ValueError("no SMILES in the summary or the pickle")
    if settings.drop_disconnected and "." in smiles:
        raise ValueError("disconnected graph ('.' in SMILES)")
    reference = canonical_smiles(smiles)
    if reference is None:
        raise ValueError(f"summary SMILES does not parse: {smiles}")
    confs = sorted(entry["conformers"], key=lambda c: -float(c.get("boltzmannweight", 0.0)))
    if not keep_all:  # ET-Flow scripts/prepare_data.py: top 30 by Boltzmann weight for train/val only
        confs = confs[: settings.max_conformers]
    mol0 = confs[0].get("rd_mol")
    if mol0 is None:
        raise ValueError("conformer without rd_mol")
    try:
        graph = canonical_graph_smiles(mol0)
    except Exception as err:
        raise ValueError(f"pickled molecule cannot be written as SMILES ({err})") from err
    if graph != reference:
        raise ValueError(f"pickled graph {graph} disagrees with the summary SMILES {reference}")
    elements = [a.GetAtomicNum() for a in mol0.GetAtoms()]
    positions, weights, energies = [], [], []
    for c in confs:
        m = c.get("rd_mol")
        if m is None or [a.GetAtomicNum() for a in m.GetAtoms()] != elements or m.GetNumConformers() == 0:
            raise ValueError("conformers disagree in their atoms")
        positions.append(m.GetConformer().GetPositions())
        weights.append(float(c.get("boltzmannweight", np.nan)))
        energies.append(float(c.get("totalenergy", np.nan)))
    mol = Chem.Mol(mol0)
    try:
        Chem.SanitizeMol(mol)
    except Exception as err:
        raise ValueError(f"pickled molecule fails sanitization ({err})") from err
    mol.RemoveAllConformers()
    return record_from_mol(mol, mol_id, np.stack(positions), smiles=smiles,
                           weights=np.asarray(weights), energies=np.asarray(energies))


def read_summary(data: bytes, name: str) -> dict[str, str]:
    """pickle stem -> SMILES from `summary_<subset>.json` (entries without a pickle are skipped)."""
    try:
        summary = json.loads(data)
    except json.JSONDecodeError as err:
        raise ValueError(f"{name}: not valid JSON ({err})") from err
    out = {}
    for smiles, meta in summary.items():
        path = meta.get("pickle_path") if isinstance(meta, dict) else None
        if path:
            out[PurePosixPath(path).stem] = smiles
    return out
