"""`qdiff headline`: where the study's report is and one line of headline numbers per dataset (and
one for the toy study), printed at the end of `make demo` / `snakemake` (the Snakefile's
`onsuccess`). Reads only what the report and toy summary wrote; a missing part is skipped."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

TREATMENT_ORDER = ("conventional", "align-geodiff", "align-af3", "quotient")


def _order(entry: dict) -> tuple:
    classical = entry.get("sampler") == "classical"
    t = entry.get("treatment") or ""
    return (classical, TREATMENT_ORDER.index(t) if t in TREATMENT_ORDER else len(TREATMENT_ORDER), t)


def _num(value, fmt: str) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, fmt)


def dataset_lines(summary: list[dict]) -> list[str]:
    """One line per dataset: recall coverage (molecules) or Cα pair-distance JSD and valid Cα
    geometry (backbones), per treatment and classical baseline."""
    by_dataset: dict[str, list[dict]] = {}
    for entry in summary:
        by_dataset.setdefault(entry["dataset"], []).append(entry)
    lines = []
    for dataset, entries in by_dataset.items():
        entries = sorted(entries, key=_order)
        if entries[0]["kind"] == "backbones":
            cells = [f"{e['treatment']} {_num(e['pair_distance_jsd'], '.2f')} ({_num(100 * e['valid_ca_geometry'], '.0f')}% valid)"
                     for e in entries]
            lines.append(f"{dataset}: Cα pair-distance JSD to the test chains (0 = same distribution; valid Cα geometry): "
                         + ", ".join(cells))
        else:
            threshold = entries[0].get("threshold")
            cells = [(f"RDKit {e['treatment']}" if e.get("sampler") == "classical" else e["treatment"])
                     + f" {_num(100 * e['cov_r_mean'], '.1f')}" for e in entries]
            lines.append(f"{dataset}: COV-R % (mean; recall coverage at {_num(threshold, 'g')} Å): " + ", ".join(cells))
    return lines


def toy_line(summary_csv: Path) -> str | None:
    """The toy study in one line: the largest |z| per treatment with the SDE (denoiser form) over
    targets and metrics, and the quotient SDE with the paper's printed sign / without the term."""
    if not summary_csv.is_file():
        return None
    worst: dict[str, float] = {}
    with open(summary_csv, newline="") as fh:
        for row in csv.DictReader(fh):
            if row["form"] != "denoiser" or row["sampler"] != "sde":
                continue
            key = row["treatment"] if row["curvature"] in ("", "minus") else f"{row['treatment']} ({row['curvature']} sign)"
            if row["curvature"] == "none":
                key = f"{row['treatment']} (no curvature term)"
            try:
                z = abs(float(row["z"]))
            except ValueError:
                continue
            worst[key] = max(worst.get(key, 0.0), z)
    if not worst:
        return None
    keys = sorted(worst, key=lambda k: (k.split(" ")[0] not in TREATMENT_ORDER,
                                        TREATMENT_ORDER.index(k.split(" ")[0]) if k.split(" ")[0] in TREATMENT_ORDER else 0, k))
    return ("toy (exact oracles, SDE): largest |z| against the true distribution (< 3: samples it): "
            + ", ".join(f"{k} {worst[k]:.1f}" for k in keys))


def headline(report_dir: str | Path = "results/report", toy_dir: str | Path = "results/toy") -> list[str]:
    report_dir, toy_dir = Path(report_dir), Path(toy_dir)
    lines = []
    summary_json = report_dir / "summary.json"
    if summary_json.is_file():
        html = report_dir / "report.html"
        lines.append(f"Report: {(html if html.is_file() else report_dir / 'summary.md').resolve()} "
                     f"(tables: {(report_dir / 'summary.md').resolve()})")
        lines += ["  " + line for line in dataset_lines(json.loads(summary_json.read_text())["summary"])]
    toy = toy_line(toy_dir / "summary.csv")
    if toy:
        lines.append(f"  {toy}  [{(toy_dir / 'summary.md').resolve()}]")
    return lines
