"""Snakemake entry point: the cohort table, its sidecar and failures.tsv (dnqsm.analysis.cohort)."""

import pandas as pd

from dnqsm.analysis.cohort import PROBLEM_COLUMNS, cohort_sidecar, cohort_table, failures_table, review_table
from dnqsm.io import script_log, write_tsv
from dnqsm.workflow.pipeline import read_measures

snakemake = globals()["snakemake"]
with script_log(snakemake.log[0]):
    records = [read_measures(path) for path in snakemake.params.measures]
    problems = []
    table = cohort_table(records, snakemake.params.bids_dir, problems)
    write_tsv(snakemake.output.problems, pd.DataFrame(problems, columns=PROBLEM_COLUMNS))
    write_tsv(snakemake.output.table, table, cohort_sidecar(table, snakemake.params.bids_dir))
    failures = failures_table(records)
    write_tsv(snakemake.output.failures, failures)
    review = review_table(records)
    write_tsv(snakemake.output.review, review)
    print(
        f"{len(table)} sessions, {len(review)} need review, {len(failures)} failed, {len(problems)} metadata problem(s)"
    )
