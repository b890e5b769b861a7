"""QC flags and the ratings file, on hand-made cohort tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dnqsm.qc.page import _script_json, page_records, read_ratings, session_flags


def cohort(n=8):
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "participant_id": [f"sub-{i:02d}" for i in range(n)],
            "session_id": "ses-01",
            "group": "control",
            "site": "A",
            "status": "ok",
            "error": None,
            "left_volume_mm3": 1000 + rng.normal(0, 20, n),
            "right_volume_mm3": 1000 + rng.normal(0, 20, n),
            "left_chi_mean_ppb": 80 + rng.normal(0, 2, n),
            "right_chi_mean_ppb": 80 + rng.normal(0, 2, n),
            "asymmetry_volume": 0.0,
            "missing_sides": "",
            "left_components": 1,
            "right_components": 1,
            "box_touches_image_edge": False,
        }
    )


def test_each_flag_fires_on_its_own_session():
    table = cohort()
    table.loc[1, "left_volume_mm3"] = 1600  # robust outlier in its group
    table.loc[2, ["missing_sides", "right_volume_mm3"]] = ["right", 0.0]
    table.loc[3, "asymmetry_volume"] = -0.55
    table.loc[4, "right_components"] = 3
    table.loc[5, "box_touches_image_edge"] = True
    table.loc[6, ["status", "error"]] = ["failed", "x.nii.gz: all values are zero"]
    flags = session_flags(table)
    assert flags[0] == [] and flags[7] == []
    assert any(f.startswith("outlier left volume") for f in flags[1])
    assert "missing side: right" in flags[2]
    assert flags[3] == ["L/R asymmetry -0.55"]
    assert flags[4] == ["several components"]
    assert flags[5] == ["box at image edge"]
    assert flags[6] == ["failed"]


def test_small_groups_get_no_outlier_flags():
    table = cohort(4)
    table.loc[1, "left_volume_mm3"] = 1600
    assert all(f == [] for f in session_flags(table))


def test_page_data_cannot_close_its_script_element():
    table = cohort(2)
    table.loc[0, "group"] = "</script><script>alert(1)</script>"
    text = _script_json({"sessions": page_records(table, {}, None)})
    assert "</script>" not in text and "<" not in text and "\\u003c/script\\u003e" in text


def test_ratings_file_is_validated_naming_the_file(tmp_path):
    good = tmp_path / "qc_ratings.tsv"
    good.write_text("participant_id\tsession_id\trating\tcomment\nsub-01\tses-01\tfail\tleak\nsub-02\tses-01\tpass\t\n")
    ratings = read_ratings(good)
    assert ratings.rating.tolist() == ["fail", "pass"] and ratings.comment.tolist() == ["leak", ""]
    bad = tmp_path / "bad.tsv"
    bad.write_text("participant_id\tsession_id\trating\nsub-01\tses-01\tmaybe\n")
    with pytest.raises(ValueError, match=r"bad.tsv: unknown rating\(s\) \['maybe'\]"):
        read_ratings(bad)
    with pytest.raises(ValueError, match="missing.tsv: QC ratings file not found"):
        read_ratings(tmp_path / "missing.tsv")
    no_rating = tmp_path / "columns.tsv"
    no_rating.write_text("participant_id\tsession_id\nsub-01\tses-01\n")
    with pytest.raises(ValueError, match=r"columns.tsv: missing column\(s\) \['rating'\]"):
        read_ratings(no_rating)


def test_sessions_under_review_are_flagged_and_carry_their_reasons():
    table = cohort()
    table["review_reasons"] = ""
    table.loc[2, ["status", "review_reasons"]] = [
        "review",
        "no right DN was found; left DN volume 12 mm³ is below the plausible 250 mm³",
    ]
    table.loc[1, "left_volume_mm3"] = 1600  # still an outlier among the sessions that have measures
    flags = session_flags(table)
    assert flags[2] == ["needs review"]
    assert any(f.startswith("outlier left volume") for f in flags[1])
    records = page_records(table, {}, None)
    assert records[2]["status"] == "review"
    assert records[2]["review_reasons"] == [
        "no right DN was found",
        "left DN volume 12 mm³ is below the plausible 250 mm³",
    ]
    assert records[0]["review_reasons"] == []
