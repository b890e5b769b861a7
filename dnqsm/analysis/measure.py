"""Dentate measures per side from a ppb image and its label image (left 1, right 2) on the same grid."""

from __future__ import annotations

from typing import Any

import nibabel as nib
import numpy as np
from scipy import ndimage

from dnqsm.labels import NUCLEUS_CONNECTIVITY, SIDES
from dnqsm.units import OUTPUT_UNIT

#: Column name -> (unit, description) of every per-session measure; the cohort table's sidecar uses it.
MEASURES: dict[str, tuple[str, str]] = {
    "volume_mm3": ("mm^3", "dentate volume: labelled voxels x voxel volume"),
    "chi_mean_ppb": (OUTPUT_UNIT, "mean susceptibility over the (optionally eroded) dentate mask"),
    "chi_median_ppb": (OUTPUT_UNIT, "median susceptibility over the (optionally eroded) dentate mask"),
    "chi_sd_ppb": (OUTPUT_UNIT, "standard deviation of susceptibility over the (optionally eroded) dentate mask"),
    "chi_mass_ppb_mm3": (f"{OUTPUT_UNIT}*mm^3", "susceptibility mass: mean chi x volume (proxy of total iron)"),
    "centroid_x_mm": ("mm", "centroid, world (scanner RAS) x"),
    "centroid_y_mm": ("mm", "centroid, world (scanner RAS) y"),
    "centroid_z_mm": ("mm", "centroid, world (scanner RAS) z"),
    "components": ("count", "connected components the network predicted on this side (1 kept)"),
    "chi_voxels": ("count", "voxels the chi statistics use (after erosion)"),
}
ASYMMETRY: dict[str, tuple[str, str]] = {
    "asymmetry_volume": ("ratio", "left-right asymmetry of volume: 2 (L - R) / (L + R)"),
    "asymmetry_chi_mean": ("ratio", "left-right asymmetry of mean chi: 2 (L - R) / (L + R)"),
}
TOTALS: dict[str, tuple[str, str]] = {
    "total_volume_mm3": ("mm^3", "left + right volume"),
    "total_chi_mass_ppb_mm3": (f"{OUTPUT_UNIT}*mm^3", "left + right susceptibility mass"),
}


def asymmetry(left: float | None, right: float | None) -> float | None:
    """2 (L - R) / (L + R); None when undefined (a side missing or a zero sum)."""
    if left is None or right is None or not np.isfinite(left) or not np.isfinite(right) or left + right == 0:
        return None
    return float(2 * (left - right) / (left + right))


def side_measures(chi_ppb: np.ndarray, mask: np.ndarray, affine: np.ndarray, erosion_voxels: int = 0) -> dict[str, Any]:
    """Measures of one side; chi statistics on the mask eroded by ``erosion_voxels`` (never to nothing)."""
    voxel_mm3 = float(abs(np.linalg.det(affine[:3, :3])))
    n = int(mask.sum())
    if n == 0:
        return {
            key: (0.0 if key == "volume_mm3" else 0 if key in ("components", "chi_voxels") else None)
            for key in MEASURES
        }
    # everything below happens in the nucleus's bounding box (a few thousand of the image's millions of
    # voxels): the same voxels, in the same order, as over the whole image
    box = ndimage.find_objects(mask.astype(np.uint8))[0]
    mask, chi_ppb = mask[box], chi_ppb[box]
    core = ndimage.binary_erosion(mask, iterations=erosion_voxels) if erosion_voxels else mask
    if not core.any():
        core = mask  # a DN thinner than the erosion: measure it whole rather than report nothing
    values = chi_ppb[core].astype(np.float64)
    volume = n * voxel_mm3
    corner = np.array([s.start for s in box])
    centroid = nib.affines.apply_affine(affine, (np.argwhere(mask) + corner).mean(0))
    mean = float(values.mean())
    return {
        "volume_mm3": volume,
        "chi_mean_ppb": mean,
        "chi_median_ppb": float(np.median(values)),
        "chi_sd_ppb": float(values.std(ddof=1)) if values.size > 1 else 0.0,
        "chi_mass_ppb_mm3": mean * volume,
        "centroid_x_mm": float(centroid[0]),
        "centroid_y_mm": float(centroid[1]),
        "centroid_z_mm": float(centroid[2]),
        "components": int(ndimage.label(mask, structure=NUCLEUS_CONNECTIVITY)[1]),
        "chi_voxels": int(core.sum()),
    }


def measure(
    chi: nib.Nifti1Image,
    dseg: nib.Nifti1Image,
    erosion_voxels: int = 0,
    predicted_components: dict[str, int] | None = None,
) -> dict[str, Any]:
    """Flat dict of measures: ``left_<measure>``, ``right_<measure>``, totals and asymmetry indices.

    ``predicted_components`` (per side, from the segmentation record) replaces the component count of
    the final labels, which keep one component per side."""
    if chi.shape[:3] != dseg.shape[:3] or not np.allclose(chi.affine, dseg.affine, atol=1e-4):
        raise ValueError("image and labels are not on the same grid")
    data = chi.get_fdata(dtype=np.float32)
    labels = np.asarray(dseg.dataobj).astype(np.int16)
    out: dict[str, Any] = {}
    for side, label in SIDES.items():
        for key, value in side_measures(data, labels == label, chi.affine, erosion_voxels).items():
            out[f"{side}_{key}"] = value
        if predicted_components is not None:
            out[f"{side}_components"] = int(predicted_components[side])
    out["total_volume_mm3"] = out["left_volume_mm3"] + out["right_volume_mm3"]
    masses = [out[f"{s}_chi_mass_ppb_mm3"] for s in SIDES]
    out["total_chi_mass_ppb_mm3"] = None if None in masses else float(sum(masses))
    out["asymmetry_volume"] = asymmetry(out["left_volume_mm3"], out["right_volume_mm3"])
    out["asymmetry_chi_mean"] = asymmetry(out["left_chi_mean_ppb"], out["right_chi_mean_ppb"])
    return out


def measure_columns() -> dict[str, tuple[str, str]]:
    """Every measure column in table order, with (unit, description)."""
    columns = {f"{side}_{key}": (unit, f"{side}: {text}") for side in SIDES for key, (unit, text) in MEASURES.items()}
    return {**columns, **TOTALS, **ASYMMETRY}
