"""Snakemake entry point: agreement with manual labels (dnqsm.analysis.agreement)."""

import pandas as pd

from dnqsm.analysis import plots
from dnqsm.analysis.agreement import session_agreement, sidecar, summarise
from dnqsm.io import read_tsv, script_log, write_tsv
from dnqsm.names import preproc_files
from dnqsm.workflow.pipeline import read_measures

snakemake = globals()["snakemake"]
p = snakemake.params
with script_log(snakemake.log[0]):
    if not snakemake.params.measures:
        raise ValueError("no selected session has manual labels in config validation.labels_dir")
    table = read_tsv(snakemake.input.table)
    rows = []
    for measures, dseg, preprocessed, labels in zip(p.measures, p.dseg, p.preprocessed, snakemake.input.labels):
        record = read_measures(measures)
        row = {
            "participant_id": record["participant_id"],
            "session_id": record["session_id"],
            "status": record["status"],
            "manual_labels": labels,
        }
        if record["status"] != "failed":
            row.update(session_agreement(dseg, labels, preproc_files(preprocessed)[0]))
        rows.append(row)
    sessions = pd.DataFrame(rows)
    meta = [c for c in ("group", "site") if c in table]
    sessions = sessions.merge(
        table[["participant_id", "session_id", *meta]].drop_duplicates(["participant_id", "session_id"]),
        on=["participant_id", "session_id"],
        how="left",
    )
    summary = summarise(sessions, snakemake.params.method)
    write_tsv(snakemake.output.sessions, sessions, sidecar(sessions))
    write_tsv(snakemake.output.summary, summary, sidecar(summary))
    plots.bland_altman(sessions, snakemake.output.bland_altman)
    print(f"{len(sessions)} labelled sessions, {int((sessions.status != 'failed').sum())} segmented")
