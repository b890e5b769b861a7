"""Snakemake entry point: validate and convert one session's image (dnqsm.pipeline.preprocess_session)."""

from contextlib import redirect_stderr, redirect_stdout

from dnqsm.pipeline import preprocess_session

snakemake = globals()["snakemake"]  # injected by Snakemake's script directive
with open(snakemake.log[0], "w") as log, redirect_stdout(log), redirect_stderr(log):
    record = preprocess_session(snakemake.input.image, snakemake.output.folder, snakemake.params.unit_policy)
    print(f"{snakemake.input.image}: {record['status']}" + (f" ({record['error']})" if record["error"] else ""))
