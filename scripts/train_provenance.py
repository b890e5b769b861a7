"""Snakemake entry point: provenance of the trained models (dnqsm.training.provenance)."""

from dnqsm.io import script_log
from dnqsm.training.provenance import write_provenance

snakemake = globals()["snakemake"]
with script_log(snakemake.log[0]):
    write_provenance(
        snakemake.output.provenance, snakemake.input.records, snakemake.input.datasets, snakemake.params.train
    )
