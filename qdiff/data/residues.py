"""Residue constants: the 20 standard amino acids, the atom37 layout, modified-residue parents."""
from __future__ import annotations

RESTYPES_3 = (
    "ALA", "ARG", "ASN", "ASP", "CYS", "GLN", "GLU", "GLY", "HIS", "ILE",
    "LEU", "LYS", "MET", "PHE", "PRO", "SER", "THR", "TRP", "TYR", "VAL",
)
RESTYPES_1 = "ARNDCQEGHILKMFPSTWYV"
UNKNOWN = 20  # aatype of any other residue ("X" in sequences)
AATYPE = {name: i for i, name in enumerate(RESTYPES_3)}

# AlphaFold's atom37 order; index 1 is CA.
ATOM37 = (
    "N", "CA", "C", "CB", "O", "CG", "CG1", "CG2", "OG", "OG1", "SG", "CD", "CD1", "CD2", "ND1",
    "ND2", "OD1", "OD2", "SD", "CE", "CE1", "CE2", "CE3", "NE", "NE1", "NE2", "OE1", "OE2", "CH2",
    "NH1", "NH2", "OH", "CZ", "CZ2", "CZ3", "NZ", "OXT",
)
ATOM37_INDEX = {name: i for i, name in enumerate(ATOM37)}
CA = ATOM37_INDEX["CA"]

# Common modified residues -> their standard parent (atoms renamed where the parent differs).
MODIFIED_PARENT = {
    "MSE": "MET", "FME": "MET", "SEP": "SER", "TPO": "THR", "PTR": "TYR", "MLY": "LYS", "M3L": "LYS",
    "KCX": "LYS", "LLP": "LYS", "ALY": "LYS", "HYP": "PRO", "CSO": "CYS", "CSD": "CYS", "CME": "CYS",
    "OCS": "CYS", "CSS": "CYS", "SEC": "CYS", "PCA": "GLU", "NLE": "LEU", "MLE": "LEU", "DAL": "ALA",
    "HIC": "HIS", "CGU": "GLU", "SAC": "SER", "TYS": "TYR", "PYL": "LYS",
}
ATOM_RENAMES = {("MSE", "SE"): "SD", ("SEC", "SE"): "SG"}


def residue_type(comp_id: str) -> int:
    """aatype of a chemical component: standard, the parent of a modified residue, or UNKNOWN."""
    return AATYPE.get(MODIFIED_PARENT.get(comp_id, comp_id), UNKNOWN)


def sequence(aatypes) -> str:
    return "".join(RESTYPES_1[a] if a < 20 else "X" for a in aatypes)
