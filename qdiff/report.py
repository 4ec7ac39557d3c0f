"""`qdiff report`: one table per dataset of the metrics of all runs (treatment x sampler x seed,
mean ± std over seeds), as CSV, JSON, Markdown and an HTML page with a bar plot. Conformer sets
report COV/AMR; backbone sets report Cα geometry, clashes, pair-distance JSD and TM-score
diversity/novelty. Demo stand-in datasets are labelled as such."""
from __future__ import annotations

import csv
import html
import io
import json
from pathlib import Path

import numpy as np

from .atomic import atomic_path, atomic_write_text

KEYS = ("cov_r_mean", "amr_r_mean", "cov_p_mean", "amr_p_mean")
BACKBONE_KEYS = ("valid_ca_geometry", "clash_rate", "pair_distance_jsd", "rg_jsd", "pairwise_tm", "novelty_max_tm", "helix", "strand")
STAND_INS = {"demo-drugs": "RDKit ETKDG/MMFF ensembles, a stand-in for GEOM-DRUGS",
             "demo-qm9": "a 2,000-molecule subset of QM9", "demo-backbones": "synthetic backbones"}


def collect(paths: list[str | Path], convention: str = "zero") -> list[dict]:
    rows = []
    for p in paths:
        try:
            data = json.loads(Path(p).read_text())
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
                row.update(threshold=data["threshold"], n_molecules=m["n_molecules"], n_failed=m["n_failed"], **{k: m[k] for k in KEYS})
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
            raise ValueError(f"{p}: not a metrics file of `qdiff evaluate` ({err})") from err
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
        for k in (BACKBONE_KEYS if entry["kind"] == "backbones" else KEYS) + ("path_length",):
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
    lines = [f"### {dataset}{note}\n\n| treatment | sampler | seeds | COV-R % | AMR-R Å | COV-P % | AMR-P Å | path length |\n|---|---|---|---|---|---|---|---|"]
    for s in items:
        lines.append(f"| {s['treatment']} | {s['sampler']} | {s['seeds']} | {100 * s['cov_r_mean']:.1f} ± {100 * s['cov_r_mean_std']:.1f} "
                     f"| {s['amr_r_mean']:.3f} | {100 * s['cov_p_mean']:.1f} | {s['amr_p_mean']:.3f} | {s['path_length']:.2f} |")
    lines.append(f"\nCoverage threshold {items[0]['threshold']} Å; failure convention `{convention}`.\n")
    return lines


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


def write_report(paths: list[str | Path], out_dir: str | Path, convention: str = "zero") -> list[dict]:
    out = Path(out_dir)
    rows = collect(paths, convention)
    if not rows:
        raise ValueError("no metrics files given")
    summary = summarize(rows)
    buf = io.StringIO()
    fields = list(dict.fromkeys(key for entry in summary for key in entry))
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(summary)
    atomic_write_text(out / "summary.csv", buf.getvalue())
    atomic_write_text(out / "summary.json", json.dumps({"convention": convention, "runs": rows, "summary": summary}, indent=2) + "\n")
    lines = []
    for dataset in sorted({s["dataset"] for s in summary}):
        lines += _table(dataset, [x for x in summary if x["dataset"] == dataset], convention)
    markdown = "\n".join(lines)
    atomic_write_text(out / "summary.md", markdown)
    _plot(summary, out / "metrics.png")
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>qdiff report</title></head><body>"
            f"<h1>qdiff study report</h1><pre>{html.escape(markdown)}</pre><img src='metrics.png' alt='metrics'></body></html>")
    atomic_write_text(out / "report.html", page)
    return summary
