"""The cohort tables: one row per subject-session with measures and BIDS metadata, the failures list,
and the derivative dataset's description and label look-up table."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from dnqsm import __version__
from dnqsm.analysis.measure import measure_columns
from dnqsm.io import column_doc, read_tsv
from dnqsm.names import COHORT_FILES

DAYS_PER_YEAR = 365.25
ID_COLUMNS = ["participant_id", "session_id"]
#: When a session has several images (e.g. two reconstructions), each is a row, told apart by this
#: column (its kept BIDS entities, e.g. ``rec-tkd``); the column exists only in such cohorts.
ENTITIES_COLUMN = "image_entities"


def entry_key(row: Any) -> str:
    """A row's name (a cohort-table row, a rating or a record): ``sub-X[_ses-Y][_<image entities>]``."""
    get = row.get if hasattr(row, "get") else lambda k, d=None: getattr(row, k, d)
    parts = [get("participant_id"), get("session_id"), get(ENTITIES_COLUMN)]
    return "_".join(str(p) for p in parts if isinstance(p, str) and p and p != "n/a")


def entry_columns(records: list[dict[str, Any]]) -> list[str]:
    """The columns that identify a row: participant, session and, where any image has them, entities."""
    return ID_COLUMNS + ([ENTITIES_COLUMN] if any(r.get(ENTITIES_COLUMN) for r in records) else [])


STATUS_COLUMNS = ["status", "review_reasons", "failed_stage", "error"]
#: Per-side confidence numbers of the engine (dnqsm.engine.confidence.side_numbers) kept in the cohort table.
CONFIDENCE_COLUMNS = {
    "mean_probability": ("", "network's mean foreground probability inside the label (nnU-Net only)"),
    "uncertain_share": ("", "voxels with probability 0.2-0.8 next to the label, per label voxel"),
    "contrast_cnr": ("", "contrast-to-noise: (mean chi in label - mean of a 1-3 voxel shell) / SD of the shell"),
    "largest_share": ("", "share of the side's predicted voxels in the kept (largest) component"),
    "mirror_agreement": ("", "Dice of the label with a pass without test-time mirroring (mirroring on only)"),
    "smoothness_fwhm_mm": ("mm", "image smoothness (FWHM) within 10 mm of the label, along its sharpest axis"),
    "data_edge_mm": ("mm", "distance from the label to where the image has no data (zero or not finite)"),
    "bright_shell_share": (
        "",
        "share of the shell 1-2 voxels outside the label as bright as the nucleus's edge "
        "(high: the label stops inside the nucleus)",
    ),
    "dark_rim_share": (
        "",
        "share of the label's border voxels darker than the nucleus's edge (high: the label spills into white matter)",
    ),
    "registration_offset_mm": (
        "mm",
        "distance from the label's centroid to where registration of the MNI brain expects the nucleus",
    ),
    "registration_overlap": (
        "",
        "share of the label inside the MNI nucleus the registration carried onto the image (widened by its error)",
    ),
    "expected_volume_mm3": (
        "mm^3",
        "the volume the registration expects for this head (confidence "
        "expected_volume_mm3 scaled by the fitted head size)",
    ),
}
QC_COLUMNS = {
    "input_unit": ("", "unit of the input image (ppm or ppb) and how it was decided: see input_unit_source"),
    "input_unit_source": ("", "sidecar, config or detected from values"),
    "orientation": ("", "voxel axis codes of the input image (nibabel aff2axcodes)"),
    "localization_components": ("count", "connected regions the localization model found (2 expected)"),
    "locator": (
        "",
        "what placed the crop: network, registration (the network found nothing) or "
        "network+registration (the registration's second opinion disagreed with the network)",
    ),
    "box_touches_image_edge": ("", "the crop box reached the image edge: the DN may be cut off"),
    "missing_sides": ("", "sides with no dentate found, comma-separated"),
    "segmentation_mode": (
        "",
        "cross-sectional (each visit on its own) or longitudinal (each visit with its "
        "subject's template prior; config longitudinal.enabled)",
    ),
}
DSEG_LABELS = [(1, "left dentate nucleus", "DN_L", "#ff4d4d"), (2, "right dentate nucleus", "DN_R", "#33b5ff")]


def years_between(times: pd.Series) -> pd.Series:
    """Years from the earliest of ``times`` (ISO dates) to each; NaN where a time is not a date."""
    parsed = pd.to_datetime(times, errors="coerce", format="ISO8601")
    return (parsed - parsed.min()).dt.total_seconds() / (DAYS_PER_YEAR * 86400)


PROBLEM_COLUMNS = ["file", "row", "column", "value", "problem"]


def visit_metadata(
    bids_dir: str | Path, subjects: Iterable[str], problems: list[dict] | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(participants, visits): ``participants.tsv`` (its ``age`` renamed ``baseline_age``) and every
    subject's ``sessions.tsv`` with years since baseline (from acq_time, else from age at visit).

    Every problem met and the fallback applied for it is appended to ``problems`` (rows of
    :data:`PROBLEM_COLUMNS`; ``row`` is the 1-based data row of the file), never silently."""
    problems = [] if problems is None else problems
    bids_dir = Path(bids_dir)
    subjects = list(subjects)
    participants_file = bids_dir / "participants.tsv"
    if participants_file.exists():
        participants = read_tsv(participants_file)
        listed = set(participants.get("participant_id", pd.Series(dtype=str)))
        for sub in subjects:
            if f"sub-{sub}" not in listed:
                problems.append(
                    _problem(
                        participants_file,
                        "",
                        "participant_id",
                        f"sub-{sub}",
                        "participant not listed: group, sex and baseline age unknown",
                    )
                )
    else:
        participants = pd.DataFrame({"participant_id": []})
        if subjects:
            problems.append(
                _problem(
                    participants_file,
                    "",
                    "",
                    "",
                    "file missing: group, sex and baseline age are "
                    "unknown for every participant (no group comparisons in the statistics)",
                )
            )
    participants = participants.rename(columns={"age": "baseline_age"}).drop_duplicates("participant_id")
    rows = []
    for sub in subjects:
        sessions_file = bids_dir / f"sub-{sub}" / f"sub-{sub}_sessions.tsv"
        if sessions_file.exists():
            table = read_tsv(sessions_file)
            table.insert(0, "participant_id", f"sub-{sub}")
            table["_file"], table["_row"] = str(sessions_file), range(1, len(table) + 1)
            rows.append(table)
    visits = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=ID_COLUMNS + ["_file", "_row"])
    per_subject = visits.groupby("participant_id")
    if "acq_time" in visits:
        parsed = pd.to_datetime(visits["acq_time"], errors="coerce", format="ISO8601")
        bad = visits["acq_time"].notna() & parsed.isna()
        for i in visits.index[bad]:
            fallback = (
                "years since baseline taken from the age at the visit instead"
                if "age" in visits and pd.notna(visits.at[i, "age"])
                else "years since baseline left unknown"
            )
            problems.append(
                _problem(
                    visits.at[i, "_file"],
                    visits.at[i, "_row"],
                    "acq_time",
                    visits.at[i, "acq_time"],
                    f"not an ISO 8601 date and time; {fallback}",
                )
            )
        visits["years_since_baseline"] = per_subject["acq_time"].transform(years_between)
    if "age" in visits:
        from_age = visits["age"] - per_subject["age"].transform("min")
        visits["years_since_baseline"] = visits.get("years_since_baseline", from_age).fillna(from_age)
        visits["visit_baseline_age"] = per_subject["age"].transform("min")
    return participants, visits.drop(columns=["_file", "_row"])


def _problem(file, row, column, value, problem) -> dict:
    return {
        "file": str(file),
        "row": row,
        "column": column,
        "value": "" if pd.isna(value) else str(value),
        "problem": problem,
    }


def session_row(record: dict[str, Any]) -> dict[str, Any]:
    """Cohort-table row of one session's measures record."""
    row = {key: record.get(key) for key in ID_COLUMNS + [ENTITIES_COLUMN] + STATUS_COLUMNS}
    row.update({key: record.get("measures", {}).get(key) for key in measure_columns()})
    row.update({key: record.get(key) for key in QC_COLUMNS})
    if isinstance(row["missing_sides"], list):
        row["missing_sides"] = ",".join(row["missing_sides"])
    row["review_reasons"] = "; ".join(record.get("review_reasons") or [])
    for side in ("left", "right"):
        numbers = (record.get("confidence") or {}).get(side, {})
        for key in CONFIDENCE_COLUMNS:
            row[f"{side}_{key}"] = numbers.get(key)
    return row


def cohort_table(
    records: list[dict[str, Any]], bids_dir: str | Path, problems: list[dict] | None = None
) -> pd.DataFrame:
    """One row per subject-session: identifiers, status, measures, participant and visit metadata, QC
    fields. Participant metadata joins on the participant alone, so a subject without a sessions.tsv
    keeps its group and site. Metadata problems (and their fallbacks) go to ``problems``."""
    problems = [] if problems is None else problems
    rows = pd.DataFrame([session_row(r) for r in records])
    keys = entry_columns(records)
    if ENTITIES_COLUMN not in keys:
        rows = rows.drop(columns=ENTITIES_COLUMN)
    else:
        rows[ENTITIES_COLUMN] = rows[ENTITIES_COLUMN].fillna("")
    subjects = sorted({pid.removeprefix("sub-") for pid in rows["participant_id"]})
    participants, visits = visit_metadata(bids_dir, subjects, problems)
    if rows["session_id"].notna().any():
        known = set(zip(visits.get("participant_id", []), visits.get("session_id", [])))
        for pid, sid in zip(rows["participant_id"], rows["session_id"]):
            if isinstance(sid, str) and (pid, sid) not in known:
                sessions_file = Path(bids_dir) / pid / f"{pid}_sessions.tsv"
                what = "session not listed" if sessions_file.exists() else "file missing"
                problems.append(
                    _problem(
                        sessions_file,
                        "",
                        "session_id",
                        sid,
                        f"{what}: acq_time and age of {pid} {sid} unknown (not placed in time)",
                    )
                )
    table = rows.merge(participants, on="participant_id", how="left")
    if rows["session_id"].notna().all() and len(visits):
        table = table.merge(
            visits.drop(columns=[c for c in participants.columns if c in visits and c != "participant_id"]),
            on=ID_COLUMNS,
            how="left",
        )
    if "visit_baseline_age" in table:
        if "baseline_age" in table:
            table["baseline_age"] = table["baseline_age"].fillna(table["visit_baseline_age"])
        else:
            table["baseline_age"] = table["visit_baseline_age"]
        table = table.drop(columns="visit_baseline_age")
    if "age" not in table and {"baseline_age", "years_since_baseline"} <= set(table):
        table["age"] = table["baseline_age"] + table["years_since_baseline"]
    meta_cols = [c for c in list(visits.columns) + list(participants.columns) if c not in ID_COLUMNS]
    meta_cols = [c for c in dict.fromkeys(meta_cols) if c in table and c != "visit_baseline_age"]
    confidence = [f"{side}_{key}" for side in ("left", "right") for key in CONFIDENCE_COLUMNS]
    ordered = keys + meta_cols + STATUS_COLUMNS + list(measure_columns()) + list(QC_COLUMNS) + confidence
    table = table[[c for c in ordered if c in table]]
    return table.sort_values(keys, na_position="first").reset_index(drop=True)


def cohort_sidecar(table: pd.DataFrame, bids_dir: str | Path) -> dict[str, Any]:
    """BIDS JSON sidecar: a description (and unit) for every column of the cohort table."""
    described: dict[str, dict[str, str]] = {
        "participant_id": {"Description": "BIDS participant label"},
        "session_id": {"Description": "BIDS session label"},
        ENTITIES_COLUMN: {
            "Description": "the image's other BIDS entities (acq, rec, run, ...), which tell several "
            "images of one session apart; empty for an image without any"
        },
        "status": {
            "Description": "ok; review: labels and measures are there but a plausibility check doubts "
            f"them (review_reasons; listed in {Path(COHORT_FILES['review']).name}); failed "
            f"(listed in {Path(COHORT_FILES['failures']).name})"
        },
        "review_reasons": {"Description": "why the segmentation needs review, one sentence per check, '; '-separated"},
        "failed_stage": {"Description": "preprocess or segment: where a failed session stopped"},
        "error": {"Description": "why the session failed"},
        "years_since_baseline": {
            "Description": "years since the participant's first visit (from acq_time, else age)",
            "Units": "year",
        },
        "baseline_age": {"Description": "age at the first visit", "Units": "year"},
        "age": {"Description": "age at this visit", "Units": "year"},
        "acq_time": {"Description": "acquisition time of the visit (sessions.tsv)"},
    }
    for key, (unit, text) in {**measure_columns(), **QC_COLUMNS}.items():
        described[key] = column_doc(text, unit)
    for side in ("left", "right"):
        for key, (unit, text) in CONFIDENCE_COLUMNS.items():
            described[f"{side}_{key}"] = column_doc(f"{side} DN: {text}", unit)
    for source in (Path(bids_dir) / "participants.json", Path(bids_dir) / "sessions.json"):
        if source.exists():
            for key, value in json.loads(source.read_text()).items():
                target = "baseline_age" if (key == "age" and source.name == "participants.json") else key
                if isinstance(value, dict) and target not in described:
                    described[target] = value
    return {column: described.get(column, {"Description": f"{column} (from the BIDS dataset)"}) for column in table}


def failures_table(records: list[dict[str, Any]]) -> pd.DataFrame:
    """Every session that failed, the stage and the reason."""
    columns = entry_columns(records) + ["failed_stage", "error", "source"]
    rows = [
        {key: r.get(key) or ("" if key == ENTITIES_COLUMN else r.get(key)) for key in columns}
        for r in records
        if r.get("status") not in ("ok", "review")
    ]
    return pd.DataFrame(rows, columns=columns)


def review_table(records: list[dict[str, Any]]) -> pd.DataFrame:
    """Every session whose segmentation needs review, and why (one sentence per check)."""
    keys = entry_columns(records)
    rows = [
        {
            **{key: r.get(key) or ("" if key == ENTITIES_COLUMN else r.get(key)) for key in keys},
            "review_reasons": "; ".join(r.get("review_reasons") or []),
            "source": r.get("source"),
        }
        for r in records
        if r.get("status") == "review"
    ]
    return pd.DataFrame(rows, columns=keys + ["review_reasons", "source"])


def git_commit(repo: str | Path, ignore: tuple[str, ...] = ()) -> str:
    """The workflow's git commit (with ``-dirty`` for uncommitted changes outside the paths in ``ignore``,
    relative to ``repo``), or ``unknown``."""
    try:
        sha = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            [
                "git",
                "-C",
                str(repo),
                "status",
                "--porcelain",
                "--untracked-files=no",
                "--",
                ".",
                *(f":(exclude){path}" for path in ignore),
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha + ("-dirty" if dirty else "")


def dataset_description(
    bids_dir: str | Path, models: dict[str, dict[str, Any]], commit: str, parameters: dict[str, Any]
) -> dict[str, Any]:
    """``dataset_description.json`` of the output derivative dataset."""
    return {
        "Name": "dnqsm: dentate nucleus segmentation and measures on QSM",
        "BIDSVersion": "1.10.0",
        "DatasetType": "derivative",
        "GeneratedBy": [
            {
                "Name": "dnqsm",
                "Version": __version__,
                "Commit": commit,
                "Description": "two-step nnU-Net dentate segmentation (localize, crop, segment); left DN 1, right DN 2",
                "Models": models,
                "Parameters": parameters,
            }
        ],
        "SourceDatasets": [{"URL": Path(bids_dir).absolute().as_uri()}],
    }


def dseg_lut() -> pd.DataFrame:
    """BIDS ``dseg.tsv`` look-up table of the label images."""
    return pd.DataFrame(DSEG_LABELS, columns=["index", "name", "abbreviation", "color"])


def column_reference_markdown() -> str:
    """Every column the cohort table can hold, with its unit and description, as a Markdown table (the
    documentation's outputs page is written from it; visit metadata columns come from the BIDS dataset)."""
    confidence = [f"{side}_{key}" for side in ("left", "right") for key in CONFIDENCE_COLUMNS]
    columns = (
        ID_COLUMNS
        + [ENTITIES_COLUMN, "acq_time", "age", "baseline_age", "years_since_baseline"]
        + STATUS_COLUMNS
        + list(measure_columns())
        + list(QC_COLUMNS)
        + confidence
    )
    described = cohort_sidecar(pd.DataFrame(columns=columns), Path("/nonexistent"))
    lines = ["| column | unit | description |", "| --- | --- | --- |"]
    for column in columns:
        entry = described[column]
        text = str(entry.get("Description", "")).replace("|", "\\|")
        lines.append(f"| `{column}` | {entry.get('Units', '')} | {text} |")
    return "\n".join(lines) + "\n"
