"""Snakemake entry point: generate a synthetic cohort (see dnqsm.synth)."""

from contextlib import redirect_stderr, redirect_stdout

from dnqsm.synth import write_dataset

snakemake = globals()["snakemake"]  # injected by Snakemake's script directive
with open(snakemake.log[0], "w") as log, redirect_stdout(log), redirect_stderr(log):
    p = snakemake.params
    path = write_dataset(p.out, p.preset, p.subjects, p.sessions, p.seed, overwrite=True, jobs=snakemake.threads)
    print(f"wrote {path}")
