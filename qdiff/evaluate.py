"""`qdiff evaluate`: conformer metrics of a samples store against its reference store.

Per molecule: the heavy-atom, symmetry-aware RMSD matrix (RDKit GetBestRMS, symmetry matches
capped), COV/AMR recall and precision at the dataset's threshold (the paper's: 0.5 Å QM9-type,
0.75 Å DRUGS-type; any other dataset needs an explicit `threshold`) and over the threshold grid, and for single-reference sets (QM9) the min and mean RMSD to the DFT
geometry. Molecules run in parallel worker processes with a per-molecule timeout; a molecule that
times out or fails counts as a model failure under both stated conventions ("zero", "skip").
Chemical plausibility (PoseBusters' intramolecular checks + preserved stereochemistry, see
qdiff.eval.plausibility) is checked on the first `plausibility` generated conformers of each
molecule (0 turns it off) and reported as pass fractions averaged over molecules. The
stereo-correct fraction (qdiff.eval.chirality.stereo_correct: perceived R/S and E/Z equal the
reference's) is computed on every generated conformer and reported under `stereo`.
Resumable: each finished molecule is kept in `<out>.partial/` (keyed to the samples, reference and
settings); a re-run after an interruption evaluates only the rest, and the folder is removed once
the metrics file is written.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import shutil
from pathlib import Path

import numpy as np

from .atomic import atomic_write_text, check_not_an_input
from .data.identity import samples_provenance
from .data.chem import mol_from_arrays
from .data.molecule_store import SAMPLES_SCHEMA, MoleculeStore
from .eval.chirality import stereo_correct, stereo_summary
from .eval.conformers import THRESHOLDS, aggregate, coverage_amr, coverage_curve, molecules_from_positions, rmsd_matrix
from .errors import InputFileError
from .eval.plausibility import plausibility
from .progress import progress_bar
from .settings import check_declared


def _molecule_metrics(args) -> tuple[np.ndarray, dict, dict]:
    """(RMSD matrix [n_ref, n_gen], plausibility pass fractions, stereo-correct counts or
    {"error": ...}) of one molecule."""
    ref, gen, max_matches, n_plausibility = args
    template = mol_from_arrays(ref["atoms"], ref["bond_index"], ref["bonds"]["order"])
    references, generated = molecules_from_positions(template, ref["positions"]), molecules_from_positions(template, gen["positions"])
    try:
        checks = plausibility(references[0], generated[:n_plausibility]) if n_plausibility else {}
    except Exception as err:  # a checker failure is not a model failure: record it, keep the RMSDs
        checks = {"error": f"{type(err).__name__}: {err}"}
    try:
        stereo = stereo_correct(references[0], generated)
    except Exception as err:  # a perception failure is recorded, not counted as a model failure
        stereo = {"error": f"{type(err).__name__}: {err}"}
    return rmsd_matrix(references, generated, max_matches), checks, stereo


def _plausibility_summary(checks: list[dict]) -> dict:
    """Pass fractions averaged over molecules, checked-conformer count, and checker errors."""
    ok = [c for c in checks if "error" not in c]
    keys = list(dict.fromkeys(k for c in ok for k in c if k != "n_checked"))
    return {"plausibility": {k: float(np.mean([c[k] for c in ok if k in c])) for k in keys},
            "plausibility_conformers": int(sum(c["n_checked"] for c in ok)),
            "plausibility_errors": [c["error"] for c in checks if "error" in c]}


def _read_key(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


class PartialResults:
    """Per-molecule results of an interrupted evaluation: `<out>.partial/<k>.npz` (RMSD matrix and
    plausibility JSON), valid only for the fingerprint recorded in `key.json`."""

    def __init__(self, out: str | Path, fingerprint: dict):
        self.dir = Path(str(out) + ".partial")
        key = self.dir / "key.json"
        if self.dir.is_dir() and _read_key(key) != fingerprint:  # other inputs, or a damaged key: start over
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(key, json.dumps(fingerprint, sort_keys=True))

    def get(self, k: int) -> tuple[np.ndarray, dict, dict] | None:
        path = self.dir / f"{k}.npz"
        if not path.is_file():
            return None
        try:
            with np.load(path) as data:
                return data["rmsd"], json.loads(str(data["checks"])), json.loads(str(data["stereo"]))
        except Exception as err:  # a damaged partial result (e.g. a killed write on a full disk): recompute it
            import sys

            print(f"warning: {path}: corrupt partial result ({type(err).__name__}: {err}); deleted, computing it again",
                  file=sys.stderr)
            path.unlink(missing_ok=True)
            return None

    def put(self, k: int, matrix: np.ndarray, checks: dict, stereo: dict) -> None:
        tmp = self.dir / f"{k}.tmp.npz"
        np.savez(tmp, rmsd=matrix, checks=json.dumps(checks), stereo=json.dumps(stereo))
        tmp.replace(self.dir / f"{k}.npz")

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def coverage_threshold(dataset: str, threshold: float | None) -> tuple[float, str]:
    """(threshold in Å, where it comes from): the explicit one, else the paper's for the dataset
    (0.5 Å GEOM-QM9, 0.75 Å GEOM-DRUGS, digest §4.1); an unknown dataset is an error, not 0.75."""
    if threshold is not None:
        return float(threshold), "explicit (--threshold)"
    if dataset not in THRESHOLDS:
        raise ValueError(f"no coverage threshold is known for dataset {dataset!r} (known: {', '.join(sorted(THRESHOLDS))}); "
                         "pass --threshold in Å")
    return THRESHOLDS[dataset], f"default for {dataset}"


def evaluate(samples: str | Path, reference: str | Path, out: str | Path, *, threshold: float | None = None,
             workers: int = 2, timeout_s: float = 120.0, max_matches: int = 10_000, plausibility_per_molecule: int = 2,
             progress: bool = True) -> dict:
    # types, ranges (qdiff/schemas/evaluate.schema.yaml)
    check_declared({"threshold": threshold, "workers": workers, "timeout_s": timeout_s, "max_matches": max_matches,
                    "plausibility_per_molecule": plausibility_per_molecule}, "evaluate")
    check_not_an_input(out, samples, reference)
    with MoleculeStore(samples, schema=SAMPLES_SCHEMA) as s, MoleculeStore(reference) as r:
        stores = samples_provenance(s.attrs, samples, reference)  # the store versions behind them, checked
        dataset = r.attrs["dataset"]
        threshold, threshold_source = coverage_threshold(dataset, threshold)
        source = s.h5["molecules/source_row"][()]
        n_ref = len(r)
        if len(source) and (source.min() < 0 or source.max() >= n_ref):
            raise InputFileError(f"{samples}: its samples refer to rows up to {int(source.max())}, but {reference} has {n_ref} "
                                 "molecules; pass the reference store the samples were drawn from")
        jobs, ids = [], []
        for k, row in enumerate(source):
            ref, gen = r.molecule(int(row)), s.molecule(k)
            if not np.array_equal(ref["atoms"]["z"], gen["atoms"]["z"]):
                raise InputFileError(f"{samples}: sample {k} ({gen['id']}) does not match reference row {row} of {reference}; "
                                     "pass the reference store the samples were drawn from")
            ids.append(ref["id"])
            jobs.append((ref, gen, max_matches, plausibility_per_molecule))
        settings = json.loads(s.attrs.get("settings", "{}"))
        generator_failures = s.failures()  # molecules the generator gave up on (e.g. ETKDG could not embed)
        meta = {"nfe_per_sample": s.attrs.get("nfe_per_sample"), "mean_path_length": s.attrs.get("mean_path_length"), **stores}
    stat = Path(samples).stat()
    partial = PartialResults(out, {"samples": str(Path(samples).resolve()), "size": stat.st_size, "mtime": stat.st_mtime_ns,
                                   "reference": str(Path(reference).resolve()), "max_matches": max_matches,
                                   "reference_sha256": stores["reference_store"]["content_sha256"],
                                   "plausibility": plausibility_per_molecule, "stereo": 1})
    done = {k: partial.get(k) for k in range(len(jobs))}
    rmsds: list[np.ndarray | None] = []
    checks: list[dict] = []
    stereo: list[dict] = []
    failures: dict[str, str] = {}
    ctx = mp.get_context("fork")  # evaluation imports no torch; fork avoids re-importing __main__
    with ctx.Pool(max(1, workers)) as pool:
        pending = [None if done[k] is not None else pool.apply_async(_molecule_metrics, (job,)) for k, job in enumerate(jobs)]
        for k, (mol_id, handle) in enumerate(progress_bar(list(zip(ids, pending)), desc="evaluate", unit="mol", enabled=progress)):
            try:
                if handle is None:
                    matrix, passed, stereo_k = done[k]
                else:
                    matrix, passed, stereo_k = handle.get(timeout=timeout_s)
                    partial.put(k, matrix, passed, stereo_k)
                rmsds.append(matrix)
                stereo.append(stereo_k)
                if passed:
                    checks.append(passed)
            except mp.TimeoutError:
                rmsds.append(None)
                failures[mol_id] = f"RMSD timed out after {timeout_s} s"
            except Exception as err:  # RDKit errors surface here
                rmsds.append(None)
                failures[mol_id] = f"{type(err).__name__}: {err}"
        pool.terminate()
    for mol_id, reason in generator_failures:  # failed molecules of the generator count as failures
        ids.append(mol_id)
        rmsds.append(None)
        failures[mol_id] = f"generator: {reason}"
    per_molecule = [None if m is None else coverage_amr(m, threshold) for m in rmsds]
    result = {
        "dataset": dataset, "samples": str(samples), "reference": str(reference), "threshold": threshold,
        "threshold_source": threshold_source,
        # which molecules were sampled (the test split, or all of them with --all-molecules) and how
        # many conformers the references carry, as `qdiff sample` recorded it
        "molecules_sampled": settings.get("molecules", "not recorded"), "all_molecules": bool(settings.get("all_molecules", False)),
        "reference_conformers": settings.get("reference_conformers", "not recorded"),
        "sampler": settings.get("sampler"), "treatment": settings.get("treatment"), "seed": settings.get("seed"),
        "steps": settings.get("steps"), **meta,
        "metrics": {c: aggregate(per_molecule, c) for c in ("zero", "skip")},
        "coverage_curve": coverage_curve(rmsds),
        **_plausibility_summary(checks),
        "stereo": {**stereo_summary([x for x in stereo if "error" not in x]), "errors": [x["error"] for x in stereo if "error" in x]},
        "failures": failures,
        "molecules": [{"id": i, **(m or {}), "n_ref": None if x is None else int(x.shape[0]), "n_gen": None if x is None else int(x.shape[1])}
                      for i, m, x in zip(ids, per_molecule, rmsds)],
    }
    if all(x is None or x.shape[0] == 1 for x in rmsds):  # one DFT geometry per molecule (QM9)
        ok = [x[0] for x in rmsds if x is not None]
        result["rmsd_to_reference"] = {"min_mean": float(np.mean([x.min() for x in ok])) if ok else float("nan"),
                                       "mean_mean": float(np.mean([x.mean() for x in ok])) if ok else float("nan")}
    atomic_write_text(out, json.dumps(result, indent=2, sort_keys=True, default=float) + "\n")
    partial.remove()
    return result
