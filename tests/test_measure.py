"""Measures on hand-made images with known answers."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from dnqsm.analysis.measure import asymmetry, measure


def images(voxel=(1.0, 1.0, 2.0)):
    affine = np.diag([*voxel, 1.0])
    affine[:3, 3] = [-20, -30, -40]
    chi = np.zeros((40, 30, 20), np.float32)
    labels = np.zeros(chi.shape, np.uint8)
    labels[5:10, 10:14, 5:8] = 1  # 5 x 4 x 3 = 60 voxels, left (low x)
    chi[5:10, 10:14, 5:8] = 100.0
    chi[7, 12, 6] = 160.0  # one hot voxel in the left core
    labels[30:34, 10:13, 5:7] = 2  # 4 x 3 x 2 = 24 voxels, right
    chi[30:34, 10:13, 5:7] = 50.0
    return nib.Nifti1Image(chi, affine), nib.Nifti1Image(labels, affine)


def test_measures_known_answers():
    chi, dseg = images()
    m = measure(chi, dseg)
    assert m["left_volume_mm3"] == pytest.approx(60 * 2.0) and m["right_volume_mm3"] == pytest.approx(24 * 2.0)
    assert m["left_chi_mean_ppb"] == pytest.approx(101.0) and m["left_chi_median_ppb"] == pytest.approx(100.0)
    assert m["right_chi_mean_ppb"] == pytest.approx(50.0) and m["right_chi_sd_ppb"] == pytest.approx(0.0)
    assert m["left_chi_mass_ppb_mm3"] == pytest.approx(101.0 * 120.0)
    assert m["total_volume_mm3"] == pytest.approx(168.0)
    assert m["asymmetry_volume"] == pytest.approx(2 * (120 - 48) / 168)
    # centroid of voxels 5..9, 10..13, 5..7 at 1 x 1 x 2 mm from (-20, -30, -40)
    assert (m["left_centroid_x_mm"], m["left_centroid_y_mm"], m["left_centroid_z_mm"]) == pytest.approx(
        (-13, -18.5, -28)
    )
    assert m["left_components"] == 1 and m["left_chi_voxels"] == 60


def test_erosion_changes_chi_statistics_not_volume():
    chi, dseg = images()
    m = measure(chi, dseg, erosion_voxels=1)
    assert m["left_volume_mm3"] == pytest.approx(120.0)
    assert m["left_chi_voxels"] == 3 * 2 * 1 and m["left_chi_mean_ppb"] == pytest.approx((5 * 100 + 160) / 6)
    assert m["right_chi_voxels"] == 24, "a side thinner than the erosion is measured whole"


def test_missing_side_gives_zero_volume_and_no_chi():
    chi, dseg = images()
    labels = np.asarray(dseg.dataobj).copy()
    labels[labels == 2] = 0
    m = measure(chi, nib.Nifti1Image(labels, dseg.affine), predicted_components={"left": 3, "right": 0})
    assert m["right_volume_mm3"] == 0 and m["right_chi_mean_ppb"] is None and m["asymmetry_chi_mean"] is None
    assert m["asymmetry_volume"] == pytest.approx(2.0) and m["left_components"] == 3


def test_asymmetry_edge_cases():
    assert asymmetry(0.0, 0.0) is None and asymmetry(None, 1.0) is None and asymmetry(1.0, 1.0) == 0.0
