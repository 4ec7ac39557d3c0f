"""Raw QM9 files in their real formats, written from real qm9pack molecules."""
from __future__ import annotations

import csv
import io
import itertools
import tarfile
from pathlib import Path

from rdkit import Chem

from qdiff.data.sources import qm9


def real_entries(n: int):
    """The first n qm9pack molecules (real DFT geometries and properties)."""
    return [e for e in itertools.islice(qm9.iter_qm9pack(), n)]


def _mathematica(value: float) -> str:
    """Write numbers the way the QM9 xyz files do: `0.` for integers, `*^` exponents when tiny."""
    value = float(value)
    if value == int(value) and abs(value) < 1e6:
        return f"{int(value)}."
    if value != 0 and abs(value) < 1e-4:
        mantissa, exponent = f"{value:.6e}".split("e")
        return f"{mantissa}*^{int(exponent)}"
    return repr(float(value))


def xyz_text(entry) -> str:
    props = "\t".join(_mathematica(entry.properties[k]) for k in qm9.PROPERTY_UNITS)
    lines = [str(len(entry.elements)), f"gdb {entry.index}\t{props}\t"]
    mulliken = list(entry.mulliken) if entry.mulliken is not None else [0.0] * len(entry.elements)
    mulliken[0] = 3.2e-6  # a Mathematica-style exponent, as in the real files
    for el, (x, y, z), q in zip(entry.elements, entry.positions, mulliken):
        lines.append(f"{el}\t{_mathematica(x)}\t{_mathematica(y)}\t{_mathematica(z)}\t{_mathematica(q)}")
    lines.append("\t".join(_mathematica(f) for f in entry.frequencies))
    lines.append(f"{entry.smiles[0]}\t{entry.smiles[0]}")
    lines.append(f"{entry.inchi[0]}\t{entry.inchi[0]}")
    return "\n".join(lines) + "\n"


def write_xyz_tarball(path: Path, entries, extra: dict[str, str] | None = None) -> None:
    with tarfile.open(path, "w:bz2") as tar:
        members = {f"dsgdb9nsd_{e.index:06d}.xyz": xyz_text(e) for e in entries}
        members.update(extra or {})
        for name in sorted(members):
            data = members[name].encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))


def uncharacterized_text(indices) -> str:
    head = [
        " Uncharacterized molecules in the QM9 data set (convergence or consistency checks failed)",
        "",
        "     Index     SMILES_GDB-17                SMILES_B3LYP     Comment",
        " ---------------------------------------------------------------------",
    ]
    rows = [f"    {i:6d}     C                            C                 test" for i in indices]
    return "\n".join(head + rows + ["", " 3054 molecules in total (this is a test file)", ""])


def write_gdb9_tarball(path: Path, entries) -> None:
    """gdb9.tar.gz with gdb9.sdf (3D, explicit H) and gdb9.sdf.csv, as DeepChem ships them."""
    sdf = io.StringIO()
    writer = Chem.SDWriter(sdf)
    for e in entries:
        mol = qm9.molecule_from_entry(e)
        conf = Chem.Conformer(mol.GetNumAtoms())
        for i, p in enumerate(e.positions):
            conf.SetAtomPosition(i, p.tolist())
        mol.AddConformer(conf)
        mol.SetProp("_Name", f"gdb_{e.index}")
        writer.write(mol)
    writer.close()
    table = io.StringIO()
    w = csv.writer(table)
    w.writerow(["mol_id", "A", "B", "C", "mu", "alpha", "homo", "lumo", "gap", "r2", "zpve", "u0", "u298", "h298", "g298", "cv"])
    for e in entries:
        p = e.properties
        w.writerow([f"gdb_{e.index}", p["A"], p["B"], p["C"], p["mu"], p["alpha"], p["homo"], p["lumo"], p["gap"], p["r2"], p["zpve"], p["U0"], p["U"], p["H"], p["G"], p["Cv"]])
    with tarfile.open(path, "w:gz") as tar:
        for name, text in (("gdb9.sdf", sdf.getvalue()), ("gdb9.sdf.csv", table.getvalue())):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
