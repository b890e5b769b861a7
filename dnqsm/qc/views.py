"""Reslicing images to world-aligned (RAS) views, and saving figures reproducibly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

from dnqsm.io import atomic_path

#: View name -> (world axes spanning the picture: horizontal, vertical; fixed axis).
VIEWS = {"axial": (0, 1, 2), "coronal": (0, 2, 1), "sagittal": (1, 2, 0)}


def reslice(
    data: np.ndarray,
    affine: np.ndarray,
    center_mm,
    view: str,
    half_width_mm: float,
    step_mm: float = 0.5,
    order: int = 1,
) -> np.ndarray:
    """A world-aligned (RAS) slice through ``center_mm``, whatever the image's voxel orientation.

    Drawn with ``origin="lower"``, world coordinates grow to the right and upwards: neurological
    convention, the subject's left on the picture's left. Values outside the image are NaN.
    """
    h_axis, v_axis, fixed = VIEWS[view]
    offsets = np.arange(-half_width_mm, half_width_mm + step_mm / 2, step_mm)
    hh, vv = np.meshgrid(offsets, offsets, indexing="xy")
    world = np.zeros((3,) + hh.shape)
    world[h_axis] = center_mm[h_axis] + hh
    world[v_axis] = center_mm[v_axis] + vv
    world[fixed] = center_mm[fixed]
    inv = np.linalg.inv(affine)
    vox = np.einsum("ij,j...->i...", inv[:3, :3], world) + inv[:3, 3][:, None, None]
    inside = np.all([(vox[i] >= -0.5) & (vox[i] <= data.shape[i] - 0.5) for i in range(3)], axis=0)
    if not inside.any():
        return np.full(hh.shape, np.nan, np.float32)
    # only the block of voxels the slice passes through (one voxel of margin, within the image) is read
    # and cleaned of NaN; coordinates shift by whole voxels, so the interpolated values are the same
    lo = np.maximum(np.floor(vox.reshape(3, -1).min(1)) - 1, 0).astype(int)
    hi = np.maximum(np.minimum(np.ceil(vox.reshape(3, -1).max(1)) + 2, data.shape[:3]).astype(int), lo + 1)
    block = np.asarray(data[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]], dtype=np.float32)
    values = np.nan_to_num(block, nan=0.0)
    out = ndimage.map_coordinates(values, vox - lo[:, None, None], order=order, mode="constant", cval=np.nan)
    out[~inside] = np.nan
    return out  # row 0 = lowest world coordinate of v_axis; draw with origin="lower"


def world_centroid(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Centroid of a boolean mask in world millimetres."""
    idx = np.argwhere(mask)
    return idx.mean(0) @ affine[:3, :3].T + affine[:3, 3]


def save_figure(fig, path: str | Path, dpi: int = 100) -> Path:
    """Write a matplotlib figure as PNG atomically, without version/date stamps (reruns give
    identical files), and close it."""
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, facecolor=fig.get_facecolor(), format="png", metadata={"Software": None})
    plt.close(fig)
    return Path(path)
