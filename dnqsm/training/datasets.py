"""Training data for the two nnU-Net models, built from any labelled BIDS cohort.

Both datasets are built with the same functions that inference uses (``dnqsm.engine.localize``), so the
networks see at training time exactly what they will see in use.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from dnqsm.engine.localize import crop, crop_around, label_region, localization_input
from dnqsm.engine.nnunet import write_case, write_dataset_json
from dnqsm.io import InputError, load_image
from dnqsm.names import structure_labels
from dnqsm.workflow.bids import Session, chimap_sessions, dentate_labels
from dnqsm.workflow.config import training_cohorts


def check_case_names(cohorts: list[list[Session]]) -> None:
    """Every training case is named by its session's key (``sub-X[_ses-Y][_rec-...]``; two
    reconstructions of a session are two cases): stop, before minutes of building, on a name that
    repeats within one cohort (two images only entities dnqsm does not keep, e.g. ``desc-``, tell
    apart) or across pooled cohorts (participant labels that repeat). Images without labels count
    too: they would be skipped later, but which of two same-named images has the labels is ambiguous."""
    owner: dict[str, Path] = {}
    for sessions in cohorts:
        mine: dict[str, Path] = {}
        for session in sessions:
            if session.key in mine:
                raise InputError(
                    f"{session.image}: {session.key} is also in {mine[session.key]}; two images of one "
                    "session that only entities dnqsm does not keep (e.g. desc-) tell apart: keep one"
                )
            mine[session.key] = session.image
        for case, image in mine.items():
            if case in owner:
                raise InputError(
                    f"{image}: {case} is also in {owner[case]}; pooled cohorts need distinct participant "
                    "labels (dnqsm synth --first-label numbers a synthetic cohort from another label)"
                )
        owner.update(mine)


def build_training_datasets(
    bids_dir: str | Path | list,
    labels_dir: str | Path | list,
    localization_raw: str | Path,
    segmentation_raw: str | Path,
    spacing_mm: float,
    margin_mm: float,
    jitter_mm: float,
    seed: int = 0,
    localization_target: str = "dn_region",
) -> dict:
    """Write the localization and segmentation raw datasets; return a summary (cases, skipped).

    ``bids_dir``/``labels_dir`` may list several cohorts (see :func:`training_cohorts`), pooled under
    their own participant labels, which must therefore not repeat across cohorts.
    ``localization_target`` is ``dn_region`` (from DN labels; what inference uses) or ``cerebellum``
    (from ``desc-cerebellum_mask`` files beside the labels; kept to compare the two choices).
    """
    if localization_target not in ("dn_region", "cerebellum"):
        raise ValueError(f"unknown localization target {localization_target!r}")
    localization_raw, segmentation_raw = Path(localization_raw), Path(segmentation_raw)
    rng = np.random.default_rng(seed)
    cases, skipped = [], []
    cohorts = training_cohorts(bids_dir, labels_dir)
    found = [chimap_sessions(bids) for bids, _ in cohorts]
    check_case_names(found)
    pooled = [(session, labels) for (_, labels), listed in zip(cohorts, found) for session in listed]
    for session, cohort_labels in pooled:
        case = session.key
        label_path = dentate_labels(cohort_labels, session)
        if not label_path.exists():
            skipped.append({"case": case, "reason": f"no labels at {label_path}"})
            continue
        try:
            image = load_image(session.image)
        except InputError as exc:
            skipped.append({"case": case, "reason": str(exc)})
            continue
        labels = nib.load(label_path)
        if labels.shape[:3] != image.shape[:3] or not np.allclose(labels.affine, image.affine, atol=1e-3):
            skipped.append({"case": case, "reason": f"{label_path} is not on the image's grid"})
            continue
        coarse, grid_affine = localization_input(image, spacing_mm)
        region = label_region(labels, grid_affine, coarse.shape)
        if not region.any():
            skipped.append({"case": case, "reason": f"{label_path} holds no DN label"})
            continue
        if localization_target == "cerebellum":
            mask_path = structure_labels(cohort_labels, session.subject, session.session, "cerebellum")
            target = label_region(nib.load(mask_path), grid_affine, coarse.shape, dilate_voxels=0)
        else:
            target = region
        write_case(localization_raw, case, coarse, grid_affine, target)
        # Step two: a lossless crop of the canonically oriented native image, as inference makes it; the
        # box is jittered per face so the network learns to cope with imperfect localization.
        area = crop_around(
            nib.as_closest_canonical(image), region, grid_affine, margin_mm, rng.uniform(-jitter_mm, jitter_mm, 6)
        )
        image_crop, labels_crop = area.image, crop(nib.as_closest_canonical(labels), area.slices)
        write_case(
            segmentation_raw,
            case,
            image_crop.get_fdata(dtype=np.float32),
            image_crop.affine,
            (np.asarray(labels_crop.dataobj) > 0).astype(np.uint8),
        )
        cases.append(case)
    if len(cases) < 2:
        raise InputError(
            f"{', '.join(str(b) for b, _ in cohorts)}: need at least 2 labelled images to train, "
            f"found {len(cases)}" + (f" (skipped: {skipped})" if skipped else "")
        )
    write_dataset_json(localization_raw, localization_target, len(cases))
    write_dataset_json(segmentation_raw, "dentate", len(cases))
    return {"cases": cases, "skipped": skipped}
