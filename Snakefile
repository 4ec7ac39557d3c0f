# qdiff workflow: `snakemake --cores 2` runs the offline demo study; see README.md.
import os

from snakemake.utils import min_version, validate

min_version("8.0")

# envs/qdiff.yaml (with --software-deployment-method conda) installs this checkout by absolute path,
# since Snakemake copies the env file away, and takes torch from QDIFF_TORCH_INDEX (its CUDA build).
os.environ.setdefault("QDIFF_ROOT", workflow.basedir)
os.environ.setdefault("QDIFF_TORCH_INDEX", "https://pypi.org/simple")


include: "workflow/rules/study.smk"


configfile: "config.yaml"


# `--config study=NAME` (other than demo) swaps in the sections of studies/NAME.yaml.
load_study(config)


validate(config, "workflow/schemas/config.schema.yaml")


report: "workflow/report/workflow.rst"


wildcard_constraints:
    seed=r"\d+",
    steps=r"\d+",


include: "workflow/rules/common.smk"
include: "workflow/rules/toy.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/cluster.smk"


localrules:
    all,
    fetch_dataset,
    data_info,
    report,
    toy_summary,
    settings_stamp,
    study_toy,
    study_data,
    study_models,


rule all:
    default_target: True
    input:
        toy_summary_outputs(),
        data_outputs(),
        report_outputs(),
        stamp_files("toy", "data", "models"),


# The three milestones of the study, one per DVC stage (dvc.yaml): `snakemake study_data` etc.
rule study_toy:
    input:
        toy_summary_outputs(),
        stamp_files("toy"),


rule study_data:
    input:
        data_outputs(),
        stamp_files("data"),


# Every store and trained model (no sampling or evaluation): `snakemake study_training`, e.g. to
# train on a cluster first, or after a dataset update (tests/test_dataset_update_workflow.py).
rule study_training:
    input:
        data_outputs(),
        model_files(),
        stamp_files("data", "training"),


rule study_models:
    input:
        report_outputs(),
        stamp_files("models"),


# A first run explains itself: where the report is and one line of headline numbers per dataset.
onsuccess:
    shell("qdiff headline --report results/report --toy results/toy || true")
