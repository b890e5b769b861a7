"""Snakemake entry point: one session's derivative folder and measures (dnqsm.pipeline.session_outputs)."""

from contextlib import redirect_stderr, redirect_stdout

from dnqsm.pipeline import session_outputs

snakemake = globals()["snakemake"]
wc = snakemake.wildcards
with open(snakemake.log[0], "w") as log, redirect_stdout(log), redirect_stderr(log):
    record = session_outputs(wc.subject, wc.get("session"), snakemake.input.preprocessed, snakemake.input.batch,
                             snakemake.output.folder, snakemake.params.erosion_voxels)
    print(f"sub-{wc.subject} {wc.get('session') or ''}: {record['status']}")
