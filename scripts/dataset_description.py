"""Snakemake entry point: the output dataset's dataset_description.json and dseg.tsv (dnqsm.analysis.cohort)."""

from pathlib import Path

from dnqsm.analysis.cohort import dataset_description, dseg_lut, git_commit
from dnqsm.engine.nnunet import sha256
from dnqsm.io import script_log, write_json, write_tsv

snakemake = globals()["snakemake"]
p = snakemake.params
with script_log(snakemake.log[0]):
    models = {Path(f).name: {"sha256": sha256(f) if Path(f).is_file() else None} for f in snakemake.input.models}
    write_json(
        snakemake.output.description, dataset_description(p.bids_dir, models, git_commit(p.workflow_dir), p.parameters)
    )
    write_tsv(snakemake.output.lut, dseg_lut())
