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


def toy_result_files():
    return [
        f"results/toy/runs/{target}/{treatment}/{sampler}-{curvature}/seed{seed}.json"
        for target, treatment, sampler, curvature, seed in toy_runs()
    ]


def toy_summary_outputs():
    return expand(
        "results/toy/{name}",
        name=["summary.csv", "summary.md", "metrics.json", "z_scores.png"],
    )


def featurize_settings(wildcards):
    """`--set KEY=VALUE` flags for one dataset's featurize settings in config.yaml."""
    settings = config["data"].get("featurize", {}).get(wildcards.dataset, {})
    return " ".join(f"--set {key}={value}" for key, value in sorted(settings.items()))


def data_outputs():
    return expand(
        "results/data/{dataset}.{ext}",
        dataset=config["data"]["datasets"],
        ext=["h5", "info.json"],
    )


def train_settings(wildcards):
    """`--set KEY=VALUE` flags (values as JSON, which YAML reads) for `qdiff train`."""
    import json

    settings = config["models"].get("train", {})
    return " ".join(
        f"--set {key}='{json.dumps(value)}'" for key, value in sorted(settings.items())
    )


def sample_flags(wildcards):
    s = config["models"].get("sample", {})
    flags = {
        "sampler": "--sampler",
        "steps": "--steps",
        "max_molecules": "--max-molecules",
        "multiplier": "--multiplier",
    }
    return " ".join(f"{flag} {s[key]}" for key, flag in flags.items() if key in s)


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
            "report.html",
        ],
    )
