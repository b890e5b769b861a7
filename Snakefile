# dnqsm: dentate nucleus segmentation on QSM, as a Snakemake cohort workflow.
# Stages live in rules/*.smk; library code in dnqsm/; scripts/ are thin entry points.
from pathlib import Path

from snakemake.utils import min_version

min_version("9.0")


# The shipped configuration, found next to this Snakefile whatever the working directory;
# relative paths inside it are relative to the working directory (--directory).
configfile: str(Path(workflow.basedir) / "config" / "config.yaml")


include: "rules/common.smk"


wildcard_constraints:
    batch=r"\d+",
    subject="[a-zA-Z0-9]+",
    method="|".join(METHODS),


include: "rules/synth.smk"
include: "rules/train.smk"
include: "rules/preprocess.smk"
include: "rules/segment.smk"
include: "rules/longitudinal.smk"
include: "rules/measure.smk"
include: "rules/cohort.smk"
include: "rules/agreement.smk"


rule all:
    """The whole cohort: derivative dataset, cohort table, failures and a QC snapshot per session."""
    input:
        require_cohort,
        cohort_outputs,


onsuccess:
    report_failures()
