# The exact toy study: one `qdiff toy` job per target, then a summary table and plot.


# One job per target runs all of its configurations (treatments x samplers, the curvature ablation,
# the velocity-form oracles) in one process: each run seeds its own generators, so the results are
# those of separate runs, without paying Python's and torch's start-up thirty times (issue 16).
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
