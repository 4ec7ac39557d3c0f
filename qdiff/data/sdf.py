"""Conformer sets as SDF files (what chemists open first)."""
from __future__ import annotations

from pathlib import Path

from ..atomic import atomic_path
from .records import MoleculeRecord


def write_sdf(records: list[MoleculeRecord], path: str | Path) -> int:
    """Every conformer of `records` as an SDF entry (the molecule's bonds, name = id, property
    `sample` = index); written atomically. Returns the number of entries."""
    from rdkit import Chem
    from rdkit.Geometry import Point3D

    from .chem import mol_from_arrays

    count = 0
    with atomic_path(path) as tmp:
        writer = Chem.SDWriter(str(tmp))
        for record in records:
            mol = mol_from_arrays(record.atoms, record.bond_index, record.bonds["order"])
            mol.SetProp("_Name", record.id)
            for k, positions in enumerate(record.positions):
                conf = Chem.Conformer(mol.GetNumAtoms())
                for i, (x, y, z) in enumerate(positions.astype(float)):
                    conf.SetAtomPosition(i, Point3D(x, y, z))
                mol.RemoveAllConformers()
                mol.AddConformer(conf, assignId=True)
                mol.SetIntProp("sample", k)
                writer.write(mol)
                count += 1
        writer.close()
    return count
