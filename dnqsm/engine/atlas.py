"""The registration baseline: multi-atlas dentate segmentation with antspyx.

The method the deep-learning tool is compared with, built to produce exactly the same outputs (the
engine layout of :class:`dnqsm.engine.segment.Method`) so that measures, QC and validation treat both alike:

1. *localization*: each atlas (a labelled QSM image) is registered affinely to the session's image
   on smoothed head-support masks at the localization spacing (QSM contrast alone is too sparse for
   a global fit); the atlas labels carried across form the DN region on the same coarse grid the
   localization network uses, and the same crop box (plus margin) is cut from the image;
2. *segmentation*: each atlas is registered deformably (ANTs SyN, on clipped chi, initialised by
   the affine) to the crop, and its labels are carried onto the crop's native voxels; with several
   atlases they are combined by joint label fusion (Wang et al. 2013, ``ants.joint_label_fusion``);
3. the same post-processing as the deep-learning method: sides by world x relative to the midline,
   largest component per side, pasted back onto the input grid.

An atlas whose image is the session's own image is left out (leave-one-out), so a labelled cohort
can serve as its own atlas set without scoring a subject against itself.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from scipy import ndimage

from dnqsm.engine.localize import coarse_grid, crop_around, data_support, filled, region_components
from dnqsm.engine.nnunet import sha256
from dnqsm.engine.registration import ants_image, remove_transforms
from dnqsm.engine.segment import Method, Result, SegmentationFailure, image_stem, postprocess
from dnqsm.io import InputError, load_image
from dnqsm.labels import LEFT, RIGHT
from dnqsm.settings import defaults
from dnqsm.workflow.bids import dentate_labels, select_sessions
from dnqsm.workflow.preprocess import preprocess

#: Settings of the atlas baseline: their defaults live in the configuration schema (``atlas``).
DEFAULTS: dict[str, Any] = defaults("atlas")


@dataclass
class Atlas:
    """One labelled image, preprocessed to ppb like every session, with what registration needs."""

    name: str
    image_path: Path
    labels_path: Path
    chi: Any  # ants image, clipped ppb
    support: Any  # ants image, smoothed head mask at the localization spacing
    labels: Any  # ants image, 0/1/2
    fingerprint: str  # of the preprocessed voxels: finds the session's own image among the atlases
    checksums: dict[str, str]  # sha256 of the image and label files, taken once at load

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "image": str(self.image_path),
            "labels": str(self.labels_path),
            "image_sha256": self.checksums["image"],
            "labels_sha256": self.checksums["labels"],
        }


def atlas_pairs(
    bids_dir: str | Path | None = None,
    labels_dir: str | Path | None = None,
    participant_label: list[str] | None = None,
    files: list[dict[str, str]] | None = None,
) -> list[tuple[Path, Path]]:
    """(image, labels) of every atlas: the labelled sessions of a BIDS dataset (``desc-dentate_dseg``
    in ``labels_dir``, optionally only ``participant_label``) plus explicit ``files`` entries
    (``{image, labels}``, e.g. a template with DN labels). Raises InputError when none is found."""
    pairs: list[tuple[Path, Path]] = []
    if bids_dir:
        if not labels_dir:
            raise InputError(f"atlas.bids_dir {bids_dir} is set but atlas.labels_dir (its DN labels) is not")
        for session in select_sessions(bids_dir, participant_label):
            labels = dentate_labels(labels_dir, session)
            if labels.exists():
                pairs.append((session.image, labels))
    for entry in files or []:
        pairs.append((Path(entry["image"]), Path(entry["labels"])))
    for image, labels in pairs:
        for path in (image, labels):
            if not path.exists():
                raise InputError(f"{path}: atlas file does not exist")
    if not pairs:
        raise InputError(
            f"no atlas: no labelled _Chimap image in atlas.bids_dir {bids_dir} / labels_dir "
            f"{labels_dir}, and no atlas.files"
        )
    return pairs


def head_support(img: nib.Nifti1Image) -> np.ndarray:
    """The head as a filled mask (:func:`dnqsm.engine.localize.data_support`, :func:`dnqsm.engine.localize.filled`)."""
    return filled(data_support(img))


def _support_image(img: nib.Nifti1Image, spacing_mm: float):
    """Smoothed head support on a world-aligned grid: what the affine step registers."""
    import ants

    support = ants_image(head_support(img).astype(np.float32), img.affine)
    coarse = ants.resample_image(support, (spacing_mm,) * 3, use_voxels=False, interp_type=0)
    return ants.smooth_image(coarse, 1.5, sigma_in_physical_coordinates=False)


def _fingerprint(img: nib.Nifti1Image) -> str:
    digest = hashlib.sha256(np.ascontiguousarray(img.get_fdata(dtype=np.float32)).tobytes())
    digest.update(np.round(img.affine, 4).tobytes())
    return digest.hexdigest()


def load_atlases(
    pairs: list[tuple[Path, Path]], unit_policy: str = "auto", settings: dict[str, Any] | None = None
) -> list[Atlas]:
    """Preprocess and validate every atlas once (a job reuses them for all its sessions)."""
    settings = {**DEFAULTS, **(settings or {})}
    lo, hi = settings["intensity_range_ppb"]
    atlases = []
    for image_path, labels_path in pairs:
        img, _ = preprocess(image_path, unit_policy)
        labels = load_image(labels_path, allow_unknown_orientation=True)
        if labels.shape[:3] != img.shape[:3] or not np.allclose(labels.affine, img.affine, atol=1e-3):
            raise InputError(f"{labels_path}: atlas labels are not on the grid of {image_path}")
        values = np.rint(np.asanyarray(labels.dataobj)).astype(np.int16)
        found = set(np.unique(values).tolist())
        if not {LEFT, RIGHT} <= found or not found <= {0, LEFT, RIGHT}:
            raise InputError(
                f"{labels_path}: atlas labels must hold left ({LEFT}) and right ({RIGHT}) dentate "
                f"nuclei and nothing else; found labels {sorted(found)}"
            )
        chi = np.clip(img.get_fdata(dtype=np.float32), lo, hi)
        atlases.append(
            Atlas(
                image_stem(image_path).removesuffix("_Chimap"),
                Path(image_path),
                Path(labels_path),
                ants_image(chi, img.affine),
                _support_image(img, settings["localization_spacing_mm"]),
                ants_image(values, img.affine),
                _fingerprint(img),
                {"image": sha256(image_path), "labels": sha256(labels_path)},
            )
        )
    return atlases


class AtlasMethod(Method):
    """Multi-atlas registration and label fusion (antspyx); ``run`` segments a list of images."""

    method = "atlas"

    def __init__(self, atlases: list[Atlas], settings: dict[str, Any] | None = None, threads: int | None = None):
        self.atlases = atlases
        self.settings = {**DEFAULTS, **(settings or {})}
        self.threads = threads
        if threads:  # ANTs (ITK) reads this when a registration starts
            os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(threads)
        self._left_out: list[str] = []

    def describe(self) -> dict[str, Any]:
        return {
            "models": {"atlases": [a.describe() for a in self.atlases]},
            "geometry_parameters": {k: self.settings[k] for k in ("localization_spacing_mm", "margin_mm")},
            "options": {
                **self.settings,
                "fusion": "joint label fusion" if len(self.atlases) > 1 else "single atlas",
                "atlases_left_out": list(self._left_out),
                "device": "cpu",
                "threads": self.threads,
            },
        }

    def segment(self, path: str | Path) -> Result:
        fits: list[dict[str, Any]] = []
        try:
            return self._segment(path, fits)
        finally:  # ANTs leaves every transform as a temporary file
            remove_transforms(fits)

    def _segment(self, path: str | Path, fits: list[dict[str, Any]]) -> Result:
        import ants

        timings: dict[str, float] = {}
        self._left_out = []
        tick = time.perf_counter()
        img = load_image(path)
        own = _fingerprint(img)
        atlases = [a for a in self.atlases if a.fingerprint != own]
        self._left_out = [a.name for a in self.atlases if a.fingerprint == own]
        if not atlases:
            raise SegmentationFailure(f"{path}: the only atlas is this image itself; give other labelled atlases")
        lo, hi = self.settings["intensity_range_ppb"]
        spacing = float(self.settings["localization_spacing_mm"])
        target_support = _support_image(img, spacing)
        timings["load"] = time.perf_counter() - tick

        # localization: affine per atlas, labels onto the coarse grid, the DN region and its crop
        tick = time.perf_counter()
        grid_affine, grid_shape = coarse_grid(img, spacing)
        grid = ants_image(np.zeros(grid_shape, np.float32), grid_affine)
        affines, coarse_labels = [], np.zeros(grid_shape, bool)
        for atlas in atlases:
            fit = ants.registration(target_support, atlas.support, type_of_transform="Affine", aff_metric="meansquares")
            fits.append(fit)
            affines.append(fit["fwdtransforms"])
            carried = ants.apply_transforms(grid, atlas.labels, fit["fwdtransforms"], interpolator="genericLabel")
            coarse_labels |= carried.numpy() > 0
        region = ndimage.binary_dilation(ndimage.binary_fill_holes(coarse_labels), iterations=2)
        region = region_components(region, min_voxels=1, keep=2)
        timings["localization"] = time.perf_counter() - tick
        if not region.any():
            raise SegmentationFailure(
                f"{path}: no atlas's dentate nuclei landed inside the image after affine "
                "registration (does the image cover the cerebellum?)"
            )

        # segmentation: SyN per atlas on the crop, labels fused on the crop's native voxels
        tick = time.perf_counter()
        area = crop_around(nib.as_closest_canonical(img), region, grid_affine, float(self.settings["margin_mm"]))
        cropped = area.image
        values = np.clip(np.nan_to_num(cropped.get_fdata(dtype=np.float32)), lo, hi)
        target = ants_image(values, cropped.affine)
        fixed = ants.resample_image(
            target, (float(self.settings["syn_spacing_mm"]),) * 3, use_voxels=False, interp_type=0
        )
        warped_chi, warped_labels = [], []
        for atlas, affine in zip(atlases, affines):
            fit = ants.registration(fixed, atlas.chi, type_of_transform="SyNOnly", initial_transform=affine[0])
            fits.append(fit)
            warped_labels.append(
                ants.apply_transforms(target, atlas.labels, fit["fwdtransforms"], interpolator="genericLabel")
            )
            warped_chi.append(ants.apply_transforms(target, atlas.chi, fit["fwdtransforms"], interpolator="linear"))
        fused = self._fuse(target, warped_chi, warped_labels)
        raw = (fused > 0).astype(np.uint8)
        timings["segmentation"] = time.perf_counter() - tick

        nothing = f"{path}: no atlas label survived registration to the localized region"
        result = postprocess(img, area, raw, timings, nothing, checks=self.checks, region_name="atlas region")
        result.geometry["atlases_used"] = [a.name for a in atlases]
        result.geometry["localization"] = {"locator": "atlas", "reasons": [], "refined": False}
        return result

    def _fuse(self, target, warped_chi: list, warped_labels: list) -> np.ndarray:
        """Joint label fusion of the carried labels (one atlas: its labels as they are)."""
        import ants

        if len(warped_labels) == 1:
            return warped_labels[0].numpy().astype(np.uint8)
        union = np.any([w.numpy() > 0 for w in warped_labels], axis=0)
        if not union.any():
            return np.zeros(target.shape, np.uint8)
        within = ndimage.binary_dilation(union, iterations=3)
        idx = np.argwhere(within)
        lo, hi = idx.min(0).tolist(), (idx.max(0) + 1).tolist()

        def part(image):
            return ants.crop_indices(image, lo, hi)

        mask = ants.from_numpy(within.astype(np.float32), target.origin, target.spacing, target.direction)
        # antspyx writes the fused probabilities as files (in /tmp unless given a prefix) and reads them
        # back without removing them: two files per session, so they go to a folder removed here
        with tempfile.TemporaryDirectory(prefix="dnqsm-jlf-") as scratch:
            fusion = ants.joint_label_fusion(
                part(target),
                part(mask),
                [part(w) for w in warped_chi],
                beta=float(self.settings["jlf_beta"]),
                rad=int(self.settings["jlf_radius"]),
                label_list=[part(w) for w in warped_labels],
                output_prefix=str(Path(scratch) / "fusion_"),
            )
        # antspyx's own "segmentation" takes the argmax over the DN labels only, so every masked voxel
        # becomes a DN; background is whatever probability the labels leave.
        probability = {int(n): p.numpy() for n, p in zip(fusion["segmentation_numbers"], fusion["probabilityimages"])}
        empty = np.zeros(next(iter(probability.values())).shape, np.float32)
        stack = [1.0 - sum(probability.values())] + [probability.get(k, empty) for k in (LEFT, RIGHT)]
        fused = np.zeros(target.shape, np.uint8)
        fused[tuple(slice(a, b) for a, b in zip(lo, hi))] = np.argmax(np.stack(stack), axis=0).astype(np.uint8)
        return fused
