"""Snakemake entry point: validate and convert one session's image (dnqsm.pipeline.preprocess_session)."""

from dnqsm.io import script_log
from dnqsm.pipeline import preprocess_session

snakemake = globals()["snakemake"]  # injected by Snakemake's script directive
with script_log(snakemake.log[0]):
    record = preprocess_session(snakemake.params.image, snakemake.output.folder, snakemake.params.unit_policy,
                                snakemake.params.allow_unknown_orientation)
    print(f"{snakemake.params.image}: {record['status']}" + (f" ({record['error']})" if record["error"] else ""))
