"""demo-drugs: drug-like molecules from the 3D SDF files inside the RDKit wheel, each with a
conformer ensemble from RDKit ETKDGv3 + MMFF94 (Boltzmann weights at 298.15 K).

An offline stand-in for GEOM-DRUGS: the conformers are force-field minima, not CREST/GFN2-xTB
ensembles, so metrics on it are not comparable to GEOM-DRUGS numbers.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import rdkit
from rdkit import Chem
from rdkit.Chem import AllChem

from ...progress import progress_bar
from ..chem import record_from_mol
from ..molecule_store import MoleculeStoreWriter
from ..splits import random_split

SDF_FILES = (
    "Contrib/PBF/testData/egfr.sdf",
    "Contrib/Fastcluster/testdata/cdk2.sdf",
    "Contrib/FreeWilson/data/cmet_ligands.sdf",
)
KT_KCAL = 0.0019872041 * 298.15
SOURCE = "rdkit-contrib-sdf + ETKDGv3/MMFF94 (offline stand-in for GEOM-DRUGS, not GEOM data)"


def sdf_paths() -> list[Path]:
    root = Path(rdkit.__file__).parent
    paths = [root / rel for rel in SDF_FILES]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"RDKit wheel files not found: {missing}")
    return paths


def candidate_molecules() -> tuple[list[tuple[str, str]], list[tuple[str, str]], dict[str, str]]:
    """([(id, canonical SMILES)] unique and connected, [(id, reason)] dropped, {file: sha256})."""
    seen, keep, dropped, sums = set(), [], [], {}
    for path in sdf_paths():
        sums[path.name] = hashlib.sha256(path.read_bytes()).hexdigest()
        for i, mol in enumerate(Chem.SDMolSupplier(str(path), removeHs=False)):
            mol_id = f"{path.stem}_{i:04d}"
            if mol is None:
                dropped.append((mol_id, "unparsable SDF record"))
                continue
            smiles = Chem.MolToSmiles(Chem.RemoveHs(mol))
            if "." in smiles:
                dropped.append((mol_id, "disconnected graph ('.' in SMILES)"))
            elif smiles in seen:
                dropped.append((mol_id, "duplicate of an earlier molecule"))
            else:
                seen.add(smiles)
                keep.append((mol_id, smiles))
    return keep, dropped, sums


def conformer_ensemble(smiles: str, n_conformers: int, seed: int, timeout_s: int):
    """(molecule with Hs, positions [C, N, 3], MMFF energies [C] kcal/mol); ValueError if none."""
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    params = AllChem.ETKDGv3()
    # Never 0: RDKit's ETKDG embeds every conformer identically with randomSeed 0 (rdkit issue
    # #1738, still so in 2026.09), which made each "ensemble" N copies of one conformer.
    params.randomSeed = 0xF00D + seed
    params.timeout = timeout_s  # per-molecule guard: some molecules take minutes without one
    params.numThreads = 0
    ids = list(AllChem.EmbedMultipleConfs(mol, numConfs=n_conformers, params=params))
    if not ids:
        raise ValueError(f"ETKDGv3 produced no conformer within {timeout_s} s")
    if not AllChem.MMFFHasAllMoleculeParams(mol):
        raise ValueError("MMFF94 has no parameters for this molecule")
    results = AllChem.MMFFOptimizeMoleculeConfs(mol, numThreads=0, maxIters=1000)
    energies = np.array([e for _, e in results], dtype=np.float64)
    positions = np.stack([mol.GetConformer(i).GetPositions() for i in ids])
    order = np.argsort(energies, kind="stable")
    return mol, positions[order], energies[order]


def featurize_demo_drugs(out: Path, settings: dict, progress: bool = True) -> dict:
    seed = int(settings["seed"])
    keep, dropped, sums = candidate_molecules()
    chosen = sorted(np.random.default_rng(seed).permutation(len(keep))[: int(settings["max_molecules"])])
    n_ok = 0
    with MoleculeStoreWriter(out, dataset="demo-drugs", source=SOURCE, source_urls=[f"rdkit=={rdkit.__version__}:{p}" for p in SDF_FILES],
                             raw_sha256=sums, settings={**settings, "rdkit": rdkit.__version__}) as writer:
        for mol_id, reason in dropped:
            writer.add_failure(mol_id, reason)
        ids = []
        for k in progress_bar(chosen, desc="demo-drugs", unit="mol", enabled=progress):
            mol_id, smiles = keep[k]
            ids.append(mol_id)
            try:
                mol, positions, energies = conformer_ensemble(smiles, int(settings["n_conformers"]), seed, int(settings["timeout_s"]))
            except ValueError as err:
                writer.add_failure(mol_id, str(err))
                continue
            weights = np.exp(-(energies - energies.min()) / KT_KCAL)
            mol.RemoveAllConformers()
            writer.add(record_from_mol(mol, mol_id, positions, smiles=smiles, weights=weights / weights.sum(), energies=energies))
            n_ok += 1
        writer.add_split("random", random_split(ids, settings["split"], seed), method="seeded random permutation of molecule IDs", seed=seed)
    return {"molecules": n_ok, "failures": len(dropped) + len(ids) - n_ok, "source": SOURCE}
