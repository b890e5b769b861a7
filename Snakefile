# dnqsm: dentate nucleus segmentation on QSM, as a Snakemake cohort workflow.
# Stages live in rules/*.smk; library code in dnqsm/; scripts/ are thin entry points.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


include: "rules/common.smk"
include: "rules/synth.smk"
include: "rules/train.smk"


rule all:
    input:
        synth_dataset_description(),
