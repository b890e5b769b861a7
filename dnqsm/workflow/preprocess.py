"""Per-session preprocessing: validate a QSM image, settle its unit, convert to ppb, record what was done.

The preprocessed image keeps the input's grid, affine and orientation; only values change (to ppb,
float32, NaN and infinities outside the brain set to 0). Everything else reads this image.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from dnqsm.io import InputError, load_image
from dnqsm.units import OUTPUT_UNIT, PPB_PER_UNIT, check_unit

#: Plausible 99th percentile of |chi| over brain voxels, in ppb. Deep-nuclei and vein values
#: (DOMAIN.md) put real maps at roughly 60-400 ppb; the range is wide on purpose.
PLAUSIBLE_P99_PPB = (5.0, 2000.0)
UNIT_POLICIES = ("auto", "sidecar", "ppm", "ppb")


def robust_p99(data: np.ndarray) -> float:
    """99th percentile of |value| over finite non-zero voxels (the brain of a masked QSM map)."""
    values = np.abs(data[np.isfinite(data) & (data != 0)])
    return float(np.percentile(values, 99)) if values.size else 0.0


def sidecar_unit(image_path: str | Path) -> str | None:
    """The ``Units`` of the image's JSON sidecar (BIDS), lower-cased, if any."""
    name = Path(image_path).name
    for ext in (".nii.gz", ".nii"):
        if name.endswith(ext):
            sidecar = Path(image_path).with_name(name[: -len(ext)] + ".json")
            break
    else:
        return None
    if not sidecar.exists():
        return None
    try:
        units = json.loads(sidecar.read_text()).get("Units")
    except (json.JSONDecodeError, AttributeError) as exc:
        raise InputError(f"{sidecar}: cannot read JSON sidecar ({exc})") from None
    return str(units).strip().lower() if units else None


def plausible(p99: float, unit: str) -> bool:
    low, high = PLAUSIBLE_P99_PPB
    return low <= p99 * PPB_PER_UNIT[unit] <= high


def settle_unit(path: str | Path, p99: float, policy: str) -> tuple[str, str]:
    """Decide the input unit under ``policy``; returns (unit, how it was decided). Raises InputError.

    - ``ppm``/``ppb``: the user's word, checked against the values;
    - ``sidecar``: the BIDS sidecar's ``Units`` must exist;
    - ``auto``: the sidecar when present, else whichever unit makes the values plausible.
    """
    if policy not in UNIT_POLICIES:
        raise ValueError(f"unknown unit policy {policy!r}; expected one of {UNIT_POLICIES}")
    declared = sidecar_unit(path) if policy in ("auto", "sidecar") else None
    if declared is not None and declared not in PPB_PER_UNIT:
        raise InputError(
            f"{path}: sidecar Units {declared!r} is not a susceptibility unit dnqsm knows ({', '.join(PPB_PER_UNIT)})"
        )
    if policy == "sidecar" and declared is None:
        raise InputError(f"{path}: units.input is 'sidecar' but the image has no JSON sidecar with 'Units'")
    if policy in ("ppm", "ppb"):
        unit, source = check_unit(policy), "config"
    elif declared is not None:
        unit, source = declared, "sidecar"
    else:
        candidates = [u for u in PPB_PER_UNIT if plausible(p99, u)]
        if len(candidates) != 1:
            raise InputError(
                f"{path}: cannot tell the unit from the values (99th percentile of |chi| = {p99:.4g}); "
                "add 'Units' to the JSON sidecar or set units.input to ppm or ppb"
            )
        unit, source = candidates[0], "detected from values"
    if not plausible(p99, unit):
        low, high = PLAUSIBLE_P99_PPB
        raise InputError(
            f"{path}: values are implausible for unit {unit} ({source}): 99th percentile of |chi| is "
            f"{p99 * PPB_PER_UNIT[unit]:.4g} ppb, expected {low:g}-{high:g} ppb; "
            "check the unit or the image's scaling"
        )
    return unit, source


def preprocess(
    path: str | Path, unit_policy: str = "auto", allow_unknown_orientation: bool = False
) -> tuple[nib.Nifti1Image, dict[str, Any]]:
    """Validate and convert one QSM image; returns the ppb image and the record of what was done.

    An image whose sform and qform codes are both 0 is refused unless ``allow_unknown_orientation``:
    then its default (fallback) affine is taken as scanner space and the record says so."""
    img = load_image(path, allow_unknown_orientation=allow_unknown_orientation)
    unknown_orientation = int(img.header["sform_code"]) == 0 and int(img.header["qform_code"]) == 0
    data = img.get_fdata(dtype=np.float32)
    nonfinite = ~np.isfinite(data)
    p99 = robust_p99(data)
    unit, source = settle_unit(path, p99, unit_policy)
    factor = PPB_PER_UNIT[unit]
    out = np.where(nonfinite, np.float32(0), data * np.float32(factor)).astype(np.float32)
    header = img.header.copy()
    header.set_data_dtype(np.float32)
    header.set_slope_inter(1.0, 0.0)
    header.set_xyzt_units("mm")
    preprocessed = nib.Nifti1Image(out, img.affine, header)
    preprocessed.set_sform(img.get_sform(), int(img.header["sform_code"]) or 1)
    preprocessed.set_qform(img.get_qform(), int(img.header["qform_code"]) or 1)
    zooms = [round(float(z), 4) for z in img.header.get_zooms()[:3]]
    axes = np.abs(img.affine[:3, :3] / np.sqrt((img.affine[:3, :3] ** 2).sum(0)))
    record = {
        "Sources": [str(Path(path).absolute())],
        "input_unit": unit,
        "input_unit_source": source,
        "Units": OUTPUT_UNIT,
        "scale_to_ppb": factor,
        "orientation": "".join(nib.aff2axcodes(img.affine)),
        "orientation_assumed": unknown_orientation,  # sform/qform codes 0, used as scanner space on request
        "obliquity_deg": round(float(np.degrees(np.arccos(np.clip(axes.max(0), -1, 1))).max()), 3),
        "shape": list(img.shape[:3]),
        "voxel_size_mm": zooms,
        "nonfinite_voxels_set_to_zero": int(nonfinite.sum()),
        "brain_voxels": int((np.isfinite(data) & (data != 0)).sum()),
        "p99_abs_chi_ppb": round(p99 * factor, 3),
    }
    return preprocessed, record
