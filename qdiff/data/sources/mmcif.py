"""Protein chains from mmCIF (Biopython's MMCIF2Dict; vectorized over `_atom_site`).

Rules: one model (the first, unless another is asked for); polymer entities of type
polypeptide(L) only (ligands, waters and nucleic acids are removed); alternate locations resolved
by the highest occupancy (a residue-level alternative, i.e. two residue types at one position,
by the highest total occupancy); hydrogens ignored; modified residues mapped to their parent
(MSE -> MET with SE -> SD, ...); author numbering and insertion codes kept; atoms outside atom37
ignored and missing atoms masked; a chain break is recorded before a residue whose CA is more
than 4.2 Å from the previous residue's CA.
"""
from __future__ import annotations

import gzip
import io
from dataclasses import dataclass, field

import numpy as np

from ..residues import ATOM37_INDEX, ATOM_RENAMES, CA, residue_type, sequence

BREAK_DISTANCE = 4.2


@dataclass
class ChainRecord:
    id: str  # "<entry>_<author chain>"
    entity: str
    aatype: np.ndarray  # uint8 [n]
    resnum: np.ndarray  # int32 [n]
    icode: np.ndarray  # S1 [n]
    atom_pos: np.ndarray  # float32 [n, 37, 3]
    atom_mask: np.ndarray  # bool [n, 37]
    b_factor: np.ndarray  # float16 [n, 37]
    break_before: np.ndarray  # bool [n]

    @property
    def sequence(self) -> str:
        return sequence(self.aatype)

    def __len__(self) -> int:
        return int(self.aatype.shape[0])


@dataclass
class StructureRecord:
    id: str
    method: str
    resolution: float
    release_date: str
    revision_date: str
    status: str
    sha256: str = ""
    chains: list[ChainRecord] = field(default_factory=list)


def _first(d: dict, key: str, default: str = "") -> str:
    v = d.get(key)
    if v is None:
        return default
    v = v[0] if isinstance(v, list) else v
    return default if v in ("?", ".") else v


def _column(d: dict, key: str, n: int, default: str = ".") -> np.ndarray:
    v = d.get(key)
    if v is None:
        return np.full(n, default, dtype=object)
    return np.asarray(v if isinstance(v, list) else [v], dtype=object)


def _resolution(d: dict) -> float:
    for key in ("_refine.ls_d_res_high", "_em_3d_reconstruction.resolution", "_reflns.d_resolution_high"):
        value = _first(d, key)
        if value:
            try:
                return float(value)
            except ValueError:
                continue
    return float("nan")


def _dates(d: dict) -> tuple[str, str]:
    """(initial release, latest revision) from _pdbx_audit_revision_history or _database_PDB_rev."""
    for key in ("_pdbx_audit_revision_history.revision_date", "_database_PDB_rev.date"):
        v = d.get(key)
        if v:
            dates = sorted(x for x in (v if isinstance(v, list) else [v]) if x not in ("?", "."))
            if dates:
                return dates[0], dates[-1]
    return "", ""


def read_cif(data: bytes, name: str) -> dict:
    """MMCIF2Dict of raw (optionally gzip-compressed) bytes; ValueError naming the entry."""
    try:
        text = (gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data).decode("utf-8", errors="replace")
    except (OSError, EOFError) as err:
        raise ValueError(f"{name}: corrupt or truncated gzip ({err})") from err
    from Bio.PDB.MMCIF2Dict import MMCIF2Dict  # lazy: molecule-only code paths need no Biopython

    try:
        d = MMCIF2Dict(io.StringIO(text))
    except Exception as err:  # the tokenizer raises plain ValueErrors and others
        raise ValueError(f"{name}: malformed mmCIF ({err})") from err
    if "_atom_site.Cartn_x" not in d:
        raise ValueError(f"{name}: malformed mmCIF (no _atom_site coordinates)")
    return d


def parse_structure(data: bytes, entry_id: str, model: int | None = None) -> StructureRecord:
    """Parse one entry into protein chains (see the module docstring for the rules)."""
    entry = entry_id.lower()
    d = read_cif(data, entry_id)
    method = _first(d, "_exptl.method", "UNKNOWN")
    release, revision = _dates(d)
    record = StructureRecord(entry, method, _resolution(d), release, revision, _first(d, "_pdbx_database_status.status_code", ""))
    entity_ids = _column(d, "_entity_poly.entity_id", 0)
    entity_types = _column(d, "_entity_poly.type", len(entity_ids))
    protein_entities = {e for e, t in zip(entity_ids, entity_types) if t == "polypeptide(L)"}
    if not protein_entities:
        return record

    n = len(d["_atom_site.Cartn_x"]) if isinstance(d["_atom_site.Cartn_x"], list) else 1
    col = lambda k, default=".": _column(d, f"_atom_site.{k}", n, default)  # noqa: E731
    models = col("pdbx_PDB_model_num", "1")
    first_model = models[0] if model is None else str(model)
    seq_id = col("label_seq_id")
    element = col("type_symbol", "C")
    keep = (models == first_model) & np.isin(col("label_entity_id"), list(protein_entities)) & (seq_id != ".") & ~np.isin(element, ["H", "D"])
    if not keep.any():
        return record
    idx = np.nonzero(keep)[0]
    asym, seq, comp = col("label_asym_id")[idx], seq_id[idx].astype(np.int64), col("label_comp_id")[idx]
    atom = col("label_atom_id")[idx]
    occ = np.array([float(x) if x not in ("?", ".") else 1.0 for x in col("occupancy", "1")[idx]])
    bfac = np.array([float(x) if x not in ("?", ".") else 0.0 for x in col("B_iso_or_equiv", "0")[idx]])
    xyz = np.stack([col(f"Cartn_{a}")[idx].astype(np.float64) for a in "xyz"], axis=1)
    auth_asym, auth_seq, icode, entity = col("auth_asym_id")[idx], col("auth_seq_id")[idx], col("pdbx_PDB_ins_code", "?")[idx], col("label_entity_id")[idx]

    residues: dict[tuple[str, int], dict] = {}
    for k in range(idx.shape[0]):
        key = (asym[k], int(seq[k]))
        res = residues.setdefault(key, {"comps": {}, "first": k})
        slot = res["comps"].setdefault(comp[k], {"occ": 0.0, "atoms": {}})
        slot["occ"] += occ[k]
        name = ATOM_RENAMES.get((comp[k], atom[k]), atom[k])
        best = slot["atoms"].get(name)
        if best is None or occ[k] > occ[best]:  # highest-occupancy alternate location wins
            slot["atoms"][name] = k

    chains: dict[str, list[tuple[int, dict]]] = {}
    for (chain_asym, number), res in residues.items():
        chains.setdefault(chain_asym, []).append((number, res))
    used_names = set()
    for chain_asym in sorted(chains, key=lambda a: min(r["first"] for _, r in chains[a])):
        rows = sorted(chains[chain_asym], key=lambda t: t[0])
        m = len(rows)
        aatype = np.zeros(m, np.uint8)
        resnum = np.zeros(m, np.int32)
        icodes = np.zeros(m, "S1")
        pos = np.zeros((m, 37, 3), np.float32)
        mask = np.zeros((m, 37), bool)
        bf = np.zeros((m, 37), np.float16)
        first_atom = rows[0][1]["first"]
        for i, (_, res) in enumerate(rows):
            comp_id = max(res["comps"], key=lambda c: (res["comps"][c]["occ"], -min(res["comps"][c]["atoms"].values())))
            atoms = res["comps"][comp_id]["atoms"]
            aatype[i] = residue_type(comp_id)
            any_atom = next(iter(atoms.values()))
            resnum[i] = int(auth_seq[any_atom]) if str(auth_seq[any_atom]).lstrip("-").isdigit() else 0
            code = icode[any_atom]
            icodes[i] = b" " if code in ("?", ".") else code[:1].encode()
            for name, k in atoms.items():
                slot = ATOM37_INDEX.get(name)
                if slot is not None:
                    pos[i, slot] = xyz[k]
                    mask[i, slot] = True
                    bf[i, slot] = bfac[k]
        ca_ok = mask[:, CA]
        gaps = np.linalg.norm(np.diff(pos[:, CA], axis=0), axis=-1) > BREAK_DISTANCE
        breaks = np.zeros(m, bool)
        breaks[1:] = gaps & ca_ok[1:] & ca_ok[:-1]
        name = f"{entry}_{auth_asym[first_atom]}"
        if name in used_names:
            name = f"{name}-{chain_asym}"
        used_names.add(name)
        record.chains.append(ChainRecord(name, str(entity[first_atom]), aatype, resnum, icodes, pos, mask, bf, breaks))
    return record
