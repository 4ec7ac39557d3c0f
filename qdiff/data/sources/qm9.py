"""QM9 (Ramakrishnan et al. 2014): parsers for the figshare xyz tarball, the DeepChem gdb9 SDF +
CSV mirror and the `qm9pack` PyPI package, and the EDM/Cormorant split.

Molecule IDs are the figshare file stems, `dsgdb9nsd_NNNNNN` (N = the 1-based GDB-9 index).
"""
from __future__ import annotations

import csv
import importlib.util
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from rdkit import Chem

from ..chem import record_from_mol
from ..records import MoleculeRecord

N_GDB9 = 133_885
N_UNCHARACTERIZED = 3_054
# The 15 scalar properties of the xyz property line, in file order, with units.
PROPERTIES = (
    ("A", "GHz"), ("B", "GHz"), ("C", "GHz"), ("mu", "D"), ("alpha", "bohr^3"), ("homo", "hartree"),
    ("lumo", "hartree"), ("gap", "hartree"), ("r2", "bohr^2"), ("zpve", "hartree"), ("U0", "hartree"),
    ("U", "hartree"), ("H", "hartree"), ("G", "hartree"), ("Cv", "cal/(mol K)"),
)
PROPERTY_UNITS = dict(PROPERTIES)
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:(?:\*\^|[eE])[-+]?\d+)?")


def parse_number(text: str) -> float:
    """A float in Python or Mathematica notation (`1.2*^-6`, `0.`)."""
    return float(text.strip().replace("*^", "e"))


def numbers(text: str) -> list[float]:
    """Every number in `text`, Mathematica notation included."""
    return [parse_number(t) for t in _NUMBER.findall(text)]


def mol_id(index: int) -> str:
    return f"dsgdb9nsd_{index:06d}"


@dataclass
class QM9Entry:
    """One parsed QM9 molecule: elements, DFT geometry (Å) and what the xyz file carries."""

    index: int
    elements: list[str]
    positions: np.ndarray
    properties: dict[str, float]
    smiles: list[str]
    inchi: list[str]
    mulliken: np.ndarray | None = None
    frequencies: np.ndarray | None = None


def parse_xyz(text: str, name: str = "<xyz>") -> QM9Entry:
    """Parse one file of `dsgdb9nsd.xyz.tar.bz2`: atom count; `gdb <index>` + 15 properties;
    per atom `element x y z mulliken`; frequencies; GDB and relaxed SMILES; the two InChIs.
    Raises ValueError naming the file on any malformed line."""
    lines = text.strip("\n").split("\n")
    try:
        n = int(lines[0])
        head = lines[1].split()
        if head[0] != "gdb" or len(head) != 17:
            raise ValueError(f"property line has {len(head)} fields, expected 17 starting with 'gdb'")
        index = int(head[1])
        values = [parse_number(v) for v in head[2:]]
        atoms = [line.split() for line in lines[2 : 2 + n]]
        if len(atoms) != n or any(len(a) != 5 for a in atoms):
            raise ValueError(f"expected {n} atom lines of 5 fields")
        elements = [a[0] for a in atoms]
        positions = np.array([[parse_number(v) for v in a[1:4]] for a in atoms], dtype=np.float64)
        mulliken = np.array([parse_number(a[4]) for a in atoms])
        frequencies = np.array([parse_number(v) for v in lines[2 + n].split()])
        smiles = lines[3 + n].split()
        inchi = lines[4 + n].split()
    except (IndexError, ValueError) as err:
        raise ValueError(f"{name}: malformed QM9 xyz entry ({err})") from err
    return QM9Entry(index, elements, positions, dict(zip(PROPERTY_UNITS, values)), smiles, inchi, mulliken, frequencies)


def iter_xyz_tarball(path: str | Path) -> Iterator[tuple[str, str | None, str | None]]:
    """(member name, text or None, error or None) for every .xyz file of the tarball, streamed
    without extracting to disk; a corrupt archive raises ValueError naming it."""
    try:
        with tarfile.open(path, mode="r|*") as tar:
            for member in tar:
                if not member.isfile() or not member.name.endswith(".xyz"):
                    continue
                handle = tar.extractfile(member)
                try:
                    yield member.name, handle.read().decode(), None
                except UnicodeDecodeError as err:
                    yield member.name, None, f"not UTF-8 text ({err})"
    except (tarfile.TarError, EOFError, OSError) as err:
        from ...errors import InputFileError

        raise InputFileError(f"{path}: corrupt or truncated archive ({err}); delete it and re-run `qdiff fetch qm9`") from err


def read_uncharacterized(path: str | Path) -> set[int]:
    """The 1-based GDB-9 indices listed in `uncharacterized.txt` (3,054 in the real file)."""
    out = set()
    for line in Path(path).read_text().splitlines():
        parts = line.split()
        if parts and parts[0].isdigit() and 1 <= int(parts[0]) <= N_GDB9:
            out.add(int(parts[0]))
    return out


def qm9pack_data_dir() -> Path:
    """The CSV folder of the installed `qm9pack` package (its `import` is broken: never import it)."""
    spec = importlib.util.find_spec("qm9pack")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the qm9pack package is not installed (pip install qm9pack==1.0.3)")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


QM9PACK_FILES = ("qm9_part1.csv", "qm9_part2.csv", "qm9_part3.csv")
_QM9PACK_PROPS = {
    "A": "RotA_GHz", "B": "RotB_GHz", "C": "RotC_GHz", "mu": "Dipole_debye", "alpha": "Polarizability_bohr3",
    "homo": "HOMO_au", "lumo": "LUMO_au", "gap": "HOMO_LUMO_gap_au", "r2": "R2_bohr2", "zpve": "ZPVE_au",
    "U0": "InternalEnergy_0K_au", "U": "InternalEnergy_298K_au", "H": "Enthalphy_298K_au",
    "G": "GibbsFreeEnergy_298K_au", "Cv": "Heatcapacity_Cv_cal_mol_K",
}


def iter_qm9pack(data_dir: str | Path | None = None) -> Iterator[QM9Entry | tuple[str, str]]:
    """QM9Entry per CSV row of qm9pack (130,831 molecules), or (id, error) for a malformed row."""
    folder = Path(data_dir) if data_dir is not None else qm9pack_data_dir()
    for name in QM9PACK_FILES:
        with open(folder / name, newline="") as fh:
            for row in csv.DictReader(fh):
                try:
                    index = int(row["Index"])
                    elements = re.findall(r"[A-Z][a-z]?", row["Elements"])
                    positions = np.array(numbers(row["XYZ_Ang"]), dtype=np.float64).reshape(-1, 3)
                    if positions.shape[0] != len(elements) or len(elements) != int(row["N_atoms"]):
                        raise ValueError(f"{len(elements)} elements, {positions.shape[0]} positions, N_atoms {row['N_atoms']}")
                    props = {k: parse_number(row[c]) for k, c in _QM9PACK_PROPS.items()}
                    yield QM9Entry(index, elements, positions, props, [row["SMILES"]], [row["InChi"]],
                                   np.array(numbers(row["Mulliken_pop"])), np.array(numbers(row["Harmonic_Freq_cmi"])))
                except (KeyError, ValueError) as err:
                    yield (row.get("XYZ_file") or row.get("Index") or "?", f"malformed qm9pack row ({err})")


_COVALENT = {"H": 0.31, "C": 0.76, "N": 0.71, "O": 0.66, "F": 0.57}


def molecule_from_entry(entry: QM9Entry) -> Chem.Mol:
    """An RDKit molecule with explicit hydrogens in the xyz atom order, bonds and charges from the
    SMILES. QM9 lists heavy atoms in SMILES order (hydrogens after them, or after their bracket
    atom); each hydrogen is bonded to its nearest heavy atom. Where the heavy-atom order differs,
    the SMILES graph is matched onto the bond graph of the geometry. Tries each SMILES of the
    entry; raises ValueError if none fits (elements, bond lengths, hydrogen counts, valence)."""
    errors = []
    for smiles in entry.smiles:
        try:
            return _molecule_from_smiles(smiles, entry)
        except ValueError as err:
            errors.append(f"{smiles}: {err}")
    raise ValueError("; ".join(errors) or "no SMILES")


def _heavy_positions(entry: QM9Entry) -> list[int]:
    return [k for k, e in enumerate(entry.elements) if e != "H"]


def _molecule_from_smiles(smiles: str, entry: QM9Entry) -> Chem.Mol:
    template = Chem.MolFromSmiles(smiles)
    if template is None:
        raise ValueError("SMILES does not parse")
    heavy = _heavy_positions(entry)
    if sorted(a.GetSymbol() for a in template.GetAtoms()) != sorted(entry.elements[k] for k in heavy):
        raise ValueError("heavy atoms of the SMILES and the geometry differ")
    try:
        return _attach_geometry(template, entry)
    except ValueError:
        return _attach_geometry(_renumber_to_geometry(template, entry), entry)


def _bond_limit(a: str, b: str, factor: float) -> float:
    return factor * (_COVALENT.get(a, 0.8) + _COVALENT.get(b, 0.8))


def _renumber_to_geometry(template: Chem.Mol, entry: QM9Entry) -> Chem.Mol:
    """The template renumbered so that its atom i is the i-th heavy atom of the geometry."""
    heavy = _heavy_positions(entry)
    pos = entry.positions[heavy]
    symbols = [entry.elements[k] for k in heavy]
    skeleton = Chem.RWMol()
    for symbol in symbols:
        skeleton.AddAtom(Chem.Atom(symbol))
    for i in range(len(heavy)):
        for j in range(i + 1, len(heavy)):
            if np.linalg.norm(pos[i] - pos[j]) < _bond_limit(symbols[i], symbols[j], 1.25):
                skeleton.AddBond(i, j, Chem.BondType.SINGLE)
    query = Chem.RWMol(template)
    Chem.Kekulize(query, clearAromaticFlags=True)
    for bond in query.GetBonds():
        bond.SetBondType(Chem.BondType.SINGLE)
    for atom in query.GetAtoms():
        atom.SetFormalCharge(0)
        atom.SetNoImplicit(True)
    skeleton, query = skeleton.GetMol(), query.GetMol()
    skeleton.UpdatePropertyCache(strict=False)
    query.UpdatePropertyCache(strict=False)
    if skeleton.GetNumBonds() != query.GetNumBonds():
        raise ValueError(f"geometry has {skeleton.GetNumBonds()} heavy-atom bonds, the SMILES {query.GetNumBonds()}")
    match = skeleton.GetSubstructMatch(query)
    if len(match) != len(heavy):
        raise ValueError("the SMILES graph does not match the bond graph of the geometry")
    return Chem.RenumberAtoms(template, [int(i) for i in np.argsort(match)])


def _attach_geometry(template: Chem.Mol, entry: QM9Entry) -> Chem.Mol:
    """Template heavy atom i placed at the i-th heavy atom of the geometry; hydrogens added."""
    heavy = _heavy_positions(entry)
    if [a.GetSymbol() for a in template.GetAtoms()] != [entry.elements[k] for k in heavy]:
        raise ValueError("heavy-atom order of the SMILES differs from the geometry")
    pos = entry.positions
    for bond in template.GetBonds():
        i, j = heavy[bond.GetBeginAtomIdx()], heavy[bond.GetEndAtomIdx()]
        if np.linalg.norm(pos[i] - pos[j]) > _bond_limit(entry.elements[i], entry.elements[j], 1.3):
            raise ValueError(f"bond {i}-{j} is {np.linalg.norm(pos[i] - pos[j]):.2f} Å long")
    rw = Chem.RWMol()
    t = 0
    for symbol in entry.elements:
        if symbol == "H":
            rw.AddAtom(Chem.Atom(1))
            continue
        atom = Chem.Atom(template.GetAtomWithIdx(t))
        atom.SetNoImplicit(True)
        atom.SetNumExplicitHs(0)
        rw.AddAtom(atom)
        t += 1
    for bond in template.GetBonds():
        rw.AddBond(heavy[bond.GetBeginAtomIdx()], heavy[bond.GetEndAtomIdx()], bond.GetBondType())
        if bond.GetIsAromatic():
            rw.GetBondBetweenAtoms(heavy[bond.GetBeginAtomIdx()], heavy[bond.GetEndAtomIdx()]).SetIsAromatic(True)
    found = [0] * len(heavy)
    heavy_xyz = pos[heavy]
    for k, symbol in enumerate(entry.elements):
        if symbol != "H":
            continue
        parent = int(np.argmin(np.linalg.norm(heavy_xyz - pos[k], axis=1)))
        rw.AddBond(heavy[parent], k, Chem.BondType.SINGLE)
        found[parent] += 1
    expected = [a.GetTotalNumHs() for a in template.GetAtoms()]
    if found != expected:
        raise ValueError(f"hydrogens per heavy atom {found} differ from the SMILES {expected}")
    mol = rw.GetMol()
    try:
        Chem.SanitizeMol(mol)
    except Exception as err:  # RDKit raises several sanitization exception types
        raise ValueError(f"sanitization failed ({err})") from err
    return mol


def record_from_entry(entry: QM9Entry) -> MoleculeRecord:
    mol = molecule_from_entry(entry)
    return record_from_mol(mol, mol_id(entry.index), entry.positions, smiles=entry.smiles[0], properties=entry.properties)


def iter_gdb9_sdf(sdf_path: str | Path, csv_path: str | Path) -> Iterator[QM9Entry | tuple[str, str]]:
    """QM9 from the DeepChem mirror (`gdb9.sdf` + `gdb9.sdf.csv`): the SDF record i is GDB-9
    index i+1; properties come from the CSV row `gdb_<index>`."""
    props = {}
    with open(csv_path, newline="") as fh:
        for row in csv.DictReader(fh):
            try:
                idx = int(row["mol_id"].split("_")[-1])
                props[idx] = {
                    "A": float(row["A"]), "B": float(row["B"]), "C": float(row["C"]), "mu": float(row["mu"]),
                    "alpha": float(row["alpha"]), "homo": float(row["homo"]), "lumo": float(row["lumo"]),
                    "gap": float(row["gap"]), "r2": float(row["r2"]), "zpve": float(row["zpve"]),
                    "U0": float(row["u0"]), "U": float(row["u298"]), "H": float(row["h298"]),
                    "G": float(row["g298"]), "Cv": float(row["cv"]),
                }
            except (KeyError, ValueError):
                continue
    supplier = Chem.SDMolSupplier(str(sdf_path), removeHs=False, sanitize=False)
    for i in range(len(supplier)):
        index = i + 1
        mol = supplier[i]
        if mol is None:
            yield (mol_id(index), "unparsable SDF record")
            continue
        try:
            Chem.SanitizeMol(mol)
        except Exception as err:
            yield (mol_id(index), f"SDF record fails sanitization ({err})")
            continue
        if index not in props:
            yield (mol_id(index), "no property row in gdb9.sdf.csv")
            continue
        positions = mol.GetConformer().GetPositions()
        smiles = Chem.MolToSmiles(Chem.RemoveHs(mol))
        entry = QM9Entry(index, [a.GetSymbol() for a in mol.GetAtoms()], positions, props[index], [smiles], [])
        yield entry, mol  # type: ignore[misc]


def edm_split(included_indices: list[int] | np.ndarray) -> dict[str, list[str]]:
    """The EDM / Cormorant QM9 split, exactly: legacy `np.random.seed(0)`, a permutation of the
    130,831 characterized molecules (sorted by GDB-9 index), cut into 100,000 train, 17,748 val
    and int(0.1 n) = 13,083 test. Returns molecule IDs per part."""
    included = np.sort(np.asarray(included_indices, dtype=np.int64))
    n = included.shape[0]
    n_train, n_test = 100_000, int(0.1 * n)
    n_val = n - n_train - n_test
    if n_val <= 0:
        raise ValueError(f"the EDM split needs the full QM9 ({N_GDB9 - N_UNCHARACTERIZED} molecules), got {n}")
    state = np.random.RandomState(0)
    perm = state.permutation(n)
    parts = np.split(perm, [n_train, n_train + n_val])
    return {name: [mol_id(int(i)) for i in included[p]] for name, p in zip(("train", "val", "test"), parts)}


