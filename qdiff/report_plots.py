"""The report's figures (matplotlib, Agg). Each function writes one PNG atomically and always
writes it: a study without the data for a figure gets a panel that says so."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from .atomic import atomic_path
from .eval.backbones import RG_EXPONENT, RG_PREFACTOR

COLORS = {"conventional": "#4477aa", "align-geodiff": "#ccbb44", "align-af3": "#ee6677", "quotient": "#228833"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    _pyplot().close(fig)


def _empty(path: Path, message: str) -> None:
    fig, ax = _pyplot().subplots(figsize=(5, 1.5))
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=9)
    _save(fig, path)


def _grid(n: int, cols: int = 3):
    rows = max(1, -(-n // cols))
    fig, axes = _pyplot().subplots(rows, min(cols, max(n, 1)), figsize=(4.2 * min(cols, max(n, 1)), 3.2 * rows), squeeze=False)
    return fig, axes.ravel()


def coverage_curves(metrics: list[dict], path: Path) -> None:
    """Mean COV-R against the RMSD threshold, one panel per molecule dataset, one line per
    treatment (mean over seeds), with the dataset's threshold marked."""
    by_dataset: dict[str, dict[str, list]] = {}
    for m in metrics:
        if m.get("kind", "molecules") == "molecules" and "coverage_curve" in m:
            by_dataset.setdefault(m["dataset"], {}).setdefault(m.get("treatment"), []).append(m)
    if not by_dataset:
        return _empty(path, "no conformer metrics in this study")
    fig, axes = _grid(len(by_dataset))
    for ax, (dataset, treatments) in zip(axes, sorted(by_dataset.items())):
        for treatment, runs in sorted(treatments.items(), key=lambda kv: str(kv[0])):
            thresholds = runs[0]["coverage_curve"]["threshold"]
            cov = np.mean([r["coverage_curve"]["cov_r"] for r in runs], axis=0)
            ax.plot(thresholds, 100 * cov, label=treatment, color=COLORS.get(treatment))
        ax.axvline(runs[0]["threshold"], color="grey", lw=0.8, ls="--")
        ax.set(title=f"{dataset}: coverage (recall)", xlabel="RMSD threshold (Å)", ylabel="COV-R (%)", ylim=(0, 100))
        ax.legend(fontsize=7)
    _save(fig, path)


def amr_distributions(metrics: list[dict], path: Path) -> None:
    """Per-molecule minimum RMSD (AMR-R) histograms by treatment, one panel per molecule dataset."""
    by_dataset: dict[str, dict[str, list[float]]] = {}
    for m in metrics:
        if m.get("kind", "molecules") == "molecules":
            values = [x["amr_r"] for x in m.get("molecules", []) if x.get("amr_r") is not None]
            by_dataset.setdefault(m["dataset"], {}).setdefault(m.get("treatment"), []).extend(values)
    if not any(v for d in by_dataset.values() for v in d.values()):
        return _empty(path, "no conformer metrics in this study")
    fig, axes = _grid(len(by_dataset))
    for ax, (dataset, treatments) in zip(axes, sorted(by_dataset.items())):
        top = max((max(v) for v in treatments.values() if v), default=1.0)
        bins = np.linspace(0, top, 25)
        for treatment, values in sorted(treatments.items(), key=lambda kv: str(kv[0])):
            ax.hist(values, bins=bins, histtype="step", label=treatment, color=COLORS.get(treatment))
        ax.set(title=f"{dataset}: per-molecule min RMSD", xlabel="AMR-R (Å)", ylabel="molecules")
        ax.legend(fontsize=7)
    _save(fig, path)


def loss_curves(run_dirs: dict[tuple[str, str, object], Path], path: Path) -> None:
    """Training loss (smoothed) and validation loss from each run's log.csv, one row per dataset:
    against step (left) and against the training clock `wall_s` (right; logs from before the
    column have no right-hand curve)."""
    logs = {key: run / "log.csv" for key, run in run_dirs.items() if (run / "log.csv").is_file()}
    if not logs:
        return _empty(path, "no training logs found next to the metrics files")
    datasets = sorted({key[0] for key in logs})
    fig, axes = _pyplot().subplots(len(datasets), 2, figsize=(8.4, 3.2 * len(datasets)), squeeze=False)
    for (step_ax, wall_ax), dataset in zip(axes, datasets):
        for (ds, treatment, seed), log in sorted(logs.items(), key=lambda kv: tuple(str(x) for x in kv[0])):
            if ds != dataset:
                continue
            with open(log) as fh:
                rows = list(csv.DictReader(fh))
            if not rows:
                continue
            loss = np.array([float(r["loss"]) for r in rows])
            window = max(1, len(loss) // 50)
            smooth = np.convolve(loss, np.ones(window) / window, mode="valid")
            for ax, column in ((step_ax, "step"), (wall_ax, "wall_s")):
                if not all(r.get(column) for r in rows):
                    continue
                x = np.array([float(r[column]) for r in rows])
                ax.plot(x[window - 1 :], smooth, color=COLORS.get(treatment), lw=1, label=f"{treatment} s{seed}")
                val = [(float(r[column]), float(r["val_loss"])) for r in rows if r.get("val_loss")]
                if val:
                    ax.plot(*zip(*val), "o", ms=2, color=COLORS.get(treatment))
        step_ax.set(title=f"{dataset}: training loss (dots: validation)", xlabel="step", ylabel="loss", yscale="log")
        wall_ax.set(title=f"{dataset}: against training time", xlabel="training wall time (s)", ylabel="loss", yscale="log")
        step_ax.legend(fontsize=6)
    _save(fig, path)


def rg_vs_length(metrics: list[dict], path: Path) -> None:
    """Radius of gyration against chain length per treatment, with the compact-protein power law
    Rg = 2.2 N^0.38 Å for reference."""
    backbone = [m for m in metrics if m.get("kind") == "backbones"]
    if not backbone:
        return _empty(path, "no backbone metrics in this study")
    datasets = sorted({m["dataset"] for m in backbone})
    fig, axes = _grid(len(datasets))
    for ax, dataset in zip(axes, datasets):
        lengths = []
        for m in (x for x in backbone if x["dataset"] == dataset):
            n = [s["length"] for s in m["per_sample"]]
            ax.scatter(n, [s["rg"] for s in m["per_sample"]], s=6, alpha=0.6, color=COLORS.get(m.get("treatment")), label=m.get("treatment"))
            lengths += n
        grid = np.linspace(max(min(lengths), 2), max(lengths), 50)
        ax.plot(grid, RG_PREFACTOR * grid**RG_EXPONENT, "k--", lw=1, label="2.2 N^0.38")
        ax.set(title=f"{dataset}: radius of gyration", xlabel="residues", ylabel="Rg (Å)")
        ax.legend(fontsize=7)
    _save(fig, path)


def example_structures(examples: list[tuple[str, np.ndarray, np.ndarray | None]], path: Path) -> None:
    """One generated structure per (dataset, treatment): a Cα trace or a conformer's atoms and
    bonds, in 3D. `examples` holds (title, coordinates [n, 3], bond index [m, 2] or None)."""
    if not examples:
        return _empty(path, "no samples found next to the metrics files")
    plt = _pyplot()
    cols = min(4, len(examples))
    rows = -(-len(examples) // cols)
    fig = plt.figure(figsize=(3.2 * cols, 3.0 * rows))
    for k, (title, x, bonds) in enumerate(examples):
        ax = fig.add_subplot(rows, cols, k + 1, projection="3d")
        x = np.asarray(x, float) - np.asarray(x, float).mean(0)
        if bonds is None:
            ax.plot(*x.T, "-o", ms=1.5, lw=1, color="#4477aa")
        else:
            for i, j in bonds:
                ax.plot(*x[[i, j]].T, color="grey", lw=1)
            ax.scatter(*x.T, s=8, color="#ee6677")
        ax.set_title(title, fontsize=7)
        ax.set_axis_off()
    _save(fig, path)


def nfe_sweep(metrics: list[dict], path: Path) -> None:
    """Headline metric against the sampler's NFE per treatment (mean over seeds): AMR-R for
    conformer sets, pair-distance JSD for backbone sets."""
    points: dict[str, dict[str, dict[int, list[float]]]] = {}
    classical: dict[str, dict[str, float]] = {}  # rows with no network (RDKit): dashed reference lines
    for m in metrics:
        nfe = m.get("nfe_per_sample")
        if nfe is None:
            continue
        value = m["metrics"]["pair_distance_jsd"] if m.get("kind") == "backbones" else m["metrics"]["zero"]["amr_r_mean"]
        if m.get("sampler") == "classical":
            classical.setdefault(m["dataset"], {})[m.get("treatment")] = value
            continue
        points.setdefault(m["dataset"], {}).setdefault(m.get("treatment"), {}).setdefault(int(nfe), []).append(value)
    swept = {d: t for d, t in points.items() if any(len(v) > 1 for v in t.values())}
    if not swept:
        return _empty(path, "no NFE sweep in this study (models.sample.nfe_sweep)")
    fig, axes = _grid(len(swept))
    for ax, (dataset, treatments) in zip(axes, sorted(swept.items())):
        backbone = any(m.get("kind") == "backbones" for m in metrics if m["dataset"] == dataset)
        for treatment, by_nfe in sorted(treatments.items(), key=lambda kv: str(kv[0])):
            nfes = sorted(by_nfe)
            ax.plot(nfes, [np.mean(by_nfe[n]) for n in nfes], "-o", ms=3, label=treatment, color=COLORS.get(treatment))
        for k, (method, value) in enumerate(sorted(classical.get(dataset, {}).items())):
            ax.axhline(value, color="grey", lw=0.9, ls=("--", ":")[k % 2], label=f"RDKit {method}")
        ax.set(title=f"{dataset}: quality against NFE", xlabel="NFE per sample", xscale="log",
               ylabel="pair-distance JSD" if backbone else "AMR-R mean (Å)")
        # ticks at the swept NFE values, as plain numbers (log-axis minor labels overlap)
        from matplotlib import ticker

        ticks = sorted({n for by_nfe in treatments.values() for n in by_nfe})
        ax.xaxis.set_major_locator(ticker.FixedLocator(ticks))
        ax.xaxis.set_major_formatter(ticker.FixedFormatter([str(n) for n in ticks]))
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        ax.legend(fontsize=7)
    _save(fig, path)
