# Offline stores: featurize each demo set (molecules, backbones) into HDF5 and summarize it.


rule featurize_offline:
    output:
        "results/data/{dataset}.h5",
    log:
        "logs/data/{dataset}.featurize.log",
    benchmark:
        "logs/benchmarks/data/{dataset}.featurize.tsv"
    wildcard_constraints:
        dataset="demo-qm9|demo-drugs|demo-backbones",
    conda:
        "../../envs/qdiff.yaml"
    threads: 2
    resources:
        runtime=30,
        mem_mb=3000,
    params:
        settings=featurize_settings,
    shell:
        "qdiff featurize {wildcards.dataset} --out {output} {params.settings} > {log} 2>&1"


rule data_info:
    input:
        "results/data/{dataset}.h5",
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
        "qdiff data info --json {input} > {output} 2> {log}"
