"""Snakemake entry point: validate and convert every image of a batch (dnqsm.workflow.pipeline.preprocess_batch)."""

from dnqsm.io import script_log
from dnqsm.workflow.pipeline import preprocess_batch

snakemake = globals()["snakemake"]  # injected by Snakemake's script directive
p = snakemake.params
with script_log(snakemake.log[0]):
    records = preprocess_batch(p.sessions, snakemake.output.folder, p.unit_policy, p.allow_unknown_orientation)
    for (image, _), record in zip(p.sessions, records):
        print(f"{image}: {record['status']}" + (f" ({record['error']})" if record["error"] else ""))
