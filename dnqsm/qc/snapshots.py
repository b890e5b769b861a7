"""QC snapshot per session: each dentate in three world-aligned views with label contours, plus a
zoomed-out row showing where the localization box sits in the whole image.

Views are neurological (the subject's left on the picture's left) and share one fixed χ window, so
snapshots of different sessions can be compared at a glance.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from dnqsm.labels import SIDES
from dnqsm.qc.views import VIEWS, reslice, save_figure, world_centroid  # noqa: E402

#: Grey-scale window of every snapshot, in ppb.
CHI_WINDOW_PPB = (-120.0, 220.0)
SIDE_COLOURS = {1: "#ff4d4d", 2: "#33b5ff"}  # left red, right blue
ZOOM_HALF_WIDTH_MM = 20.0
OVERVIEW_HALF_WIDTH_MM = 95.0


def _letters(axis: int) -> tuple[str, str]:
    """Letters at the low and high end of a RAS world axis: x grows to the subject's Right,
    y to Anterior, z to Superior."""
    return {0: ("L", "R"), 1: ("P", "A"), 2: ("I", "S")}[axis]


def _draw_view(
    ax,
    chi: np.ndarray,
    labels: np.ndarray | None,
    affine: np.ndarray,
    center,
    view: str,
    half_width: float,
    step: float,
    box: dict | None = None,
    title: str = "",
) -> None:
    image = reslice(chi, affine, center, view, half_width, step, order=1)
    extent = (-half_width, half_width, -half_width, half_width)
    ax.imshow(
        image,
        cmap="gray",
        vmin=CHI_WINDOW_PPB[0],
        vmax=CHI_WINDOW_PPB[1],
        origin="lower",
        extent=extent,
        interpolation="nearest",
    )
    h_axis, v_axis, _ = VIEWS[view]
    if labels is not None:
        lab = reslice(labels, affine, center, view, half_width, step, order=0)
        grid = np.linspace(-half_width, half_width, lab.shape[0])
        for value, colour in SIDE_COLOURS.items():
            mask = (np.nan_to_num(lab) == value).astype(float)
            if mask.any():
                ax.contour(grid, grid, mask, levels=[0.5], colors=[colour], linewidths=1.0)
    if box is not None:
        lo, hi = np.asarray(box["min_mm"]), np.asarray(box["max_mm"])
        x0, y0 = lo[h_axis] - center[h_axis], lo[v_axis] - center[v_axis]
        ax.add_patch(
            Rectangle(
                (x0, y0),
                hi[h_axis] - lo[h_axis],
                hi[v_axis] - lo[v_axis],
                fill=False,
                edgecolor="#ffd60a",
                linewidth=1.2,
                linestyle="--",
            )
        )
    low, high = _letters(h_axis)
    ax.text(0.02, 0.5, low, color="w", transform=ax.transAxes, va="center", ha="left", fontsize=8)
    ax.text(0.98, 0.5, high, color="w", transform=ax.transAxes, va="center", ha="right", fontsize=8)
    low, high = _letters(v_axis)
    ax.text(0.5, 0.02, low, color="w", transform=ax.transAxes, va="bottom", ha="center", fontsize=8)
    ax.text(0.5, 0.98, high, color="w", transform=ax.transAxes, va="top", ha="center", fontsize=8)
    ax.set_title(title, fontsize=8, color="w")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_facecolor("black")


def overview_centre(labels: np.ndarray, affine: np.ndarray, box: dict | None, view: str) -> tuple[np.ndarray, str]:
    """Where an overview panel is cut (world mm), and a note of what it passes through. Axial and
    coronal cut through the localization box's centre (the labels' centroid without a box, the image's
    centre without either), which holds both nuclei; that centre lies on the midline between them, so
    the sagittal panel is cut through the left nucleus instead (the right one when only it was found)."""
    if box is not None:
        centre = (np.asarray(box["min_mm"], float) + np.asarray(box["max_mm"], float)) / 2
    else:
        centre = (
            world_centroid(labels > 0, affine)
            if labels.any()
            else nib.affines.apply_affine(affine, (np.asarray(labels.shape[:3], float) - 1) / 2)
        )
    if view != "sagittal":
        return centre, ""
    for value, side in ((1, "left"), (2, "right")):
        if (labels == value).any():
            centre = centre.copy()
            centre[0] = world_centroid(labels == value, affine)[0]
            return centre, f" through the {side} DN"
    return centre, ""


def render_snapshot(
    out_png: str | Path,
    chi: nib.Nifti1Image,
    dseg: nib.Nifti1Image,
    title: str,
    box: dict | None = None,
    lines: list[str] | None = None,
    review_reasons: list[str] | None = None,
) -> Path:
    """Write the QC PNG of one segmented session (atomically); a session under review says so, and
    why, in its title."""
    data = chi.get_fdata(dtype=np.float32)
    labels = np.asarray(dseg.dataobj).astype(np.uint8)
    affine = chi.affine
    fig, axes = plt.subplots(3, 3, figsize=(9, 9.6), facecolor="black")
    views = ("axial", "coronal", "sagittal")
    # Row 1: overview with the localization box, through its centre (sagittal: through a nucleus)
    for ax, view in zip(axes[0], views):
        centre, through = overview_centre(labels, affine, box, view)
        _draw_view(
            ax,
            data,
            labels,
            affine,
            centre,
            view,
            OVERVIEW_HALF_WIDTH_MM,
            1.0,
            box,
            f"{view}{through}: localization box",
        )
    for row, (side, value) in zip(axes[1:], SIDES.items()):
        mask = labels == value
        for ax, view in zip(row, views):
            if mask.any():
                _draw_view(
                    ax,
                    data,
                    labels,
                    affine,
                    world_centroid(mask, affine),
                    view,
                    ZOOM_HALF_WIDTH_MM,
                    0.25,
                    title=f"{side} DN, {view}",
                )
            else:
                ax.set_facecolor("black")
                ax.set_xticks([])
                ax.set_yticks([])
                ax.text(
                    0.5,
                    0.5,
                    f"no {side} DN found",
                    color="#ff9f0a",
                    ha="center",
                    va="center",
                    transform=ax.transAxes,
                    fontsize=11,
                )
    header = title + ("\n" + "   ".join(lines) if lines else "")
    if review_reasons:
        reasons = "\n".join(textwrap.wrap("NEEDS REVIEW: " + "; ".join(review_reasons), 120)[:3])
        fig.suptitle(header, color="w", fontsize=10, y=0.995)
        fig.text(0.5, 0.955, reasons, color="#ff9f0a", fontsize=8.5, ha="center", va="top")
    else:
        fig.suptitle(header, color="w", fontsize=10)
    fig.text(
        0.5,
        0.005,
        f"red: left DN (1)   blue: right DN (2)   dashed: localization box   "
        f"window {CHI_WINDOW_PPB[0]:g} to {CHI_WINDOW_PPB[1]:g} ppb   neurological view (L on left)",
        color="#bbbbbb",
        ha="center",
        va="bottom",
        fontsize=7.5,
    )
    fig.tight_layout(rect=(0, 0.02, 1, 0.92 if review_reasons else 0.95))
    return save_figure(fig, out_png)


def render_failure(out_png: str | Path, title: str, message: str, chi: nib.Nifti1Image | None = None) -> Path:
    """Write the QC PNG of a session that failed: the reason, and the image when it could be read."""
    wrapped = "\n".join(textwrap.wrap(message, 110))
    if chi is None:  # nothing to show but the reason
        fig = plt.figure(figsize=(9, 1.2 + 0.2 * wrapped.count("\n")), facecolor="black")
        fig.text(0.5, 0.5, f"{title}: FAILED\n{wrapped}", color="#ff9f0a", fontsize=9, ha="center", va="center")
        return save_figure(fig, out_png)
    fig, axes = plt.subplots(1, 3, figsize=(9, 3.8), facecolor="black")
    data = chi.get_fdata(dtype=np.float32)
    inside = np.argwhere(np.isfinite(data) & (data != 0))
    centre = nib.affines.apply_affine(chi.affine, inside.mean(0)) if len(inside) else np.zeros(3)
    for ax, view in zip(axes, ("axial", "coronal", "sagittal")):
        _draw_view(ax, data, None, chi.affine, centre, view, OVERVIEW_HALF_WIDTH_MM, 1.0, title=view)
    fig.suptitle(f"{title}: FAILED\n{wrapped}", color="#ff9f0a", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.78))
    return save_figure(fig, out_png)


def summary_lines(record: dict[str, Any]) -> list[str]:
    """One-line measures shown under a snapshot's title."""

    def fmt(value, spec):
        return "n/a" if value is None else format(value, spec)

    return [
        f"L {fmt(record.get('left_volume_mm3'), '.0f')} mm³, {fmt(record.get('left_chi_mean_ppb'), '.0f')} ppb",
        f"R {fmt(record.get('right_volume_mm3'), '.0f')} mm³, {fmt(record.get('right_chi_mean_ppb'), '.0f')} ppb",
    ]
