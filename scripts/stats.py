"""Snakemake entry point: longitudinal statistics and their figures (dnqsm.analysis.stats, dnqsm.analysis.plots)."""

import logging
import sys
from pathlib import Path

from dnqsm.analysis import plots
from dnqsm.analysis.stats import Settings, analyse, sidecar
from dnqsm.io import read_tsv, script_log, write_tsv
from dnqsm.qc.page import read_ratings

snakemake = globals()["snakemake"]
out = snakemake.output
with script_log(snakemake.log[0]):
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(message)s")
    ratings = read_ratings(snakemake.input.ratings[0]) if snakemake.input.ratings else None
    analysis = analyse(read_tsv(snakemake.input.table), Settings(**snakemake.params.settings), ratings)
    for note in analysis.notes:
        logging.warning("stats: %s", note)
    for path in out.tables:
        name = Path(path).stem
        table = analysis.tables[name]
        write_tsv(path, table, sidecar(table, analysis.notes if name == "models" else None))
    data = analysis.fits[0].data if analysis.fits else None
    plots.spaghetti(analysis, out.spaghetti)
    plots.baseline(analysis, data, out.baseline)
    plots.left_right(data, analysis.groups, out.left_right)
    plots.residuals(analysis, out.residuals)
