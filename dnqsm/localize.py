"""Step one of the two-step method: the coarse world-aligned grid, the DN region, and the crop box.

The localization network sees the whole image resampled onto a world-aligned (RAS) grid at a coarse
spacing; its target is the "DN region" (both dentate nuclei, filled and dilated at that spacing),
which needs only DN labels, so any manually traced cohort can train it. The box around the predicted
region, plus a margin in millimetres, selects the native-resolution crop for step two.
"""

from __future__ import annotations

from dataclasses import dataclass

import nibabel as nib
import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in world (RAS) millimetres."""

    lo: np.ndarray
    hi: np.ndarray

    def as_dict(self) -> dict:
        return {"min_mm": [round(float(v), 3) for v in self.lo], "max_mm": [round(float(v), 3) for v in self.hi]}


def image_world_box(img: nib.Nifti1Image) -> Box:
    """World bounding box of an image's field of view (voxel centres)."""
    n = np.array(img.shape[:3]) - 1
    corners = np.array([[i, j, k] for i in (0, n[0]) for j in (0, n[1]) for k in (0, n[2])], float)
    world = nib.affines.apply_affine(img.affine, corners)
    return Box(world.min(0), world.max(0))


def coarse_grid(img: nib.Nifti1Image, spacing_mm: float) -> tuple[np.ndarray, tuple[int, int, int]]:
    """World-aligned RAS grid at ``spacing_mm`` covering the image: (affine, shape)."""
    box = image_world_box(img)
    shape = tuple(int(v) for v in np.floor((box.hi - box.lo) / spacing_mm).astype(int) + 1)
    affine = np.diag([spacing_mm, spacing_mm, spacing_mm, 1.0])
    affine[:3, 3] = box.lo
    return affine, shape


def resample_to_grid(data: np.ndarray, affine: np.ndarray, grid_affine: np.ndarray, grid_shape, order: int = 1,
                     smooth: bool = True) -> np.ndarray:
    """Resample ``data`` (NaN treated as 0) onto a target grid; Gaussian pre-smoothing against aliasing."""
    values = np.nan_to_num(np.asarray(data, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    src_to_grid = np.linalg.inv(affine) @ grid_affine
    if smooth:
        # sigma in source voxels: ~0.4 of the target spacing along each source axis
        src_zooms = np.sqrt((affine[:3, :3] ** 2).sum(0))
        target = np.sqrt((grid_affine[:3, :3] ** 2).sum(0)).mean()
        sigma = np.maximum(0.4 * target / src_zooms - 0.25, 0)
        if np.any(sigma > 0):
            values = ndimage.gaussian_filter(values, sigma)
    return ndimage.affine_transform(values, src_to_grid[:3, :3], src_to_grid[:3, 3], output_shape=tuple(grid_shape),
                                    order=order, mode="constant", cval=0.0).astype(np.float32)


def localization_input(img: nib.Nifti1Image, spacing_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """The localization network's input: (data on the coarse grid, grid affine)."""
    grid_affine, shape = coarse_grid(img, spacing_mm)
    return resample_to_grid(img.get_fdata(dtype=np.float32), img.affine, grid_affine, shape), grid_affine


def label_region(labels: nib.Nifti1Image, grid_affine: np.ndarray, grid_shape, dilate_voxels: int = 2) -> np.ndarray:
    """The DN region on the coarse grid from DN labels: any DN fraction, holes filled, dilated."""
    fraction = resample_to_grid((np.asarray(labels.dataobj) > 0).astype(np.float32), labels.affine, grid_affine,
                                grid_shape, order=1, smooth=False)
    region = ndimage.binary_fill_holes(fraction > 0.05)
    if dilate_voxels:
        region = ndimage.binary_dilation(region, iterations=dilate_voxels)
    return region.astype(np.uint8)


def region_components(region: np.ndarray, min_voxels: int = 3, keep: int = 2) -> np.ndarray:
    """Keep the ``keep`` largest connected components of a predicted region (one per DN, ideally)."""
    labels, n = ndimage.label(region > 0)
    if n == 0:
        return np.zeros(region.shape, bool)
    sizes = ndimage.sum(region > 0, labels, index=np.arange(1, n + 1))
    order = np.argsort(sizes)[::-1][:keep]
    chosen = [i + 1 for i in order if sizes[i] >= min_voxels]
    return np.isin(labels, chosen)


def region_box(region: np.ndarray, grid_affine: np.ndarray) -> Box | None:
    """World box around a region on a grid (voxel extents included), or None if it is empty."""
    idx = np.argwhere(region > 0)
    if len(idx) == 0:
        return None
    half = 0.5
    corners = np.array([[a, b, c] for a in (idx[:, 0].min() - half, idx[:, 0].max() + half)
                        for b in (idx[:, 1].min() - half, idx[:, 1].max() + half)
                        for c in (idx[:, 2].min() - half, idx[:, 2].max() + half)])
    world = nib.affines.apply_affine(grid_affine, corners)
    return Box(world.min(0), world.max(0))


def region_slices(img: nib.Nifti1Image, region: np.ndarray, grid_affine: np.ndarray, margin_mm: float,
                  jitter_mm: np.ndarray | None = None, snap: int = 8) -> tuple[tuple[slice, slice, slice], bool]:
    """Voxel slices of ``img`` around a coarse-grid region, plus a margin, snapped outwards to multiples
    of ``snap`` voxels; also whether the crop reached the image edge.

    The bounds come from the region's points in ``img``'s own voxel frame (not from a world-aligned
    box), so an image whose affine is rotated gets the same voxels cropped; snapping makes the crop
    insensitive to a voxel or two of localization wobble, so nnU-Net tiles it identically.
    ``jitter_mm`` (lo x, y, z, hi x, y, z) moves each face, for training-time augmentation.
    """
    idx = np.argwhere(region > 0).astype(float)
    offsets = np.array([[a, b, c] for a in (-0.5, 0.5) for b in (-0.5, 0.5) for c in (-0.5, 0.5)])
    corners = (idx[:, None, :] + offsets[None]).reshape(-1, 3)
    vox = nib.affines.apply_affine(np.linalg.inv(img.affine) @ grid_affine, corners)
    zooms = np.sqrt((img.affine[:3, :3] ** 2).sum(0))
    grow_lo = np.full(3, margin_mm) + (jitter_mm[:3] if jitter_mm is not None else 0)
    grow_hi = np.full(3, margin_mm) + (jitter_mm[3:] if jitter_mm is not None else 0)
    lo = np.floor(vox.min(0) - grow_lo / zooms)
    hi = np.ceil(vox.max(0) + grow_hi / zooms) + 1
    lo, hi = np.floor(lo / snap) * snap, np.ceil(hi / snap) * snap
    shape = np.array(img.shape[:3])
    touches = bool(np.any(lo < 0) or np.any(hi > shape))
    lo, hi = np.clip(lo, 0, shape).astype(int), np.clip(hi, 0, shape).astype(int)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi)), touches


def crop(img: nib.Nifti1Image, slices) -> nib.Nifti1Image:
    """A lossless voxel crop with the matching affine (no resampling)."""
    return img.slicer[slices]
