"""Rebuild the PDB test fixtures in this folder from the entries as downloaded from RCSB.

    python tests/data/pdb/make_fixtures.py DIR   # DIR holds 1A8O.cif.gz ... 4CUP.cif.gz from
                                                 # https://files.rcsb.org/download/<ID>.cif.gz

Three entries are kept byte for byte. Two are trimmed to keep the repository small, in ways the
tests do not depend on (qdiff's parser reads neither the dropped models nor anisotropic B-factors):
  2BEG  solution NMR, 10 models: models 3-10 dropped from _atom_site (models 1 and 2 kept, so the
        "first model only" check still sees a second model to ignore);
  2XHE  X-ray: the _atom_site_anisotrop loop dropped (half the file).
Writes the gzipped files (mtime 0, so reproducible) and PROVENANCE.tsv (PDB data: CC0).
"""
from __future__ import annotations

import gzip
import hashlib
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ENTRIES = {
    "1A8O": "unchanged",
    "1GBT": "unchanged",
    "4CUP": "unchanged",
    "2BEG": "models 3-10 removed from _atom_site",
    "2XHE": "_atom_site_anisotrop loop removed",
}


def drop_models_after(text: str, keep: int) -> str:
    lines = text.splitlines(keepends=True)
    header = [i for i, line in enumerate(lines) if line.startswith("_atom_site.")]
    column = [lines[i].split()[0] for i in header].index("_atom_site.pdbx_PDB_model_num")
    out = [line for line in lines
           if not (line.startswith(("ATOM", "HETATM")) and int(line.split()[column]) > keep)]
    return "".join(out)


def drop_category(text: str, category: str) -> str:
    # a loop_ whose first item is the category, up to the "#" line that closes the block
    pattern = re.compile(r"^loop_\n" + re.escape(category) + r"\.[^\n]*\n.*?^#[^\n]*\n", re.M | re.S)
    new, n = pattern.subn("", text, count=1)
    assert n == 1, category
    return new


def revision_date(text: str) -> tuple[str, str]:
    """(latest revision date, the mmCIF item it was read from): _pdbx_audit_revision_history, or
    _database_PDB_rev in entries whose file predates that category (as qdiff's parser reads them)."""
    import io

    from Bio.PDB.MMCIF2Dict import MMCIF2Dict

    d = MMCIF2Dict(io.StringIO(text))
    for key in ("_pdbx_audit_revision_history.revision_date", "_database_PDB_rev.date"):
        dates = sorted(x for x in d.get(key, []) if x not in ("?", "."))
        if dates:
            return dates[-1], key
    raise ValueError("no revision date")


def main(source: Path) -> None:
    rows = ["pdb_id\trevision_date\tdate_item\tsource_sha256\tsha256\tbytes\tedit"]
    for pid, edit in ENTRIES.items():
        raw = (source / f"{pid}.cif.gz").read_bytes()
        text = gzip.decompress(raw).decode()
        if pid == "2BEG":
            data = gzip.compress(drop_models_after(text, 2).encode(), compresslevel=9, mtime=0)
        elif pid == "2XHE":
            data = gzip.compress(drop_category(text, "_atom_site_anisotrop").encode(), compresslevel=9, mtime=0)
        else:
            data = raw
        (HERE / f"{pid}.cif.gz").write_bytes(data)
        rows.append("\t".join([pid, *revision_date(text), hashlib.sha256(raw).hexdigest(),
                               hashlib.sha256(data).hexdigest(), str(len(data)), edit]))
    (HERE / "PROVENANCE.tsv").write_text("\n".join(rows) + "\n")
    print("\n".join(rows))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
