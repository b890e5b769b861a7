"""Agreement of the workflow's dentate labels with manual labels (left 1, right 2): per session and
per cohort, as the reference paper reports it (Dice, ICC and Pearson r of volumes), plus HD95 and
Bland-Altman limits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from dnqsm.io import load_image
from dnqsm.metrics import dice, hd95, volume_agreement

SIDES = {"left": 1, "right": 2}


def session_agreement(predicted: str | Path, manual: str | Path, chi_ppb: str | Path) -> dict[str, float]:
    """Dice, HD95 (mm), volume (mm^3) and mean chi (ppb) of both label sets, per side."""
    pred_img, manual_img, chi_img = (load_image(p, allow_unknown_orientation=True) for p in (predicted, manual, chi_ppb))
    if pred_img.shape != manual_img.shape or not np.allclose(pred_img.affine, manual_img.affine, atol=1e-3):
        raise ValueError(f"{manual}: manual labels are not on the grid of {predicted}")
    pred, ref = np.rint(pred_img.get_fdata()).astype(int), np.rint(manual_img.get_fdata()).astype(int)
    chi = chi_img.get_fdata()
    spacing = [float(z) for z in pred_img.header.get_zooms()[:3]]
    voxel = float(abs(np.linalg.det(pred_img.affine[:3, :3])))
    row: dict[str, float] = {}
    for side, label in SIDES.items():
        p, r = pred == label, ref == label
        row[f"{side}_dice"] = dice(p, r)
        row[f"{side}_hd95_mm"] = hd95(p, r, spacing)
        row[f"{side}_volume_mm3"] = float(p.sum()) * voxel
        row[f"{side}_manual_volume_mm3"] = float(r.sum()) * voxel
        row[f"{side}_chi_mean_ppb"] = float(chi[p].mean()) if p.any() else np.nan
        row[f"{side}_manual_chi_mean_ppb"] = float(chi[r].mean()) if r.any() else np.nan
        row[f"{side}_volume_difference_mm3"] = row[f"{side}_volume_mm3"] - row[f"{side}_manual_volume_mm3"]
        row[f"{side}_chi_difference_ppb"] = row[f"{side}_chi_mean_ppb"] - row[f"{side}_manual_chi_mean_ppb"]
    return row


def bland_altman(estimate: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Bias and 95 % limits of agreement (mean difference ± 1.96 SD of the differences)."""
    diff = np.asarray(estimate, float) - np.asarray(reference, float)
    bias, sd = float(diff.mean()), float(diff.std(ddof=1)) if len(diff) > 1 else float("nan")
    return {"bias": bias, "loa_low": bias - 1.96 * sd, "loa_high": bias + 1.96 * sd}


def summarise(sessions: pd.DataFrame, method: str = "dnqsm") -> pd.DataFrame:
    """Per side, for the whole cohort and each site and group: Dice mean ± SD, HD95 median, volume
    ICC(A,1) (pingouin: two-way random effects, absolute agreement, single rater) and Pearson r, and
    the Bland-Altman bias and limits of the volumes."""
    rows = []
    scopes = [("all", "all", sessions)]
    for column in ("site", "group"):
        if column in sessions:
            scopes += [(column, str(value), part) for value, part in sessions.groupby(column)]
    for scope, value, part in scopes:
        for side in SIDES:
            ok = part.dropna(subset=[f"{side}_dice"])
            row = {"method": method, "scope": scope, "value": value, "side": side, "n": len(ok),
                   "dice_mean": ok[f"{side}_dice"].mean(), "dice_sd": ok[f"{side}_dice"].std(),
                   "hd95_median_mm": ok[f"{side}_hd95_mm"].median()}
            estimate, reference = ok[f"{side}_volume_mm3"].to_numpy(), ok[f"{side}_manual_volume_mm3"].to_numpy()
            agreement = volume_agreement(reference, estimate) if len(ok) >= 3 else {"icc_a1": np.nan, "pearson_r": np.nan}
            limits = bland_altman(estimate, reference) if len(ok) >= 2 else {"bias": np.nan, "loa_low": np.nan, "loa_high": np.nan}
            row.update({"volume_icc_a1": agreement["icc_a1"], "volume_pearson_r": agreement["pearson_r"],
                        **{f"volume_{k}_mm3": v for k, v in limits.items()}})
            rows.append(row)
    return pd.DataFrame(rows)
