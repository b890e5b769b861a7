"""The QC snapshot's panels show what a reviewer needs: the nuclei in every overview panel too."""

from __future__ import annotations

import matplotlib.image as mpimg
import nibabel as nib
import numpy as np

from dnqsm.qc import overview_centre, render_snapshot
from dnqsm.viz import reslice


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
    sagittal = pixels[int(0.05 * height):int(0.36 * height), int(0.67 * width):]  # top row, right panel
    red = (sagittal[..., 0] > 0.9) & (sagittal[..., 1] < 0.45) & (sagittal[..., 2] < 0.45)
    assert red.sum() > 20, "the left DN's contour shows in the sagittal overview"
