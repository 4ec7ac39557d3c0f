"""RDKit molecules -> store records: the atom and bond features the networks use."""
from __future__ import annotations

import numpy as np
from rdkit import Chem

from .records import ATOM_FIELDS, BOND_FIELDS, BOND_ORDERS, MoleculeRecord

HYBRIDIZATION = {
    Chem.HybridizationType.UNSPECIFIED: 0, Chem.HybridizationType.S: 1, Chem.HybridizationType.SP: 2,
    Chem.HybridizationType.SP2: 3, Chem.HybridizationType.SP3: 4, Chem.HybridizationType.SP3D: 5,
    Chem.HybridizationType.SP3D2: 6, Chem.HybridizationType.OTHER: 7,
}
CHIRAL_TAGS = {
    Chem.ChiralType.CHI_UNSPECIFIED: 0, Chem.ChiralType.CHI_TETRAHEDRAL_CW: 1,
    Chem.ChiralType.CHI_TETRAHEDRAL_CCW: 2, Chem.ChiralType.CHI_OTHER: 3,
}


def atom_features(mol: Chem.Mol) -> dict[str, np.ndarray]:
    """Per-atom features of a sanitized molecule with explicit hydrogens."""
    atoms = list(mol.GetAtoms())
    ring = mol.GetRingInfo()
    values = {
        "z": [a.GetAtomicNum() for a in atoms],
        "formal_charge": [a.GetFormalCharge() for a in atoms],
        "aromatic": [a.GetIsAromatic() for a in atoms],
        "hybridization": [HYBRIDIZATION.get(a.GetHybridization(), 7) for a in atoms],
        "in_ring": [ring.NumAtomRings(a.GetIdx()) > 0 for a in atoms],
        "chiral_tag": [CHIRAL_TAGS.get(a.GetChiralTag(), 3) for a in atoms],
        "degree": [a.GetDegree() for a in atoms],
        "num_hs": [a.GetTotalNumHs(includeNeighbors=True) for a in atoms],
    }
    return {k: np.asarray(v, dtype=ATOM_FIELDS[k]) for k, v in values.items()}


def bond_features(mol: Chem.Mol) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Molecule-local bond index pairs [n_bond, 2] (int32) and per-bond features."""
    bonds = list(mol.GetBonds())
    index = np.asarray([[b.GetBeginAtomIdx(), b.GetEndAtomIdx()] for b in bonds], dtype=np.int32).reshape(-1, 2)
    values = {
        "order": [BOND_ORDERS.get(str(b.GetBondType()), 0) for b in bonds],
        "aromatic": [b.GetIsAromatic() for b in bonds],
        "conjugated": [b.GetIsConjugated() for b in bonds],
        "in_ring": [b.IsInRing() for b in bonds],
    }
    return index, {k: np.asarray(v, dtype=BOND_FIELDS[k]) for k, v in values.items()}


def record_from_mol(
    mol: Chem.Mol,
    mol_id: str,
    positions: np.ndarray,
    *,
    smiles: str | None = None,
    weights: np.ndarray | None = None,
    energies: np.ndarray | None = None,
    properties: dict[str, float] | None = None,
) -> MoleculeRecord:
    """A record of `mol` (explicit Hs, sanitized) with conformers positions [n_conf, n_atoms, 3].

    Chirality tags are assigned from the first conformer's 3D geometry when it has one.
    """
    positions = np.asarray(positions, dtype=np.float32)
    if positions.ndim == 2:
        positions = positions[None]
    if mol.GetNumConformers() == 0 and positions.shape[1] == mol.GetNumAtoms():
        conf = Chem.Conformer(mol.GetNumAtoms())
        for i, p in enumerate(positions[0].astype(np.float64)):
            conf.SetAtomPosition(i, p.tolist())
        conf.Set3D(True)
        mol = Chem.Mol(mol)
        mol.AddConformer(conf, assignId=True)
    if mol.GetNumConformers():
        Chem.AssignStereochemistryFrom3D(mol)
    index, bonds = bond_features(mol)
    c = positions.shape[0]
    record = MoleculeRecord(
        id=mol_id,
        smiles=smiles if smiles is not None else Chem.MolToSmiles(Chem.RemoveHs(mol)),
        atoms=atom_features(mol),
        bond_index=index,
        bonds=bonds,
        positions=positions,
        weights=np.ones(c, np.float32) if weights is None else np.asarray(weights, np.float32),
        energies=np.full(c, np.nan) if energies is None else np.asarray(energies, np.float64),
        properties=dict(properties or {}),
    )
    record.validate()
    return record


_ORDER_TO_TYPE = {1: Chem.BondType.SINGLE, 2: Chem.BondType.DOUBLE, 3: Chem.BondType.TRIPLE, 4: Chem.BondType.AROMATIC}


def mol_from_arrays(atoms: dict[str, np.ndarray], bond_index: np.ndarray, bond_order: np.ndarray) -> Chem.Mol:
    """An RDKit molecule (explicit hydrogens, store atom order) rebuilt from a store's atom and
    bond arrays: elements, formal charges, aromatic flags and bond orders."""
    rw = Chem.RWMol()
    for z, charge, aromatic in zip(atoms["z"], atoms["formal_charge"], atoms["aromatic"]):
        atom = Chem.Atom(int(z))
        atom.SetFormalCharge(int(charge))
        atom.SetIsAromatic(bool(aromatic))
        atom.SetNoImplicit(True)
        rw.AddAtom(atom)
    for (i, j), order in zip(bond_index, bond_order):
        rw.AddBond(int(i), int(j), _ORDER_TO_TYPE.get(int(order), Chem.BondType.SINGLE))
        if int(order) == 4:
            rw.GetBondBetweenAtoms(int(i), int(j)).SetIsAromatic(True)
    mol = rw.GetMol()
    mol.UpdatePropertyCache(strict=False)
    Chem.SanitizeMol(mol, Chem.SanitizeFlags.SANITIZE_ALL ^ Chem.SanitizeFlags.SANITIZE_KEKULIZE, catchErrors=True)
    return mol
