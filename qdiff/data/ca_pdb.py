"""Cα-only PDB files (Biopython): what qdiff writes for generated backbones and reads back from
folding tools."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..atomic import atomic_path


PDB_COORD_RANGE = (-999.999, 9999.999)  # what the PDB format's 8.3f coordinate columns hold


def write_ca_pdb(ca: np.ndarray, path: str | Path, chain_id: str = "A") -> None:
    """A Cα-only PDB file (residues UNK, numbered from 1) written with Biopython, atomically.
    ValueError (nothing written) for coordinates the format cannot hold: non-finite, or outside
    PDB_COORD_RANGE, where the columns would run into each other and no reader could parse them."""
    ca = np.asarray(ca, dtype=np.float32)
    low, high = PDB_COORD_RANGE
    if not np.isfinite(ca).all() or ca.min(initial=0.0) < low or ca.max(initial=0.0) > high:
        raise ValueError(f"{path}: coordinates outside what a PDB file holds ({low} to {high} Å, finite): "
                         f"min {np.nanmin(ca):.4g}, max {np.nanmax(ca):.4g}")
    from Bio.PDB import PDBIO
    from Bio.PDB.StructureBuilder import StructureBuilder

    builder = StructureBuilder()
    builder.init_structure(Path(path).stem)
    builder.init_model(0)
    builder.init_chain(chain_id)
    builder.init_seg("    ")
    for i, xyz in enumerate(np.asarray(ca, dtype=np.float32), start=1):
        builder.init_residue("UNK", " ", i, " ")
        builder.init_atom("CA", xyz, 0.0, 1.0, " ", " CA ", element="C")
    io = PDBIO()
    io.set_structure(builder.get_structure())
    with atomic_path(path) as tmp:
        io.save(str(tmp))


def read_ca(path: str | Path) -> np.ndarray:
    """Cα coordinates [n, 3] of every residue of a PDB file, in file order."""
    from Bio.PDB import PDBParser

    structure = PDBParser(QUIET=True).get_structure(Path(path).stem, str(path))
    return np.array([atom.coord for atom in structure.get_atoms() if atom.get_id() == "CA"], dtype=np.float64).reshape(-1, 3)
