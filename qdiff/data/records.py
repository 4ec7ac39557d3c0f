"""In-memory records of one molecule (graph + conformers) as they go into a molecule store."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Per-atom feature arrays (name -> dtype); all have one entry per atom, hydrogens included.
ATOM_FIELDS = {
    "z": np.uint8,
    "formal_charge": np.int8,
    "aromatic": np.bool_,
    "hybridization": np.uint8,
    "in_ring": np.bool_,
    "chiral_tag": np.uint8,
    "degree": np.uint8,
    "num_hs": np.uint8,
}
# Per-bond arrays besides the molecule-local index pairs [n_bond, 2] (int32).
BOND_FIELDS = {"order": np.uint8, "aromatic": np.bool_, "conjugated": np.bool_, "in_ring": np.bool_}
# Bond order codes of /bonds/order.
BOND_ORDERS = {"SINGLE": 1, "DOUBLE": 2, "TRIPLE": 3, "AROMATIC": 4}


@dataclass
class MoleculeRecord:
    """One molecule: stable id, SMILES, atom and bond features, and its conformers.

    positions [n_conf, n_atoms, 3] in Å; weights [n_conf] (Boltzmann weights, 1 for a single
    DFT geometry); energies [n_conf] (NaN where unknown); properties: per-molecule floats.
    """

    id: str
    smiles: str
    atoms: dict[str, np.ndarray]
    bond_index: np.ndarray
    bonds: dict[str, np.ndarray]
    positions: np.ndarray
    weights: np.ndarray
    energies: np.ndarray
    properties: dict[str, float] = field(default_factory=dict)

    @property
    def n_atoms(self) -> int:
        return int(self.atoms["z"].shape[0])

    def validate(self) -> None:
        """Raise ValueError naming the molecule if any array is inconsistent or not finite."""
        n = self.n_atoms
        for name, dtype in ATOM_FIELDS.items():
            if name not in self.atoms or self.atoms[name].shape != (n,):
                raise ValueError(f"{self.id}: atom field {name!r} missing or not of length {n}")
        m = self.bond_index.shape[0]
        if self.bond_index.shape != (m, 2) or (m and (self.bond_index.min() < 0 or self.bond_index.max() >= n)):
            raise ValueError(f"{self.id}: bond index out of range")
        for name in BOND_FIELDS:
            if name not in self.bonds or self.bonds[name].shape != (m,):
                raise ValueError(f"{self.id}: bond field {name!r} missing or not of length {m}")
        c = self.positions.shape[0]
        if self.positions.shape != (c, n, 3) or c == 0:
            raise ValueError(f"{self.id}: positions must be [n_conf >= 1, {n}, 3], got {self.positions.shape}")
        if not np.isfinite(self.positions).all():
            raise ValueError(f"{self.id}: non-finite coordinates")
        if self.weights.shape != (c,) or self.energies.shape != (c,):
            raise ValueError(f"{self.id}: one weight and one energy per conformer")
