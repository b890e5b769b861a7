"""The workflow's per-session and per-batch steps, files in and files out (scripts/ call these).

The workflow's jobs are batches (``work_dir/batches.tsv``): one job preprocesses a batch's sessions,
one segments them, one writes their derivatives (labels, measures, QC snapshot) into a batch folder
and publishes each session's files into the output dataset. So a cohort plans into about three jobs
per batch, not per session.

A session that fails is data, not a crash: every step writes a record with ``status`` ``ok``,
``review`` (labels and measures are there, but the engine's checks doubt them: ``review_reasons``) or
``failed`` (and why), later steps pass failures through, and the cohort table lists them. So one bad
image never stops a batch, and the cohort table always builds. Every output folder is written beside
its final place and moved there only when complete.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from dnqsm.analysis.measure import measure
from dnqsm.engine.confidence import reassess, thresholds
from dnqsm.engine.segment import image_stem
from dnqsm.io import InputError, atomic_path, load_image, save_nifti, staged_folder, write_json
from dnqsm.names import DERIVATIVES, derivative_path, preproc_files, result_path
from dnqsm.qc.snapshots import render_failure, render_snapshot, summary_lines
from dnqsm.workflow.preprocess import preprocess


def derivative_files(anat_dir: str | Path, entities: dict[str, str] | None = None) -> dict[str, Path]:
    """An entry's derivative files by role (:data:`dnqsm.names.DERIVATIVES`), from its folder
    ``sub-<label>[/ses-<label>]/anat`` and the image's kept entities (``{"rec": "tkd"}``: several
    images of one session share the folder)."""
    anat_dir = Path(anat_dir)
    has_session = anat_dir.parent.name.startswith("ses-")
    session = anat_dir.parent.name.removeprefix("ses-") if has_session else None
    subject_dir = anat_dir.parent.parent if has_session else anat_dir.parent
    subject = subject_dir.name.removeprefix("sub-")
    return {
        role: derivative_path(subject_dir.parent, subject, session, role, **(entities or {})) for role in DERIVATIVES
    }


def read_measures(path: str | Path) -> dict[str, Any]:
    """An entry's measures record (status, measures, QC fields), from its JSON file."""
    return json.loads(Path(path).read_text())


def _failure(stage: str, error: str, **extra: Any) -> dict[str, Any]:
    return {"status": "failed", "failed_stage": stage, "error": error, **extra}


def preprocess_session(
    raw: str | Path, out_dir: str | Path, unit_policy: str, allow_unknown_orientation: bool = False
) -> dict[str, Any]:
    """Validate and convert one session's image into ``out_dir`` (named after the session)."""
    out_dir = Path(out_dir)
    with staged_folder(out_dir) as folder:
        image_name, record_name = (p.name for p in preproc_files(out_dir))
        try:
            img, record = preprocess(raw, unit_policy, allow_unknown_orientation)
        except InputError as exc:
            record = _failure("preprocess", str(exc), Sources=[str(Path(raw).absolute())])
        except Exception as exc:  # a bug or an odd file must stay this session's problem
            record = _failure(
                "preprocess",
                f"{raw}: unexpected error: {type(exc).__name__}: {exc}",
                Sources=[str(Path(raw).absolute())],
            )
        else:
            record.update(status="ok", failed_stage=None, error=None)
            save_nifti(folder / image_name, img)
        write_json(folder / record_name, record)
    return record


def preprocess_batch(
    sessions: list[tuple[str | Path, str]],
    out_dir: str | Path,
    unit_policy: str,
    allow_unknown_orientation: bool = False,
) -> list[dict[str, Any]]:
    """:func:`preprocess_session` for every ``(raw image, folder name)`` of a batch, each into its own
    folder of ``out_dir``; the batch folder appears only when every session has its record."""
    with staged_folder(out_dir) as folder:
        return [
            preprocess_session(raw, folder / name, unit_policy, allow_unknown_orientation) for raw, name in sessions
        ]


def segment_batch(preproc_dirs: list[str | Path], out_dir: str | Path, segmenter) -> list[dict[str, Any]]:
    """Segment every successfully preprocessed session of a batch into ``out_dir/<stem>/`` (models
    loaded once by ``segmenter``, a :class:`dnqsm.engine.segment.Method`); earlier failures get a
    metadata record there too, so each session has exactly one."""
    with staged_folder(out_dir) as folder:
        images = []
        for preproc_dir in preproc_dirs:
            image, record_file = preproc_files(preproc_dir)
            record = json.loads(record_file.read_text())
            if record["status"] == "ok":
                images.append(image)
            else:
                stem = image_stem(image)
                write_json(result_path(folder, stem, "metadata"), {**record, "stem": stem})
        records = segmenter.run(images, folder)
    return records


def batch_metadata(batch_dir: str | Path, preproc_dir: str | Path) -> dict[str, Any]:
    """A session's engine record in a segmentation batch folder (either method)."""
    stem = image_stem(preproc_files(preproc_dir)[0])
    return json.loads(result_path(batch_dir, stem, "metadata").read_text())


def batch_labels(batch_dir: str | Path, meta: dict[str, Any]) -> Path:
    """The engine's label image (1 left, 2 right, input grid) of the session ``meta`` describes."""
    return result_path(batch_dir, meta["stem"], "labels")


def session_outputs(
    subject: str,
    session: str | None,
    preproc_dir: str | Path,
    batch_dir: str | Path,
    anat_dir: str | Path,
    erosion_voxels: int,
    checks: dict[str, float] | None = None,
    entities: dict[str, str] | None = None,
) -> dict[str, Any]:
    """An entry's derivative files in ``anat_dir`` (a folder the caller stages): DN labels,
    localization mask, their sidecar and the measures record (always written; ``status`` says whether
    the rest is there, and ``review`` whether the engine's numbers pass the plausibility ``checks``:
    config ``confidence``, default thresholds). ``entities``: the image's kept entities."""
    pre = json.loads(preproc_files(preproc_dir)[1].read_text())
    meta = batch_metadata(batch_dir, preproc_dir)
    record: dict[str, Any] = {
        "participant_id": f"sub-{subject}",
        "session_id": f"ses-{session}" if session else None,
        **({"image_entities": "_".join(f"{k}-{v}" for k, v in entities.items())} if entities else {}),
        "source": pre.get("Sources", [None])[0],
        "status": "ok",
        "review_reasons": [],
        "failed_stage": None,
        "error": None,
        **{key: pre.get(key) for key in ("input_unit", "input_unit_source", "orientation", "p99_abs_chi_ppb")},
    }
    files = derivative_files(anat_dir, entities)
    Path(anat_dir).mkdir(parents=True, exist_ok=True)
    if pre["status"] != "ok":
        record.update(status="failed", failed_stage="preprocess", error=pre["error"])
    elif meta["status"] == "failed":
        image = preproc_files(preproc_dir)[0]
        error = meta["error"]
        for name in (str(image.absolute()), str(image)):  # name the user's file, not our work copy
            error = error.replace(name, str(record["source"]))
        record.update(status="failed", failed_stage="segment", error=error)
    else:
        record.update(measured_session(meta, preproc_dir, batch_dir, erosion_voxels, checks))
        write_labels(meta, batch_dir, files, record["source"])
    write_json(files["measures"], record)
    return record


def measured_session(
    meta: dict[str, Any],
    preproc_dir: str | Path,
    batch_dir: str | Path,
    erosion_voxels: int,
    checks: dict[str, float] | None,
) -> dict[str, Any]:
    """What the measures record says of a segmented entry: the measures on its preprocessed image,
    the status under ``checks`` (:func:`dnqsm.engine.confidence.reassess`) and the engine's QC fields."""
    chi = load_image(preproc_files(preproc_dir)[0])
    dseg = load_image(batch_labels(batch_dir, meta), allow_unknown_orientation=True)
    components = {side: meta["dentate"][side]["components"] for side in ("left", "right")}
    verdict = reassess(meta, thresholds(checks))
    return {
        "measures": measure(chi, dseg, erosion_voxels, components),
        "status": verdict.status,
        "review_reasons": list(verdict.reasons),
        "confidence": verdict.sides,
        "method": meta["method"],
        "segmentation_mode": (meta.get("longitudinal") or {}).get("mode", "cross-sectional"),
        "localization_components": meta["localization_components"],
        "locator": (meta.get("localization") or {}).get("locator", "network"),
        "box_touches_image_edge": meta["box_touches_image_edge"],
        "missing_sides": meta["missing_sides"],
        "box": meta["box"],
        "erosion_voxels": erosion_voxels,
    }


def write_labels(meta: dict[str, Any], batch_dir: str | Path, files: dict[str, Path], source: str | None) -> None:
    """An entry's labels, localization mask and the labels' sidecar into its derivative ``files``."""
    shutil.copyfile(batch_labels(batch_dir, meta), files["dseg"])
    shutil.copyfile(result_path(batch_dir, meta["stem"], "region"), files["mask"])
    write_json(
        files["dseg_sidecar"],
        {
            "Sources": [source],
            "Description": "dentate nuclei: 1 left, 2 right (dnqsm)",
            "Method": meta["method"],
            "Models": meta["models"],
            "Options": {k: v for k, v in meta["options"].items() if k != "threads"},
            **{
                key: meta[key]
                for key in (
                    "box",
                    "margin_mm",
                    "localization_spacing_mm",
                    "crop_voxels_canonical",
                    "midline_x_mm",
                    "midline_source",
                    "box_touches_image_edge",
                )
            },
        },
    )


def measure_batch(
    sessions: list[dict[str, Any]],
    preproc_dir: str | Path,
    batch_dir: str | Path,
    out_dir: str | Path,
    erosion_voxels: int,
    checks: dict[str, float] | None = None,
) -> list[dict[str, Any]]:
    """Derivatives of every entry of a batch into ``out_dir`` (laid out like the output dataset:
    ``sub-*/[ses-*/]anat`` and ``figures``; the folder appears only when all are written).
    ``sessions``: dicts with ``subject``, ``session``, ``entities`` (the image's kept entities),
    ``name`` (its preprocessing folder) and ``anat``: its anat folder relative to a dataset root."""
    records = []
    with staged_folder(out_dir) as folder:
        for s in sessions:
            preprocessed = Path(preproc_dir) / s["name"]
            anat = folder / s["anat"]
            record = session_outputs(
                s["subject"],
                s["session"],
                preprocessed,
                s.get("labels_dir") or batch_dir,
                anat,
                erosion_voxels,
                checks,
                s["entities"],
            )
            qc_snapshot(s["name"], preprocessed, anat, s["entities"])
            records.append(record)
    return records


def publish(batch_dir: str | Path, dataset: str | Path, sessions: list[dict[str, Any]]) -> None:
    """Put each entry's derivative files from a measure batch folder into the output dataset, as hard
    links (copies across file systems), each file swapped in whole; an entry's file the batch no
    longer has (labels of a session that now failed) is removed. Several images of one session
    share its folders, so files are replaced one by one, never a whole folder."""
    for s in sessions:
        for source in derivative_files(Path(batch_dir) / s["anat"], s["entities"]).values():
            relative = source.relative_to(batch_dir)
            target = Path(dataset) / relative
            if not source.exists():
                target.unlink(missing_ok=True)
                continue
            with atomic_path(target) as tmp:
                tmp.unlink()
                try:
                    os.link(source, tmp)
                except OSError:
                    shutil.copy2(source, tmp)


def qc_snapshot(
    title: str, preproc_dir: str | Path, anat_dir: str | Path, entities: dict[str, str] | None = None
) -> Path:
    """An entry's QC PNG (``figures/`` beside its ``anat_dir``): the segmentation, or why it failed."""
    files = derivative_files(anat_dir, entities)
    files["snapshot"].parent.mkdir(parents=True, exist_ok=True)
    record = read_measures(files["measures"])
    image = preproc_files(preproc_dir)[0]
    chi = load_image(image) if image.exists() else None
    if record["status"] == "failed":
        return render_failure(files["snapshot"], title, f"{record['failed_stage']}: {record['error']}", chi)
    dseg = load_image(files["dseg"], allow_unknown_orientation=True)
    return render_snapshot(
        files["snapshot"],
        chi,
        dseg,
        title,
        record.get("box"),
        summary_lines(record["measures"]),
        review_reasons=record.get("review_reasons") or [],
    )
