"""Snakemake entry point: the QC review page (dnqsm.qc.page)."""

import os
from pathlib import Path

from dnqsm.io import read_tsv, script_log
from dnqsm.names import derivative_ending
from dnqsm.qc.page import page_records, read_ratings, write_page

snakemake = globals()["snakemake"]
page = Path(snakemake.output.page)
with script_log(snakemake.log[0]):
    table = read_tsv(snakemake.input.table)
    snapshots = {
        Path(p).name.removesuffix(derivative_ending("snapshot")): os.path.relpath(p, page.parent)
        for p in snakemake.params.snapshots
    }
    ratings = read_ratings(snakemake.input.ratings[0]) if snakemake.input.ratings else None
    records = page_records(table, snapshots, ratings)
    write_page(page, records, f"dnqsm QC review: {page.parent}", str(page.parent.resolve()))
    print(f"{len(records)} sessions on {page}")
