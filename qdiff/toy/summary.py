"""Collect toy-study results (JSON from `qdiff toy --json`) into a CSV, a Markdown table and a
plot of each configuration's deviation from the target in standard errors."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from ..atomic import atomic_path, atomic_write_text, check_not_an_input, clear_outputs

COLUMNS = ["target", "treatment", "form", "sampler", "curvature", "seed", "n_samples", "steps", "metric",
           "value", "expected", "stderr", "z", "path_length", "nfe"]


from ..errors import InputFileError


def load_results(paths: list[str | Path]) -> list[dict]:
    """Read result files; a file that is not a toy result raises ValueError naming it."""
    results = []
    for p in paths:
        try:
            data = json.loads(Path(p).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise InputFileError(f"{p}: not a readable toy result ({err}); re-run `qdiff toy --out {p}`") from err
        missing = {"target", "treatment", "sampler", "metrics", "config"} - set(data if isinstance(data, dict) else {})
        if missing:
            raise InputFileError(f"{p}: not a toy result (missing {sorted(missing)}); re-run `qdiff toy --out {p}`")
        results.append(data)
    return results


def _form(r: dict) -> str:
    """The oracle's form: the minimizer of the denoiser-form or of the velocity-form loss."""
    return r["config"].get("parameterization", "denoiser")


def _sampler_label(r: dict) -> str:
    """`ode`, `sde` (η-sampler) or `sde-proteina-γ` (Proteína's low-temperature SDE)."""
    if r["sampler"] == "sde" and r["config"].get("sde_schedule", "eta") == "proteina":
        return f"sde-proteina-{r['config']['noise_scale']:g}"
    return r["sampler"]


def rows(results: list[dict]) -> list[dict]:
    out = []
    key = lambda r: (r["target"], r["treatment"], _form(r), _sampler_label(r), r["config"]["curvature"], r["seed"])  # noqa: E731
    for r in sorted(results, key=key):
        for m in r["metrics"]:
            out.append({
                "target": r["target"], "treatment": r["treatment"], "form": _form(r), "sampler": _sampler_label(r),
                "curvature": r["config"]["curvature"] if r["sampler"] == "sde" else "",
                "seed": r["seed"], "n_samples": r["n_samples"], "steps": r["steps"],
                "metric": m["metric"], "value": m["value"], "expected": m["expected"],
                "stderr": m["stderr"], "z": m["z"], "path_length": r["path_length"], "nfe": r["nfe"],
            })
    return out


def to_csv(table: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in table:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    return buf.getvalue()


def to_markdown(table: list[dict]) -> str:
    head = "| target | treatment | form | sampler | metric | value | expected | z | path length |\n|---|---|---|---|---|---|---|---|---|\n"
    body = "".join(
        f"| {r['target']} | {r['treatment']} | {r['form']} | {r['sampler']}{'/' + r['curvature'] if r['curvature'] else ''} "
        f"| {r['metric']} | {r['value']:.4f} | {r['expected']:.4f} ± {r['stderr']:.4f} | {r['z']:+.1f} "
        f"| {r['path_length']:.3f} |\n"
        for r in table
    )
    note = ("\nz = (value - expected) / standard error. Oracle denoisers (no network); "
            "alignment-treatment targets are Monte Carlo estimates over exact posterior draws. "
            "form: the minimizer of the denoiser-form loss, or of the velocity-form loss (alignment "
            "baselines: target velocity of the aligned endpoint, u + (A(x1) - x1) / (1 - t)).\n")
    return head + body + note


def plot_z(table: list[dict], path: Path) -> None:
    """Heat map of |z| per configuration (rows) and metric (columns)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    label = lambda r: (r["target"], r["treatment"] + ("" if r["form"] == "denoiser" else f" ({r['form']})"),  # noqa: E731
                       r["sampler"] + ("/" + r["curvature"] if r["curvature"] else ""))
    configs = sorted({label(r) for r in table})
    metrics = sorted({r["metric"] for r in table})
    z = np.full((len(configs), len(metrics)), np.nan)
    for r in table:
        z[configs.index(label(r)), metrics.index(r["metric"])] = abs(r["z"])
    fig, ax = plt.subplots(figsize=(1.6 + 1.1 * len(metrics), 0.8 + 0.32 * len(configs)))
    im = ax.imshow(np.log10(1 + z), cmap="magma_r", aspect="auto", vmin=0, vmax=2)
    ax.set_xticks(range(len(metrics)), metrics, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(configs)), [" · ".join(c) for c in configs], fontsize=7)
    for i in range(len(configs)):
        for j in range(len(metrics)):
            if not np.isnan(z[i, j]):
                ax.text(j, i, f"{z[i, j]:.1f}", ha="center", va="center", fontsize=6,
                        color="white" if z[i, j] > 10 else "black")
    fig.colorbar(im, ax=ax, label="log10(1 + |z|)")
    ax.set_title("Toy study: distance from the target in standard errors (|z| < 4: recovered)", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def to_metrics(results: list[dict]) -> dict:
    """DVC metrics: the headline metric of each configuration, nested target/treatment/sampler."""
    metrics: dict = {}
    for r in results:
        sampler = _sampler_label(r) + ("-" + r["config"]["curvature"] if r["sampler"] == "sde" else "")
        treatment = r["treatment"] + ("" if _form(r) == "denoiser" else f"-{_form(r)}")
        node = metrics.setdefault(r["target"], {}).setdefault(treatment, {})
        node.setdefault(sampler, {})[f"seed{r['seed']}"] = {
            "metric": r["metric"], "value": r["value"], "expected": r["expected"], "z": r["z"],
            "path_length": r["path_length"],
        }
    return metrics


def write_summary(paths: list[str | Path], out_dir: str | Path) -> list[dict]:
    """Write summary.csv, summary.md, metrics.json and z_scores.png into out_dir; return the rows."""
    out = Path(out_dir)
    results = load_results(paths)
    table = rows(results)
    if not table:
        raise ValueError("no toy results given")
    outputs = [out / name for name in ("summary.csv", "summary.md", "metrics.json", "z_scores.png")]
    for path in outputs:
        check_not_an_input(path, *paths)
    clear_outputs(*outputs)  # a rerun starts clean: no file of an earlier summary beside the new ones
    atomic_write_text(out / "summary.csv", to_csv(table))
    atomic_write_text(out / "summary.md", to_markdown(table))
    atomic_write_text(out / "metrics.json", json.dumps(to_metrics(results), indent=2, sort_keys=True) + "\n")
    plot_z(table, out / "z_scores.png")
    return table
