"""Snakemake entry point: one session's derivative folder and measures (dnqsm.pipeline.session_outputs)."""

from dnqsm.io import script_log
from dnqsm.pipeline import session_outputs

snakemake = globals()["snakemake"]
wc = snakemake.wildcards
with script_log(snakemake.log[0]):
    record = session_outputs(wc.subject, wc.get("session"), snakemake.input.preprocessed, snakemake.input.batch,
                             snakemake.output.folder, snakemake.params.erosion_voxels, snakemake.params.checks)
    print(f"sub-{wc.subject} {wc.get('session') or ''}: {record['status']}")
