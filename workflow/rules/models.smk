# Train -> sample -> evaluate for every (dataset, treatment, seed), then the report.
# Training resumes from its checkpoint folder on retry (checkpoints are not declared outputs).


rule train_model:
    input:
        store=ancient("results/data/{dataset}.h5"),
        settings=stamp_of("train"),
    output:
        # Not protected(): a new version of the store re-runs this job, which starts over when its
        # checkpoints belong to another store version (`qdiff train` compares their content digests).
        "results/runs/{dataset}/{treatment}/seed{seed}/model.pt",
    log:
        "logs/runs/{dataset}/{treatment}/seed{seed}/train.log",
    benchmark:
        "logs/benchmarks/runs/{dataset}/{treatment}/seed{seed}/train.tsv"
    wildcard_constraints:
        seed=r"\d+",
    # long jobs first, so the short ones (toy, evaluation) fill the cores at the end
    priority: 10
    # No rule-level `retries:`: the profile's (or --retries) decides; each attempt resumes.
    conda:
        "../../envs/qdiff.yaml"
    threads: gpu_threads(train_gpus)
    resources:
        runtime=per_attempt("runtime", 60, "runtime"),
        mem_mb=per_attempt("mem_mb", 4000, "mem_mb"),
        gpu=gpu_request(train_gpus),
        cpus_per_gpu=cpus_per_gpu(train_gpus),
        slurm_partition=slurm_partition(train_gpus),
        slurm_account=slurm_account,
    params:
        run=subpath(output[0], parent=True),
        launcher=train_launcher,
        settings=train_settings,
    shell:
        "{params.launcher} train --store {input.store} --out {params.run} --treatment {wildcards.treatment}"
        " --seed {wildcards.seed} {params.settings} > {log} 2>&1"


rule sample_model:
    input:
        model=ancient("results/runs/{dataset}/{treatment}/seed{seed}/model.pt"),
        settings=stamp_of("sample"),
    output:
        "results/runs/{dataset}/{treatment}/seed{seed}/samples.h5",
    log:
        "logs/runs/{dataset}/{treatment}/seed{seed}/sample.log",
    benchmark:
        "logs/benchmarks/runs/{dataset}/{treatment}/seed{seed}/sample.tsv"
    conda:
        "../../envs/qdiff.yaml"
    threads: gpu_threads(sample_gpus)
    resources:
        runtime=per_attempt("runtime", 30, "sample_runtime"),
        mem_mb=per_attempt("mem_mb", 4000, "sample_mem_mb"),
        gpu=gpu_request(sample_gpus),
        cpus_per_gpu=cpus_per_gpu(sample_gpus),
        slurm_partition=slurm_partition(sample_gpus),
        slurm_account=slurm_account,
    params:
        run=subpath(input.model, parent=True),
        flags=sample_flags,
    shell:
        "qdiff sample --run {params.run} --out {output} --seed {wildcards.seed} {params.flags} > {log} 2>&1"


rule evaluate_model:
    input:
        samples=ancient("results/runs/{dataset}/{treatment}/seed{seed}/samples.h5"),
        reference=ancient("results/data/{dataset}.h5"),
        settings=stamp_of("sample"),
    output:
        "results/runs/{dataset}/{treatment}/seed{seed}/metrics.json",
    log:
        "logs/runs/{dataset}/{treatment}/seed{seed}/evaluate.log",
    benchmark:
        "logs/benchmarks/runs/{dataset}/{treatment}/seed{seed}/evaluate.tsv"
    conda:
        "../../envs/qdiff.yaml"
    threads: train_resource("eval_threads", 2)
    resources:
        runtime=per_attempt("runtime", 30, "eval_runtime"),
        mem_mb=per_attempt("mem_mb", 4000, "eval_mem_mb"),
        slurm_partition=slurm_partition(),
        slurm_account=slurm_account,
    shell:
        "qdiff evaluate --samples {input.samples} --reference {input.reference} --out {output}"
        " --workers {threads} > {log} 2>&1"


rule sample_sweep:
    input:
        model=ancient("results/runs/{dataset}/{treatment}/seed{seed}/model.pt"),
        settings=stamp_of("sample"),
    output:
        # only the sweep's metrics are kept; its samples are removed once evaluated
        temp("results/runs/{dataset}/{treatment}/seed{seed}/nfe{steps}/samples.h5"),
    log:
        "logs/runs/{dataset}/{treatment}/seed{seed}/nfe{steps}/sample.log",
    benchmark:
        "logs/benchmarks/runs/{dataset}/{treatment}/seed{seed}/nfe{steps}/sample.tsv"
    wildcard_constraints:
        seed=r"\d+",
        steps=r"\d+",
    conda:
        "../../envs/qdiff.yaml"
    threads: gpu_threads(sample_gpus)
    resources:
        runtime=per_attempt("runtime", 30, "sample_runtime"),
        mem_mb=per_attempt("mem_mb", 4000, "sample_mem_mb"),
        gpu=gpu_request(sample_gpus),
        cpus_per_gpu=cpus_per_gpu(sample_gpus),
        slurm_partition=slurm_partition(sample_gpus),
        slurm_account=slurm_account,
    params:
        run=subpath(input.model, parent=True),
        flags=sample_flags,
    shell:
        "qdiff sample --run {params.run} --out {output} --seed {wildcards.seed} {params.flags} > {log} 2>&1"


use rule evaluate_model as evaluate_sweep with:
    input:
        samples=ancient(
            "results/runs/{dataset}/{treatment}/seed{seed}/nfe{steps}/samples.h5"
        ),
        reference=ancient("results/data/{dataset}.h5"),
        settings=stamp_of("sample"),
    output:
        "results/runs/{dataset}/{treatment}/seed{seed}/nfe{steps}/metrics.json",
    log:
        "logs/runs/{dataset}/{treatment}/seed{seed}/nfe{steps}/evaluate.log",
    benchmark:
        "logs/benchmarks/runs/{dataset}/{treatment}/seed{seed}/nfe{steps}/evaluate.tsv"


rule classical_baseline:
    input:
        store=ancient("results/data/{dataset}.h5"),
        settings=stamp_of("baseline"),
    output:
        "results/baselines/{dataset}/{method}/samples.h5",
    log:
        "logs/baselines/{dataset}/{method}/etkdg.log",
    benchmark:
        "logs/benchmarks/baselines/{dataset}/{method}/etkdg.tsv"
    wildcard_constraints:
        method="etkdg|etkdg-mmff",
    conda:
        "../../envs/qdiff.yaml"
    threads: 1
    resources:
        runtime=per_attempt("runtime", 60),
        mem_mb=per_attempt("mem_mb", 4000),
        slurm_partition=slurm_partition(),
        slurm_account=slurm_account,
    params:
        flags=baseline_flags,
    shell:
        "qdiff etkdg --reference {input.store} --out {output} {params.flags} > {log} 2>&1"


use rule evaluate_model as evaluate_baseline with:
    input:
        samples=ancient("results/baselines/{dataset}/{method}/samples.h5"),
        reference=ancient("results/data/{dataset}.h5"),
        settings=stamp_of("baseline"),
    output:
        "results/baselines/{dataset}/{method}/metrics.json",
    log:
        "logs/baselines/{dataset}/{method}/evaluate.log",
    benchmark:
        "logs/benchmarks/baselines/{dataset}/{method}/evaluate.tsv"


rule report:
    input:
        metrics=ancient(metrics_files()),
        baselines=ancient(baseline_metrics_files()),
        sweep=ancient(sweep_metrics_files()),
        settings=study_stamp("report"),
    output:
        csv="results/report/summary.csv",
        md=report("results/report/summary.md", category="Models"),
        json="results/report/summary.json",
        png=report(
            "results/report/metrics.png",
            caption="../report/metrics.rst",
            category="Models",
        ),
        coverage=report(
            "results/report/coverage_curves.png",
            caption="../report/coverage_curves.rst",
            category="Models",
        ),
        amr=report(
            "results/report/amr_distribution.png",
            caption="../report/amr_distribution.rst",
            category="Models",
        ),
        loss=report(
            "results/report/loss_curves.png",
            caption="../report/loss_curves.rst",
            category="Training",
        ),
        rg=report(
            "results/report/rg_vs_length.png",
            caption="../report/rg_vs_length.rst",
            category="Models",
        ),
        examples=report(
            "results/report/examples.png",
            caption="../report/examples.rst",
            category="Models",
        ),
        nfe=report(
            "results/report/nfe_sweep.png",
            caption="../report/nfe_sweep.rst",
            category="Models",
        ),
        html="results/report/report.html",
        # the loss curves as data (one CSV per run), for `dvc plots diff`
        curves=directory("results/report/curves"),
    log:
        "logs/report.log",
    conda:
        "../../envs/qdiff.yaml"
    threads: 1
    resources:
        runtime=10,
        mem_mb=2000,
    shell:
        "qdiff report --metrics {input.metrics} {input.baselines} --sweep {input.sweep} --out results/report > {log} 2>&1"
