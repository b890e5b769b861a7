"""Snakemake entry point: generate a synthetic cohort (see dnqsm.synth)."""

from dnqsm.io import script_log
from dnqsm.synth import write_dataset

snakemake = globals()["snakemake"]  # injected by Snakemake's script directive
with script_log(snakemake.log[0]):
    p = snakemake.params
    path = write_dataset(p.out, p.preset, p.subjects, p.sessions, p.seed, overwrite=True, jobs=snakemake.threads)
    print(f"wrote {path}")
