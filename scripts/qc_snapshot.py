"""Snakemake entry point: one session's QC snapshot PNG (dnqsm.pipeline.qc_snapshot)."""

from dnqsm.io import script_log
from dnqsm.pipeline import qc_snapshot

snakemake = globals()["snakemake"]
wc = snakemake.wildcards
with script_log(snakemake.log[0]):
    print(qc_snapshot(wc.subject, wc.get("session"), snakemake.input.preprocessed, snakemake.input.anat,
                      snakemake.output.png))
