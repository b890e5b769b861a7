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

from dnqsm.confidence import reassess, thresholds
from dnqsm.io import InputError, bids_name, load_image, prefix, save_nifti, staged_folder, write_json  # noqa: F401
from dnqsm.measure import measure
from dnqsm.preprocess import preprocess
from dnqsm.qc import render_failure, render_snapshot, summary_lines
from dnqsm.segment import image_stem

PREPROC = "desc-preproc_Chimap"


def preproc_files(folder: str | Path) -> tuple[Path, Path]:
    """(image, record) of a preprocessing folder."""
    folder = Path(folder)
    return folder / f"{folder.name}_{PREPROC}.nii.gz", folder / f"{folder.name}_{PREPROC}.json"


def derivative_files(anat_dir: str | Path) -> dict[str, Path]:
    """A session's derivative files by role, from its folder ``sub-<label>[/ses-<label>]/anat``."""
    anat_dir = Path(anat_dir)
    has_session = anat_dir.parent.name.startswith("ses-")
    session = anat_dir.parent.name.removeprefix("ses-") if has_session else None
    subject = (anat_dir.parent.parent if has_session else anat_dir.parent).name.removeprefix("sub-")
    return {"dseg": anat_dir / bids_name("dseg", sub=subject, ses=session, desc="dentate"),
            "mask": anat_dir / bids_name("mask", sub=subject, ses=session, desc="localization"),
            "measures": anat_dir / bids_name("measures", ".json", sub=subject, ses=session, desc="dentate")}


def read_measures(anat_dir: str | Path) -> dict[str, Any]:
    """A session's measures record (status, measures, QC fields)."""
    return json.loads(derivative_files(anat_dir)["measures"].read_text())


def _failure(stage: str, error: str, **extra: Any) -> dict[str, Any]:
    return {"status": "failed", "failed_stage": stage, "error": error, **extra}


def preprocess_session(raw: str | Path, out_dir: str | Path, unit_policy: str,
                       allow_unknown_orientation: bool = False) -> dict[str, Any]:
    """Validate and convert one session's image into ``out_dir`` (named after the session)."""
    out_dir = Path(out_dir)
    with staged_folder(out_dir) as folder:
        image_name, record_name = (p.name for p in preproc_files(out_dir))
        try:
            img, record = preprocess(raw, unit_policy, allow_unknown_orientation)
        except InputError as exc:
            record = _failure("preprocess", str(exc), Sources=[str(Path(raw).absolute())])
        except Exception as exc:  # a bug or an odd file must stay this session's problem
            record = _failure("preprocess", f"{raw}: unexpected error: {type(exc).__name__}: {exc}",
                              Sources=[str(Path(raw).absolute())])
        else:
            record.update(status="ok", failed_stage=None, error=None)
            save_nifti(folder / image_name, img)
        write_json(folder / record_name, record)
    return record


def preprocess_batch(sessions: list[tuple[str | Path, str]], out_dir: str | Path, unit_policy: str,
                     allow_unknown_orientation: bool = False) -> list[dict[str, Any]]:
    """:func:`preprocess_session` for every ``(raw image, folder name)`` of a batch, each into its own
    folder of ``out_dir``; the batch folder appears only when every session has its record."""
    with staged_folder(out_dir) as folder:
        return [preprocess_session(raw, folder / name, unit_policy, allow_unknown_orientation) for raw, name in sessions]


def segment_batch(preproc_dirs: list[str | Path], out_dir: str | Path, segmenter) -> list[dict[str, Any]]:
    """Segment every successfully preprocessed session of a batch into ``out_dir/<stem>/`` (models
    loaded once by ``segmenter``, a :class:`dnqsm.segment.Engine`); earlier failures get a
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
                write_json(folder / stem / f"{stem}_metadata.json", {**record, "stem": stem})
        records = segmenter.run(images, folder)
    return records


def batch_metadata(batch_dir: str | Path, preproc_dir: str | Path) -> dict[str, Any]:
    """A session's engine record in a segmentation batch folder (either method)."""
    stem = image_stem(preproc_files(preproc_dir)[0])
    return json.loads((Path(batch_dir) / stem / f"{stem}_metadata.json").read_text())


def batch_labels(batch_dir: str | Path, meta: dict[str, Any]) -> Path:
    """The engine's label image (1 left, 2 right, input grid) of the session ``meta`` describes."""
    return Path(batch_dir) / meta["stem"] / f"{meta['stem']}_seg.nii.gz"


def session_outputs(subject: str, session: str | None, preproc_dir: str | Path, batch_dir: str | Path,
                    anat_dir: str | Path, erosion_voxels: int, checks: dict[str, float] | None = None) -> dict[str, Any]:
    """The session's derivative folder: DN labels, localization mask, their sidecar and the measures
    record (always written; ``status`` says whether the rest is there, and ``review`` whether the
    engine's numbers pass the plausibility ``checks``: config ``confidence``, default thresholds)."""
    pre = json.loads(preproc_files(preproc_dir)[1].read_text())
    meta = batch_metadata(batch_dir, preproc_dir)
    record: dict[str, Any] = {
        "participant_id": f"sub-{subject}", "session_id": f"ses-{session}" if session else None,
        "source": pre.get("Sources", [None])[0], "status": "ok", "review_reasons": [], "failed_stage": None,
        "error": None,
        **{key: pre.get(key) for key in ("input_unit", "input_unit_source", "orientation", "p99_abs_chi_ppb")},
    }
    names = {role: path.name for role, path in derivative_files(anat_dir).items()}
    with staged_folder(anat_dir) as folder:
        if pre["status"] != "ok":
            record.update(status="failed", failed_stage="preprocess", error=pre["error"])
        elif meta["status"] == "failed":
            image = preproc_files(preproc_dir)[0]
            error = meta["error"]
            for name in (str(image.absolute()), str(image)):  # name the user's file, not our work copy
                error = error.replace(name, str(record["source"]))
            record.update(status="failed", failed_stage="segment", error=error)
        else:
            engine_dir = Path(batch_dir) / meta["stem"]
            chi = load_image(preproc_files(preproc_dir)[0])
            seg = batch_labels(batch_dir, meta)
            dseg = load_image(seg, allow_unknown_orientation=True)
            components = {side: meta["dentate"][side]["components"] for side in ("left", "right")}
            record["measures"] = measure(chi, dseg, erosion_voxels, components)
            verdict = reassess(meta, thresholds(checks))
            record.update(status=verdict.status, review_reasons=verdict.reasons, confidence=verdict.sides)
            record.update({
                "method": meta["method"],
                "localization_components": meta["localization_components"],
                "box_touches_image_edge": meta["box_touches_image_edge"], "missing_sides": meta["missing_sides"],
                "box": meta["box"], "erosion_voxels": erosion_voxels,
            })
            shutil.copyfile(seg, folder / names["dseg"])
            shutil.copyfile(engine_dir / f"{meta['stem']}_cerebellar_mask.nii.gz", folder / names["mask"])
            write_json(folder / names["dseg"].replace(".nii.gz", ".json"), {
                "Sources": [record["source"]], "Description": "dentate nuclei: 1 left, 2 right (dnqsm)",
                "Method": meta["method"],
                "Models": meta["models"], "Options": {k: v for k, v in meta["options"].items() if k != "threads"},
                **{key: meta[key] for key in ("box", "margin_mm", "localization_spacing_mm", "crop_voxels_canonical",
                                              "midline_x_mm", "midline_source", "box_touches_image_edge")},
            })
        write_json(folder / names["measures"], record)
    return record


def measure_batch(sessions: list[dict[str, Any]], preproc_dir: str | Path, batch_dir: str | Path,
                  out_dir: str | Path, erosion_voxels: int, checks: dict[str, float] | None = None) -> list[dict[str, Any]]:
    """Derivatives of every session of a batch into ``out_dir`` (laid out like the output dataset:
    ``sub-*/[ses-*/]anat`` and ``figures``), then each session's files published into the output
    dataset (:func:`publish`). ``sessions``: dicts with ``subject``, ``session``, ``name`` (its
    preprocessing folder) and ``anat``/``png``: paths relative to a dataset root."""
    records = []
    out_dir = Path(out_dir)
    with staged_folder(out_dir) as folder:
        for s in sessions:
            preprocessed = Path(preproc_dir) / s["name"]
            record = session_outputs(s["subject"], s["session"], preprocessed, batch_dir, folder / s["anat"],
                                     erosion_voxels, checks)
            (folder / s["png"]).parent.mkdir(parents=True, exist_ok=True)
            qc_snapshot(s["subject"], s["session"], preprocessed, folder / s["anat"], folder / s["png"])
            records.append(record)
    return records


def publish(batch_dir: str | Path, dataset: str | Path, folders: list[str]) -> None:
    """Put a batch's session folders (``folders``: paths relative to both roots, e.g.
    ``sub-01/ses-01/anat``) into the output dataset as hard links to the batch's files (copies across
    file systems); each folder is swapped in whole, so a reader never sees half of one."""
    for relative in folders:
        source = Path(batch_dir) / relative
        with staged_folder(Path(dataset) / relative) as folder:
            for item in sorted(source.iterdir()):
                try:
                    os.link(item, folder / item.name)
                except OSError:
                    shutil.copy2(item, folder / item.name)


def qc_snapshot(subject: str, session: str | None, preproc_dir: str | Path, anat_dir: str | Path,
                out_png: str | Path) -> Path:
    """The session's QC PNG: the segmentation, or the reason it failed."""
    title = prefix(subject, session)
    record = read_measures(anat_dir)
    image = preproc_files(preproc_dir)[0]
    chi = load_image(image) if image.exists() else None
    if record["status"] == "failed":
        return render_failure(out_png, title, f"{record['failed_stage']}: {record['error']}", chi)
    dseg = load_image(derivative_files(anat_dir)["dseg"], allow_unknown_orientation=True)
    return render_snapshot(out_png, chi, dseg, title, record.get("box"), summary_lines(record["measures"]),
                           review_reasons=record.get("review_reasons") or [])
