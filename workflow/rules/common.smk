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


def toy_jobs():
    """How the toy runs are cut into jobs (`toy.jobs`): per_run or per_target."""
    return config["toy"].get("jobs", "per_run")


def toy_configurations():
    """(treatment, sampler, curvature, seed, parameterization) of the toy runs of each target: the
    denoiser-form runs, then the velocity-form ones. The same for every target (toy_runs() is a
    product over targets), which the `per_target` rule's fixed output list relies on."""
    target = config["toy"]["targets"][0]
    return [
        (treatment, sampler, curvature, seed, "denoiser")
        for t, treatment, sampler, curvature, seed in toy_runs()
        if t == target
    ] + [
        (treatment, sampler, curvature, seed, "velocity")
        for t, treatment, sampler, curvature, seed in toy_velocity_form_runs()
        if t == target
    ]


def toy_run_file(target, treatment, sampler, curvature, seed, parameterization):
    form = "velocity-form/" if parameterization == "velocity" else ""
    return f"results/toy/runs/{form}{target}/{treatment}/{sampler}-{curvature}/seed{seed}.json"


def toy_target_files(target):
    """Every toy result of one target ("{target}": the rule's output pattern)."""
    return [toy_run_file(target, *run) for run in toy_configurations()]


def toy_result_files():
    return [f for target in config["toy"]["targets"] for f in toy_target_files(target)]


def toy_run_flags(wildcards):
    """`--run TREATMENT SAMPLER CURVATURE SEED PARAMETERIZATION OUT` for each run of one target."""
    return " ".join(
        f"--run {' '.join(map(str, run))} {toy_run_file(wildcards.target, *run)}"
        for run in toy_configurations()
    )


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


# --- Cluster resources. The study says what a job needs (`models.resources`); the `slurm` section
# (a site file given with --configfile, or the study config) says where it runs. Unset values give
# None, which Snakemake drops, so a run without a `slurm` section submits as before.


def slurm_setting(key, default=None):
    return (config.get("slurm") or {}).get(key, default)


def train_gpus(wildcards):
    """GPUs a training job uses (the dataset's `resources.gpus`)."""
    return int(model_section(wildcards.dataset, "resources").get("gpus", 0))


def sample_gpus(wildcards):
    """One GPU for sampling when the dataset trains on GPUs."""
    return min(1, train_gpus(wildcards))


def one_gpu(wildcards):
    return 1


def gpu_request(gpus):
    """The `gpu` resource (the plugin's --gpus): the job's GPU count, or 0 with
    `slurm.request_gpus: false` (CI's stand-in GPU partition has no GRES; the job runs on CPU).
    """

    def get(wildcards):
        return gpus(wildcards) if slurm_setting("request_gpus", True) else 0

    return get


def slurm_partition(gpus=None):
    """The plugin's `slurm_partition`: `slurm.gpu_partition` for a job that uses a GPU (every GPU
    rule, from this one setting), `slurm.partition` otherwise; None (unset) without them.
    """

    def get(wildcards):
        if gpus is not None and gpus(wildcards) > 0 and slurm_setting("gpu_partition"):
            return slurm_setting("gpu_partition")
        return slurm_setting("partition")

    return get


def slurm_account(wildcards):
    """The plugin's `slurm_account` (sbatch -A) from `slurm.account`; None leaves it unset."""
    return slurm_setting("account")


def gpu_threads(gpus):
    """Threads of a job that may use GPUs: `cpus_per_gpu` per GPU when it has GPUs (so
    OMP_NUM_THREADS and the job's CPU request agree), else `models.resources.threads` (1).
    """

    def get(wildcards):
        n = gpus(wildcards)
        resources = model_section(wildcards.dataset, "resources")
        if n > 0:
            return n * max(1, int(resources.get("cpus_per_gpu", 1)))
        return int(resources.get("threads", 1))

    return get


def cpus_per_gpu(gpus):
    """`cpus_per_gpu` for a job that requests GPUs with a per-GPU CPU count; otherwise None, and
    the plugin asks for --cpus-per-task = threads (the same number)."""

    def get(wildcards):
        per_gpu = int(
            model_section(wildcards.dataset, "resources").get("cpus_per_gpu", 0)
        )
        requested = gpus(wildcards) if slurm_setting("request_gpus", True) else 0
        return per_gpu if requested > 0 and per_gpu > 0 else None

    return get


def minutes(value):
    """A runtime as minutes: an int is minutes, a string a time span ("48h", "90m")."""
    if isinstance(value, str):
        from humanfriendly import parse_timespan

        return max(1, round(parse_timespan(value) / 60))
    return int(value)


def per_attempt(kind, base, key=None):
    """A `mem_mb` or `runtime` resource that grows with Snakemake's `attempt` (1, 2, ... under
    --retries): the value times the attempt, runtimes capped at `slurm.max_runtime` (a partition's
    time limit) when set. The value is `base`, or the study's `models.resources.<key>` (per dataset
    too) with `base` as its default."""

    def get(wildcards, attempt):
        value = base
        if key is not None:
            value = model_section(wildcards.dataset, "resources").get(key, base)
        if kind == "runtime":
            value = minutes(value) * attempt
            cap = slurm_setting("max_runtime")
            return min(value, minutes(cap)) if cap is not None else value
        return int(value) * attempt

    return get


def train_launcher(wildcards):
    """`qdiff` on one device; `torchrun` with one process per GPU on one node otherwise."""
    gpus = train_gpus(wildcards)
    if gpus > 1:
        return f"torchrun --standalone --nnodes=1 --nproc-per-node={gpus} -m qdiff"
    return "qdiff"


# Raw download folder (resources/<raw>) of each fetched dataset: the GEOM subsets share one archive.
RAW_FOLDER = {"qm9": "qm9", "geom-qm9": "geom", "geom-drugs": "geom", "pdb": "pdb"}


def fetch_record(wildcards):
    """The fetch record of the job's dataset (`ancient`, as every input: see "Settings stamps")."""
    return ancient(f"resources/{RAW_FOLDER[wildcards.dataset]}/fetched.json")


def fetched_datasets(raw):
    """The study's datasets fetched into resources/<raw> (any one of them names the download)."""
    datasets = [d for d in config["data"]["datasets"] if RAW_FOLDER.get(d) == raw]
    return datasets or [d for d, folder in RAW_FOLDER.items() if folder == raw]


def fetch_name(wildcards):
    return fetched_datasets(wildcards.raw)[0]


def fetch_flags(wildcards):
    """`qdiff fetch` options from `data.fetch.<dataset>` (key -> --key, true -> a bare flag); the
    datasets sharing a download must agree on them."""
    fetch = config["data"].get("fetch", {})
    datasets = fetched_datasets(wildcards.raw)
    options = fetch.get(datasets[0], {})
    for other in datasets[1:]:
        if fetch.get(other, {}) != options:
            raise ValueError(
                f"data.fetch: {datasets[0]} and {other} share one download "
                f"(resources/{wildcards.raw}); give them the same fetch settings"
            )
    flags = []
    for key, value in sorted(options.items()):
        flag = f"--{key.replace('_', '-')}"
        if value is True:
            flags.append(flag)
        elif value is not False and value is not None:
            flags.append(f"{flag} {value}")
    return " ".join(flags)


def model_files():
    """Every trained model of the study (results/runs/<dataset>/<treatment>/seed<k>/model.pt)."""
    m = config.get("models")
    if not m:
        return []
    return expand(
        "results/runs/{dataset}/{treatment}/seed{seed}/model.pt",
        dataset=m["datasets"],
        treatment=m["treatments"],
        seed=m["seeds"],
    )


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


# Settings stamps. Every job has, among its inputs, a stamp of what it depends on:
# `results/<stage>/settings/<name>.<kind>.<digest>.json`, named by the digest of its family's
# settings in the study, the shell code of its rules and the digests of the families before it
# (fetch -> data -> train -> sample -> report; data -> baseline -> report; toy). A changed setting
# or rule names new stamps for that family and every family after it, so exactly those jobs re-run
# (the aggregate rules list every current stamp, see stamp_files). Every other input is `ancient`
# and profiles/default turns off the triggers that read .snakemake/: neither file times (`dvc pull`,
# `dvc checkout` and `git clone` write files in an arbitrary order) nor Snakemake's records (none
# in a clone that pulled; those of another run after `dvc checkout`) decide anything. README, "DVC".
STAMP_STAGES = {
    "fetch": "data",
    "data": "data",
    "train": "runs",
    "sample": "runs",
    "baseline": "baselines",
    "report": "report",
    "toy": "toy",
}
STAMP_RULES = {
    "fetch": ["fetch_dataset"],
    "data": ["featurize_raw", "featurize_offline", "data_info"],
    "train": ["train_model"],
    "sample": ["sample_model", "sample_sweep", "evaluate_model", "evaluate_sweep"],
    "baseline": ["classical_baseline", "evaluate_baseline"],
    "report": ["report"],
    "toy": (
        ["toy_target"]
        if toy_jobs() == "per_target"
        else ["toy_run", "toy_run_velocity"]
    )
    + ["toy_summary"],
}


def stamp_record(kind, name):
    """What the jobs of one family (kind) for one dataset (name) depend on, as a dict."""
    record = {"code": [workflow.get_rule(r).shellcmd for r in STAMP_RULES[kind]]}
    if (
        kind == "fetch"
    ):  # name: the download folder (resources/<raw>), shared by GEOM's two datasets
        record["fetch"] = (
            config["data"].get("fetch", {}).get(fetched_datasets(name)[0], {})
        )
    elif kind == "data":
        record["fetch"] = (
            stamp_digest("fetch", RAW_FOLDER[name]) if name in RAW_FOLDER else None
        )
        record["featurize"] = config["data"].get("featurize", {}).get(name, {})
    elif kind in ("train", "sample"):
        record["after"] = stamp_digest("data" if kind == "train" else "train", name)
        record[kind] = model_section(name, kind)
    elif kind == "baseline":
        record["after"] = stamp_digest("data", name)
        record["split"] = model_section(name, "train").get("split")
        sample = model_section(name, "sample")
        record["sample"] = {
            k: sample.get(k) for k in ("max_molecules", "multiplier") if k in sample
        }
    elif kind == "report":
        m = config.get("models") or {}
        record["runs"] = {k: m.get(k) for k in ("datasets", "treatments", "seeds")}
        record["baselines"] = m.get("baselines", [])
        record["after"] = {
            d: [stamp_digest("sample", d)]
            + ([stamp_digest("baseline", d)] if d in MOLECULE_DATASETS else [])
            for d in m.get("datasets", [])
        }
    elif kind == "toy":
        record["toy"] = config["toy"]
    return record


def stamp_text(kind, name):
    import json

    return json.dumps(stamp_record(kind, name), sort_keys=True, separators=(",", ":"))


def stamp_digest(kind, name):
    import hashlib

    return hashlib.sha256(stamp_text(kind, name).encode()).hexdigest()[:12]


def stamp(kind, name):
    """The current stamp of (kind, name), flagged `ancient` like every other input."""
    return ancient(
        f"results/{STAMP_STAGES[kind]}/settings/{name}.{kind}.{stamp_digest(kind, name)}.json"
    )


def stamp_of(kind):
    """Input function: the stamp of `kind` for the job's dataset."""

    def get(wildcards):
        return stamp(kind, wildcards.dataset)

    return get


def fetch_stamp(wildcards):
    """Input function of fetch_dataset: the fetch stamp of its download folder."""
    return stamp("fetch", wildcards.raw)


def study_stamp(kind):
    """Input function: the stamp of a study-wide family (toy, report)."""

    def get(wildcards):
        return stamp(kind, "study")

    return get


def stamp_files(*milestones):
    """The current stamps of the study's milestones (toy, data, training, models): inputs of the aggregate
    rules, so that a stamp that does not exist yet is built and its jobs re-run (Snakemake looks
    for a missing input of an existing output only when a target asks for that input).
    """
    files = []
    if "toy" in milestones:
        files.append(stamp("toy", "study"))
    if "data" in milestones:
        for d in config["data"]["datasets"]:
            if d in RAW_FOLDER:
                files.append(stamp("fetch", RAW_FOLDER[d]))
            files.append(stamp("data", d))
    m = config.get("models")
    if "training" in milestones and m:
        files += [stamp("train", d) for d in m["datasets"]]
    if "models" in milestones and m:
        for d in m["datasets"]:
            files += [stamp("train", d), stamp("sample", d)]
            if d in MOLECULE_DATASETS and m.get("baselines"):
                files.append(stamp("baseline", d))
        files.append(stamp("report", "study"))
    return files


def stamp_content(wildcards):
    return stamp_text(wildcards.kind, wildcards.name)
