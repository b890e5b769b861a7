"""Two-step dentate segmentation with nnU-Net v2: localize, crop, segment, assign sides, paste back.

Both predictors are loaded once (nnU-Net's Python API) and reused for every image of a call, so a
cohort job never reloads models per subject. Sides are decided in RAS world coordinates relative
to the subject's midline, never by array index or by the sign of x.
"""

from __future__ import annotations

import contextlib
import io
import json
import time
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from scipy import ndimage

from dnqsm import __version__
from dnqsm.engine.confidence import DEFAULTS as CHECK_DEFAULTS
from dnqsm.engine.confidence import Confidence, assess, crop_numbers
from dnqsm.engine.localize import (
    Crop,
    Expectation,
    RegistrationLocator,
    crop_around,
    localization_input,
    localize,
    refine_region,
    region_components,
    resample_to_grid,
    uncrop,
)
from dnqsm.engine.nnunet import BUNDLED_MODELS, from_nnunet, model_folder, sha256, to_nnunet  # noqa: F401
from dnqsm.io import InputError, fractions_8bit, load_image, save_nifti, staged_folder, write_json
from dnqsm.labels import LEFT, NUCLEUS_CONNECTIVITY, RIGHT, SIDES
from dnqsm.names import result_file

#: Predicted localization components smaller than this (coarse voxels) are noise, not a DN region.
MIN_REGION_VOXELS = 20
#: Two parts of a DN mask are read as the two nuclei (for the midline) when their centroids lie at
#: least this far apart along x (each nucleus lies ~14-15 mm from the midline) ...
MIN_NUCLEI_SEPARATION_MM = 10.0
#: ... and the smaller holds at least this share of the larger's voxels.
MIN_NUCLEUS_SHARE = 0.25
DEFAULT_GEOMETRY = {"localization_spacing_mm": 3.0, "margin_mm": 5.0}


class SegmentationFailure(Exception):
    """The image was read but no dentate nucleus could be found in it."""


@dataclass
class Model:
    """One trained nnU-Net model as given by the user (folder or zip) and where it was unpacked."""

    role: str
    source: Path
    folder: Path
    sha256: str | None

    def describe(self) -> dict[str, Any]:
        return {
            "source": str(self.source),
            "name": self.folder.parent.name + "/" + self.folder.name,
            "sha256": self.sha256,
        }


@dataclass
class ModelSet:
    localization: Model
    segmentation: Model
    geometry: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_GEOMETRY))


def load_model_set(
    models_dir: str | Path | None = None, localization: str | Path | None = None, segmentation: str | Path | None = None
) -> ModelSet:
    """Models from a folder holding ``localization.zip``/``segmentation.zip`` (or folders of those names)
    and an optional ``provenance.json`` with the geometry they were trained with; explicit
    ``localization``/``segmentation`` paths override."""
    base = Path(models_dir) if models_dir else BUNDLED_MODELS
    geometry = dict(DEFAULT_GEOMETRY)
    provenance = base / "provenance.json"
    if provenance.exists():
        geometry.update(json.loads(provenance.read_text()).get("geometry", {}))
    models = {}
    for role, given in (("localization", localization), ("segmentation", segmentation)):
        source = Path(given) if given else next((p for p in (base / f"{role}.zip", base / role) if p.exists()), None)
        if source is None or not source.exists():
            raise FileNotFoundError(f"no {role} model: expected {base / (role + '.zip')} or pass it explicitly")
        digest = sha256(source) if source.is_file() else None
        models[role] = Model(role, source, model_folder(source), digest)
    return ModelSet(models["localization"], models["segmentation"], geometry)


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was requested but no CUDA GPU is available")
    return device


def resolve_mirroring(mirroring: bool | str, device: str) -> bool:
    """Test-time mirroring (nnU-Net's default, and dnqsm's: a small, consistent gain on unseen sites,
    docs/engine.md): ``True``/``False`` force it; ``"auto"`` turns it on only where it is cheap (a CUDA GPU) and
    off on CPU, where its 8 passes take about five times as long."""
    if mirroring == "auto":
        return device == "cuda"
    if isinstance(mirroring, bool):
        return mirroring
    raise ValueError(f"mirroring must be true, false or 'auto' (got {mirroring!r})")


class Method:
    """What every segmentation method shares: ``run`` segments a list of images into one folder per
    image (DentateSeg's layout: labels, localization mask, crops, metadata), failures stay per image.
    Subclasses implement ``segment`` (one image to a :class:`Result`) and ``describe``."""

    method = "engine"
    #: thresholds of the plausibility checks (dnqsm.engine.confidence.thresholds); callers may replace them
    checks: dict[str, float] = CHECK_DEFAULTS
    #: accept images whose sform and qform codes are both 0 (their default affine taken as scanner space)
    allow_unknown_orientation: bool = False

    def segment(self, path: str | Path) -> Result:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """What produced the labels: ``models`` (files and checksums) and ``options``."""
        raise NotImplementedError

    # -- many images -------------------------------------------------------------------------------
    def run(self, inputs: list[str | Path], out_dir: str | Path) -> list[dict]:
        """Segment every input into ``out_dir/<stem>/``; failures stay per image."""
        records = []
        for path in inputs:
            start = time.perf_counter()
            stem = image_stem(path)
            try:
                result = self.segment(path)
            except (InputError, SegmentationFailure) as exc:
                records.append(self._write_failure(path, out_dir, stem, str(exc), time.perf_counter() - start))
                continue
            except Exception as exc:  # an unexpected problem with one image must not stop the others
                msg = f"{path}: unexpected error: {type(exc).__name__}: {exc}"
                records.append(self._write_failure(path, out_dir, stem, msg, time.perf_counter() - start))
                continue
            records.append(self._write_result(path, out_dir, stem, result, start))
        return records

    def _base_metadata(self, path, stem: str) -> dict[str, Any]:
        return {
            "input": str(Path(path).absolute()),
            "stem": stem,
            "method": self.method,
            **self.describe(),
            "versions": {"dnqsm": __version__, **{name: version(name) for name in ("nnunetv2", "torch", "antspyx")}},
            "labels": {"1": "left dentate nucleus", "2": "right dentate nucleus"},
        }

    def _write_failure(self, path, out_dir, stem, message: str, seconds: float) -> dict:
        meta = {
            "status": "failed",
            "error": message,
            **self._base_metadata(path, stem),
            "timings_s": {"total": round(seconds, 3)},
        }
        with staged_folder(Path(out_dir) / stem) as folder:
            write_json(result_file(folder, stem, "metadata"), meta)
        return meta

    def _write_result(self, path, out_dir, stem, result: Result, start: float) -> dict:
        tick = time.perf_counter()
        img = result.image
        verdict = result.confidence
        meta = {
            "status": verdict.status,
            "review_reasons": verdict.reasons,
            "error": None,
            **self._base_metadata(path, stem),
            "image": {
                "shape": list(img.shape[:3]),
                "affine": np.round(img.affine, 5).tolist(),
                "orientation": "".join(nib.aff2axcodes(img.affine)),
                "spacing_mm": [round(float(z), 4) for z in img.header.get_zooms()[:3]],
            },
            **result.geometry,
            "dentate": result.sides,
            "missing_sides": [s for s in ("left", "right") if result.sides[s]["voxels"] == 0],
            "confidence": {"sides": verdict.sides, "thresholds": verdict.checks},
        }
        with staged_folder(Path(out_dir) / stem) as folder:
            save_nifti(result_file(folder, stem, "labels"), _like(img, result.labels))
            save_nifti(result_file(folder, stem, "region"), _like(img, result.region_on_input))
            save_nifti(result_file(folder, stem, "crop"), result.cropped)
            save_nifti(result_file(folder, stem, "crop_raw"), _like(result.cropped, result.cropped_raw))
            save_nifti(result_file(folder, stem, "crop_labels"), _like(result.cropped, result.cropped_labels))
            if result.cropped_probability is not None:  # 8 bits (steps of 1/255): the longitudinal mode's input
                save_nifti(
                    result_file(folder, stem, "crop_probability"),
                    fractions_8bit(result.cropped_probability, result.cropped.affine),
                )
            result.timings["write"] = time.perf_counter() - tick
            result.timings["total"] = time.perf_counter() - start
            meta["timings_s"] = {k: round(v, 3) for k, v in result.timings.items()}
            write_json(result_file(folder, stem, "metadata"), meta)
        return meta


class NnunetMethod(Method):
    """Both nnU-Net predictors, loaded once; ``run`` segments a list of images."""

    method = "nnunet"

    def __init__(
        self,
        models: ModelSet,
        device: str = "cpu",
        folds: tuple | None = None,
        mirroring: bool | str = True,
        threads: int | None = None,
        tile_step_size: float = 0.5,
        probabilities: bool = True,
        second_opinion: bool = True,
    ):
        import torch
        from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

        from dnqsm.engine.nnunet import register_trainers

        register_trainers()  # models trained by dnqsm name its trainer class
        self.models = models
        self.probabilities = probabilities  # keep the segmentation network's probabilities for the checks
        # the registration's second opinion on the localization network's region (dnqsm.engine.localize.localize)
        spacing = float(models.geometry["localization_spacing_mm"])
        self.registration = RegistrationLocator(spacing) if second_opinion else None
        self.device = resolve_device(device)
        self.mirroring = resolve_mirroring(mirroring, self.device)
        self.folds = folds
        self.threads = threads
        if threads:
            torch.set_num_threads(threads)
        self.predictors = {}
        for model in (models.localization, models.segmentation):
            with contextlib.redirect_stdout(io.StringIO()):  # nnU-Net prints a CPU notice unconditionally
                predictor = nnUNetPredictor(
                    tile_step_size=tile_step_size,
                    use_gaussian=True,
                    use_mirroring=self.mirroring,
                    perform_everything_on_device=self.device == "cuda",
                    device=torch.device(self.device),
                    verbose=False,
                    verbose_preprocessing=False,
                    allow_tqdm=False,
                )
            available = tuple(
                p.parent.name.removeprefix("fold_") for p in model.folder.glob("fold_*/checkpoint_final.pth")
            )
            use = tuple(str(f) for f in folds) if folds else available
            if not use or not set(use) <= set(available):
                raise FileNotFoundError(
                    f"{model.source}: folds {list(use)} requested, trained folds: {sorted(available)}"
                )
            use = tuple(f if f == "all" else int(f) for f in sorted(use))
            with contextlib.redirect_stdout(io.StringIO()):  # nnU-Net narrates its trainer-class search
                predictor.initialize_from_trained_model_folder(
                    str(model.folder), use_folds=use, checkpoint_name="checkpoint_final.pth"
                )
            self.predictors[model.role] = predictor

    # -- one image -------------------------------------------------------------------------------
    def segment(self, path: str | Path) -> Result:
        """Segment one image; raises InputError or SegmentationFailure with a clear message."""
        timings: dict[str, float] = {}
        tick = time.perf_counter()
        img = load_image(path, allow_unknown_orientation=self.allow_unknown_orientation)
        timings["load"] = time.perf_counter() - tick

        tick = time.perf_counter()
        spacing = float(self.models.geometry["localization_spacing_mm"])
        coarse, grid_affine = localization_input(img, spacing)
        data, props = to_nnunet(coarse, [spacing] * 3)
        region = from_nnunet(self.predictors["localization"].predict_single_npy_array(data, props)) > 0
        region = region_components(region, min_voxels=MIN_REGION_VOXELS, keep=2)
        timings["localization"] = time.perf_counter() - tick
        tick = time.perf_counter()
        checks = {**CHECK_DEFAULTS, **self.checks}
        located = localize(region, img, grid_affine, self.registration, checks["min_box_mm"], checks["max_box_mm"])
        timings["registration"] = time.perf_counter() - tick
        if not located.region.any():
            raise SegmentationFailure(
                f"{path}: neither the localization model nor the registration of the MNI brain "
                "found a dentate region (does the image cover the cerebellum?)"
            )
        tick = time.perf_counter()
        canonical = nib.as_closest_canonical(img)
        margin = float(self.models.geometry["margin_mm"])
        area = crop_around(canonical, located.region, grid_affine, margin)
        raw, foreground, single_pass = self._segment_crop(area.image)
        if located.locator != "network":  # a wide crop: segment again on the crop around what it found
            refined = refine_region(
                raw, area.image.affine, grid_affine, located.region.shape, located.expected.centres_mm
            )
            if refined.any():
                area = crop_around(canonical, refined, grid_affine, margin)
                located.refined = True
                raw, foreground, single_pass = self._segment_crop(area.image)
        timings["segmentation"] = time.perf_counter() - tick

        nothing = f"{path}: no dentate nucleus found in the localized region"
        result = postprocess(
            img, area, raw, timings, nothing, foreground, self.checks, single_pass, expected=located.expected
        )
        result.geometry["localization"] = located.record()
        return result

    def _segment_crop(self, cropped: nib.Nifti1Image):
        """Step two on a crop: (binary DN mask, foreground probability or None, the plain pass's mask when
        mirroring is on, else None)."""
        values = cropped.get_fdata(dtype=np.float32)
        data, props = to_nnunet(np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0), cropped.header.get_zooms()[:3])
        predicted = self.predictors["segmentation"].predict_single_npy_array(
            data, props, None, None, self.probabilities
        )
        seg, probabilities = predicted if self.probabilities else (predicted, None)
        raw = (from_nnunet(seg) > 0).astype(np.uint8)
        foreground = from_nnunet(probabilities[1]).astype(np.float32) if self.probabilities else None
        single_pass = None
        if self.mirroring:  # one more pass without mirroring: do the passes agree? (a confidence check)
            predictor = self.predictors["segmentation"]
            predictor.use_mirroring = False
            try:
                single_pass = (from_nnunet(predictor.predict_single_npy_array(data, props)) > 0).astype(np.uint8)
            finally:
                predictor.use_mirroring = True
        return raw, foreground, single_pass

    def describe(self) -> dict[str, Any]:
        return {
            "models": {
                "localization": self.models.localization.describe(),
                "segmentation": self.models.segmentation.describe(),
            },
            "geometry_parameters": self.models.geometry,
            "options": {
                "device": self.device,
                "mirroring": self.mirroring,
                "second_opinion": "registration" if self.registration else None,
                "folds": list(self.folds) if self.folds else "all available",
                "threads": self.threads,
            },
        }


@dataclass
class Result:
    image: nib.Nifti1Image
    labels: np.ndarray  # on the input grid: 1 left, 2 right
    region_on_input: np.ndarray  # localization region on the input grid
    cropped: nib.Nifti1Image  # canonical-orientation crop of the input
    cropped_raw: np.ndarray  # segmentation network output on the crop (binary)
    cropped_labels: np.ndarray  # after side assignment and largest components
    sides: dict[str, dict]
    geometry: dict[str, Any]
    timings: dict[str, float]
    confidence: Confidence
    cropped_probability: np.ndarray | None = None  # the method's foreground probability on the crop


def postprocess(
    img: nib.Nifti1Image,
    area: Crop,
    raw: np.ndarray,
    timings: dict[str, float],
    nothing_found: str,
    probability: np.ndarray | None = None,
    checks: dict[str, float] | None = None,
    single_pass: np.ndarray | None = None,
    region_name: str = "localization",
    expected: Expectation | None = None,
) -> Result:
    """What every method does with its binary DN mask ``raw`` on the crop ``area`` (:class:`Crop`): the
    midline (:func:`midline`; ``region_name`` is what its first source is called in the record), sides by
    it and the largest component per side (:func:`assign_sides`), then the labels back on the input's own
    grid with the geometry record and the confidence verdict (``probability``: the method's foreground
    probability on the crop, if it has one; ``expected``: where and how large an independent registration
    expects each nucleus, for the registration checks). Raises SegmentationFailure(``nothing_found``) when no DN
    is left."""
    region, grid_affine, cropped, slices = area.region, area.grid_affine, area.image, area.slices
    tick = time.perf_counter()
    midline_x, midline_source = midline(img, region, grid_affine, raw, cropped.affine, region_name)
    labeled, sides = assign_sides(raw, cropped.affine, midline_x)
    if not labeled.any():
        raise SegmentationFailure(nothing_found)
    labels = uncrop(labeled, slices, img.affine, img.shape[:3])
    mask_on_input = (
        resample_to_grid(region.astype(np.float32), grid_affine, img.affine, img.shape[:3], order=0, smooth=False) > 0.5
    )
    voxel_mm3 = float(abs(np.linalg.det(img.affine[:3, :3])))
    for name, label in SIDES.items():
        sides[name]["volume_mm3"] = round(float((labels == label).sum()) * voxel_mm3, 3)
    spacing = float(abs(grid_affine[0, 0]))
    geometry = {
        "localization_spacing_mm": spacing,
        "localization_grid_shape": list(region.shape),
        "localization_components": int(ndimage.label(region)[1]),
        "box": area.box.as_dict(),
        "margin_mm": area.margin_mm,
        "crop_voxels_canonical": [[s.start, s.stop] for s in slices],
        "crop_shape": list(cropped.shape[:3]),
        "crop_spacing_mm": [round(float(z), 4) for z in cropped.header.get_zooms()[:3]],
        "box_touches_image_edge": area.touches_edge,
        "midline_x_mm": round(midline_x, 3),
        "midline_source": midline_source,
    }
    timings["postprocess"] = time.perf_counter() - tick
    tick = time.perf_counter()
    values = cropped.get_fdata(dtype=np.float32)
    numbers = crop_numbers(
        values,
        labeled,
        probability,
        {name: sides[name]["predicted_voxels"] for name in sides},
        cropped.affine,
        midline_x,
        single_pass,
        expected,
        area.image_edges,
    )
    verdict = assess(
        numbers,
        {n: sides[n]["volume_mm3"] for n in ("left", "right")},
        area.box.as_dict(),
        [float(z) for z in img.header.get_zooms()[:3]],
        checks or CHECK_DEFAULTS,
    )
    timings["confidence"] = time.perf_counter() - tick
    return Result(
        img,
        labels,
        mask_on_input.astype(np.uint8),
        cropped,
        raw,
        labeled,
        sides,
        geometry,
        timings,
        verdict,
        probability,
    )


def assign_sides(binary: np.ndarray, affine: np.ndarray, midline_x: float) -> tuple[np.ndarray, dict]:
    """Split a binary DN mask into left (1) and right (2) by world x relative to the midline, then keep
    the largest connected component per side. A side with nothing stays empty (reported, not invented)."""
    labels = np.zeros(binary.shape, np.uint8)
    idx = np.argwhere(binary > 0)
    info = {}
    if len(idx):
        world_x = nib.affines.apply_affine(affine, idx)[:, 0]
        side = np.where(world_x < midline_x, LEFT, RIGHT).astype(np.uint8)
        labels[tuple(idx.T)] = side
    for name, label in SIDES.items():
        predicted = int((labels == label).sum())
        comps, n = ndimage.label(labels == label, structure=NUCLEUS_CONNECTIVITY)
        if n > 1:
            sizes = ndimage.sum(labels == label, comps, index=np.arange(1, n + 1))
            keep = 1 + int(np.argmax(sizes))
            labels[(comps > 0) & (comps != keep)] = 0
        info[name] = {"components": int(n), "voxels": int((labels == label).sum()), "predicted_voxels": predicted}
    return labels, info


def midline(
    img: nib.Nifti1Image,
    region: np.ndarray,
    grid_affine: np.ndarray,
    binary: np.ndarray,
    binary_affine: np.ndarray,
    region_name: str = "localization",
) -> tuple[float, str]:
    """World x of the subject's midline and where it came from, first source that can tell:
    halfway between the two localized DN regions (``region_name``); else halfway between the two
    segmented nuclei (:func:`midline_between_nuclei` on ``binary``, the method's DN mask); else the
    centroid of the image's non-zero finite voxels, which the field of view and the head's position
    move by several millimetres (``"image centroid"``)."""
    comps, n = ndimage.label(region)  # face-connected, as localize.region_components kept them
    if n == 2:
        centres = [nib.affines.apply_affine(grid_affine, np.argwhere(comps == i).mean(0)) for i in (1, 2)]
        return float((centres[0][0] + centres[1][0]) / 2), region_name
    between = midline_between_nuclei(binary, binary_affine)
    if between is not None:
        return between, "segmented nuclei"
    data = np.asanyarray(img.dataobj)
    inside = np.argwhere(np.isfinite(data) & (data != 0))
    return float(nib.affines.apply_affine(img.affine, inside.mean(0))[0]), "image centroid"


def midline_between_nuclei(
    binary: np.ndarray,
    affine: np.ndarray,
    min_separation_mm: float = MIN_NUCLEI_SEPARATION_MM,
    min_share: float = MIN_NUCLEUS_SHARE,
) -> float | None:
    """World x halfway between the centroids of a DN mask's two largest connected parts, when they look
    like the two nuclei side by side: the smaller holds at least ``min_share`` of the larger's voxels and
    their centroids lie at least ``min_separation_mm`` apart along x. Else None (one nucleus, or one
    nucleus and a fragment: no midline can be read from the mask)."""
    nuclei = binary > 0
    comps, n = ndimage.label(nuclei, structure=NUCLEUS_CONNECTIVITY)
    if n < 2:
        return None
    sizes = ndimage.sum(nuclei, comps, index=np.arange(1, n + 1))
    first, second = (1 + int(i) for i in np.argsort(sizes)[::-1][:2])
    if sizes[second - 1] < min_share * sizes[first - 1]:
        return None
    x = [float(nib.affines.apply_affine(affine, np.argwhere(comps == c).mean(0))[0]) for c in (first, second)]
    if abs(x[0] - x[1]) < min_separation_mm:
        return None
    return (x[0] + x[1]) / 2


def _like(reference: nib.Nifti1Image, labels: np.ndarray) -> nib.Nifti1Image:
    """A uint8 label image with the reference's grid, affine, qform/sform and orientation."""
    header = reference.header.copy()
    header.set_data_dtype(np.uint8)
    header.set_slope_inter(1.0, 0.0)
    out = nib.Nifti1Image(labels.astype(np.uint8), reference.affine, header)
    out.set_sform(reference.get_sform(), int(reference.header["sform_code"]) or 1)
    out.set_qform(reference.get_qform(), int(reference.header["qform_code"]) or 1)
    return out


def image_stem(path: str | Path) -> str:
    name = Path(path).name
    for ext in (".nii.gz", ".nii"):
        if name.endswith(ext):
            return name[: -len(ext)]
    return Path(path).stem
