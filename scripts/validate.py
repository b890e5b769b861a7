"""Snakemake entry point: agreement with manual labels (dnqsm.validate)."""

import pandas as pd

from dnqsm import plots
from dnqsm.io import read_tsv, script_log, write_tsv
from dnqsm.pipeline import derivative_files, preproc_files, read_measures
from dnqsm.validate import session_agreement, sidecar, summarise

snakemake = globals()["snakemake"]
with script_log(snakemake.log[0]):
    if not snakemake.params.anat:
        raise ValueError("no selected session has manual labels in config validation.labels_dir")
    table = read_tsv(snakemake.input.table)
    rows = []
    for anat, preprocessed, labels in zip(snakemake.params.anat, snakemake.params.preprocessed, snakemake.input.labels):
        record = read_measures(anat)
        row = {"participant_id": record["participant_id"], "session_id": record["session_id"],
               "status": record["status"], "manual_labels": labels}
        if record["status"] != "failed":
            row.update(session_agreement(derivative_files(anat)["dseg"], labels, preproc_files(preprocessed)[0]))
        rows.append(row)
    sessions = pd.DataFrame(rows)
    meta = [c for c in ("group", "site") if c in table]
    sessions = sessions.merge(table[["participant_id", "session_id", *meta]], on=["participant_id", "session_id"],
                              how="left")
    summary = summarise(sessions, snakemake.params.method)
    write_tsv(snakemake.output.sessions, sessions, sidecar(sessions))
    write_tsv(snakemake.output.summary, summary, sidecar(summary))
    plots.bland_altman(sessions, snakemake.output.bland_altman)
    print(f"{len(sessions)} labelled sessions, {int((sessions.status != 'failed').sum())} segmented")
