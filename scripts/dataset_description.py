"""Snakemake entry point: the output dataset's dataset_description.json and dseg.tsv (dnqsm.cohort)."""

from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

from dnqsm.cohort import dataset_description, dseg_lut
from dnqsm.io import write_json, write_tsv
from dnqsm.nnunet import sha256

snakemake = globals()["snakemake"]
p = snakemake.params
with open(snakemake.log[0], "w") as log, redirect_stdout(log), redirect_stderr(log):
    models = {Path(f).name: {"sha256": sha256(f) if Path(f).is_file() else None} for f in snakemake.input.models}
    write_json(snakemake.output.description, dataset_description(p.bids_dir, models, p.commit, p.parameters))
    write_tsv(snakemake.output.lut, dseg_lut())
