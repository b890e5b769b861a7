"""The method comparison table and the validation sidecars, on hand-made numbers with known answers."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from dnqsm.analysis.agreement import comparison_markdown, comparison_table, session_agreement, sidecar, summarise
from dnqsm.analysis.metrics import volume_agreement


def sessions_of(method: str, left_dice, right_dice, volumes, manual, seconds, status=None) -> pd.DataFrame:
    n = len(left_dice)
    return pd.DataFrame(
        {
            "participant_id": [f"sub-{i:02d}" for i in range(n)],
            "session_id": ["ses-01"] * n,
            "method": method,
            "status": status or ["ok"] * n,
            "left_dice": left_dice,
            "right_dice": right_dice,
            "left_hd95_mm": np.arange(n, dtype=float),
            "right_hd95_mm": np.arange(n, dtype=float) + 1,
            "left_volume_mm3": volumes,
            "right_volume_mm3": volumes,
            "left_manual_volume_mm3": manual,
            "right_manual_volume_mm3": manual,
            "seconds": seconds,
            "device": "cpu",
        }
    )


MANUAL = [900.0, 1000.0, 1100.0, 1200.0, 1300.0, 1000.0]
DL = sessions_of(
    "nnunet",
    [0.90, 0.92, 0.88, 0.91, 0.93, 0.92],
    [0.9] * 6,
    [910.0, 990.0, 1120.0, 1190.0, 1310.0, 1010.0],
    MANUAL,
    [4.0, 5.0, 6.0, 5.0, 5.0, 5.0],
)
ATLAS = sessions_of(
    "atlas",
    [0.70, 0.75, 0.0, 0.72, 0.69, 0.74],
    [0.8] * 6,
    [800.0, 1100.0, 0.0, 1000.0, 1500.0, 900.0],
    MANUAL,
    [20.0, 30.0, 1.0, 25.0, 25.0, 25.0],
    status=["ok", "ok", "failed", "ok", "ok", "ok"],
)


def test_comparison_table_has_the_papers_numbers():
    table = comparison_table(pd.concat([ATLAS, DL]))
    assert list(zip(table.method, table.side)) == [
        ("nnunet", "left"),
        ("nnunet", "right"),
        ("atlas", "left"),
        ("atlas", "right"),
    ], "reference method first"
    atlas_left = table[(table.method == "atlas") & (table.side == "left")].iloc[0]
    assert atlas_left.n == 6 and atlas_left.n_failed == 1
    assert atlas_left.dice_mean == pytest.approx(np.mean(ATLAS.left_dice))
    assert atlas_left.dice_sd == pytest.approx(np.std(ATLAS.left_dice, ddof=1))
    assert atlas_left.dice_p_vs_reference == pytest.approx(stats.wilcoxon(ATLAS.left_dice, DL.left_dice).pvalue)
    expected = volume_agreement(np.array(MANUAL), ATLAS.left_volume_mm3.to_numpy())
    assert atlas_left.volume_icc_a1 == pytest.approx(expected["icc_a1"])
    assert atlas_left.volume_pearson_r == pytest.approx(expected["pearson_r"])
    assert atlas_left.seconds_per_session_median == 25.0 and atlas_left.hd95_median_mm == 2.5
    dl_left = table[(table.method == "nnunet") & (table.side == "left")].iloc[0]
    assert np.isnan(dl_left.dice_p_vs_reference), "the reference has no p-value against itself"
    assert dl_left.volume_icc_a1 > 0.95 > atlas_left.volume_icc_a1
    # the same difference on every session still gives a p-value
    right = table[(table.method == "atlas") & (table.side == "right")].iloc[0]
    assert right.dice_mean == pytest.approx(0.8) and not np.isnan(right.dice_p_vs_reference)


def test_comparison_markdown_shows_every_row():
    text = comparison_markdown(comparison_table(pd.concat([DL, ATLAS])), "synthetic test cohort")
    rows = [line for line in text.splitlines() if line.startswith("| ") and "Method" not in line]
    assert len(rows) == 4 and "0.91 ± 0.02" in rows[0] and "ref." in rows[0]
    assert "multi-atlas" in rows[2] and "6 (1)" in rows[2] and "25.0 s (cpu)" in rows[2]


def test_every_validation_column_has_a_description():
    for table in (DL, comparison_table(pd.concat([DL, ATLAS])), summarise(DL.assign(site="A"), "nnunet")):
        described = sidecar(table)
        assert set(described) == set(table.columns)
        assert all(entry["Description"] != column.replace("_", " ") for column, entry in described.items()), described
    assert sidecar(DL)["left_volume_mm3"]["Units"] == "mm^3"


def test_a_failed_session_scores_as_an_empty_label(tmp_path):
    labels = np.zeros((10, 10, 10), np.uint8)
    labels[2:4, 2:4, 2:4] = 1
    labels[6:8, 6:8, 6:8] = 2
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    nib.save(nib.Nifti1Image(labels, affine), tmp_path / "manual.nii.gz")
    nib.save(nib.Nifti1Image(labels.astype(np.float32) * 100, affine), tmp_path / "chi.nii.gz")
    row = session_agreement(None, tmp_path / "manual.nii.gz", tmp_path / "chi.nii.gz")
    assert (
        row["left_dice"] == 0.0
        and row["left_volume_mm3"] == 0.0
        and row["left_manual_volume_mm3"] == pytest.approx(64.0)
    )
    assert row["right_manual_chi_mean_ppb"] == pytest.approx(200.0) and np.isnan(row["right_chi_mean_ppb"])
    same = session_agreement(tmp_path / "manual.nii.gz", tmp_path / "manual.nii.gz", tmp_path / "chi.nii.gz")
    assert same["left_dice"] == 1.0 and same["right_hd95_mm"] == 0.0
