"""Visit metadata problems are listed with the fallback applied, never silent (dnqsm.analysis.cohort)."""

from __future__ import annotations

import pandas as pd
import pytest

from dnqsm.analysis.cohort import cohort_table


def _records(*keys):
    return [{"participant_id": f"sub-{s}", "session_id": f"ses-{v}", "status": "ok", "measures": {}} for s, v in keys]


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_malformed_acq_time_falls_back_to_age_and_is_listed(tmp_path):
    _write(tmp_path / "participants.tsv", "participant_id\tgroup\tage\nsub-01\tcontrol\t40\n")
    _write(
        tmp_path / "sub-01" / "sub-01_sessions.tsv",
        "session_id\tacq_time\tage\nses-1\t2020-01-01T10:00:00\t40\nses-2\t2021-13-45T17:47:00\t41.5\n",
    )
    problems = []
    table = cohort_table(_records(("01", "1"), ("01", "2")), tmp_path, problems)
    assert table.set_index("session_id").loc["ses-2", "years_since_baseline"] == pytest.approx(1.5)
    assert problems == [
        {
            "file": str(tmp_path / "sub-01" / "sub-01_sessions.tsv"),
            "row": 2,
            "column": "acq_time",
            "value": "2021-13-45T17:47:00",
            "problem": "not an ISO 8601 date and time; years since baseline taken from the age at the visit instead",
        }
    ]


def test_missing_files_and_rows_are_listed(tmp_path):
    _write(tmp_path / "sub-01" / "sub-01_sessions.tsv", "session_id\tacq_time\nses-1\t2020-01-01T10:00:00\n")
    problems = []
    table = cohort_table(_records(("01", "1"), ("01", "2"), ("02", "1")), tmp_path, problems)
    assert len(table) == 3
    found = pd.DataFrame(problems)
    assert found.loc[0, "problem"].startswith("file missing: group, sex and baseline age are unknown")
    assert (found.value == "ses-2").sum() == 1 and "session not listed" in found.loc[
        found.value == "ses-2", "problem"
    ].item()
    assert "file missing" in found.loc[found.value == "ses-1", "problem"].item()  # sub-02 has no sessions.tsv
