# Cluster checks. `snakemake gpu_smoke --profile slurm` on a new cluster: what a GPU job sees.


rule gpu_smoke:
    output:
        "results/cluster/gpu_smoke.json",
    log:
        "logs/cluster/gpu_smoke.log",
    conda:
        "../../envs/qdiff.yaml"
    threads: 1
    resources:
        runtime=per_attempt("runtime", 10),
        mem_mb=per_attempt("mem_mb", 4000),
        gpu=gpu_request(one_gpu),
        slurm_partition=slurm_partition(one_gpu),
        slurm_account=slurm_account,
    shell:
        "python -m qdiff.gpu_smoke --out {output} > {log} 2>&1"
