"""Snakemake entry point: the deep-learning method against the atlas baseline on labelled sessions
(dnqsm.analysis.agreement: the paper's comparison table)."""

import json
from pathlib import Path

import pandas as pd

from dnqsm.analysis import plots
from dnqsm.analysis.agreement import agreement, comparison_markdown, comparison_table, load_reference, sidecar
from dnqsm.analysis.cohort import visit_metadata
from dnqsm.io import atomic_path, script_log, write_tsv
from dnqsm.names import preproc_files
from dnqsm.workflow.pipeline import batch_labels, batch_metadata


def dataset_name(bids_dir: str) -> str:
    """The dataset's Name from dataset_description.json, else its folder name."""
    description = Path(bids_dir) / "dataset_description.json"
    name = json.loads(description.read_text()).get("Name") if description.exists() else None
    return name or Path(bids_dir).name


snakemake = globals()["snakemake"]
p = snakemake.params
with script_log(snakemake.log[0]):
    if not p.sessions:
        raise ValueError("no selected session has manual labels in config validation.labels_dir")
    rows = []
    for (subject, session), preprocessed, labels, batches in zip(
        p.sessions, p.preprocessed, snakemake.input.labels, p.batches
    ):
        image = preproc_files(preprocessed)[0]
        reference = load_reference(labels, image) if image.exists() else None
        for method, batch in batches.items():
            row = {
                "participant_id": f"sub-{subject}",
                "session_id": f"ses-{session}" if session else None,
                "method": method,
                "status": "failed",
                "manual_labels": labels,
                "seconds": None,
                "device": None,
            }
            if reference is not None:  # a session that failed preprocessing has no engine record
                meta = batch_metadata(batch, preprocessed)
                seg = batch_labels(batch, meta) if meta["status"] != "failed" else None
                row.update(status=meta["status"], seconds=meta["timings_s"]["total"], device=meta["options"]["device"])
                row.update(agreement(seg, reference))
            rows.append(row)
            print(f"{row['participant_id']} {row['session_id'] or ''} {method}: {row['status']}")
    sessions = pd.DataFrame(rows)
    participants, _ = visit_metadata(p.bids_dir, [])
    meta_columns = [c for c in ("group", "site") if c in participants]
    sessions = sessions.merge(participants[["participant_id", *meta_columns]], on="participant_id", how="left")
    table = comparison_table(sessions)
    write_tsv(snakemake.output.sessions, sessions, sidecar(sessions))
    write_tsv(snakemake.output.table, table, sidecar(table))
    with atomic_path(snakemake.output.markdown) as tmp:
        tmp.write_text(comparison_markdown(table, f"{dataset_name(p.bids_dir)}: {len(p.sessions)} labelled sessions"))
    plots.method_dice(sessions, snakemake.output.figure)
    print(comparison_markdown(table, dataset_name(p.bids_dir)))
