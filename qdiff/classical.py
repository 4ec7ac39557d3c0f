"""`qdiff etkdg`: RDKit's classical conformer generator as a baseline row beside the models.

For the same molecules a model run samples (the reference store's `split` part, the first
`max_molecules` of them), ETKDGv3 (Wang et al. 2020, RDKit `ETKDGv3`) embeds `multiplier` x (number
of reference conformers) conformers per molecule (ET-Flow's 2x), optionally followed by an MMFF94
minimization of each (`mmff`, the usual "ETKDG + MMFF" row). The molecule is rebuilt from the
store's atoms and bonds in store order, with the stereochemistry perceived from the reference
conformer (what a chemist gives RDKit through the SMILES), so ETKDG is asked for the right
enantiomer. The output is a samples store (`qdiff.samples.molecules`, `source_row` = reference
row) and an SDF beside it, evaluated by `qdiff evaluate` exactly like a model's samples.

A molecule ETKDG cannot embed with its stereo enforced is embedded once more without the
chirality check (small fused rings whose ring fixes the configuration; counted in the summary and
the store's attrs, and judged by the stereo metric). One that still fails is written to the store's failures with the
reason; `qdiff evaluate` counts it as a failed molecule, as it does for a model.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .data.chem import mol_from_arrays
from .data.molecule_store import SAMPLES_SCHEMA, MoleculeStore, MoleculeStoreWriter
from .data.identity import store_identity
from .data.records import MoleculeRecord
from .data.sdf import write_sdf
from .atomic import check_not_an_input, clear_outputs
from .progress import progress_bar

METHODS = {False: "ETKDGv3", True: "ETKDGv3+MMFF94"}


def stereo_molecule(molecule: dict):
    """RDKit molecule (explicit Hs, store atom order) of a store molecule, with tetrahedral and
    double-bond stereo perceived from its first conformer."""
    from rdkit import Chem

    mol = mol_from_arrays(molecule["atoms"], molecule["bond_index"], molecule["bonds"]["order"])
    conf = Chem.Conformer(mol.GetNumAtoms())
    for i, p in enumerate(np.asarray(molecule["positions"][0], dtype=np.float64)):
        conf.SetAtomPosition(i, p.tolist())
    conf.Set3D(True)
    mol.AddConformer(conf, assignId=True)
    Chem.AssignStereochemistryFrom3D(mol, replaceExistingTags=True)
    mol.RemoveAllConformers()
    return mol


def etkdg_conformers(mol, n: int, *, seed: int, mmff: bool = False, timeout_s: int = 60) -> tuple[np.ndarray, dict]:
    """(positions [n_ok, N, 3], notes) of up to `n` ETKDGv3 conformers of `mol` (explicit Hs),
    MMFF94-minimized when `mmff` (molecules without MMFF parameters keep the ETKDG geometry and are
    noted). ValueError when no conformer could be embedded."""
    from rdkit import Chem
    from rdkit.Chem import AllChem

    mol = Chem.Mol(mol)
    params = AllChem.ETKDGv3()
    params.randomSeed = 0x5EED + seed  # never 0: RDKit embeds identical conformers with seed 0
    params.timeout = int(timeout_s)
    params.enforceChirality = True
    params.numThreads = 1
    notes: dict = {}
    ids = list(AllChem.EmbedMultipleConfs(mol, numConfs=n, params=params))
    if not ids:
        params.useRandomCoords = True  # RDKit's documented fallback for hard-to-embed molecules
        ids = list(AllChem.EmbedMultipleConfs(mol, numConfs=n, params=params))
    if not ids:
        # Small fused rings (e.g. QM9's C1CC2OC12) fail ETKDG's chirality check although their ring
        # fixes the configuration: embed without the check, and let the stereo metric judge.
        params.enforceChirality = False
        ids = list(AllChem.EmbedMultipleConfs(mol, numConfs=n, params=params))
        notes["chirality_not_enforced"] = True
    if not ids:
        raise ValueError(f"ETKDGv3 embedded no conformer (timeout {timeout_s} s)")
    notes["embedded"] = len(ids)
    if mmff:
        if AllChem.MMFFHasAllMoleculeParams(mol):
            AllChem.MMFFOptimizeMoleculeConfs(mol, numThreads=1, maxIters=2000)
        else:
            notes["mmff_missing"] = True
    return np.stack([mol.GetConformer(i).GetPositions() for i in ids]).astype(np.float32), notes


def generate_etkdg(reference: str | Path, out: str | Path, *, split: str | None, part: str = "test", multiplier: int = 2,
                   mmff: bool = False, max_molecules: int | None = None, seed: int = 0, timeout_s: int = 60,
                   sdf: bool = True, progress: bool = True) -> dict:
    """ETKDG conformers for the molecules of `split`/`part` of `reference` (see module docstring)."""
    if multiplier < 1:
        raise ValueError(f"multiplier must be >= 1, got {multiplier}")
    with MoleculeStore(reference) as ref:
        if split is None:
            raise ValueError(f"{reference}: name the split whose {part!r} molecules to embed (--split); "
                             f"this store has {ref.split_names() or 'none'}")
        rows = ref.split(split, part).astype(np.int64)
        rows = rows[:max_molecules] if max_molecules else rows
        method = METHODS[bool(mmff)]
        settings = {"method": method, "treatment": method, "sampler": "classical", "seed": seed, "multiplier": multiplier,
                    "split": split, "part": part, "molecules": f"split {split}: {part}", "all_molecules": False,
                    "reference_conformers": str(ref.split_attrs(split).get(f"{part}_conformers", "as stored")),
                    "timeout_s": timeout_s, "reference": str(reference)}
        records, failures, mmff_missing, short, relaxed = [], [], 0, 0, 0
        sdf_path = Path(out).with_suffix(".sdf")
        check_not_an_input(out, reference)
        check_not_an_input(sdf_path, reference, flag="the SDF beside --out")
        clear_outputs(out, sdf_path)  # a rerun starts clean: no store or SDF of an earlier run beside the new ones
        with MoleculeStoreWriter(out, dataset=ref.attrs["dataset"], source=f"RDKit {method}", schema=SAMPLES_SCHEMA,
                                 settings=settings) as writer:
            for row in progress_bar([int(r) for r in rows], desc=method, unit="mol", enabled=progress):
                molecule = ref.molecule(row)
                n = multiplier * int(molecule["positions"].shape[0])
                try:
                    positions, notes = etkdg_conformers(stereo_molecule(molecule), n, seed=seed, mmff=mmff, timeout_s=timeout_s)
                except ValueError as err:
                    writer.add_failure(molecule["id"], str(err))
                    failures.append(molecule["id"])
                    continue
                mmff_missing += int(notes.get("mmff_missing", False))
                relaxed += int(notes.get("chirality_not_enforced", False))
                short += int(positions.shape[0] < n)
                k = positions.shape[0]
                record = MoleculeRecord(id=molecule["id"], smiles=molecule["smiles"], atoms=molecule["atoms"],
                                        bond_index=molecule["bond_index"], bonds=molecule["bonds"], positions=positions,
                                        weights=np.ones(k, np.float32), energies=np.full(k, np.nan))
                writer.add(record, source_row=row)
                records.append(record)
            writer.attrs["nfe_per_sample"] = 0
            writer.attrs["chirality_not_enforced"] = relaxed
            writer.attrs["reference_store"] = str(reference)
            writer.attrs["reference_store_sha256"] = store_identity(reference)["content_sha256"]
            summary = {"method": method, "molecules": len(rows), "failed": len(failures), "fewer_than_asked": short,
                       "mmff_missing": mmff_missing, "chirality_not_enforced": relaxed}
            if sdf:  # before the store is committed: a samples store means its SDF is complete
                summary["sdf"] = str(sdf_path)
                summary["sdf_entries"] = write_sdf(records, sdf_path)
    return summary
