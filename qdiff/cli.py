"""Command-line interface: argument parsing only; each command calls a runner."""
from __future__ import annotations

import argparse
import json
import math
import os
import sys

from .choices import CURVATURE_SIGNS, PARAMETERIZATIONS, TREATMENTS
from .errors import EXIT_STATUSES, SettingsError
from .settings import load_yaml  # noqa: F401 (qdiff.cli.load_yaml: the settings reader's YAML)


def _bounded(cast: type, accept, what: str):
    """An argparse type: cast(text) that `accept` admits, else "must be <what>, got <text>"."""
    def parse(text: str):
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
        if not accept(value):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
        return value

    parse.__name__ = what
    return parse


_positive_int = _bounded(int, lambda v: v >= 1, "a positive integer")
_count = _bounded(int, lambda v: v >= 0, "an integer >= 0")  # 0 allowed: e.g. no retries, checks off
_positive_float = _bounded(float, lambda v: v > 0 and math.isfinite(v), "a positive number")
_non_negative_float = _bounded(float, lambda v: v >= 0 and math.isfinite(v), "a number >= 0")


def _date(text: str) -> str:
    """An ISO date YYYY-MM-DD (a real one: 2026-02-30 is not)."""
    import datetime
    import re

    try:
        if not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", text):
            raise ValueError(text)
        datetime.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a date YYYY-MM-DD, got {text!r}") from None
    return text


def _lengths(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated chain lengths, e.g. 50,100, got {text!r}") from None
    if min(values) < 2:
        raise argparse.ArgumentTypeError(f"chain lengths must be >= 2, got {text}")
    return values


def _add_toy(sub) -> None:
    from .choices import SDE_SCHEDULES, TOY_SAMPLERS as SAMPLERS, TOY_TARGETS as TARGETS

    p = sub.add_parser(
        "toy",
        help="exact toy study: oracle denoisers x samplers on targets with a known E[x1|x_t]",
        description="Plug the exact minimizer of a treatment's loss into a sampler and measure the "
        "sampled shape distribution against the target, with Monte Carlo standard errors.",
    )
    p.add_argument("--target", choices=TARGETS, default="gaussian")
    # the per-run flags default to None so that combining them with --run is an error, not ignored
    p.add_argument("--treatment", choices=TREATMENTS, help="default quotient")
    p.add_argument("--sampler", choices=SAMPLERS, help="default ode")
    p.add_argument("--steps", type=_positive_int, default=50)
    p.add_argument("--samples", type=_positive_int, default=1000)
    p.add_argument("--seed", type=_count, help="default 0")
    p.add_argument("--ode-method", choices=("euler", "heun"), default="euler")
    p.add_argument("--noise-scale", type=_non_negative_float, default=1.0,
                   help="SDE: eta_t = scale * alpha_hat_t^2 (--sde-schedule eta), or Proteina's noise-only scale gamma (proteina)")
    p.add_argument("--sde-schedule", choices=SDE_SCHEDULES, default="eta",
                   help="eta: temperature-1 SDE; proteina: Proteina's g(t) = 1/(t + 0.01), log time grid, noise scaled by --noise-scale")
    p.add_argument("--parameterization", choices=PARAMETERIZATIONS,
                   help="the oracle minimizes the denoiser-form (default) or the velocity-form loss of the treatment")
    p.add_argument(
        "--curvature", choices=sorted(CURVATURE_SIGNS),
        help="quotient SDE curvature drift: minus (correct, default), plus (paper Eq. 12 as printed), none",
    )
    p.add_argument("--jitter", type=_non_negative_float, default=0.1, help="isotropic noise on the rigid shapes")
    p.add_argument("--rho", type=_positive_float, default=2.0, help="time grid refinement near the data end")
    p.add_argument("--mc-draws", type=_positive_int, default=32,
                   help="posterior draws per step for the alignment treatments' targets")
    p.add_argument("--vertical-drift", type=float, default=0.0,
                   help="add an equivariant rigid-rotation error of this size to the oracle")
    p.add_argument("--boltz-realign", action="store_true",
                   help="align-af3: realign the prediction onto x_t before each update (Boltz-1)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table: one object, or a list of them with --run")
    p.add_argument("--out", help="also write the JSON result to this file (atomically)")
    p.add_argument("--run", nargs=6, action="append", default=[],
                   metavar=("TREATMENT", "SAMPLER", "CURVATURE", "SEED", "PARAMETERIZATION", "OUT"),
                   help="one configuration of a batch, written to OUT (repeatable; replaces --treatment, --sampler, "
                   "--curvature, --seed, --parameterization and --out): the workflow runs a target's configurations "
                   "in one process, each with its own seeded generators, so the results equal separate runs")
    p.set_defaults(func=_run_toy)

    s = sub.add_parser("toy-summary", help="collect toy results into summary.csv/.md and a plot")
    s.add_argument("results", nargs="+", help="JSON files written by `qdiff toy --out`")
    s.add_argument("--out", required=True, help="output folder")
    s.set_defaults(func=_run_toy_summary)


def _toy_batch(args: argparse.Namespace) -> list[tuple[dict, str | None]]:
    """(per-configuration settings, output file) for each configuration asked for: the single one of
    --treatment/--sampler/--curvature/--seed/--parameterization/--out, or every --run."""
    from .choices import TOY_SAMPLERS

    single = dict(treatment=args.treatment, sampler=args.sampler, curvature=args.curvature, seed=args.seed,
                  parameterization=args.parameterization)
    if not args.run:
        defaults = dict(treatment="quotient", sampler="ode", curvature="minus", seed=0, parameterization="denoiser")
        return [({k: defaults[k] if v is None else v for k, v in single.items()}, args.out)]
    given = [f"--{k}" for k, v in {**single, "out": args.out}.items() if v is not None]
    if given:
        raise SettingsError(f"toy: {', '.join(given)} and --run exclude each other (each --run names its own "
                            "treatment, sampler, curvature, seed, parameterization and output)")
    batch = []
    for treatment, sampler, curvature, seed, parameterization, out in args.run:
        for value, allowed, what in ((treatment, TREATMENTS, "treatment"), (sampler, TOY_SAMPLERS, "sampler"),
                                     (curvature, CURVATURE_SIGNS, "curvature"), (parameterization, PARAMETERIZATIONS, "parameterization")):
            if value not in allowed:
                raise SettingsError(f"toy --run: unknown {what} {value!r}; choose one of {', '.join(allowed)}")
        if not (seed.isascii() and seed.isdigit()):
            raise SettingsError(f"toy --run: the seed must be an integer >= 0, got {seed!r}")
        batch.append((dict(treatment=treatment, sampler=sampler, curvature=curvature, seed=int(seed),
                           parameterization=parameterization), out))
    return batch


def _run_toy(args: argparse.Namespace) -> int:
    from .atomic import atomic_write_text
    from .toy import ToyConfig, format_table, run_toy

    results = []
    for settings, out in _toy_batch(args):
        config = ToyConfig(
            target=args.target, steps=args.steps, samples=args.samples, ode_method=args.ode_method,
            noise_scale=args.noise_scale, jitter=args.jitter, mc_draws=args.mc_draws, boltz_realign=args.boltz_realign,
            rho=args.rho, vertical_drift=args.vertical_drift, sde_schedule=args.sde_schedule, **settings,
        )
        result = run_toy(config)
        results.append(result)
        if out:
            atomic_write_text(out, json.dumps(result.to_json(), indent=2) + "\n")
        if not args.json:
            print(format_table([result]))
            print(f"nfe={result.nfe}  path_length={result.path_length:.4f} ± {result.path_length_stderr:.4f}"
                  f"  ({result.seconds:.1f} s)", flush=True)
    if args.json:
        payload = [r.to_json() for r in results]
        print(json.dumps(payload if args.run else payload[0], indent=2))
    return 0


def _run_toy_summary(args: argparse.Namespace) -> int:
    from .toy.summary import write_summary

    table = write_summary(args.results, args.out)
    print(f"wrote {len(table)} rows to {args.out}/summary.csv, summary.md, metrics.json, z_scores.png")
    return 0


def _add_data_commands(sub) -> None:
    from .data.fetch import FETCHABLE, OFFLINE_DATASETS

    datasets = sorted(FETCHABLE) + ["pdb"] + list(OFFLINE_DATASETS)
    f = sub.add_parser("fetch", help="download a dataset's raw files, verified against the manifest")
    f.add_argument("dataset", choices=datasets)
    f.add_argument("--source", help="manifest source (qm9: figshare, deepchem, qm9pack)")
    f.add_argument("--url", help="a mirror base URL tried first for every file (<url>/<name>)")
    f.add_argument("--dest", help="folder for the files (default resources/<dataset>)")
    f.add_argument("--offline", action="store_true", help="download nothing; report what is missing")
    f.add_argument("--retries", type=_count, default=4)
    pdb = f.add_argument_group("pdb")
    pdb.add_argument("--ids", help="comma-separated PDB IDs")
    pdb.add_argument("--ids-file", help="file of PDB IDs (whitespace or comma separated, # comments)")
    pdb.add_argument("--index-dir", help="folder with wwPDB index files (resolu.idx, pdb_entry_type.txt, "
                     "entries.idx, obsolete.dat) to select candidates from")
    pdb.add_argument("--index-url", nargs="?", const="default", metavar="URL",
                     help="download the wwPDB index files first (into <dest>/index) and select from them")
    pdb.add_argument("--max-resolution", type=_positive_float, help="with --index-dir/--index-url: resolution cutoff in Å")
    pdb.add_argument("--base-url", default=None, help="entry server (default https://files.rcsb.org/download)")
    pdb.add_argument("--snapshot", type=_date, help="snapshot date (YYYY-MM-DD, default today UTC): entries released or revised after it are "
                     "kept out, and the first fetch of a date pins its entries' sha256 (snapshots/<date>.json)")
    pdb.add_argument("--workers", type=_positive_int, default=8, help="concurrent downloads")
    pdb.add_argument("--refresh", action="store_true", help="download again instead of reusing the cache")
    pdb.add_argument("--clusters", nargs="?", const="default", metavar="URL",
                     help="also fetch RCSB's 30%% sequence clusters (for cluster-aware splits)")
    f.add_argument("--record", help="after a successful fetch, write a JSON record of what is in place here (a workflow's output)")
    f.set_defaults(func=_run_fetch)

    z = sub.add_parser("featurize", help="raw files -> a verified HDF5 store")
    z.add_argument("dataset", choices=datasets)
    z.add_argument("--raw", help="folder with the fetched raw files (default resources/<dataset>)")
    z.add_argument("--out", required=True, help="the store to write (.h5)")
    z.add_argument("--config", help="YAML with a `featurize:` section of settings for this dataset")
    z.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="one setting (value parsed as YAML), overriding --config; repeatable")
    z.add_argument("--keep-versions", nargs="?", const="", default=None, metavar="DIR",
                   help="also keep the new store as a version under DIR/<store name>/ (a hard link; default DIR: "
                        "versions/ beside --out), so it stays retrievable after the store is rewritten "
                        "(`qdiff data versions`, `qdiff data diff --previous`)")
    z.set_defaults(func=_run_featurize)

    d = sub.add_parser("data", help="inspect stores")
    dsub = d.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")
    i = dsub.add_parser("info", help="counts, splits, atom-count histogram, failures, provenance")
    i.add_argument("store")
    i.add_argument("--json", action="store_true")
    i.add_argument("--verify", action="store_true",
                   help="also recompute the content digest from the data and check it against the recorded one")
    i.set_defaults(func=_run_data_info)
    df = dsub.add_parser("diff", help="what a dataset update added, removed and changed",
                         description="qdiff data diff OLD NEW, or qdiff data diff --previous STORE: the version "
                                     "kept before the current one (featurize --keep-versions) against STORE")
    df.add_argument("stores", nargs="+", metavar="STORE", help="OLD NEW, or one STORE with --previous")
    df.add_argument("--previous", action="store_true", help="compare STORE's previous kept version with STORE")
    df.add_argument("--versions", metavar="DIR", help="where the versions are kept (default: versions/ beside the store)")
    df.add_argument("--json", action="store_true")
    df.set_defaults(func=_run_data_diff)
    v = dsub.add_parser("versions", help="the versions of a store kept by featurize --keep-versions")
    v.add_argument("store")
    v.add_argument("--versions", metavar="DIR", help="where the versions are kept (default: versions/ beside the store)")
    v.add_argument("--json", action="store_true")
    v.set_defaults(func=_run_data_versions)


def _run_fetch(args: argparse.Namespace) -> int:
    from .data.fetch import OFFLINE_DATASETS, fetch_dataset

    if args.dataset in OFFLINE_DATASETS:
        print(f"{args.dataset} ships with the installed packages; nothing to fetch")
        paths = []
    elif args.dataset == "pdb":
        paths = [_run_fetch_pdb(args)]
    else:
        paths = fetch_dataset(args.dataset, args.source, args.dest, offline=args.offline, mirror=args.url, retries=args.retries)
    for path in paths:
        print(path)
    if args.record:
        from pathlib import Path

        from .atomic import atomic_write_text

        record = {"dataset": args.dataset, "source": args.source, "files": {str(p): Path(p).stat().st_size for p in paths}}
        atomic_write_text(args.record, json.dumps(record, indent=2, sort_keys=True) + "\n")
    return 0


def _run_fetch_pdb(args: argparse.Namespace):
    """Fetch PDB entries; returns the path of the fetch summary."""
    from pathlib import Path

    from .data.sources.pdb import (
        CLUSTERS_URL, DEFAULT_BASE_URL, check_snapshot_date, fetch_index_files, fetch_pdb, index_file_hashes, normalize_ids,
        read_ids_file, select_candidates,
    )

    ids: list[str] = []
    if args.ids:
        ids += normalize_ids(args.ids.split(","))
    if args.ids_file:
        ids += read_ids_file(args.ids_file)
    dest = Path(args.dest or "resources/pdb")
    if args.index_url:
        args.index_dir = fetch_index_files(dest, None if args.index_url == "default" else args.index_url, args.retries,
                                           snapshot=check_snapshot_date(args.snapshot))
    if args.index_dir:
        kept, dropped = select_candidates(args.index_dir, max_resolution=args.max_resolution, before=args.snapshot)
        ids += kept
        print(f"index selection: {len(kept)} candidates, {len(dropped)} dropped (reasons in {dest / 'dropped.json'})")
        dest.mkdir(parents=True, exist_ok=True)
        from .atomic import atomic_write_text

        atomic_write_text(dest / "dropped.json", json.dumps(dropped, indent=2, sort_keys=True) + "\n")
    if not ids:
        raise ValueError("fetch pdb needs --ids, --ids-file or --index-dir")
    path = fetch_pdb(ids, dest, base_url=args.base_url or DEFAULT_BASE_URL, snapshot=args.snapshot,
                     workers=args.workers, retries=args.retries, refresh=args.refresh,
                     clusters_url=(CLUSTERS_URL if args.clusters == "default" else args.clusters),
                     index_files=index_file_hashes(args.index_dir) if args.index_dir else None)
    manifest = json.loads(path.read_text())
    entries = manifest["entries"]
    errors = {k: v["error"] for k, v in entries.items() if "error" in v}
    excluded = {k: v["excluded"] for k, v in entries.items() if "excluded" in v}
    print(f"{path}: {len(entries) - len(errors)} entries cached, {len(errors)} failed"
          + (f", {len(excluded)} not the version of snapshot {manifest['snapshot_date']} (kept out)" if excluded else ""))
    for pid, error in sorted(errors.items()):
        print(f"  {pid}: {error}")
    for pid, why in sorted(excluded.items()):
        print(f"  {pid}: kept out: {why}")
    if "warning" in manifest.get("clusters", {}):
        print(f"warning: clusters: {manifest['clusters']['warning']}")
    return path


def _run_featurize(args: argparse.Namespace) -> int:
    from .data.featurize import featurize

    from .settings import load_settings_file

    settings = {}
    if args.config:
        section = load_settings_file(args.config, "featurize")
        chosen = section.get(args.dataset, section.get(args.dataset.replace("-", "_"), {}))
        if not isinstance(chosen, dict):
            raise SettingsError(f"{args.config}: `featurize.{args.dataset}` must be a mapping of settings")
        settings = dict(chosen or {})
    settings.update(_set_options(args.set))
    summary = featurize(args.dataset, args.raw, args.out, settings)
    if args.keep_versions is not None:
        from .data.versions import keep_version

        kept = keep_version(args.out, args.keep_versions or None)
        print(f"{args.out}: version kept as {kept}")
    counted = f"{summary['chains']} chains in {summary['structures']} structures" if "chains" in summary else f"{summary['molecules']} molecules"
    print(f"{args.out}: {counted}, {summary['failures']} recorded failures (source {summary['source']})")
    return 0


def _run_data_info(args: argparse.Namespace) -> int:
    from .data.info import format_info, store_info

    info = store_info(args.store)
    if args.verify:
        from .data.identity import verify_store
        from .errors import InputFileError

        recorded, computed = verify_store(args.store)
        if recorded is not None and recorded != computed:
            raise InputFileError(f"{args.store}: content digest {computed[:12]}... differs from the recorded {recorded[:12]}...: "
                                 "the store was modified or damaged after it was written; featurize it again")
        info["verified_content_sha256"] = computed
    print(json.dumps(info, indent=2) if args.json else format_info(info))
    return 0


def _run_data_diff(args: argparse.Namespace) -> int:
    from .data.info import format_diff, store_diff

    if args.previous:
        if len(args.stores) != 1:
            raise SettingsError("data diff --previous takes one store (the current version)")
        from .data.versions import previous_version

        old, new = previous_version(args.stores[0], args.versions), args.stores[0]
    elif len(args.stores) != 2:
        raise SettingsError("data diff takes two stores, OLD NEW (or one store with --previous)")
    else:
        old, new = args.stores
    diff = store_diff(old, new)
    print(json.dumps(diff, indent=2) if args.json else format_diff(diff))
    return 0


def _run_data_versions(args: argparse.Namespace) -> int:
    from .data.identity import short, store_identity
    from .data.versions import list_versions, versions_folder

    history = list_versions(args.store, args.versions)
    current = store_identity(args.store)["content_sha256"] if os.path.isfile(args.store) else None
    if args.json:
        print(json.dumps({"store": args.store, "current": current, "versions": history}, indent=2))
        return 0
    if not history:
        print(f"{args.store}: no versions kept in {versions_folder(args.store, args.versions)}")
        return 0
    for entry in history:
        mark = "*" if entry["content_sha256"] == current else " "
        gone = "" if entry["present"] else "  (deleted)"
        snap = f"  snapshot {entry['snapshot_date']}" if entry.get("snapshot_date") else ""
        print(f"{mark} {entry['written']}  {short(entry['content_sha256'])}{snap}  {entry['path']}{gone}")
    return 0


def _add_model_commands(sub) -> None:
    from .choices import TREATMENTS
    from .settings import schema

    t = sub.add_parser("train", help="train (or resume) a model on a store; re-running resumes")
    t.add_argument("--store", required=True)
    t.add_argument("--out", required=True, help="run folder (checkpoints, log.csv, model.pt)")
    t.add_argument("--config", help="YAML with a `train:` section (or a plain mapping) of settings")
    t.add_argument("--treatment", choices=TREATMENTS)
    t.add_argument("--model", help="network name (egnn, e3nn, backbone-transformer)")
    t.add_argument("--steps", type=_positive_int)
    t.add_argument("--seed", type=_count)
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="one setting (YAML value); repeatable")
    t.set_defaults(func=_run_train)

    s = sub.add_parser("sample", help="generate conformers (molecule runs) or Cα backbones (backbone runs) into a samples store",
                       description="Samples with the run's EMA weights and the sampler geometry of its treatment. "
                       "Molecule runs also write SAMPLES.sdf; backbone runs a folder of Cα PDB files.")
    s.add_argument("--run", required=True)
    s.add_argument("--out", required=True)
    declared = schema("sample")["properties"]  # the choices of the study's settings (qdiff/schemas/sample.schema.yaml)
    s.add_argument("--sampler", choices=declared["sampler"]["enum"], default="ode")
    s.add_argument("--steps", type=_positive_int, help="integration steps (default: 50 molecules, 400 backbones)")
    s.add_argument("--seed", type=_count, default=0)
    s.add_argument("--noise-scale", type=_non_negative_float, help="SDE noise scale (default: 1.0 molecules, 0.45 backbones): the scale of "
                   "eta_t = scale * alpha_hat_t^2 (--sde-schedule eta), or Proteina's gamma scaling the noise only (proteina)")
    s.add_argument("--sde-schedule", choices=declared["sde_schedule"]["enum"],
                   help="eta (default for molecules): temperature-1 SDE; proteina (default for backbones): Proteina's "
                   "g(t) = 1/(t + 0.01), log time grid, noise-only scale (gamma < 1: low temperature)")
    s.add_argument("--align-to-xt", action="store_true", help="Boltz/AF3-style: rotate the implied x̂1 onto x_t at each step")
    s.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:N")
    s.add_argument("--compile", nargs="?", const=True, default=None, metavar="BACKEND",
                   help="torch.compile the network (default backend inductor; reduce-overhead: inductor with CUDA graphs); pays off on GPUs over many steps")
    s.add_argument("--precision", choices=declared["precision"]["enum"], help="bf16: autocast around the network only (default fp32)")
    s.add_argument("--multiplier", type=_positive_int, help="molecules: samples per reference conformer (ET-Flow: 2)")
    s.add_argument("--max-molecules", type=_positive_int, help="molecules: the first N test molecules only")
    s.add_argument("--lengths", type=_lengths, help="backbones: comma-separated chain lengths "
                   "(default: the reference test split's lengths)")
    s.add_argument("--per-length", type=_positive_int, help="backbones: chains per length (default 1)")
    s.add_argument("--max-chains", type=_positive_int, help="backbones: the first N reference test chains only")
    s.add_argument("--batch-size", type=_positive_int,
                   help="backbones: chains per batch (default 64); chains are sorted by length, so smaller batches pad less")
    s.add_argument("--pdb-dir", help="backbones: the folder of PDB files (default: next to --out); replaced on every run, "
                   "so it may hold nothing else")
    s.add_argument("--store", help="the store to sample for (default: the one the run was trained on, as model.pt records it)")
    s.add_argument("--all-molecules", action="store_true", default=None,
                   help="sample every molecule (or chain) of the store, training ones included, instead of the run's "
                   "test split; needed for a run trained without a split; recorded in the samples and the metrics")
    s.set_defaults(func=_run_sample)

    e = sub.add_parser("evaluate", help="metrics of a samples store: conformers (COV/AMR, both failure conventions) "
                       "or backbones (Cα geometry, clashes, Rg, secondary structure, JSD, TM-score diversity/novelty)")
    e.add_argument("--samples", required=True)
    e.add_argument("--reference", required=True)
    e.add_argument("--out", required=True, help="metrics JSON")
    e.add_argument("--threshold", type=_positive_float, help="coverage threshold in Å (default: the paper's, 0.5 QM9-type, 0.75 "
                   "DRUGS-type; required for any other dataset)")
    e.add_argument("--workers", type=_positive_int, default=2)
    e.add_argument("--timeout", type=_positive_float, default=120.0, help="seconds per molecule")
    e.add_argument("--designability", type=_count, default=0, metavar="N",
                   help="backbones: ProteinMPNN + ESMFold self-consistency on the first N samples (needs QDIFF_PROTEINMPNN and esm-fold)")
    e.add_argument("--plausibility", type=_count, default=2, metavar="N",
                   help="PoseBusters + stereochemistry checks on the first N conformers of each molecule (0: off)")
    e.set_defaults(func=_run_evaluate)

    k = sub.add_parser("etkdg", help="classical baseline: RDKit ETKDGv3 (optionally + MMFF94) conformers of a store's test "
                       "molecules into a samples store that `qdiff evaluate` scores like a model's")
    k.add_argument("--reference", required=True, help="molecule store")
    k.add_argument("--out", required=True, help="samples store (an SDF is written beside it)")
    k.add_argument("--split", required=True, help="split whose molecules to embed (the models' split)")
    k.add_argument("--part", choices=("train", "val", "test"), default="test")
    k.add_argument("--mmff", action="store_true", help="minimize each conformer with MMFF94")
    k.add_argument("--multiplier", type=_positive_int, default=2, help="conformers per reference conformer (ET-Flow: 2)")
    k.add_argument("--max-molecules", type=_positive_int, help="the first N molecules of the split part (as `qdiff sample`)")
    k.add_argument("--seed", type=_count, default=0)
    k.add_argument("--timeout", type=_positive_int, default=60, help="seconds per molecule for the embedding")
    k.set_defaults(func=_run_etkdg)

    r = sub.add_parser("report", help="tables and plots of the metrics of all runs")
    r.add_argument("--metrics", nargs="+", required=True, help="JSON files written by `qdiff evaluate`")
    r.add_argument("--out", required=True, help="output folder")
    r.add_argument("--convention", choices=("zero", "skip"), default="zero")
    r.add_argument("--sweep", nargs="*", default=[], help="metrics of the same runs at other NFE (for the NFE figure)")
    r.set_defaults(func=_run_report)

    h = sub.add_parser("headline", help="where the report is and one line of headline numbers per dataset (end of `make demo`)")
    h.add_argument("--report", default="results/report", help="folder written by `qdiff report`")
    h.add_argument("--toy", default="results/toy", help="folder written by `qdiff toy-summary`")
    h.set_defaults(func=_run_headline)


def _set_options(items: list[str]) -> dict:
    """`--set KEY=VALUE` options (values read as YAML); a malformed one names itself."""
    import yaml

    settings = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SettingsError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            settings[key.strip()] = load_yaml(value)
        except yaml.YAMLError as err:
            raise SettingsError(f"--set {item}: the value is not valid YAML ({' '.join(str(err).split())})") from None
    return settings


def _settings_from(args: argparse.Namespace, section: str) -> dict:
    from .settings import load_settings_file

    settings = load_settings_file(args.config, section) if getattr(args, "config", None) else {}
    settings.update(_set_options(args.set))
    return settings


def _run_train(args: argparse.Namespace) -> int:
    from .train import train

    settings = _settings_from(args, "train")
    if args.treatment:
        settings["treatment"] = args.treatment
    if args.model:
        settings["model"] = {**settings.get("model", {}), "name": args.model}
    if args.steps:
        settings["steps"] = args.steps
    if args.seed is not None:
        settings["seed"] = args.seed
    print(train(args.store, args.out, settings))
    return 0


def _run_sample(args: argparse.Namespace) -> int:
    from .sample import sample

    summary = sample(args.run, args.out, sampler=args.sampler, steps=args.steps, seed=args.seed, noise_scale=args.noise_scale,
                     sde_schedule=args.sde_schedule, align_to_xt=args.align_to_xt, device=args.device, multiplier=args.multiplier,
                     max_molecules=args.max_molecules, lengths=args.lengths, per_length=args.per_length,
                     max_chains=args.max_chains, batch_size=args.batch_size, pdb_dir=args.pdb_dir, compile=args.compile,
                     precision=args.precision, all_molecules=args.all_molecules, store=args.store)
    count = f"{summary['molecules']} molecules" if summary["kind"] == "molecules" else f"{summary['backbones']} backbones"
    print(f"{args.out}: {count}, {summary['nfe']} NFE per sample, mean path length {summary['mean_path_length']:.3f}")
    return 0


def _run_etkdg(args: argparse.Namespace) -> int:
    from .classical import generate_etkdg

    summary = generate_etkdg(args.reference, args.out, split=args.split, part=args.part, multiplier=args.multiplier,
                             mmff=args.mmff, max_molecules=args.max_molecules, seed=args.seed, timeout_s=args.timeout)
    print(f"{args.out}: {summary['method']}, {summary['molecules']} molecules ({summary['failed']} failed, "
          f"{summary['fewer_than_asked']} with fewer conformers than asked, {summary['mmff_missing']} without MMFF parameters, "
          f"{summary['chirality_not_enforced']} embedded without ETKDG's chirality check)")
    return 0


def _run_evaluate(args: argparse.Namespace) -> int:
    from .data.info import store_schema
    from .evaluate import evaluate

    if store_schema(args.samples) == "qdiff.samples.proteins":
        from .evaluate_backbones import evaluate_backbones

        result = evaluate_backbones(args.samples, args.reference, args.out, designability=args.designability)
        m = result["metrics"]
        if "designability" in result and result["designability"]["status"] == "skipped":
            print(result["designability"]["reason"], file=sys.stderr)
        print(f"{args.out}: {m['n_samples']} backbones: Cα-Cα {m['ca_ca_mean']:.2f} Å, valid {100 * m['valid_ca_geometry']:.0f}%, "
              f"clash rate {100 * m['clash_rate']:.0f}%, pair-distance JSD {m['pair_distance_jsd']:.3f}, "
              f"pairwise TM {m['tm_diversity']['pairwise_tm_mean']:.3f}, novelty max TM {m['novelty_max_tm_mean']:.3f}")
        return 0
    result = evaluate(args.samples, args.reference, args.out, threshold=args.threshold, workers=args.workers, timeout_s=args.timeout,
                      plausibility_per_molecule=args.plausibility)
    m = result["metrics"]["zero"]
    print(f"{args.out}: {m['n_molecules']} molecules ({m['n_failed']} failed) at {result['threshold']} Å: "
          f"COV-R {100 * m['cov_r_mean']:.1f}% AMR-R {m['amr_r_mean']:.3f} Å, COV-P {100 * m['cov_p_mean']:.1f}% AMR-P {m['amr_p_mean']:.3f} Å"
          + (f", plausible {100 * result['plausibility']['all']:.0f}%" if result["plausibility"] else ""))
    return 0


def _run_report(args: argparse.Namespace) -> int:
    from .report import write_report

    summary = write_report(args.metrics, args.out, args.convention, args.sweep)
    print(f"{args.out}: {len(summary)} rows (summary.csv, summary.md, summary.json, metrics.png, report.html)")
    return 0


def _run_headline(args: argparse.Namespace) -> int:
    from .headline import headline

    lines = headline(args.report, args.toy)
    print("\n".join(lines) if lines else f"no report in {args.report} and no toy summary in {args.toy} yet")
    return 0


EPILOG = "exit statuses: " + "; ".join(f"{code} {text}" for code, text in EXIT_STATUSES.items()) + (
    ". --debug (or QDIFF_DEBUG=1) shows the traceback of any error.")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="qdiff", description=__doc__, epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"qdiff {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the Python traceback of an error (also QDIFF_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_toy(sub)
    _add_data_commands(sub)
    _add_model_commands(sub)
    for command in _leaf_parsers(parser):  # `qdiff train ... --debug` works as well as `qdiff --debug train ...`
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


def _leaf_parsers(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                yield child
                yield from _leaf_parsers(child)


def _debug(args: argparse.Namespace | None) -> bool:
    import os

    return bool(getattr(args, "debug", False)) or os.environ.get("QDIFF_DEBUG", "").strip().lower() not in ("", "0", "false", "no")


def main(argv: list[str] | None = None) -> int:
    """Run one command. Expected failures (errors.classify) print one line `qdiff <command>: error:
    ...` and return their exit status (errors.EXIT_STATUSES); with --debug or QDIFF_DEBUG=1 the
    traceback comes first. Anything else is a bug: its traceback, with a note to report it."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from .errors import classify

    try:
        return args.func(args)
    except Exception as err:
        known = classify(err)
        if known is None:
            err.add_note(f"qdiff {args.command}: unexpected error (a bug in qdiff); please report it with this traceback")
            raise
        status, message = known
        if _debug(args):
            import traceback

            traceback.print_exc()
        print(f"qdiff {args.command}: error: {message}", file=sys.stderr)
        return status


if __name__ == "__main__":
    raise SystemExit(main())
