"""MNI152 2009 1 mm anatomy from nilearn's wheel: tissue fractions and a cerebellum region."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import ndimage

#: MNI centroids (mm) of the dentate nuclei, from DOMAIN.md (Diedrichsen 2011 atlas).
DN_CENTROID_MNI = {"left": (-14.0, -60.0, -34.0), "right": (15.0, -60.0, -34.0)}


@dataclass(frozen=True)
class Template:
    """Tissue maps on the MNI152 1 mm grid (float32 fractions in [0, 1])."""

    affine: np.ndarray  # voxel -> MNI mm
    brain: np.ndarray
    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray
    cerebellum: np.ndarray  # binary region below the tentorium, excluding the brainstem

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.brain.shape

    def mni_to_voxel(self, points: np.ndarray) -> np.ndarray:
        """Map (..., 3) MNI mm coordinates to template voxel coordinates."""
        inv = np.linalg.inv(self.affine)
        return points @ inv[:3, :3].T + inv[:3, 3]

    def axes_mm(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The MNI coordinate of each voxel index along x, y and z."""
        return axes_mm(self.affine, self.shape)


def axes_mm(affine: np.ndarray, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Coordinates along each axis of an axis-aligned grid."""
    return tuple(affine[i, i] * np.arange(n, dtype=np.float32) + affine[i, 3] for i, n in enumerate(shape[:3]))


@lru_cache(maxsize=1)
def load_template() -> Template:
    """Load and derive the template maps (cached per process)."""
    from nilearn import datasets

    mask_img = datasets.load_mni152_brain_mask(resolution=1)
    affine = mask_img.affine.copy()
    brain = _unit(mask_img.get_fdata(dtype=np.float32))
    gm = _unit(datasets.load_mni152_gm_template(resolution=1).get_fdata(dtype=np.float32))
    wm = _unit(datasets.load_mni152_wm_template(resolution=1).get_fdata(dtype=np.float32))
    # Soften the binary mask edge so resampled masks have smooth borders.
    brain = np.clip(ndimage.gaussian_filter(brain, 0.7), 0, 1).astype(np.float32)
    total = gm + wm
    scale = np.where(total > 1, 1 / np.maximum(total, 1e-6), 1).astype(np.float32)
    gm, wm = gm * scale * brain, wm * scale * brain
    csf = np.clip(brain - gm - wm, 0, 1).astype(np.float32)
    cerebellum = _cerebellum_region(*axes_mm(affine, brain.shape)) & (brain > 0.5)
    cerebellum = _largest_component(cerebellum)
    return Template(affine, brain, gm, wm, csf, cerebellum.astype(np.float32))


@lru_cache(maxsize=1)
def brain_distance_mm() -> np.ndarray:
    """Distance (mm) from each template voxel centre to the nearest voxel whose brain fraction is at
    least one half (0 there); computed once per process, when a renderer first needs it."""
    tpl = load_template()
    voxel_mm = np.linalg.norm(tpl.affine[:3, :3], axis=0)
    return ndimage.distance_transform_edt(tpl.brain < 0.5, sampling=voxel_mm).astype(np.float32)


def _unit(a: np.ndarray) -> np.ndarray:
    peak = float(a.max())
    return (a / peak if peak > 0 else a).astype(np.float32)


def _cerebellum_region(xs: np.ndarray, ys: np.ndarray, zs: np.ndarray) -> np.ndarray:
    """Below a tent-shaped tentorium, behind the petrous ridge, excluding the brainstem.

    Fitted by eye to the MNI152 2009 template: the tentorium sits at z = -8 mm above the vermis
    (y = -55), slopes down posteriorly and laterally.
    """
    x, y, z = np.meshgrid(xs, ys, zs, indexing="ij", sparse=True)
    tentorium = -8.0 + 0.35 * (y + 55.0) - 0.3 * np.abs(x)
    below = (z < tentorium) & (z > -80)
    behind_petrous = y < -36.0 - 0.15 * np.maximum(np.abs(x) - 15.0, 0)
    brainstem = (np.abs(x) < 13.0) & (y > -45.0)
    return below & behind_petrous & ~brainstem


def _largest_component(mask: np.ndarray) -> np.ndarray:
    labels, n = ndimage.label(mask)
    if n <= 1:
        return mask
    sizes = ndimage.sum(mask, labels, index=np.arange(1, n + 1))
    return labels == (1 + int(np.argmax(sizes)))
