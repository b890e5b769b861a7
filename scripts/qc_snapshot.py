"""Snakemake entry point: one session's QC snapshot PNG (dnqsm.pipeline.qc_snapshot)."""

from contextlib import redirect_stderr, redirect_stdout

from dnqsm.pipeline import qc_snapshot

snakemake = globals()["snakemake"]
wc = snakemake.wildcards
with open(snakemake.log[0], "w") as log, redirect_stdout(log), redirect_stderr(log):
    print(qc_snapshot(wc.subject, wc.get("session"), snakemake.input.preprocessed, snakemake.input.anat,
                      snakemake.output.png))
