# The exact toy study: `qdiff toy` jobs, then a summary table and plot. `toy.jobs` (schema) chooses
# how the runs are cut into jobs: `per_run` (the default: one job per configuration, in parallel on a
# cluster, each a few minutes at the paper's size) or `per_target` (one process runs every
# configuration of a target, each run with its own seeded generators, so the results are those of
# separate runs without paying Python's and torch's start-up each time: the demo, issue 16).


if toy_jobs() == "per_target":

    rule toy_target:
        input:
            study_stamp("toy"),
        output:
            toy_target_files("{target}"),
        log:
            "logs/toy/{target}.log",
        benchmark:
            "logs/benchmarks/toy/{target}.tsv"
        wildcard_constraints:
            target="[a-z]+",
        # after training (10), before sampling: a minute-long job that should not end the study
        priority: 5
        conda:
            "../../envs/qdiff.yaml"
        threads: 1
        resources:
            runtime=per_attempt("runtime", 30),
            mem_mb=per_attempt("mem_mb", 2000),
            slurm_partition=slurm_partition(),
            slurm_account=slurm_account,
        params:
            samples=config["toy"]["samples"],
            steps=config["toy"]["steps"],
            noise_scale=config["toy"]["noise_scale"],
            jitter=config["toy"]["jitter"],
            mc_draws=config["toy"].get("mc_draws", 16),
            runs=toy_run_flags,
        shell:
            "qdiff toy --target {wildcards.target} --samples {params.samples} --steps {params.steps}"
            " --noise-scale {params.noise_scale} --jitter {params.jitter} --mc-draws {params.mc_draws}"
            " {params.runs} > {log} 2>&1"

else:

    rule toy_run:
        input:
            study_stamp("toy"),
        output:
            "results/toy/runs/{target}/{treatment}/{sampler}-{curvature}/seed{seed}.json",
        log:
            "logs/toy/{target}/{treatment}/{sampler}-{curvature}/seed{seed}.log",
        benchmark:
            "logs/benchmarks/toy/{target}/{treatment}/{sampler}-{curvature}/seed{seed}.tsv"
        wildcard_constraints:
            target="[a-z]+",
            treatment="[a-z0-9-]+",
            sampler="ode|sde",
            curvature="minus|plus|none",
            seed=r"\d+",
        conda:
            "../../envs/qdiff.yaml"
        threads: 1
        # Seconds-long jobs: the Slurm profile groups them (`groups`/`group-components`).
        resources:
            runtime=per_attempt("runtime", 30),
            mem_mb=per_attempt("mem_mb", 2000),
            slurm_partition=slurm_partition(),
            slurm_account=slurm_account,
        params:
            samples=config["toy"]["samples"],
            steps=config["toy"]["steps"],
            noise_scale=config["toy"]["noise_scale"],
            jitter=config["toy"]["jitter"],
            mc_draws=config["toy"].get("mc_draws", 16),
            parameterization="denoiser",
        shell:
            "qdiff toy --target {wildcards.target} --treatment {wildcards.treatment}"
            " --sampler {wildcards.sampler} --curvature {wildcards.curvature}"
            " --seed {wildcards.seed} --samples {params.samples} --steps {params.steps}"
            " --noise-scale {params.noise_scale} --jitter {params.jitter}"
            " --mc-draws {params.mc_draws} --parameterization {params.parameterization}"
            " --out {output} > {log} 2>&1"

    # The same oracles for the velocity-form losses (the alignment baselines on the aligned endpoint).
    use rule toy_run as toy_run_velocity with:
        output:
            "results/toy/runs/velocity-form/{target}/{treatment}/{sampler}-{curvature}/seed{seed}.json",
        log:
            "logs/toy/velocity-form/{target}/{treatment}/{sampler}-{curvature}/seed{seed}.log",
        benchmark:
            "logs/benchmarks/toy/velocity-form/{target}/{treatment}/{sampler}-{curvature}/seed{seed}.tsv"
        params:
            samples=config["toy"]["samples"],
            steps=config["toy"]["steps"],
            noise_scale=config["toy"]["noise_scale"],
            jitter=config["toy"]["jitter"],
            mc_draws=config["toy"].get("mc_draws", 16),
            parameterization="velocity",


rule toy_summary:
    input:
        runs=ancient(toy_result_files()),
        settings=study_stamp("toy"),
    output:
        csv="results/toy/summary.csv",
        md=report("results/toy/summary.md", category="Toy study"),
        metrics="results/toy/metrics.json",
        png=report(
            "results/toy/z_scores.png",
            caption="../report/toy_z_scores.rst",
            category="Toy study",
        ),
    log:
        "logs/toy/summary.log",
    conda:
        "../../envs/qdiff.yaml"
    threads: 1
    resources:
        runtime=5,
        mem_mb=1000,
    shell:
        "qdiff toy-summary {input.runs} --out results/toy > {log} 2>&1"
