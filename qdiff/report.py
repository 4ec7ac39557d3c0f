"""`qdiff report`: one table per dataset of the metrics of all runs (treatment x sampler x seed,
mean ± std over seeds), as CSV, JSON, Markdown and an HTML page with figures. Conformer sets
report COV/AMR (mean and median), the plausible share and the stereo-correct share of the
generated conformers (qdiff.eval.chirality; "–" for metrics files from before it); backbone sets
report Cα geometry, clashes, pair-distance JSD and TM-score diversity/novelty. Where the paper
reports the same metric on the same dataset (qdiff/eval/published.yaml) its numbers are shown
beside ours; demo stand-in datasets are labelled as such. Figures: metric by treatment,
coverage-threshold curves, RMSD distributions, loss curves (from each run's log.csv next to its
metrics), Rg against length, example structures (from each run's samples store)."""
from __future__ import annotations

import csv
import html
import io
import json
from pathlib import Path

import numpy as np

from .atomic import atomic_path, atomic_write_text, check_not_an_input, clear_outputs
from .errors import EmptyResultError, InputFileError

KEYS = ("cov_r_mean", "amr_r_mean", "cov_p_mean", "amr_p_mean", "cov_r_median", "amr_r_median", "cov_p_median", "amr_p_median")
FIGURES = {  # file -> caption
    "metrics.png": "Headline metric by treatment (mean ± std over seeds).",
    "coverage_curves.png": "Recall coverage against the RMSD threshold (dashed: the dataset's threshold).",
    "amr_distribution.png": "Per-molecule minimum RMSD to the generated set.",
    "loss_curves.png": "Training loss (smoothed) and validation loss against step and training wall time.",
    "rg_vs_length.png": "Radius of gyration against chain length; dashed: 2.2 N^0.38 Å (compact proteins).",
    "examples.png": "One generated structure per dataset and treatment.",
    "nfe_sweep.png": "Headline metric against the number of network evaluations (NFE) per sample.",
}
# every file write_report writes (report.html last: its presence means the rest is there)
OUTPUTS = ("summary.csv", "summary.json", "summary.md", *FIGURES, "report.html")
# the training curves as data (one CSV per run: step, loss, val_loss), for `dvc plots diff`
CURVES = "curves"
BACKBONE_KEYS = ("valid_ca_geometry", "clash_rate", "pair_distance_jsd", "rg_jsd", "pairwise_tm", "novelty_max_tm", "helix", "strand")
STAND_INS = {"demo-drugs": "RDKit ETKDG/MMFF ensembles, a stand-in for GEOM-DRUGS",
             "demo-qm9": "a 2,000-molecule subset of QM9", "demo-backbones": "synthetic backbones"}


def load_metrics(paths: list[str | Path]) -> list[dict]:
    out = []
    for p in paths:
        if not Path(p).is_file():
            raise InputFileError(f"{p}: no such metrics file" + (" (a folder)" if Path(p).is_dir() else "") + "; run `qdiff evaluate` first")
        try:
            data = json.loads(Path(p).read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise InputFileError(f"{p}: not a metrics file of `qdiff evaluate` (not JSON: {err}); "
                                 "delete it and re-run `qdiff evaluate`") from err
        if not isinstance(data, dict):
            raise InputFileError(f"{p}: not a metrics file of `qdiff evaluate` (a JSON {type(data).__name__}, not an object)")
        out.append({**data, "_path": str(p)})
    return out


def check_distinct(documents: list[dict]) -> None:
    """EmptyResultError when the same metrics enter twice: one file given twice (or two identical
    copies), or two files of the same run (dataset, treatment, sampler, seed, steps) that would
    count as two seeds."""
    seen: dict[tuple, str] = {}
    for d in documents:
        p = Path(d["_path"])
        content = json.dumps({k: v for k, v in d.items() if k != "_path"}, sort_keys=True, default=str)
        keys = [("file", str(p.resolve())), ("content", content)]
        if d.get("dataset") is not None:
            keys.append(("run", d.get("dataset"), d.get("kind", "molecules"), d.get("treatment"), d.get("sampler"), d.get("seed"),
                         d.get("steps"), d.get("nfe_per_sample")))
        for key in keys:
            if key in seen:
                why = {"file": "the same file twice", "content": "identical metrics", "run": "the same run (dataset, treatment, sampler, seed, steps)"}[key[0]]
                raise EmptyResultError(f"{seen[key]} and {p}: {why}; each run's metrics may enter a report once "
                                       "(they would count as two seeds)")
            seen[key] = str(p)


def store_versions(documents: list[dict]) -> dict[str, str]:
    """{dataset: content sha256 of its store} over the metrics that record one (qdiff.data.identity);
    an InputFileError when one dataset's metrics come from different versions of its store (runs of
    an old and a new store side by side in one table), naming a file of each version."""
    seen: dict[str, dict[str, str]] = {}
    for d in documents:
        for key in ("reference_store", "trained_on"):
            sha = (d.get(key) or {}).get("content_sha256") if isinstance(d.get(key), dict) else None
            if sha and d.get("dataset") is not None:
                seen.setdefault(d["dataset"], {}).setdefault(sha, d["_path"])
    for dataset, versions in seen.items():
        if len(versions) > 1:
            shown = "; ".join(f"{sha[:12]} ({path})" for sha, path in versions.items())
            raise InputFileError(f"{dataset}: metrics of different store versions in one report: {shown}; "
                                 "re-run what depends on the current store (snakemake does) or report the versions apart")
    return {dataset: next(iter(versions)) for dataset, versions in sorted(seen.items())}


def published() -> dict:
    """The committed table of published figures (qdiff/eval/published.yaml)."""
    import yaml

    return yaml.safe_load((Path(__file__).parent / "eval" / "published.yaml").read_text())


def collect(paths: list[str | Path], convention: str = "zero") -> list[dict]:
    return rows_from(load_metrics(paths), convention)


def rows_from(documents: list[dict], convention: str = "zero") -> list[dict]:
    rows = []
    for data in documents:
        p = data.get("_path", "?")
        try:
            row = {"dataset": data["dataset"], "kind": data.get("kind", "molecules"), "treatment": data.get("treatment"),
                   "sampler": data.get("sampler"), "seed": data.get("seed"), "nfe": data.get("nfe_per_sample"),
                   "path_length": data.get("mean_path_length")}
            if row["kind"] == "backbones":
                m = data["metrics"]
                row.update(threshold=None, n_samples=m["n_samples"], valid_ca_geometry=m["valid_ca_geometry"], clash_rate=m["clash_rate"],
                           pair_distance_jsd=m["pair_distance_jsd"], rg_jsd=m["rg_jsd"], pairwise_tm=m["tm_diversity"]["pairwise_tm_mean"],
                           novelty_max_tm=m["novelty_max_tm_mean"], helix=m["secondary_structure"]["helix"],
                           strand=m["secondary_structure"]["strand"])
            else:
                m = data["metrics"][convention]
                row.update(threshold=data["threshold"], n_molecules=m["n_molecules"], n_failed=m["n_failed"], **{k: m[k] for k in KEYS},
                           plausible=data.get("plausibility", {}).get("all"), stereo_correct=data.get("stereo", {}).get("correct"),
                           stereo_molecules=data.get("stereo", {}).get("molecules_with_stereo"),
                           stereo_of=data.get("stereo", {}).get("molecules"))
        except (KeyError, TypeError) as err:
            raise InputFileError(f"{p}: not a metrics file of `qdiff evaluate` (missing {err})") from err
        rows.append(row)
    return rows


def summarize(rows: list[dict]) -> list[dict]:
    """Mean and std over seeds per (dataset, treatment, sampler)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["dataset"], r["treatment"], r["sampler"]), []).append(r)
    out = []
    for (dataset, treatment, sampler), rs in sorted(groups.items(), key=lambda kv: tuple(str(x) for x in kv[0])):
        entry = {"dataset": dataset, "kind": rs[0]["kind"], "treatment": treatment, "sampler": sampler, "seeds": len(rs),
                 "threshold": rs[0]["threshold"]}
        if entry["kind"] == "molecules":
            entry["stereo_molecules"], entry["stereo_of"] = rs[0].get("stereo_molecules"), rs[0].get("stereo_of")
        for k in (BACKBONE_KEYS if entry["kind"] == "backbones" else KEYS + ("plausible", "stereo_correct")) + ("path_length",):
            vals = np.array([r[k] for r in rs if r.get(k) is not None], dtype=float)
            entry[k] = float(vals.mean()) if vals.size else float("nan")
            entry[f"{k}_std"] = float(vals.std()) if vals.size > 1 else 0.0
        out.append(entry)
    return out


PANELS = {  # (key, title, bounded to [0, 1])
    "molecules": (("cov_r_mean", "COV-R (mean)", True), ("amr_r_mean", "AMR-R (mean, Å)", False)),
    "backbones": (("pair_distance_jsd", "Cα pair-distance JSD (lower is closer)", True),
                  ("pairwise_tm", "pairwise TM-score (lower is more diverse)", True)),
}


DEMO_NOTE = ("The demo's models are tiny networks trained for a few hundred steps on CPU: their rows show that every stage "
             "runs, not what the method can do (near-zero coverage is what untrained conformers score). The RDKit rows are "
             "the classical yardstick on the same molecules. Models trained on real QM9 molecules, beside ETKDG on 1,000 "
             "held-out molecules: docs/results/qm9-small/RESULTS.md in the repository (README \"Real-data evidence\"; "
             "`snakemake --cores 2 --config study=qm9-small`).")


def method_label(s: dict) -> str:
    """`qdiff <treatment> (<sampler>)` for model rows, `RDKit <method>` for classical baselines."""
    return f"RDKit {s['treatment']}" if s.get("sampler") == "classical" else f"qdiff {s['treatment']} ({s['sampler']})"


def _table(dataset: str, items: list[dict], convention: str) -> list[str]:
    note = f" ({STAND_INS[dataset]})" if dataset in STAND_INS else ""
    if items[0]["kind"] == "backbones":
        lines = [f"### {dataset}{note}\n\n| treatment | sampler | seeds | valid Cα % | clash % | pair-dist JSD | Rg JSD | "
                 "pairwise TM | novelty max TM | helix % | strand % | path length |\n|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for s in items:
            lines.append(f"| {s['treatment']} | {s['sampler']} | {s['seeds']} | {100 * s['valid_ca_geometry']:.0f} | {100 * s['clash_rate']:.0f} "
                         f"| {s['pair_distance_jsd']:.3f} ± {s['pair_distance_jsd_std']:.3f} | {s['rg_jsd']:.3f} | {s['pairwise_tm']:.3f} "
                         f"| {s['novelty_max_tm']:.3f} | {100 * s['helix']:.0f} | {100 * s['strand']:.0f} | {s['path_length']:.2f} |")
        lines.append("\nJensen-Shannon distances against the reference test split; TM-scores from TM-align (tmtools).\n")
        return lines
    head = ("| method | seeds | COV-R % mean / median | AMR-R Å mean / median | COV-P % mean / median | AMR-P Å mean / median "
            "| plausible % | stereo % | path length |")
    lines = [f"### {dataset}{note}\n\n{head}\n|---|---|---|---|---|---|---|---|---|"]
    for s in items:
        lines.append(f"| {method_label(s)} | {s['seeds']} "
                     f"| {100 * s['cov_r_mean']:.1f} ± {100 * s['cov_r_mean_std']:.1f} / {100 * s['cov_r_median']:.1f} "
                     f"| {s['amr_r_mean']:.3f} / {s['amr_r_median']:.3f} | {100 * s['cov_p_mean']:.1f} / {100 * s['cov_p_median']:.1f} "
                     f"| {s['amr_p_mean']:.3f} / {s['amr_p_median']:.3f} | {100 * s['plausible']:.0f} | {_percent(s['stereo_correct'])} "
                     f"| {s['path_length']:.2f} |")
    table = published()
    if dataset in table["datasets"]:
        for row in table["datasets"][dataset]["rows"]:
            lines.append(f"| *{row['method']}* (published) | | {row['cov_r'][0]:.2f} / {row['cov_r'][1]:.2f} | {row['amr_r'][0]:.3f} / {row['amr_r'][1]:.3f} "
                         f"| {row['cov_p'][0]:.2f} / {row['cov_p'][1]:.2f} | {row['amr_p'][0]:.3f} / {row['amr_p'][1]:.3f} | | | |")
        lines.append(f"\nPublished rows: {table['source']} (threshold {table['datasets'][dataset]['threshold']} Å).")
    if dataset.startswith("demo-"):
        lines.append(f"\n{DEMO_NOTE}" + (" On demo-drugs the references are themselves ETKDG + MMFF94 ensembles, so the "
                                          "RDKit rows there are a ceiling, not a baseline." if dataset == "demo-drugs" else ""))
    lines.append(f"\nCoverage threshold {items[0]['threshold']} Å; failure convention `{convention}`; plausible = share of checked "
                 "conformers passing every PoseBusters intramolecular check with stereochemistry preserved; stereo = share of "
                 "all generated conformers whose R/S centres and E/Z double bonds (perceived from 3D) equal the reference's, "
                 f"molecules without any counting as correct ({_stereo_count(items)}).\n")
    return lines


def _percent(value) -> str:
    return "–" if value is None or not np.isfinite(value) else f"{100 * value:.1f}"


def _stereo_count(items: list[dict]) -> str:
    k, n = items[0].get("stereo_molecules"), items[0].get("stereo_of")
    return "no stereo figures" if n is None else f"{k} of {n} molecules have a stereo element"


def _plot(summary: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = sorted({s["dataset"] for s in summary})
    fig, axes = plt.subplots(len(datasets), 2, figsize=(9, 3 * len(datasets)), squeeze=False)
    for row, dataset in enumerate(datasets):
        items = [s for s in summary if s["dataset"] == dataset]
        labels = [f"{s['treatment']}\n{s['sampler']}" for s in items]
        panels = PANELS[items[0]["kind"]]
        for col, (key, title, unit_range) in enumerate(panels):
            ax = axes[row, col]
            ax.bar(range(len(items)), [s[key] for s in items], yerr=[s[f"{key}_std"] for s in items], color="#4477aa")
            ax.set_xticks(range(len(items)), labels, fontsize=7)
            ax.set_title(f"{dataset}: {title}", fontsize=9)
            if unit_range:
                ax.set_ylim(0, 1)
            else:
                ax.set_ylim(bottom=0)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def _examples(documents: list[dict]) -> list[tuple[str, np.ndarray, np.ndarray | None]]:
    """The first structure of the first seed's samples store per (dataset, treatment)."""
    from .data.info import store_schema

    seen, out = set(), []
    for d in sorted(documents, key=lambda d: (d["dataset"], str(d.get("treatment")), str(d.get("seed")))):
        key = (d["dataset"], d.get("treatment"))
        path = Path(d.get("samples", ""))
        if key in seen or not path.is_file():
            continue
        seen.add(key)
        title = f"{d['dataset']}\n{d.get('treatment')}"
        if store_schema(path) == "qdiff.samples.proteins":
            from .data.protein_store import PROTEIN_SAMPLES_SCHEMA, ProteinStore
            from .data.residues import CA

            with ProteinStore(path, PROTEIN_SAMPLES_SCHEMA) as store:
                chain = store.chain(0)
                out.append((title, chain["atom_pos"][chain["atom_mask"][:, CA], CA], None))
        else:
            from .data.molecule_store import SAMPLES_SCHEMA, MoleculeStore

            with MoleculeStore(path, SAMPLES_SCHEMA) as store:
                mol = store.molecule(0)
                out.append((f"{title}\n{mol['smiles'][:30]}", mol["positions"][0], mol["bond_index"]))
    return out


def _html_page(markdown: str) -> str:
    """Markdown tables and notes to HTML, followed by every figure with its caption."""
    body, table = [], []

    def flush():
        if table:
            rows = [r for r in table if not set(r.replace("|", "").strip()) <= set("-")]
            cells = [[html.escape(c.strip()) for c in r.strip().strip("|").split("|")] for r in rows]
            body.append("<table><tr>" + "".join(f"<th>{c}</th>" for c in cells[0]) + "</tr>"
                        + "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in cells[1:]) + "</table>")
            table.clear()

    for line in markdown.splitlines():
        if line.startswith("|"):
            table.append(line)
            continue
        flush()
        if line.startswith("### "):
            body.append(f"<h2>{html.escape(line[4:])}</h2>")
        elif line.strip():
            body.append(f"<p>{html.escape(line)}</p>")
    flush()
    figures = "".join(f"<figure><img src='{name}' alt='{name}'><figcaption>{html.escape(caption)}</figcaption></figure>"
                      for name, caption in FIGURES.items())
    style = "body{font-family:sans-serif;max-width:1200px;margin:auto}table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:2px 6px;font-size:13px}img{max-width:100%}"
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>qdiff report</title><style>{style}</style></head><body>"
            f"<h1>qdiff study report</h1>{''.join(body)}{figures}</body></html>")


def write_curves(run_dirs: dict[tuple, Path], folder: Path) -> list[Path]:
    """`<dataset>.<treatment>.seed<seed>.csv` (step, loss, val_loss, wall_s) from each run's log.csv: the
    loss curves of loss_curves.png as data, so `dvc plots diff` can compare them across commits.
    The folder is written even when no run has a log (an empty folder, not a missing output)."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for (dataset, treatment, seed), run in sorted(run_dirs.items(), key=lambda kv: tuple(str(x) for x in kv[0])):
        log = run / "log.csv"
        if treatment is None or not log.is_file():
            continue
        with open(log) as fh:
            rows = list(csv.DictReader(fh))
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["step", "loss", "val_loss", "wall_s"])
        writer.writerows([r["step"], r["loss"], r.get("val_loss") or "", r.get("wall_s") or ""] for r in rows)
        path = folder / f"{dataset}.{treatment}.seed{seed}.csv"
        atomic_write_text(path, buf.getvalue())
        written.append(path)
    return written


def write_report(paths: list[str | Path], out_dir: str | Path, convention: str = "zero", sweep: list[str | Path] = ()) -> list[dict]:
    """Tables (CSV, JSON, Markdown), figures (FIGURES) and report.html for the given metrics files;
    `sweep` metrics (the same runs sampled at other NFE) feed only the NFE figure."""
    from . import report_plots

    out = Path(out_dir)
    documents = load_metrics(paths)
    if not documents:
        raise EmptyResultError("no metrics files given")
    check_distinct(documents)
    swept = load_metrics(list(sweep))
    check_distinct(swept)
    stores = store_versions(documents + swept)
    outputs = [out / name for name in OUTPUTS] + [out / CURVES]
    for path in outputs:
        check_not_an_input(path, *paths, *sweep, flag="--out")
    clear_outputs(*outputs)  # a rerun starts clean: no table or figure of an earlier report beside the new ones
    rows = rows_from(documents, convention)
    summary = summarize(rows)
    buf = io.StringIO()
    fields = list(dict.fromkeys(key for entry in summary for key in entry))
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(summary)
    atomic_write_text(out / "summary.csv", buf.getvalue())
    atomic_write_text(out / "summary.json", json.dumps({"convention": convention, "stores": stores, "runs": rows, "summary": summary}, indent=2) + "\n")
    lines = []
    for dataset in sorted({s["dataset"] for s in summary}):
        lines += _table(dataset, [x for x in summary if x["dataset"] == dataset], convention)
    markdown = "\n".join(lines)
    atomic_write_text(out / "summary.md", markdown)
    _plot(summary, out / "metrics.png")
    report_plots.coverage_curves(documents, out / "coverage_curves.png")
    report_plots.amr_distributions(documents, out / "amr_distribution.png")
    runs = {(d["dataset"], d.get("treatment"), d.get("seed")): Path(d["_path"]).parent for d in documents}
    report_plots.loss_curves(runs, out / "loss_curves.png")
    write_curves(runs, out / CURVES)
    report_plots.rg_vs_length(documents, out / "rg_vs_length.png")
    report_plots.example_structures(_examples(documents), out / "examples.png")
    report_plots.nfe_sweep(documents + swept, out / "nfe_sweep.png")
    atomic_write_text(out / "report.html", _html_page(markdown))
    return summary
