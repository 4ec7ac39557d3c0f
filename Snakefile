# qdiff workflow: `snakemake --cores 2` runs the offline demo study; see README.md.
from snakemake.utils import min_version, validate

min_version("8.0")


configfile: "config.yaml"


validate(config, "workflow/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/toy.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/models.smk"


rule all:
    default_target: True
    input:
        toy_summary_outputs(),
        data_outputs(),
        report_outputs(),
