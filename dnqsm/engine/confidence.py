"""Is a segmentation to be trusted? Per-side confidence from the network's probabilities and absolute
plausibility checks that need no cohort, combined into a status: ``ok``, ``review`` (with short
human reasons) or ``failed`` (set where a step fails; not here).

Pure functions on the canonical crop (labels, image values, foreground probability), called where
the labels are made (``dnqsm.engine.segment``); everything downstream reads the status, none recomputes it.
Every threshold has its default in :data:`DEFAULTS` (sources in docs/status.md) and can be overridden in
config (``confidence:``) and on the CLI (``dnqsm segment --check NAME=VALUE``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import nibabel as nib
import numpy as np
from scipy import ndimage

from dnqsm.labels import SIDE_OF, SIDES
from dnqsm.settings import defaults

if TYPE_CHECKING:
    from collections.abc import Sequence

    from dnqsm.engine.localize import Expectation

STATUSES = ("ok", "review", "failed")

#: Thresholds of the plausibility checks: their defaults live in the configuration schema (``confidence``;
#: docs/status.md says where each comes from).
DEFAULTS: dict[str, float] = defaults("confidence")

#: Margin (mm) around a side's label in which the image's smoothness is estimated.
SMOOTHNESS_MARGIN_MM = 10.0
#: Boundary check: the shell tested lies 1-2 voxels outside the label; the surroundings 3-5 voxels out.
SHELL_VOXELS = 2
SURROUND_VOXELS = (3, 5)


def boundary_shares(values: np.ndarray, mask: np.ndarray, other: np.ndarray) -> dict[str, float] | None:
    """Does the label stop where the nucleus stops? With the label's mean and the median of its
    surroundings (3-5 voxels out, the other side's label excluded), the half-way value between them is
    the nucleus's edge (as a full width at half maximum is): ``bright_shell_share`` is the share of the
    shell 1-2 voxels outside the label at or above it (high: the label stops inside a bright region, an
    under-segmentation); ``dark_rim_share`` the share of the label's own border voxels below it (high:
    the label spills into darker tissue, an over-segmentation). None where there is too little to tell."""
    finite = np.isfinite(values) & (values != 0)
    inner, outer = SURROUND_VOXELS
    grown = ndimage.binary_dilation(mask, iterations=outer)
    blocked = ndimage.binary_dilation(other, iterations=1)
    surround = grown & ~ndimage.binary_dilation(mask, iterations=inner - 1) & ~blocked & finite
    shell = ndimage.binary_dilation(mask, iterations=SHELL_VOXELS) & ~mask & ~blocked & finite
    rim = mask & ~ndimage.binary_erosion(mask) & finite
    if surround.sum() < 20 or shell.sum() < 10 or rim.sum() < 10:
        return None
    edge = (float(values[mask & finite].mean()) + float(np.median(values[surround]))) / 2
    return {
        "bright_shell_share": round(float((values[shell] >= edge).mean()), 4),
        "dark_rim_share": round(float((values[rim] < edge).mean()), 4),
    }


def smoothness_fwhm_mm(values: np.ndarray, zooms: tuple[float, ...] | list[float]) -> float | None:
    """How blurred an image region is: the FWHM (mm) of a Gaussian that gives its ratio of neighbour-
    difference variance to variance (Forman et al., Magn Reson Med 1995; the estimator of FSL's
    smoothest and AFNI's 3dFWHMx), per axis over non-zero finite voxels; the sharpest axis is
    returned, so thick slices do not count as blur. None when the region is too small or flat."""
    finite = np.isfinite(values) & (values != 0)
    data = np.where(finite, values, 0).astype(np.float64)
    if finite.sum() < 100 or data[finite].var() <= 0:
        return None
    variance = data[finite].var()
    widths = []
    for axis, step in enumerate(zooms[:3]):
        if data.shape[axis] < 2:
            continue
        a, b = np.moveaxis(data, axis, 0), np.moveaxis(finite, axis, 0)
        pair = b[1:] & b[:-1]
        if pair.sum() < 50:
            continue
        ratio = min(max(float((a[1:] - a[:-1])[pair].var()) / (2 * variance), 1e-6), 1 - 1e-6)
        widths.append(float(step) * float(np.sqrt(-2 * np.log(2) / np.log(1 - ratio))))
    return round(min(widths), 2) if widths else None


def thresholds(overrides: dict[str, Any] | None = None) -> dict[str, float]:
    """DEFAULTS with ``overrides`` applied; an unknown name raises ValueError naming the known ones."""
    merged = dict(DEFAULTS)
    for name, value in (overrides or {}).items():
        if value is None:
            continue
        if name not in DEFAULTS:
            raise ValueError(f"unknown confidence check {name!r}; known: {', '.join(sorted(DEFAULTS))}")
        merged[name] = float(value)
    return merged


@dataclass
class Confidence:
    """The verdict on one image: status, reasons, and the per-side numbers behind them."""

    status: str
    reasons: list[str] = field(default_factory=list)
    sides: dict[str, dict[str, Any]] = field(default_factory=dict)
    checks: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "review_reasons": list(self.reasons),
            "sides": self.sides,
            "thresholds": self.checks,
        }


def data_edge_distance(
    values: np.ndarray, zooms: Sequence[float], image_edges: Sequence[bool] = ()
) -> np.ndarray | None:
    """Each crop voxel's distance (mm) to where the image holds no data: zero or non-finite values
    (outside the field of view or the brain mask; specks under 20 mm³ inside the brain do not count) and
    what lies beyond the crop's faces that are the image's own edges (``image_edges``: low x, y, z, then
    high x, y, z, :func:`dnqsm.engine.localize.image_edges`), as where a slab's last slice cuts the
    nucleus. None where there is no such place. The DN lies deep in the cerebellum, so a label near it
    means the field of view (or a mask) cut the nucleus."""
    finite = np.isfinite(values) & (values != 0)
    pieces, _ = ndimage.label(~finite)
    sizes = np.bincount(pieces.ravel()) * float(np.prod(zooms))
    nodata = (sizes >= 20.0)[pieces] & (pieces > 0)
    edges = tuple(image_edges) or (False,) * 6
    beyond = [(int(edges[axis]), int(edges[axis + 3])) for axis in range(3)]  # one no-data layer past each
    nodata = np.pad(nodata, beyond, constant_values=True)
    if not nodata.any():
        return None
    distance = ndimage.distance_transform_edt(~nodata, sampling=zooms)
    return distance[tuple(slice(lo, lo + n) for (lo, _), n in zip(beyond, values.shape))]


def crop_numbers(
    values: np.ndarray,
    labels: np.ndarray,
    probability: np.ndarray | None,
    predicted_voxels: dict[str, int],
    affine: np.ndarray,
    midline_x: float,
    single_pass: np.ndarray | None = None,
    expected: Expectation | None = None,
    image_edges: Sequence[bool] = (),
) -> dict[str, dict[str, Any]]:
    """:func:`side_numbers` of both sides of one canonical crop (``predicted_voxels`` per side), the
    image's data edge (:func:`data_edge_distance`) found once for both."""
    zooms = np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(0))
    distance = data_edge_distance(values, zooms, image_edges)
    return {
        side: side_numbers(
            values,
            labels,
            label,
            probability,
            predicted_voxels[side],
            affine,
            midline_x,
            single_pass,
            expected,
            distance,
        )
        for side, label in SIDES.items()
    }


def side_numbers(
    values: np.ndarray,
    labels: np.ndarray,
    label: int,
    probability: np.ndarray | None,
    predicted_voxels: int,
    affine: np.ndarray,
    midline_x: float,
    single_pass: np.ndarray | None = None,
    expected: Expectation | None = None,
    data_distance: np.ndarray | None = None,
) -> dict[str, Any]:
    """What the checks need about one side, on the canonical crop (:func:`crop_numbers` gives both).
    ``single_pass``: the network's binary output without test-time mirroring, when the label came from
    mirrored passes; ``expected``: where and how large an independent registration expects the nuclei,
    if known; ``data_distance``: each crop voxel's distance to where the image holds no data
    (:func:`data_edge_distance`; None where the crop holds no such place)."""
    side = SIDE_OF[label]
    mask = labels == label
    voxels = int(mask.sum())
    out: dict[str, Any] = {
        "voxels": voxels,
        "predicted_voxels": int(predicted_voxels),
        "largest_share": round(voxels / predicted_voxels, 4) if predicted_voxels else None,
    }
    if not voxels:
        return out
    centroid = nib.affines.apply_affine(affine, np.argwhere(mask).mean(0))
    out["centroid_mm"] = [round(float(c), 2) for c in centroid]
    out["midline_offset_mm"] = round(float(abs(centroid[0] - midline_x)), 2)
    finite = np.isfinite(values) & (values != 0)
    both = labels > 0
    shell = ndimage.binary_dilation(mask, iterations=3) & ~ndimage.binary_dilation(both, iterations=1) & finite
    inside = values[mask & finite]
    around = values[shell]
    if inside.size and around.size > 10:
        contrast = float(inside.mean() - around.mean())
        spread = float(around.std())
        out["contrast"] = round(contrast, 4)
        out["contrast_cnr"] = round(contrast / spread, 3) if spread > 0 else None
    shares = boundary_shares(values, mask, both & ~mask)
    if shares:
        out.update(shares)
    if expected is not None:
        centre = expected.centres_mm.get(side)
        if centre is not None:
            out["registration_offset_mm"] = round(float(np.linalg.norm(centroid - np.asarray(centre))), 2)
        overlap = expected.overlap(side, nib.affines.apply_affine(affine, np.argwhere(mask)))
        if overlap is not None:
            out["registration_overlap"] = round(overlap, 4)
            out["registration_volume_scale"] = round(expected.volume_scale, 4)
    zooms = np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(0))
    where = np.argwhere(mask)
    margin = np.ceil(SMOOTHNESS_MARGIN_MM / zooms).astype(int)
    region = tuple(slice(max(int(lo - m), 0), int(hi + m + 1)) for lo, hi, m in zip(where.min(0), where.max(0), margin))
    out["smoothness_fwhm_mm"] = smoothness_fwhm_mm(values[region], zooms)
    if data_distance is not None:
        out["data_edge_mm"] = round(float(data_distance[mask].min()), 2)
    if single_pass is not None:  # agreement within the side's reach: the label dilated by 2 voxels
        near = ndimage.binary_dilation(mask, iterations=2) & ~(labels > 0) | mask
        other = (single_pass > 0) & near
        out["mirror_agreement"] = round(2 * float((other & mask).sum()) / (voxels + float(other.sum())), 4)
    if probability is not None:
        out["mean_probability"] = round(float(probability[mask].mean()), 4)
        near = ndimage.binary_dilation(mask, iterations=1)
        uncertain = near & (probability > 0.2) & (probability < 0.8)
        out["uncertain_share"] = round(float(uncertain.sum()) / voxels, 4)
    return out


@dataclass(frozen=True)
class Check:
    """One plausibility check on a number: the number's key, the threshold it is held against (a
    :data:`DEFAULTS` name; ``min_...`` fails below it, ``max_...`` above it; ``fixed``: a limit that is
    no setting, held as a maximum) and the review reason, a format string of ``side``, ``value``,
    ``limit``, their percentages ``pct``/``limit_pct``, every threshold and the side's other numbers.
    ``missing``: the text a number that could not be measured shows (it then fails; None: it passes),
    with ``shown`` the format of a measured one (the reason then gets ``value`` as text)."""

    key: str
    threshold: str
    reason: str
    missing: str | None = None
    shown: str = ""
    fixed: float | None = None

    @property
    def minimum(self) -> bool:
        """Whether the threshold is a lower bound (the number fails below it)."""
        return self.fixed is None and self.threshold.startswith("min_")

    def reason_for(self, numbers: dict[str, Any], checks: dict[str, float], side: str = "") -> str | None:
        """The reason, where ``numbers`` fail this check under ``checks``; else None."""
        value = numbers.get(self.key)
        if value is None and self.missing is None:
            return None
        limit = self.fixed if self.fixed is not None else checks[self.threshold]
        if value is not None and ((value >= limit) if self.minimum else (value <= limit)):
            return None
        fields = {**checks, **{k: v for k, v in numbers.items() if isinstance(v, (int, float))}}
        fields.update(
            side=side, value=value, limit=limit, limit_pct=100 * limit, pct=None if value is None else 100 * value
        )
        if self.shown or value is None:
            fields["value"] = self.missing if value is None else format(value, self.shown)
        return self.reason.format(**fields)


#: Per-side checks, in the order their reasons are listed (:func:`side_numbers` gives the numbers;
#: ``volume_mm3`` and ``expected_volume_ratio`` are added by :func:`assess`).
SIDE_CHECKS: tuple[Check, ...] = (
    Check("volume_mm3", "min_volume_mm3", "{side} DN volume {value:.0f} mm³ is below the plausible {limit:.0f} mm³"),
    Check("volume_mm3", "max_volume_mm3", "{side} DN volume {value:.0f} mm³ is above the plausible {limit:.0f} mm³"),
    Check(
        "contrast_cnr",
        "min_contrast_cnr",
        "{side} DN hardly stands out from its surroundings (contrast-to-noise {value}, expected ≥ {limit:g})",
        missing="unknown",
        shown=".2f",
    ),
    Check(
        "largest_share",
        "min_largest_share",
        "{side} DN prediction was in pieces: the kept piece holds {pct:.0f} % (expected ≥ {limit_pct:.0f} %)",
    ),
    Check(
        "midline_offset_mm",
        "min_midline_offset_mm",
        "{side} DN centroid is {value:.0f} mm from the midline (expected {limit:g}–{max_midline_offset_mm:g} mm)",
    ),
    Check(
        "midline_offset_mm",
        "max_midline_offset_mm",
        "{side} DN centroid is {value:.0f} mm from the midline (expected {min_midline_offset_mm:g}–{limit:g} mm)",
    ),
    Check("box_outside_mm", "", "{side} DN centroid lies outside the localization box", fixed=0.0),
    Check(
        "mean_probability",
        "min_mean_probability",
        "network unsure of the {side} DN: mean probability {value:.2f} (expected ≥ {limit:g})",
    ),
    Check(
        "mirror_agreement",
        "min_mirror_agreement",
        "mirrored and plain passes disagree on the {side} DN (Dice {value:.2f}, expected ≥ {limit:g})",
    ),
    Check(
        "data_edge_mm",
        "min_data_edge_mm",
        "the {side} DN reaches the edge of the image data ({value:.1f} mm "
        "away): the field of view or the brain mask may cut the nucleus",
    ),
    Check(
        "smoothness_fwhm_mm",
        "max_smoothness_mm",
        "the image around the {side} DN is blurred: smoothness {value:.1f} mm FWHM (expected ≤ {limit:g} mm)",
    ),
    Check(
        "bright_shell_share",
        "max_bright_shell_share",
        "the {side} DN label stops inside a bright region: "
        "{pct:.0f} % of the shell around it is as bright as the nucleus (expected ≤ {limit_pct:.0f} %): the "
        "nucleus may be larger than labelled",
    ),
    Check(
        "dark_rim_share",
        "max_dark_rim_share",
        "the {side} DN label spills into darker tissue: {pct:.0f} % of "
        "its border is darker than the nucleus's edge (expected ≤ {limit_pct:.0f} %): the nucleus may be "
        "smaller than labelled",
    ),
    Check(
        "expected_volume_ratio",
        "min_expected_volume_ratio",
        "{side} DN volume {volume_mm3:.0f} mm³ is "
        "{value:.2f} times the {expected_volume_mm3:.0f} mm³ that registration of the MNI brain expects for this "
        "head (expected {limit:g}–{max_expected_volume_ratio:g} times)",
    ),
    Check(
        "expected_volume_ratio",
        "max_expected_volume_ratio",
        "{side} DN volume {volume_mm3:.0f} mm³ is "
        "{value:.2f} times the {expected_volume_mm3:.0f} mm³ that registration of the MNI brain expects for this "
        "head (expected {min_expected_volume_ratio:g}–{limit:g} times)",
    ),
    Check(
        "registration_overlap",
        "min_registration_overlap",
        "only {pct:.0f} % of the {side} DN label lies where "
        "registration of the MNI brain expects the nucleus (expected ≥ {limit_pct:.0f} %)",
    ),
    Check(
        "registration_offset_mm",
        "max_registration_offset_mm",
        "the {side} DN label lies {value:.0f} mm from "
        "where registration of the MNI brain expects it (expected ≤ {limit:g} mm)",
    ),
    Check(
        "uncertain_share",
        "max_uncertain_share",
        "network unsure of the {side} DN boundary: {pct:.0f} % uncertain voxels (expected ≤ {limit_pct:.0f} %)",
    ),
)
#: Checks on the whole image: ``lr_volume_ratio`` (larger over smaller side), the localization box's
#: smallest and largest extent, the thickest voxel side.
IMAGE_CHECKS: tuple[Check, ...] = (
    Check(
        "lr_volume_ratio",
        "max_lr_volume_ratio",
        "left/right volume ratio {left_right:.2f} is implausible (expected {inverse_limit:.2f}–{limit:g})",
    ),
    Check(
        "thickest_mm",
        "max_slice_mm",
        "{value:.1f} mm voxels are coarser than the method is validated for (≤ {limit:g} mm)",
    ),
)


def accepted_range(key: str, checks: dict[str, float]) -> str:
    """What the side checks on number ``key`` accept under ``checks``, as text: ``≥ 0.5``, ``≤ 20`` or
    ``0.3–4``; empty where no side check reads it."""
    held = [c for c in SIDE_CHECKS if c.key == key and c.fixed is None]
    low = [checks[c.threshold] for c in held if c.minimum]
    high = [checks[c.threshold] for c in held if not c.minimum]
    if low and high:
        return f"{max(low):g}–{min(high):g}"
    return f"≥ {max(low):g}" if low else f"≤ {min(high):g}" if high else ""


def assess(
    sides: dict[str, dict[str, Any]],
    volumes_mm3: dict[str, float],
    box: dict[str, list[float]],
    spacing_mm: list[float],
    checks: dict[str, float],
) -> Confidence:
    """Apply every check (:data:`SIDE_CHECKS`, then :data:`IMAGE_CHECKS` and the localization box's
    extent); ``review`` with one sentence per problem, else ``ok``. ``box`` is the localization box
    (``min_mm``/``max_mm``, world), ``sides`` what :func:`side_numbers` gave (left unchanged); the
    verdict's side records add ``expected_volume_mm3`` (the registration's expected volume under these
    thresholds' reference)."""
    c = checks
    reasons: list[str] = []
    lo, hi = np.asarray(box["min_mm"], float), np.asarray(box["max_mm"], float)
    sides = {side: dict(numbers) for side, numbers in sides.items()}
    for side in ("left", "right"):
        s = sides[side]
        if not s["voxels"]:
            reasons.append(f"no {side} DN was found")
            continue
        numbers = {**s, "volume_mm3": volumes_mm3[side]}
        centre = s.get("centroid_mm")
        if centre is not None:  # how far the centroid lies outside the box (+1 mm tolerance)
            numbers["box_outside_mm"] = float(np.max(np.maximum(lo - 1 - centre, np.asarray(centre) - hi - 1)))
        scale = s.get("registration_volume_scale")
        if scale:  # recorded with the thresholds' reference, so that a changed reference shows in the tables
            s["expected_volume_mm3"] = round(c["expected_volume_mm3"] * scale, 1)
            numbers["expected_volume_mm3"] = s["expected_volume_mm3"]
            numbers["expected_volume_ratio"] = volumes_mm3[side] / s["expected_volume_mm3"]
        reasons += [r for check in SIDE_CHECKS if (r := check.reason_for(numbers, c, side))]
    image: dict[str, Any] = {"thickest_mm": max(spacing_mm)}
    left, right = volumes_mm3["left"], volumes_mm3["right"]
    if left > 0 and right > 0:
        image["left_right"] = left / right
        image["lr_volume_ratio"] = max(left / right, right / left)
        image["inverse_limit"] = 1 / c["max_lr_volume_ratio"]
    reasons += [r for check in IMAGE_CHECKS[:1] if (r := check.reason_for(image, c))]
    for axis, extent in zip("xyz", hi - lo):
        if not c["min_box_mm"] <= extent <= c["max_box_mm"]:
            reasons.append(
                f"localization box is {extent:.0f} mm along {axis} "
                f"(expected {c['min_box_mm']:g}–{c['max_box_mm']:g} mm)"
            )
    reasons += [r for check in IMAGE_CHECKS[1:] if (r := check.reason_for(image, c))]
    return Confidence("review" if reasons else "ok", reasons, sides, dict(c))


#: metadata key for review reasons that no threshold can recompute from the numbers (e.g. the longitudinal
#: prior did not fit a visit); :func:`reassess` keeps them under any thresholds
STANDING_REASONS = "standing_review_reasons"


def reassess(meta: dict[str, Any], checks: dict[str, float]) -> Confidence:
    """The verdict on an engine's metadata record (``dnqsm segment``'s ``_metadata.json``) under other
    thresholds: the numbers are the engine's, only the checks are applied again (cheap, no image);
    reasons the engine recorded under ``standing_review_reasons`` stay, whatever the thresholds."""
    verdict = assess(
        meta["confidence"]["sides"],
        {s: meta["dentate"][s]["volume_mm3"] for s in ("left", "right")},
        meta["box"],
        meta["image"]["spacing_mm"],
        checks,
    )
    standing = list(meta.get(STANDING_REASONS) or [])
    if not standing:
        return verdict
    return Confidence("review", verdict.reasons + standing, verdict.sides, verdict.checks)
