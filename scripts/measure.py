"""Snakemake entry point: a batch's derivatives and QC snapshots, published into the output dataset
(dnqsm.workflow.pipeline.measure_batch, publish)."""

from dnqsm.io import script_log
from dnqsm.workflow.pipeline import measure_batch, publish

snakemake = globals()["snakemake"]
p = snakemake.params
with script_log(snakemake.log[0]):
    records = measure_batch(
        p.sessions,
        snakemake.input.preprocessed,
        snakemake.input.batch,
        snakemake.output.folder,
        p.erosion_voxels,
        p.checks,
    )
    publish(snakemake.output.folder, p.output_dir, p.sessions)
    for s, record in zip(p.sessions, records):
        print(f"{s['name']}: {record['status']}" + (f" ({record['error']})" if record["error"] else ""))
