# Helpers shared by the rules: the study's wildcard grid and output lists. No science here.
import itertools


def toy_runs():
    """(target, treatment, sampler, curvature, seed) for every toy configuration of the study."""
    toy = config["toy"]
    runs = []
    for target, treatment, sampler, seed in itertools.product(
        toy["targets"], toy["treatments"], toy["samplers"], toy["seeds"]
    ):
        runs.append((target, treatment, sampler, "minus", seed))
        if sampler == "sde" and treatment == "quotient":
            runs += [
                (target, treatment, sampler, c, seed)
                for c in toy.get("curvature_ablation", [])
            ]
    return runs


def toy_velocity_form_runs():
    """Velocity-form oracles of the treatments in `toy.velocity_form` (by default the study's
    alignment baselines), with the ODE sampler (the field they define; the SDE adds nothing to
    the comparison of the two forms)."""
    toy = config["toy"]
    default = [t for t in toy["treatments"] if t.startswith("align-")]
    chosen = set(toy.get("velocity_form", default))
    return [
        run
        for run in toy_runs()
        if run[1] in chosen and run[2] == "ode" and run[3] == "minus"
    ]


def toy_result_files():
    return [
        f"results/toy/runs/{target}/{treatment}/{sampler}-{curvature}/seed{seed}.json"
        for target, treatment, sampler, curvature, seed in toy_runs()
    ] + [
        f"results/toy/runs/velocity-form/{target}/{treatment}/{sampler}-{curvature}/seed{seed}.json"
        for target, treatment, sampler, curvature, seed in toy_velocity_form_runs()
    ]


def toy_summary_outputs():
    return expand(
        "results/toy/{name}",
        name=["summary.csv", "summary.md", "metrics.json", "z_scores.png"],
    )


def featurize_settings(wildcards):
    """`--set KEY=VALUE` flags (values as JSON, which YAML reads) for one dataset's featurize
    settings in the study (`data.featurize.<dataset>`)."""
    import json

    settings = config["data"].get("featurize", {}).get(wildcards.dataset, {})
    return " ".join(
        f"--set {key}='{json.dumps(value)}'" for key, value in sorted(settings.items())
    )


def data_outputs():
    return expand(
        "results/data/{dataset}.{ext}",
        dataset=config["data"]["datasets"],
        ext=["h5", "info.json"],
    )


def model_section(dataset, section):
    """`models.<section>` with `models.per_dataset.<dataset>.<section>` on top (key by key; a
    nested mapping such as `model` is replaced whole)."""
    m = config["models"]
    return {
        **m.get(section, {}),
        **m.get("per_dataset", {}).get(dataset, {}).get(section, {}),
    }


def train_settings(wildcards):
    """`--set KEY=VALUE` flags (values as JSON, which YAML reads) for `qdiff train`."""
    import json

    settings = model_section(wildcards.dataset, "train")
    return " ".join(
        f"--set {key}='{json.dumps(value)}'" for key, value in sorted(settings.items())
    )


SAMPLE_FLAGS = {
    "sampler": "--sampler",
    "steps": "--steps",
    "noise_scale": "--noise-scale",
    "sde_schedule": "--sde-schedule",
    "max_molecules": "--max-molecules",
    "multiplier": "--multiplier",
    "per_length": "--per-length",
    "max_chains": "--max-chains",
    "batch_size": "--batch-size",
    "precision": "--precision",
}


def sample_flags(wildcards):
    """`qdiff sample` options from the study; an NFE-sweep job's own step count wins."""
    s = model_section(wildcards.dataset, "sample")
    if "steps" in wildcards.keys():
        s = {**s, "steps": wildcards.steps}
    flags = [f"{flag} {s[key]}" for key, flag in SAMPLE_FLAGS.items() if key in s]
    if "lengths" in s:
        flags.append("--lengths " + ",".join(str(n) for n in s["lengths"]))
    return " ".join(flags)


def train_resource(key, default):
    """A resource of the train rule from `models.resources` / per-dataset `resources`."""

    def get(wildcards):
        return model_section(wildcards.dataset, "resources").get(key, default)

    return get


def sample_gpus(wildcards):
    """One GPU for sampling when the dataset trains on GPUs."""
    return min(1, int(model_section(wildcards.dataset, "resources").get("gpus", 0)))


def train_launcher(wildcards):
    """`qdiff` on one device; `torchrun` with one process per GPU on one node otherwise."""
    gpus = int(model_section(wildcards.dataset, "resources").get("gpus", 0))
    if gpus > 1:
        return f"torchrun --standalone --nnodes=1 --nproc-per-node={gpus} -m qdiff"
    return "qdiff"


def fetch_flags(wildcards):
    """`qdiff fetch` options from `data.fetch.<dataset>` (key -> --key, true -> a bare flag)."""
    options = config["data"].get("fetch", {}).get(wildcards.dataset, {})
    flags = []
    for key, value in sorted(options.items()):
        flag = f"--{key.replace('_', '-')}"
        if value is True:
            flags.append(flag)
        elif value is not False and value is not None:
            flags.append(f"{flag} {value}")
    return " ".join(flags)


def metrics_files():
    m = config.get("models")
    if not m:
        return []
    return expand(
        "results/runs/{dataset}/{treatment}/seed{seed}/metrics.json",
        dataset=m["datasets"],
        treatment=m["treatments"],
        seed=m["seeds"],
    )


MOLECULE_DATASETS = ("qm9", "geom-qm9", "geom-drugs", "demo-qm9", "demo-drugs")


def baseline_flags(wildcards):
    """`qdiff etkdg` options: the models' split, and the molecules and multiplier they sample."""
    train = model_section(wildcards.dataset, "train")
    sample = model_section(wildcards.dataset, "sample")
    flags = [f"--split {train['split']}"] if train.get("split") else []
    if wildcards.method == "etkdg-mmff":
        flags.append("--mmff")
    for key, flag in (
        ("max_molecules", "--max-molecules"),
        ("multiplier", "--multiplier"),
    ):
        if key in sample:
            flags.append(f"{flag} {sample[key]}")
    return " ".join(flags)


def baseline_metrics_files():
    """Metrics of each classical baseline on each molecule dataset of the study."""
    m = config.get("models") or {}
    return expand(
        "results/baselines/{dataset}/{method}/metrics.json",
        dataset=[d for d in m.get("datasets", []) if d in MOLECULE_DATASETS],
        method=m.get("baselines", []),
    )


def sweep_treatments(dataset):
    """The study's treatments re-sampled in the NFE sweep: `nfe_sweep_treatments` (default all)."""
    chosen = model_section(dataset, "sample").get("nfe_sweep_treatments")
    treatments = config["models"]["treatments"]
    return treatments if chosen is None else [t for t in treatments if t in chosen]


def sweep_metrics_files():
    """Metrics of the sweep's runs re-sampled at each `nfe_sweep` step count (per dataset); the
    study's own `steps` is not re-sampled (the runs' main samples are that point of the sweep).
    """
    m = config.get("models")
    if not m:
        return []
    files = []
    for dataset in m["datasets"]:
        sample = model_section(dataset, "sample")
        for steps in sample.get("nfe_sweep", []):
            if steps == sample.get("steps"):
                continue
            files += expand(
                "results/runs/{dataset}/{treatment}/seed{seed}/nfe{steps}/metrics.json",
                dataset=dataset,
                treatment=sweep_treatments(dataset),
                seed=m["seeds"],
                steps=steps,
            )
    return files


def report_outputs():
    if not metrics_files():
        return []
    return expand(
        "results/report/{name}",
        name=[
            "summary.csv",
            "summary.md",
            "summary.json",
            "metrics.png",
            "coverage_curves.png",
            "amr_distribution.png",
            "loss_curves.png",
            "rg_vs_length.png",
            "examples.png",
            "nfe_sweep.png",
            "report.html",
            "curves",
        ],
    )


# Settings stamps. A job's settings reach Snakemake as a file whose name carries their digest
# (`results/<stage>/settings/<name>.<kind>.<digest>.json`, an input of the job). A changed
# setting names a stamp that does not exist yet, so the job and everything after it re-run; this
# needs neither Snakemake's metadata (`.snakemake/` is not shared: a fresh clone that pulled the
# results with DVC has none) nor file times (DVC does not keep them). README, "DVC".
STAMP_KINDS = {
    "fetch": "data",
    "featurize": "data",
    "toy": "toy",
    "train": "runs",
    "sample": "runs",
    "baseline": "baselines",
}


def stamp_settings(kind, name):
    """The settings of one job family, as `settings_stamp` writes them."""
    if kind in ("fetch", "featurize"):
        return config["data"].get(kind, {}).get(name, {})
    if kind == "toy":
        return config["toy"]
    if kind == "baseline":
        return {
            "train": {
                k: v for k, v in model_section(name, "train").items() if k == "split"
            },
            "sample": {
                k: v
                for k, v in model_section(name, "sample").items()
                if k in ("max_molecules", "multiplier")
            },
        }
    return model_section(name, kind)


def stamp_text(kind, name):
    import json

    return json.dumps(stamp_settings(kind, name), sort_keys=True, separators=(",", ":"))


def stamp(kind, name):
    """Path of the current settings stamp of (kind, name)."""
    import hashlib

    digest = hashlib.sha256(stamp_text(kind, name).encode()).hexdigest()[:12]
    return f"results/{STAMP_KINDS[kind]}/settings/{name}.{kind}.{digest}.json"


def stamp_of(kind):
    """Input function: the stamp of `kind` for the job's dataset."""

    def get(wildcards):
        return stamp(kind, wildcards.dataset)

    return get


def stamp_content(wildcards):
    return stamp_text(wildcards.kind, wildcards.name)
