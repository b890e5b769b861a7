"""The QC snapshot's panels show what a reviewer needs: the nuclei in every overview panel too."""

from __future__ import annotations

import matplotlib.image as mpimg
import nibabel as nib
import numpy as np

from dnqsm.qc.snapshots import overview_centre, render_snapshot
from dnqsm.qc.views import reslice


def two_nuclei(affine: np.ndarray) -> tuple[nib.Nifti1Image, nib.Nifti1Image, dict]:
    """A 2 mm head-sized image with a bright left (x = -14 mm) and right (x = +14 mm) blob, and a box
    around both centred on the midline."""
    shape = (96, 110, 90)
    ijk = np.indices(shape).reshape(3, -1)
    world = (affine[:3, :3] @ ijk + affine[:3, 3:4]).reshape((3,) + shape)
    labels = np.zeros(shape, np.uint8)
    for value, x in ((1, -14.0), (2, 14.0)):
        inside = ((world[0] - x) / 7) ** 2 + ((world[1] + 55) / 9) ** 2 + ((world[2] + 30) / 6) ** 2 <= 1
        labels[inside] = value
    chi = np.where(labels > 0, 150.0, 0.0).astype(np.float32)
    box = {"min_mm": [-30.0, -75.0, -45.0], "max_mm": [30.0, -35.0, -15.0]}
    return nib.Nifti1Image(chi, affine), nib.Nifti1Image(labels, affine), box


def test_every_overview_panel_cuts_through_a_nucleus(tmp_path):
    affine = np.diag([-2.0, 2.0, 2.0, 1.0])  # LAS storage: the picture must still be world-aligned
    affine[:3, 3] = [95.0, -110.0, -90.0]
    chi, dseg, box = two_nuclei(affine)
    labels = np.asarray(dseg.dataobj)
    for view in ("axial", "coronal", "sagittal"):
        centre, note = overview_centre(labels, affine, box, view)
        cut = reslice(labels.astype(np.float32), affine, centre, view, 95.0, 1.0, order=0)
        assert (np.nan_to_num(cut) > 0).any(), f"the {view} overview misses both nuclei"
    centre, note = overview_centre(labels, affine, box, "sagittal")
    assert abs(centre[0] + 14.0) < 1.0 and note == " through the left DN"
    # only the right nucleus found: the sagittal overview goes through it
    right_only = np.where(labels == 2, 2, 0).astype(np.uint8)
    centre, note = overview_centre(right_only, affine, box, "sagittal")
    assert abs(centre[0] - 14.0) < 1.0 and note == " through the right DN"
    # nothing found and no box (an empty atlas label): the panels cut through the image's centre
    empty = np.zeros_like(labels)
    centre, note = overview_centre(empty, affine, None, "sagittal")
    expected = nib.affines.apply_affine(affine, (np.array(labels.shape) - 1) / 2)
    assert np.allclose(centre, expected) and note == "", centre

    png = render_snapshot(tmp_path / "qc.png", chi, dseg, "sub-x ses-y", box=box)
    pixels = mpimg.imread(png)[..., :3]
    height, width = pixels.shape[:2]
    sagittal = pixels[int(0.05 * height) : int(0.36 * height), int(0.67 * width) :]  # top row, right panel
    red = (sagittal[..., 0] > 0.9) & (sagittal[..., 1] < 0.45) & (sagittal[..., 2] < 0.45)
    assert red.sum() > 20, "the left DN's contour shows in the sagittal overview"


def _reslice_whole_volume(data, affine, center, view, half_width, step, order):
    """The slice computed over the whole volume (NaN cleaned everywhere), as reslice did before it read
    only the block the slice passes through."""
    from scipy import ndimage

    from dnqsm.qc.views import VIEWS

    h_axis, v_axis, fixed = VIEWS[view]
    offsets = np.arange(-half_width, half_width + step / 2, step)
    hh, vv = np.meshgrid(offsets, offsets, indexing="xy")
    world = np.zeros((3,) + hh.shape)
    world[h_axis], world[v_axis], world[fixed] = center[h_axis] + hh, center[v_axis] + vv, center[fixed]
    inv = np.linalg.inv(affine)
    vox = np.einsum("ij,j...->i...", inv[:3, :3], world) + inv[:3, 3][:, None, None]
    out = ndimage.map_coordinates(
        np.nan_to_num(data.astype(np.float32), nan=0.0), vox, order=order, mode="constant", cval=np.nan
    )
    inside = np.all([(vox[i] >= -0.5) & (vox[i] <= data.shape[i] - 0.5) for i in range(3)], axis=0)
    out[~inside] = np.nan
    return out


def test_reslice_reads_a_block_and_gives_the_whole_volume_values():
    # an oblique image with NaN outside its mask, cut by slices inside it, across its edge and beyond it
    rng = np.random.default_rng(5)
    data = rng.normal(size=(40, 36, 30)).astype(np.float32)
    data[:, :, :4] = np.nan
    labels = rng.integers(0, 3, size=data.shape).astype(np.uint8)
    rotation = nib.eulerangles.euler2mat(0.3, -0.2, 0.25)
    affine = nib.affines.from_matvec(rotation @ np.diag([0.7, 0.8, 1.5]), [-10.0, -12.0, -20.0])
    centre_voxel = nib.affines.apply_affine(affine, [20, 18, 15])
    for shift in (0.0, 14.0, 60.0):
        centre = centre_voxel + [shift, -shift / 2, shift / 3]
        for view in ("axial", "coronal", "sagittal"):
            for values, order in ((data, 1), (labels, 0)):
                got = reslice(values, affine, centre, view, 18.0, 0.5, order=order)
                want = _reslice_whole_volume(values, affine, centre, view, 18.0, 0.5, order)
                assert got.shape == want.shape and got.dtype == want.dtype
                assert np.array_equal(got, want, equal_nan=True), (shift, view, order)
