"""Optional designability tier for Cα backbones: ProteinMPNN (Cα-only model) designs sequences for
each backbone, ESMFold folds them, and a backbone is designable when the best refolded structure lies
within 2 Å Cα RMSD of it (self-consistency RMSD, scRMSD; FrameDiff / Proteina protocol).

It runs only when the tools are installed and named:
- QDIFF_PROTEINMPNN: a ProteinMPNN checkout (the folder holding protein_mpnn_run.py and its
  ca_model_weights/); run with `--ca_only --num_seq_per_target N --sampling_temp 0.1`;
- QDIFF_FOLD_CMD: a folding command taking `-i FASTA -o OUTDIR` and writing OUTDIR/<name>.pdb for
  every FASTA record (fair-esm's `esm-fold`, the default when it is on PATH).
Otherwise `designability_tools()` returns None and the caller records the tier as skipped with
`SKIP_REASON`.
"""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.ca_pdb import read_ca

DESIGNABLE_RMSD = 2.0
SKIP_REASON = ("designability skipped: set QDIFF_PROTEINMPNN to a ProteinMPNN checkout (with ca_model_weights) and put "
               "`esm-fold` (fair-esm with ESMFold weights) on PATH or name a folding command in QDIFF_FOLD_CMD")


@dataclass
class DesignabilityTools:
    proteinmpnn: Path
    fold_command: list[str]
    python: str = sys.executable


def designability_tools() -> DesignabilityTools | None:
    """The configured tools, or None when either is missing."""
    mpnn = os.environ.get("QDIFF_PROTEINMPNN")
    fold = os.environ.get("QDIFF_FOLD_CMD") or (shutil.which("esm-fold") or "")
    if not mpnn or not (Path(mpnn) / "protein_mpnn_run.py").is_file() or not fold:
        return None
    return DesignabilityTools(Path(mpnn), shlex.split(fold))


def read_fasta(path: Path) -> list[tuple[str, str]]:
    records, name, chunks = [], None, []
    for line in Path(path).read_text().splitlines():
        if line.startswith(">"):
            if name is not None:
                records.append((name, "".join(chunks)))
            name, chunks = line[1:].strip(), []
        elif line.strip():
            chunks.append(line.strip())
    if name is not None:
        records.append((name, "".join(chunks)))
    return records


def kabsch_rmsd(a: np.ndarray, b: np.ndarray) -> float:
    """Cα RMSD after optimal proper superposition (qdiff.geometry.rmsd)."""
    import torch

    from ..geometry import rmsd

    return float(rmsd(torch.as_tensor(a, dtype=torch.float64)[None], torch.as_tensor(b, dtype=torch.float64)[None])[0])


def _run(command: list[str], log: Path) -> None:
    with open(log, "a") as fh:
        done = subprocess.run(command, stdout=fh, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:3])} ... failed with status {done.returncode}; see {log}")


def self_consistency(pdb: Path, tools: DesignabilityTools, workdir: Path, sequences: int = 8, seed: int = 0) -> dict:
    """scRMSD of one Cα backbone PDB: the best Cα RMSD between it and ESMFold's structures of the
    ProteinMPNN sequences (the first FASTA record, the input's own sequence, is skipped)."""
    name = pdb.stem
    work = workdir / name
    shutil.rmtree(work, ignore_errors=True)  # no sequences or folds of an earlier run read as this one's
    work.mkdir(parents=True)
    log = work / "tools.log"
    _run([tools.python, str(tools.proteinmpnn / "protein_mpnn_run.py"), "--pdb_path", str(pdb), "--ca_only",
          "--num_seq_per_target", str(sequences), "--sampling_temp", "0.1", "--seed", str(seed), "--batch_size", "1",
          "--out_folder", str(work)], log)
    designed = read_fasta(work / "seqs" / f"{name}.fa")[1:]
    if not designed:
        raise RuntimeError(f"ProteinMPNN wrote no sequences for {pdb}")
    fasta = work / "designed.fasta"
    fasta.write_text("".join(f">{name}_s{k}\n{seq}\n" for k, (_, seq) in enumerate(designed)))
    _run([*tools.fold_command, "-i", str(fasta), "-o", str(work / "folded")], log)
    target = read_ca(pdb)
    rmsds = []
    for k in range(len(designed)):
        folded = work / "folded" / f"{name}_s{k}.pdb"
        ca = read_ca(folded) if folded.is_file() else np.zeros((0, 3))
        rmsds.append(kabsch_rmsd(ca, target) if len(ca) == len(target) else float("inf"))
    best = int(np.argmin(rmsds))
    return {"name": name, "sc_rmsd": float(rmsds[best]), "designable": bool(rmsds[best] < DESIGNABLE_RMSD),
            "best_sequence": designed[best][1], "sequences": len(designed)}


def designability(pdbs: list[Path], tools: DesignabilityTools | None, workdir: Path, sequences: int = 8) -> dict:
    """Fraction of designable backbones (scRMSD < 2 Å), or the skip record when tools are absent."""
    if tools is None:
        return {"status": "skipped", "reason": SKIP_REASON}
    rows = [self_consistency(Path(p), tools, Path(workdir), sequences) for p in pdbs]
    return {"status": "done", "designable_fraction": float(np.mean([r["designable"] for r in rows])) if rows else float("nan"),
            "sc_rmsd_median": float(np.median([r["sc_rmsd"] for r in rows])) if rows else float("nan"), "per_backbone": rows}
