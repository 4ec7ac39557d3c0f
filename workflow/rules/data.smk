# Data: fetch raw files (internet; local rule, retried), featurize into HDF5, summarize.
# Demo sets are built offline from installed packages and need no fetch. GEOM-QM9 and GEOM-DRUGS
# are two subsets of one archive: one download into resources/geom serves both.
# Every store version featurize writes is also kept (a hard link) under results/data/versions/
# (`qdiff data versions`, `qdiff data diff --previous results/data/<dataset>.h5`); the current one
# stays at results/data/<dataset>.h5, which the model rules read.
STORE_VERSIONS = "results/data/versions"


# Not protected(): a dataset update re-runs the fetch (a changed `data.fetch` setting, or
# `snakemake -R fetch_dataset`), and a write-protected record stops that for a normal user.
rule fetch_dataset:
    input:
        fetch_stamp,
    output:
        "resources/{raw}/fetched.json",
    log:
        "logs/data/{raw}.fetch.log",
    wildcard_constraints:
        raw="qm9|geom|pdb",
    retries: 3
    conda:
        "../../envs/qdiff.yaml"
    threads: 1
    resources:
        runtime=600,
        mem_mb=2000,
    params:
        dest=subpath(output[0], parent=True),
        dataset=fetch_name,
        flags=fetch_flags,
    shell:
        "qdiff fetch {params.dataset} --dest {params.dest} --record {output} {params.flags} > {log} 2>&1"


rule featurize_raw:
    input:
        raw=fetch_record,
        settings=stamp_of("data"),
    output:
        "results/data/{dataset}.h5",
    log:
        "logs/data/{dataset}.featurize.log",
    benchmark:
        "logs/benchmarks/data/{dataset}.featurize.tsv"
    wildcard_constraints:
        dataset="qm9|geom-qm9|geom-drugs|pdb",
    conda:
        "../../envs/qdiff.yaml"
    threads: 8
    resources:
        runtime=per_attempt("runtime", 720),
        mem_mb=per_attempt("mem_mb", 16000),
        slurm_partition=slurm_partition(),
        slurm_account=slurm_account,
    params:
        raw=subpath(input.raw, parent=True),
        settings=featurize_settings,
        versions=STORE_VERSIONS,
    shell:
        "qdiff featurize {wildcards.dataset} --raw {params.raw} --out {output} {params.settings}"
        " --keep-versions {params.versions} > {log} 2>&1"


rule featurize_offline:
    input:
        stamp_of("data"),
    output:
        "results/data/{dataset}.h5",
    log:
        "logs/data/{dataset}.featurize.log",
    benchmark:
        "logs/benchmarks/data/{dataset}.featurize.tsv"
    wildcard_constraints:
        dataset="demo-qm9|demo-drugs|demo-backbones",
    # long jobs first, so the short ones (toy, evaluation) fill the cores at the end
    priority: 50
    conda:
        "../../envs/qdiff.yaml"
    # One core declared: a 2-core job here waited until nothing else was left (Snakemake fills a
    # freed core with a 1-core job), putting demo-drugs and its four trainings at the end of the
    # run. demo-drugs' RDKit embedding still uses both cores while the other two featurize.
    threads: 1
    resources:
        runtime=per_attempt("runtime", 30),
        mem_mb=per_attempt("mem_mb", 3000),
        slurm_partition=slurm_partition(),
        slurm_account=slurm_account,
    params:
        settings=featurize_settings,
        versions=STORE_VERSIONS,
    shell:
        "qdiff featurize {wildcards.dataset} --out {output} {params.settings}"
        " --keep-versions {params.versions} > {log} 2>&1"


rule data_info:
    input:
        store=ancient("results/data/{dataset}.h5"),
        settings=stamp_of("data"),
    output:
        "results/data/{dataset}.info.json",
    log:
        "logs/data/{dataset}.info.log",
    conda:
        "../../envs/qdiff.yaml"
    threads: 1
    resources:
        runtime=5,
        mem_mb=1000,
    shell:
        "qdiff data info --json {input.store} > {output} 2> {log}"


# The settings stamps of every job family (common.smk, "Settings stamps"): what the family
# depends on, as JSON.
rule settings_stamp:
    output:
        "results/{stage}/settings/{name}.{kind}.{digest}.json",
    log:
        "logs/settings/{stage}/{name}.{kind}.{digest}.log",
    wildcard_constraints:
        stage="|".join(set(STAMP_STAGES.values())),
        kind="|".join(STAMP_STAGES),
        digest="[0-9a-f]{12}",
    conda:
        "../../envs/qdiff.yaml"
    threads: 1
    resources:
        runtime=1,
        mem_mb=100,
    params:
        settings=stamp_content,
    shell:
        "printf '%s\\n' {params.settings:q} > {output} 2> {log}"
