"""Agreement of the workflow's dentate labels with manual labels (left 1, right 2): per session and
per cohort, as the reference paper reports it (Dice, ICC and Pearson r of volumes), plus HD95 and
Bland-Altman limits; and the paper's method comparison (deep learning against the atlas baseline)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dnqsm.analysis.metrics import dice, hd95, volume_agreement
from dnqsm.io import column_doc, load_image
from dnqsm.labels import SIDES


@dataclass
class ManualReference:
    """A session's manual labels and chi map, loaded once however many methods are scored on them."""

    path: Path
    labels: np.ndarray  # 0 / 1 left / 2 right
    chi: np.ndarray  # ppb
    affine: np.ndarray
    spacing_mm: list[float]
    voxel_mm3: float


def load_reference(manual: str | Path, chi_ppb: str | Path) -> ManualReference:
    manual_img, chi_img = (load_image(p, allow_unknown_orientation=True) for p in (manual, chi_ppb))
    return ManualReference(
        Path(manual),
        np.rint(manual_img.get_fdata()).astype(int),
        chi_img.get_fdata(),
        manual_img.affine,
        [float(z) for z in manual_img.header.get_zooms()[:3]],
        float(abs(np.linalg.det(manual_img.affine[:3, :3]))),
    )


def agreement(predicted: str | Path | None, reference: ManualReference) -> dict[str, float]:
    """Dice, HD95 (mm), volume (mm^3) and mean chi (ppb) of both label sets, per side. ``predicted``
    None scores a session the method failed on as an empty segmentation (Dice 0, volume 0)."""
    ref = reference.labels
    if predicted:
        pred_img = load_image(predicted, allow_unknown_orientation=True)
        if pred_img.shape[:3] != ref.shape or not np.allclose(pred_img.affine, reference.affine, atol=1e-3):
            raise ValueError(f"{reference.path}: manual labels are not on the grid of {predicted}")
        pred = np.rint(pred_img.get_fdata()).astype(int)
    else:
        pred = np.zeros_like(ref)
    chi, voxel = reference.chi, reference.voxel_mm3
    row: dict[str, float] = {}
    for side, label in SIDES.items():
        p, r = pred == label, ref == label
        row[f"{side}_dice"] = dice(p, r)
        row[f"{side}_hd95_mm"] = hd95(p, r, reference.spacing_mm)
        row[f"{side}_volume_mm3"] = float(p.sum()) * voxel
        row[f"{side}_manual_volume_mm3"] = float(r.sum()) * voxel
        row[f"{side}_chi_mean_ppb"] = float(chi[p].mean()) if p.any() else np.nan
        row[f"{side}_manual_chi_mean_ppb"] = float(chi[r].mean()) if r.any() else np.nan
        row[f"{side}_volume_difference_mm3"] = row[f"{side}_volume_mm3"] - row[f"{side}_manual_volume_mm3"]
        row[f"{side}_chi_difference_ppb"] = row[f"{side}_chi_mean_ppb"] - row[f"{side}_manual_chi_mean_ppb"]
    return row


def session_agreement(predicted: str | Path | None, manual: str | Path, chi_ppb: str | Path) -> dict[str, float]:
    """:func:`agreement` of one method's labels with manual labels given as files."""
    return agreement(predicted, load_reference(manual, chi_ppb))


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
            row = {
                "method": method,
                "scope": scope,
                "value": value,
                "side": side,
                "n": len(ok),
                "dice_mean": ok[f"{side}_dice"].mean(),
                "dice_sd": ok[f"{side}_dice"].std(),
                "hd95_median_mm": ok[f"{side}_hd95_mm"].median(),
            }
            estimate, reference = ok[f"{side}_volume_mm3"].to_numpy(), ok[f"{side}_manual_volume_mm3"].to_numpy()
            agreement = (
                volume_agreement(reference, estimate) if len(ok) >= 3 else {"icc_a1": np.nan, "pearson_r": np.nan}
            )
            limits = (
                bland_altman(estimate, reference)
                if len(ok) >= 2
                else {"bias": np.nan, "loa_low": np.nan, "loa_high": np.nan}
            )
            row.update(
                {
                    "volume_icc_a1": agreement["icc_a1"],
                    "volume_pearson_r": agreement["pearson_r"],
                    **{f"volume_{k}_mm3": v for k, v in limits.items()},
                }
            )
            rows.append(row)
    return pd.DataFrame(rows)


# --- the method comparison (the paper's table: deep learning against the atlas baseline) ---------


def comparison_table(sessions: pd.DataFrame, reference: str = "nnunet") -> pd.DataFrame:
    """Method x side, as the paper reports it: Dice mean ± SD, the paired two-sided Wilcoxon
    signed-rank p-value of each method's Dice against ``reference``'s on the same sessions
    (pingouin.wilcoxon), HD95 median, volume ICC(A,1) and Pearson r against the manual volumes, and
    the median wall time per session. Failed sessions count as empty segmentations."""
    import pingouin as pg

    rows = []
    key = ["participant_id", "session_id"]
    for method in method_order(sessions, reference):
        part = sessions[sessions.method == method]
        for side in SIDES:
            dice_col = f"{side}_dice"
            row = {
                "method": method,
                "side": side,
                "n": len(part),
                "n_failed": int((part.status == "failed").sum()),
                "dice_mean": part[dice_col].mean(),
                "dice_sd": part[dice_col].std(),
                "dice_p_vs_reference": np.nan,
                "hd95_median_mm": part[f"{side}_hd95_mm"].median(),
            }
            if method != reference:
                paired = part[key + [dice_col]].merge(
                    sessions[sessions.method == reference][key + [dice_col]], on=key, suffixes=("", "_reference")
                )
                if len(paired) >= 2 and (paired[dice_col] != paired[f"{dice_col}_reference"]).any():
                    row["dice_p_vs_reference"] = float(
                        pg.wilcoxon(paired[dice_col], paired[f"{dice_col}_reference"])["p_val"].iloc[0]
                    )
            estimate, truth = part[f"{side}_volume_mm3"].to_numpy(), part[f"{side}_manual_volume_mm3"].to_numpy()
            agreement = volume_agreement(truth, estimate) if len(part) >= 3 else {"icc_a1": np.nan, "pearson_r": np.nan}
            row.update(
                {
                    "volume_icc_a1": agreement["icc_a1"],
                    "volume_pearson_r": agreement["pearson_r"],
                    "seconds_per_session_median": part["seconds"].median(),
                    "device": ", ".join(sorted(str(d) for d in part["device"].dropna().unique())),
                }
            )
            rows.append(row)
    return pd.DataFrame(rows)


def method_order(sessions: pd.DataFrame, reference: str = "nnunet") -> list[str]:
    """The methods of a comparison, the reference first (table rows, plot columns)."""
    return [reference] + sorted(set(sessions.method) - {reference})


METHOD_NAMES = {"nnunet": "nnU-Net two-step (dnqsm)", "atlas": "multi-atlas registration + JLF (antspyx)"}


def comparison_markdown(table: pd.DataFrame, title: str) -> str:
    """The comparison table as Markdown, in the paper's layout."""

    def number(value: float, digits: int = 2) -> str:
        return "n/a" if pd.isna(value) else f"{value:.{digits}f}"

    def p_value(value: float) -> str:
        return "ref." if pd.isna(value) else ("< 0.001" if value < 0.001 else f"{value:.3f}")

    lines = [
        f"**{title}**",
        "",
        "| Method | Side | n (failed) | Dice, mean ± SD | p (Dice, paired) | Volume ICC(A,1) | Volume r "
        "| HD95 median (mm) | Time per session |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in table.itertuples():
        lines.append(
            f"| {METHOD_NAMES.get(row.method, row.method)} | {row.side} | {row.n} ({row.n_failed}) | "
            f"{number(row.dice_mean)} ± {number(row.dice_sd)} | {p_value(row.dice_p_vs_reference)} | "
            f"{number(row.volume_icc_a1)} | {number(row.volume_pearson_r)} | {number(row.hd95_median_mm, 1)} | "
            f"{number(row.seconds_per_session_median, 1)} s ({row.device}) |"
        )
    return "\n".join(lines) + "\n"


# --- column descriptions: the JSON sidecars of the validation tables -----------------------------

_SIDE_COLUMNS = {
    "dice": ("", "Dice overlap with the manual label (0 for a failed session)"),
    "hd95_mm": ("mm", "95th-percentile symmetric Hausdorff distance to the manual label (medpy's pooled definition)"),
    "volume_mm3": ("mm^3", "volume of the method's label"),
    "manual_volume_mm3": ("mm^3", "volume of the manual label"),
    "chi_mean_ppb": ("ppb", "mean susceptibility within the method's label"),
    "manual_chi_mean_ppb": ("ppb", "mean susceptibility within the manual label"),
    "volume_difference_mm3": ("mm^3", "method minus manual volume"),
    "chi_difference_ppb": ("ppb", "method minus manual mean susceptibility"),
}
_COLUMNS = {
    "participant_id": ("", "participant"),
    "session_id": ("", "session"),
    "status": ("", "ok, review (segmented, a plausibility check doubts it) or failed (scored as an empty label)"),
    "manual_labels": ("", "the manual label file"),
    "group": ("", "diagnostic group (participants.tsv)"),
    "site": ("", "acquisition site (participants.tsv)"),
    "method": ("", "segmentation method: nnunet (two-step deep learning) or atlas (registration baseline)"),
    "seconds": ("s", "wall time the method spent on this session (models or atlases loaded once per job, not counted)"),
    "device": ("", "where the method ran (cpu or cuda)"),
    "scope": ("", "all sessions, or one site or group"),
    "value": ("", "the site or group (all for the whole cohort)"),
    "side": ("", "left (label 1) or right (label 2) dentate nucleus"),
    "n": ("", "sessions"),
    "n_failed": ("", "sessions the method failed on (scored as empty labels)"),
    "dice_mean": ("", "mean Dice"),
    "dice_sd": ("", "standard deviation of Dice"),
    "dice_p_vs_reference": (
        "",
        "two-sided Wilcoxon signed-rank test of Dice against the nnunet method on the same "
        "sessions (pingouin.wilcoxon); empty for the reference",
    ),
    "hd95_median_mm": ("mm", "median HD95"),
    "volume_icc_a1": (
        "",
        "ICC(A,1) of volumes with the manual volumes: two-way random effects, absolute agreement, "
        "single rater (pingouin ICC2)",
    ),
    "volume_pearson_r": ("", "Pearson correlation of volumes with the manual volumes"),
    "volume_bias_mm3": ("mm^3", "Bland-Altman bias: mean of method minus manual volume"),
    "volume_loa_low_mm3": ("mm^3", "Bland-Altman lower 95 % limit of agreement (bias - 1.96 SD)"),
    "volume_loa_high_mm3": ("mm^3", "Bland-Altman upper 95 % limit of agreement (bias + 1.96 SD)"),
    "seconds_per_session_median": ("s", "median wall time per session"),
}


def sidecar(table: pd.DataFrame) -> dict[str, Any]:
    """BIDS-style JSON sidecar: a description (and unit) for every column of a validation table."""
    out: dict[str, Any] = {}
    for column in table.columns:
        side, _, rest = column.partition("_")
        if side in SIDES and rest in _SIDE_COLUMNS:
            unit, text = _SIDE_COLUMNS[rest]
            text = f"{side} dentate nucleus: {text}"
        else:
            unit, text = _COLUMNS.get(column, ("", column.replace("_", " ")))
        out[column] = column_doc(text, unit)
    return out
