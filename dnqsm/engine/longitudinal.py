"""Longitudinal mode: one subject's visits segmented with a shared prior from an unbiased subject template.

Cross-sectionally every visit is segmented on its own, so segmentation noise adds to the visit-to-visit
variance. Here, per subject (the idea of FreeSurfer's longitudinal stream, Reuter et al. 2012, applied
to the DN crop):

1. every usable visit's DN crop is aligned rigidly (antspyx) to a subject template built from all
   visits alike, on the network's shape (the visit's result as a clipped signed distance map; chi
   differs in contrast and scaling between reconstructions): the template starts as the mean of all
   visits on a common grid around their centres (none is the reference grid), and each round
   registers every visit to the current mean (starting from its alignment of the round before) and
   averages the aligned visits again;
2. each visit's network result (foreground probability > 0.5) as a signed distance map (mm, negative
   inside) is carried into template space with the same transforms; there a straight line in time is
   fitted per voxel through all visits (least squares on the years since the subject's first visit),
   and its value at a visit's time is that visit's prior shape, carried back to the visit. Scans of
   the same day share their mean; a steady change (atrophy, iron accumulation) passes through the
   line untouched, so the prior removes noise, not change (with unknown visit times the prior is the
   plain mean, which would also pull real change toward the mean: the record says so). Distance maps,
   unlike probabilities or masks, keep their zero level under the interpolation of two resamplings;
3. each visit's labels are where ``(1 - w) d_visit + w d_prior < 0`` (``w``:
   ``longitudinal.prior_weight``), then the networks' post-processing (sides by the midline, largest
   component per side) and the same confidence checks (with the visit's own probabilities).

A visit's own result keeps half the weight by default, so real change stays visible (the bias test
checks planted change against the statistics' confidence intervals), while segmentation noise that
differs between visits is averaged down. The output folder has the layout of a segmentation batch
(``<stem>/<stem>_seg.nii.gz`` and ``_metadata.json``), so measures read it unchanged.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd

from dnqsm.engine.confidence import STANDING_REASONS, assess, crop_numbers, thresholds
from dnqsm.engine.localize import Expectation, recorded_crop, uncrop
from dnqsm.engine.registration import ants_image, remove_transforms
from dnqsm.engine.segment import assign_sides
from dnqsm.io import save_nifti, staged_folder, write_json
from dnqsm.labels import SIDES
from dnqsm.names import RESULT_FILES, result_file, result_path
from dnqsm.settings import defaults

#: Settings of the longitudinal mode: their defaults live in the configuration schema (``longitudinal``).
DEFAULTS: dict[str, Any] = defaults("longitudinal")


def signed_distance(mask: np.ndarray, zooms, clip_mm: float) -> np.ndarray:
    """Signed distance to the mask's surface in mm: negative inside, positive outside, clipped. The
    surface lies half a voxel beyond the outermost voxels (so a boundary voxel is at -s/2, its outer
    neighbour at +s/2, s the finest spacing): a shift of the surface by less than a voxel in the
    prior can then move the combined boundary."""
    from scipy import ndimage

    if not mask.any():
        return np.full(mask.shape, clip_mm, np.float32)
    half = 0.5 * float(min(zooms))
    outside = ndimage.distance_transform_edt(~mask, sampling=zooms)
    inside = ndimage.distance_transform_edt(mask, sampling=zooms)
    signed = np.where(mask, half - inside, outside - half)
    return np.clip(signed, -clip_mm, clip_mm).astype(np.float32)


#: Dice between a visit's own result and its prior below which the prior is not used (failed alignment).
MIN_PRIOR_OVERLAP = 0.5


def template_grid(
    affines: list[np.ndarray], shapes: list[tuple[int, ...]], spacing: float
) -> tuple[np.ndarray, tuple[int, int, int]]:
    """A world-aligned grid (RAS affine, shape) covering every crop, centred on their common world
    centre: the template's space, which belongs to no single visit."""
    corners = []
    for affine, shape in zip(affines, shapes):
        ijk = np.array([[i, j, k] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1) for k in (0, shape[2] - 1)])
        corners.append(nib.affines.apply_affine(affine, ijk))
    points = np.concatenate(corners)
    lo, hi = points.min(0), points.max(0)
    size = np.ceil((hi - lo) / spacing).astype(int) + 1
    affine = np.diag([spacing, spacing, spacing, 1.0])
    affine[:3, 3] = lo
    return affine, tuple(int(s) for s in size)


def line_in_time(maps: np.ndarray, times: list[float] | None) -> np.ndarray:
    """Per voxel, the least-squares straight line through ``maps`` (visits first) over ``times``,
    evaluated at each visit's time; visits at one time (or unknown times) get the plain mean."""
    mean = maps.mean(axis=0)
    if times is None:
        return np.repeat(mean[None], len(maps), axis=0)
    t = np.asarray(times, float) - np.mean(times)
    if not np.any(t):
        return np.repeat(mean[None], len(maps), axis=0)
    slope = np.tensordot(t, maps - mean, axes=(0, 0)) / float(np.sum(t**2))
    return mean[None] + t[:, None, None, None] * slope[None]


def centred_affine(img: nib.Nifti1Image) -> np.ndarray:
    """The image's affine moved so that the centre of its voxel grid is the world origin."""
    centre = nib.affines.apply_affine(img.affine, (np.asarray(img.shape[:3]) - 1) / 2.0)
    moved = np.array(img.affine, float)
    moved[:3, 3] -= centre
    return moved


@dataclass(frozen=True)
class Visit:
    """One visit's network result on its DN crop, read once: the crop image, the foreground
    probability and the result (probability > 0.5) as a clipped signed distance map (mm)."""

    crop: nib.Nifti1Image
    probability: np.ndarray
    distance: np.ndarray

    @classmethod
    def load(cls, folder: Path, stem: str, settings: dict[str, Any]) -> Visit:
        crop = nib.load(result_file(folder, stem, "crop"))
        probability = nib.load(result_file(folder, stem, "crop_probability")).get_fdata(dtype=np.float32)
        distance = signed_distance(probability > 0.5, crop.header.get_zooms()[:3], settings["distance_clip_mm"])
        return cls(crop, probability, distance)


def subject_prior(
    crops: list[nib.Nifti1Image], distances: list[np.ndarray], times: list[float] | None, settings: dict[str, Any]
) -> tuple[list[np.ndarray], dict[str, Any]]:
    """Each visit's prior shape (signed distance, mm) on its own crop grid (same order as ``crops``):
    the line in time through every visit's distance map in template space, at that visit's time
    (:func:`line_in_time`); and a record of the template (grid, rounds, times, each visit's correlation
    with the template after alignment)."""
    if int(settings["iterations"]) < 1:
        raise ValueError(
            f"longitudinal template iterations must be at least 1, not {settings['iterations']!r}: "
            "the visits are aligned to the template in each round"
        )
    # reruns must give identical files: ANTs' sampled metric needs a fixed seed, and its threads split
    # sums in an order that changes the last bits, so one thread (the crops are small)
    from ants.config import set_ants_deterministic

    set_ants_deterministic(True, 1)
    spacing = settings["template_spacing_mm"] or min(float(min(c.header.get_zooms()[:2])) for c in crops)
    # Each crop is the localizer's box around the nuclei, so its centre is the same anatomy in every
    # visit, while the head's world position differs between scanners and sessions: every crop is
    # described relative to its own centre, which starts the alignment close to the answer.
    centred = [centred_affine(c) for c in crops]
    crop_shapes = [c.shape[:3] for c in crops]
    affine, shape = template_grid(centred, crop_shapes, spacing)
    domain = ants_image(np.zeros(shape, np.float32), affine)
    # the alignment's own, coarser grid over the same extent: transforms are in world millimetres, so
    # the fits found there carry the visits onto the template grid unchanged
    registration_spacing = max(spacing, float(settings["registration_spacing_mm"] or spacing))
    registration_affine, registration_shape = template_grid(centred, crop_shapes, registration_spacing)
    registration_domain = ants_image(np.zeros(registration_shape, np.float32), registration_affine)
    clip = float(settings["distance_clip_mm"])
    # ANTs leaves every registration's transform files in the temporary folder: all rounds' files
    # are removed at the end, also when a registration fails
    made: list[dict[str, Any]] = []
    try:
        fits = align_shapes(distances, centred, registration_domain, settings, made)
        shape_maps = [ants_image(d, a) for d, a in zip(distances, centred)]
        back = priors_on_visits(shape_maps, fits, domain, affine, times, spacing, clip)
        record = {
            "visits": len(crops),
            "template_spacing_mm": round(spacing, 4),
            "template_shape": list(shape),
            "registration_spacing_mm": round(registration_spacing, 4),
            "iterations": int(settings["iterations"]),
            "warm_start": bool(settings["warm_start"]),
            "alignment_correlation": chi_agreement(crops, centred, fits, domain, settings["clip_ppb"]),
            "years": times if times is not None else "unknown: the prior is the plain mean of the visits",
        }
    finally:
        remove_transforms(made)
    return [b.astype(np.float32) for b in back], record


def align_shapes(
    distances: list[np.ndarray], centred: list[np.ndarray], domain: Any, settings: dict[str, Any], made: list
) -> list[dict[str, Any]]:
    """Every visit aligned (rigid, ANTs) to the visits' mean on ``domain``, ``settings["iterations"]``
    rounds (the mean made again after each); the last round's fits. Every fit is added to ``made``.

    The visits are aligned on the networks' shapes (the clipped signed distance maps, as 0 far outside:
    what resampling pads with), not on chi: the same-day scans of another site's reconstruction differ
    in chi contrast and scaling, and aligning chi left some visits a few millimetres off (their prior
    shrank, or did not fit at all), while both nuclei's shape is what the prior is made of and is
    alike across reconstructions."""
    import ants

    clip = float(settings["distance_clip_mm"])
    shapes = [ants_image(clip - d, a) for d, a in zip(distances, centred)]
    template = sum(ants.resample_image_to_target(s, domain, interp_type="linear") for s in shapes) / len(shapes)
    starts: list[Any] = ["Identity"] * len(shapes)
    for _ in range(int(settings["iterations"])):
        # a crop is small (tens of voxels a side) and visits differ by millimetres and degrees once
        # centred: two levels (shrink 2, 1) instead of ANTs' default 6-4-2-1, which on a crop this size
        # leaves a few voxels at the coarsest level and lets the optimizer wander off. With
        # ``warm_start`` each later round starts every visit from its last alignment (the mean moves
        # little between rounds), which takes the optimizer fewer steps to the same place
        fits = [
            ants.registration(
                template,
                s,
                type_of_transform="Rigid",
                initial_transform=start,
                aff_metric="meansquares",
                aff_shrink_factors=(2, 1),
                aff_smoothing_sigmas=(1, 0),
                aff_iterations=(200, 100),
            )
            for s, start in zip(shapes, starts)
        ]
        made.extend(fits)
        if settings["warm_start"]:
            starts = [f["fwdtransforms"] for f in fits]
        template = sum(f["warpedmovout"] for f in fits) / len(fits)
    return fits


def chi_agreement(
    crops: list[nib.Nifti1Image], centred: list[np.ndarray], fits: list[dict], domain: Any, clip_ppb: list[float]
) -> list[float]:
    """How well each visit's chi (clipped to ``clip_ppb``) agrees with the visits' mean after the
    alignment, as a correlation on the template grid: a check, not a fit."""
    import ants

    lo, hi = clip_ppb
    moving = [
        ants_image(np.clip(np.nan_to_num(c.get_fdata(dtype=np.float32)), lo, hi), a) for c, a in zip(crops, centred)
    ]
    aligned = [
        ants.apply_transforms(domain, m, f["fwdtransforms"], interpolator="linear").numpy()
        for m, f in zip(moving, fits)
    ]
    mean_chi = np.mean(aligned, axis=0)
    return [round(float(np.corrcoef(a.ravel(), mean_chi.ravel())[0, 1]), 4) for a in aligned]


def priors_on_visits(
    shape_maps: list[Any],
    fits: list[dict],
    domain: Any,
    affine: np.ndarray,
    times: list[float] | None,
    spacing: float,
    clip: float,
) -> list[np.ndarray]:
    """The visits' distance maps carried onto the template grid, the line in time through them, and
    each visit's point on that line carried back onto the visit's own crop grid."""
    import ants

    warped = np.stack(
        [
            ants.apply_transforms(domain, p, f["fwdtransforms"], interpolator="linear", defaultvalue=clip).numpy()
            for p, f in zip(shape_maps, fits)
        ]
    )
    fitted = line_in_time(warped, times)
    back = []
    for k, (p, f) in enumerate(zip(shape_maps, fits)):
        # a mean of distance maps has its zero level at the mean shape but a gradient below 1 where
        # the visits disagree; distances from that shape again make the prior a true distance map, so
        # that a weight w moves each visit's boundary w of the way to the prior's
        prior = ants_image(signed_distance(fitted[k] < 0, [spacing] * 3, clip), affine)
        back.append(
            ants.apply_transforms(
                p, prior, f["fwdtransforms"], whichtoinvert=[True], interpolator="linear", defaultvalue=clip
            ).numpy()
        )
    return back


def keep_own(source: Path, target: Path, meta: dict[str, Any], record: dict[str, Any], mode: str) -> dict[str, Any]:
    """The visit's cross-sectional result copied as it is into ``target`` (metadata not yet written):
    for a subject with one usable visit, or a visit the prior does not fit."""
    target.mkdir(parents=True, exist_ok=True)
    for item in sorted(source.iterdir()):
        if not item.name.endswith(RESULT_FILES["metadata"]):
            shutil.copyfile(item, target / item.name)
    return {**meta, "longitudinal": {**record, "mode": mode}}


def relabel(
    engine_dir: Path,
    stem: str,
    guide: tuple[Visit, np.ndarray] | None,
    settings: dict[str, Any],
    out_dir: Path,
    record: dict[str, Any],
    checks: dict[str, float] | None = None,
) -> dict[str, Any]:
    """One visit's labels from its own result and the subject's prior on its crop (``guide``: the
    loaded visit and the prior), written as a result folder ``out_dir/<stem>`` (labels on the input
    grid, metadata with the new volumes, confidence numbers and a ``longitudinal`` record).
    ``guide`` None copies the visit's cross-sectional result (a subject with one usable visit)."""
    source = engine_dir / stem
    meta = json.loads(result_file(source, stem, "metadata").read_text())
    target = out_dir / stem
    if guide is None:
        meta = keep_own(source, target, meta, record, "cross-sectional (one usable visit)")
    else:
        visit, prior = guide
        weight = float(settings["prior_weight"])
        labeled, sides, overlap = combine(visit, prior, weight, float(meta["midline_x_mm"]))
        if overlap < MIN_PRIOR_OVERLAP or not all(sides[n]["voxels"] for n in ("left", "right")):
            meta = keep_unfit(source, target, meta, record, overlap)
        else:
            meta = write_relabelled(source, target, meta, visit, labeled, sides, checks)
            meta["longitudinal"] = {**record, "mode": "longitudinal", "prior_weight": weight}
    write_json(result_file(target, stem, "metadata"), meta)
    return meta


def combine(visit: Visit, prior: np.ndarray, weight: float, midline_x: float) -> tuple[np.ndarray, dict, float]:
    """The visit's labels on its crop from its own distance map and the prior's (``weight`` of the
    prior), sides assigned; and the overlap (Dice) of the visit's own labels with the prior's."""
    mine, theirs = visit.probability > 0.5, prior < 0
    combined = (1.0 - weight) * visit.distance + weight * prior
    overlap = 2 * float((mine & theirs).sum()) / max(float(mine.sum() + theirs.sum()), 1.0)
    labeled, sides = assign_sides((combined < 0).astype(np.uint8), visit.crop.affine, midline_x)
    return labeled, sides, overlap


def keep_unfit(source: Path, target: Path, meta: dict[str, Any], record: dict[str, Any], overlap: float) -> dict:
    """A visit the prior does not fit (the alignment failed, or left a side empty): its own result
    stands, under review with a standing reason (measure applies the checks again and keeps it)."""
    reason = (
        f"the longitudinal prior does not fit this visit (Dice {overlap:.2f} with its own labels, expected "
        f">= {MIN_PRIOR_OVERLAP}): template alignment failed, the cross-sectional labels are kept"
    )
    meta = keep_own(
        source, target, meta, {**record, "prior_overlap": round(overlap, 4)}, "cross-sectional (the prior did not fit)"
    )
    meta.update(
        status="review",
        review_reasons=list(meta.get("review_reasons") or []) + [reason],
        **{STANDING_REASONS: list(meta.get(STANDING_REASONS) or []) + [reason]},
    )
    return meta


def write_relabelled(
    source: Path,
    target: Path,
    meta: dict[str, Any],
    visit: Visit,
    labeled: np.ndarray,
    sides: dict[str, dict],
    checks: dict[str, float] | None,
) -> dict[str, Any]:
    """The relabelled visit's files in ``target`` (labels on the input grid, the crop's labels, the
    region and crop copied) and its metadata (not yet written) with new volumes, checks and status."""
    stem = meta["stem"]
    target.mkdir(parents=True, exist_ok=True)
    affine = np.asarray(meta["image"]["affine"], float)
    slices, edges = recorded_crop(meta)
    labels = uncrop(labeled.astype(np.uint8), slices, affine, meta["image"]["shape"])
    voxel_mm3 = float(abs(np.linalg.det(affine[:3, :3])))
    for name, label in SIDES.items():
        sides[name]["volume_mm3"] = round(float((labels == label).sum()) * voxel_mm3, 3)
    values = visit.crop.get_fdata(dtype=np.float32)
    expected = Expectation.from_record(meta.get("localization"))  # the registration's, as the visit's own result
    numbers = crop_numbers(
        values,
        labeled,
        visit.probability,
        {name: sides[name]["predicted_voxels"] for name in sides},
        visit.crop.affine,
        float(meta["midline_x_mm"]),
        expected=expected,
        image_edges=edges,
    )
    volumes = {n: sides[n]["volume_mm3"] for n in ("left", "right")}
    verdict = assess(numbers, volumes, meta["box"], meta["image"]["spacing_mm"], thresholds(checks))
    header = nib.load(result_file(source, stem, "labels")).header
    save_nifti(result_file(target, stem, "labels"), nib.Nifti1Image(labels.astype(np.uint8), affine, header))
    for role in ("region", "crop"):
        shutil.copyfile(result_file(source, stem, role), result_file(target, stem, role))
    save_nifti(result_file(target, stem, "crop_labels"), nib.Nifti1Image(labeled.astype(np.uint8), visit.crop.affine))
    meta.update(
        dentate=sides,
        status=verdict.status,
        review_reasons=verdict.reasons,
        missing_sides=[s for s in ("left", "right") if sides[s]["voxels"] == 0],
        confidence={"sides": verdict.sides, "thresholds": verdict.checks},
    )
    return meta


def visit_years(bids_dir: str | Path, subject: str, sessions: list[str | None]) -> list[float | None]:
    """Years since the subject's first visit for each session label (the cohort table's
    ``years_since_baseline``: sessions.tsv acq_time, else age); None where the dataset does not say."""
    from dnqsm.analysis.cohort import visit_metadata

    _, visits = visit_metadata(bids_dir, [subject], [])
    known = {}
    if "years_since_baseline" in visits:
        known = {sid: float(y) for sid, y in zip(visits["session_id"], visits["years_since_baseline"]) if pd.notna(y)}
    return [known.get(f"ses-{session}") if session else None for session in sessions]


def longitudinal_subject(
    visits: list[tuple[Path, str]],
    out_dir: str | Path,
    settings: dict[str, Any] | None = None,
    checks: dict[str, float] | None = None,
    years: list[float | None] | None = None,
) -> list[dict[str, Any]]:
    """All of one subject's visits (``(engine batch folder, stem)`` each, ``years`` since the first
    visit each, None where unknown) into ``out_dir``: the template and priors from every visit the
    engine segmented, then each visit relabelled; failed visits keep their record. The folder appears
    only when every visit is written."""
    settings = {**DEFAULTS, **(settings or {})}
    metas = [json.loads(result_path(d, s, "metadata").read_text()) for d, s in visits]
    usable = [
        i
        for i, m in enumerate(metas)
        if m["status"] != "failed" and result_path(*visits[i], "crop_probability").exists()
    ]
    priors: dict[int, np.ndarray] = {}
    loaded: dict[int, Visit] = {}
    record: dict[str, Any] = {"visits": len(usable)}
    if len(usable) >= 2:
        loaded = {i: Visit.load(Path(visits[i][0]) / visits[i][1], visits[i][1], settings) for i in usable}
        times = [years[i] for i in usable] if years is not None and all(years[i] is not None for i in usable) else None
        back, record = subject_prior(
            [loaded[i].crop for i in usable], [loaded[i].distance for i in usable], times, settings
        )
        priors = dict(zip(usable, back))
    out: list[dict[str, Any]] = []
    with staged_folder(out_dir) as folder:
        for i, (engine_dir, stem) in enumerate(visits):
            if i not in usable:
                (folder / stem).mkdir()
                shutil.copytree(Path(engine_dir) / stem, folder / stem, dirs_exist_ok=True)
                out.append(metas[i])
                continue
            guide = (loaded[i], priors[i]) if i in priors else None
            out.append(relabel(Path(engine_dir), stem, guide, settings, folder, record, checks))
    return out
