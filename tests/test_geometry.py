"""Geometry of the two-step engine on hand-made arrays: sides, orientation, boxes, nnU-Net axis order."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from nibabel.orientations import apply_orientation, axcodes2ornt, io_orientation, ornt_transform
from scipy import ndimage
from scipy.spatial.transform import Rotation

from dnqsm.engine.localize import (
    crop,
    crop_around,
    label_region,
    localization_input,
    recorded_crop,
    region_box,
    region_components,
    region_slices,
)
from dnqsm.engine.nnunet import from_nnunet, to_nnunet
from dnqsm.engine.segment import assign_sides, midline_between_nuclei, postprocess
from dnqsm.labels import LEFT, RIGHT


def _affine(axes: np.ndarray, zooms, origin) -> np.ndarray:
    a = np.eye(4)
    a[:3, :3] = axes @ np.diag(zooms)
    a[:3, 3] = origin
    return a


ORIENTED = {
    "RAS": np.eye(3),
    "LPS": np.diag([-1.0, -1.0, 1.0]),
    "PIR": np.array([[0, 0, 1.0], [-1.0, 0, 0], [0, -1.0, 0]]),
    "oblique": Rotation.from_euler("xz", [17, -9], degrees=True).as_matrix() @ np.diag([-1.0, 1.0, 1.0]),
}


@pytest.mark.parametrize("name", ORIENTED)
def test_sides_follow_world_x_relative_to_the_midline(name):
    axes, zooms = ORIENTED[name], (1.0, 1.1, 1.2)
    affine = _affine(axes, zooms, np.array([75.0, 20, 40]) - axes @ np.diag(zooms) @ [29.5, 29.5, 29.5])
    left_world, right_world = np.array([60.0, 20, 40]), np.array([90.0, 20, 40])  # head centred at x = 75
    binary = _two_nuclei(affine, (left_world, right_world))
    stray = np.round(nib.affines.apply_affine(np.linalg.inv(affine), left_world + [-1, 15, 0])).astype(int)
    binary[tuple(stray)] = 1  # a one-voxel speck on the left: not the largest component
    labels, info = assign_sides(binary, affine, midline_x=75.0)
    for label, expected in ((LEFT, left_world), (RIGHT, right_world)):
        centroid = nib.affines.apply_affine(affine, np.argwhere(labels == label).mean(0))
        assert np.linalg.norm(centroid - expected) < 1.5
    assert info["left"]["components"] == 2 and info["left"]["voxels"] == 343
    # with the midline beyond both, everything is "left" and the right side is reported empty
    labels, info = assign_sides(binary, affine, midline_x=200.0)
    assert info["right"]["voxels"] == 0 and not (labels == RIGHT).any()


@pytest.mark.parametrize("name", ORIENTED)
def test_canonical_round_trip_is_lossless(name):
    img = nib.Nifti1Image(
        np.random.default_rng(0).random((7, 8, 9)).astype(np.float32),
        _affine(ORIENTED[name], (0.5, 0.7, 2.0), (10, 20, 30)),
    )
    canonical = nib.as_closest_canonical(img)
    back = apply_orientation(
        canonical.get_fdata(), ornt_transform(axcodes2ornt(("R", "A", "S")), io_orientation(img.affine))
    )
    assert np.array_equal(back, img.get_fdata())


def test_region_slices_crop_the_region_plus_margin_and_flag_the_edge():
    img = nib.Nifti1Image(np.zeros((40, 40, 40), np.float32), _affine(np.eye(3), (1, 1, 2), (-20, -20, -40)))
    grid = _affine(np.eye(3), (2, 2, 2), (-20, -20, -40))  # a coarse grid over the same field of view
    region = np.zeros((20, 20, 40), np.uint8)
    region[8:12, 8:12, 16:24] = 1  # coarse voxels reaching world -5..3 (x, y) and -9..7 (z)
    slices, touches = region_slices(img, region, grid, margin_mm=1.0, snap=1)
    assert not touches
    cropped = crop(img, slices)
    lo = nib.affines.apply_affine(cropped.affine, [0, 0, 0])
    hi = nib.affines.apply_affine(cropped.affine, np.array(cropped.shape) - 1)
    assert np.all(lo <= [-6, -6, -10]) and np.all(hi >= [4, 4, 8]), "region plus the 1 mm margin"
    assert np.all(lo > [-8, -8, -13]) and np.all(hi < [6, 6, 11]), "and not much more"
    snapped, _ = region_slices(img, region, grid, margin_mm=1.0, snap=8)
    assert all(s.start % 8 == 0 and s.stop % 8 == 0 for s in snapped)
    assert all(a.start <= b.start and a.stop >= b.stop for a, b in zip(snapped, slices))
    _, touches = region_slices(img, region, grid, margin_mm=20.0)
    assert touches


def test_the_recorded_crop_gives_back_the_crops_slices_and_its_image_edges():
    # an image stored PIR: its canonical (RAS) shape is its axes reordered, so the high-z face of the
    # canonical crop is the image's edge only where the crop reaches the canonical shape's z size
    axes = np.array([[0, 0, -1], [-1, 0, 0], [0, -1, 0]], float)  # i -> -y (P), j -> -z (I), k -> -x (R)
    img = nib.Nifti1Image(np.zeros((30, 40, 50), np.float32), _affine(axes, (1, 1, 1), (0, 0, 0)))
    canonical = nib.as_closest_canonical(img)
    assert canonical.shape == (50, 30, 40)
    region = np.zeros(canonical.shape, np.uint8)
    region[10:20, 0:12, 25:40] = 1  # touches low y and high z of the canonical array
    area = crop_around(canonical, region, canonical.affine, margin_mm=0.0)
    meta = {
        "crop_voxels_canonical": [[s.start, s.stop] for s in area.slices],
        "image": {"affine": img.affine.tolist(), "shape": list(img.shape)},
    }
    slices, edges = recorded_crop(meta)
    assert slices == area.slices
    assert edges == area.image_edges
    assert edges == (False, True, False, False, False, True)


def test_nnunet_adapter_matches_nnunets_own_nifti_reader(tmp_path):
    from nnunetv2.imageio.nibabel_reader_writer import NibabelIO

    data = np.random.default_rng(1).random((5, 6, 7)).astype(np.float32)
    img = nib.Nifti1Image(data, _affine(np.eye(3), (0.8, 0.9, 1.7), (0, 0, 0)))
    nib.save(img, tmp_path / "case_0000.nii.gz")
    read, props = NibabelIO().read_images([str(tmp_path / "case_0000.nii.gz")])
    ours, our_props = to_nnunet(data, (0.8, 0.9, 1.7))
    assert np.allclose(read, ours) and np.allclose(props["spacing"], our_props["spacing"], atol=1e-6)
    assert np.array_equal(from_nnunet(ours[0]), data)


def test_label_region_covers_the_labels_and_gives_a_box():
    affine = _affine(np.diag([-1.0, 1, 1]), (0.7, 0.7, 1.5), (40.0, -80, -60))
    labels = np.zeros((100, 100, 60), np.uint8)
    labels[20:30, 40:55, 20:28] = 1
    labels[60:70, 40:55, 20:28] = 2
    img = nib.Nifti1Image(labels, affine)
    coarse, grid = localization_input(nib.Nifti1Image(labels.astype(np.float32) + 1, affine), 3.0)
    region = label_region(img, grid, coarse.shape)
    assert region_components(region).sum() == region.sum()
    box = region_box(region, grid)
    world = nib.affines.apply_affine(affine, np.argwhere(labels > 0))
    assert np.all(world.min(0) >= box.lo) and np.all(world.max(0) <= box.hi)
    assert np.all(box.hi - box.lo < (world.max(0) - world.min(0)) + 15)


def _two_nuclei(affine: np.ndarray, centres, half: int = 3, shape=(60, 60, 60)) -> np.ndarray:
    """Cubes of side 2 * half + 1 voxels around world points."""
    binary = np.zeros(shape, np.uint8)
    inv = np.linalg.inv(affine)
    for centre in centres:
        v = np.round(nib.affines.apply_affine(inv, centre)).astype(int)
        binary[tuple(slice(c - half, c + half + 1) for c in v)] = 1
    return binary


@pytest.mark.parametrize("name", ORIENTED)
def test_the_midline_is_read_between_the_two_segmented_nuclei_and_only_when_there_are_two(name):
    axes, zooms = ORIENTED[name], (1.0, 1.1, 1.2)
    affine = _affine(axes, zooms, np.array([75.0, 20, 40]) - axes @ np.diag(zooms) @ [29.5, 29.5, 29.5])
    left, right = np.array([60.0, 20, 40]), np.array([90.0, 20, 40])
    binary = _two_nuclei(affine, (left, right))
    assert midline_between_nuclei(binary, affine) == pytest.approx(75.0, abs=0.8)
    assert midline_between_nuclei(_two_nuclei(affine, (left,)), affine) is None  # one nucleus
    fragment = _two_nuclei(affine, (left,)) | _two_nuclei(affine, (right,), half=1)  # 27 vs 343 voxels
    assert midline_between_nuclei(fragment, affine) is None
    close = _two_nuclei(affine, (left, left + [8.0, 0, 0]))  # two parts 8 mm apart: not two nuclei
    assert midline_between_nuclei(close, affine) is None


def test_the_midline_comes_from_the_regions_then_the_segmented_nuclei_then_the_image_centroid():
    """A head off the image centre (world x = voxel - 30, nuclei at x = -15 and +15, the image's
    non-zero voxels centred 13.5 mm right of the midline). Two localized regions give the midline, under
    the method's own name; one merged region hands over to the two segmented nuclei (the image centroid,
    14 mm off, would cut the right nucleus in two); a nucleus and a fragment cannot tell, so the image
    centroid is the last resort, and the record says so."""
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    affine[:3, 3] = (-30, -30, -30)
    data = np.random.default_rng(1).normal(0, 5, (60, 60, 60)).astype(np.float32)
    data[:28] = 0  # the field of view cut on the left: the image centroid moves right
    img = nib.Nifti1Image(data, affine)
    left, right = np.array([-15.0, 0, 0]), np.array([15.0, 0, 0])
    binary = _two_nuclei(affine, (left, right))
    coarse, grid_affine = localization_input(img, 3.0)
    merged = label_region(nib.Nifti1Image(binary, affine), grid_affine, coarse.shape, dilate_voxels=6) > 0
    apart = label_region(nib.Nifti1Image(binary, affine), grid_affine, coarse.shape, dilate_voxels=1) > 0
    assert ndimage.label(merged)[1] == 1 and ndimage.label(apart)[1] == 2
    fragment = _two_nuclei(affine, (left,)) | _two_nuclei(affine, (right,), half=1)
    cases = (
        (apart, binary, "atlas region", "atlas region", 0.0),
        (merged, binary, "localization", "segmented nuclei", 0.0),
        (merged, fragment, "localization", "image centroid", 13.5),
    )
    for region, mask, region_name, source, midline_x in cases:
        area = crop_around(img, region, grid_affine, 5.0)
        result = postprocess(img, area, mask[area.slices], {}, "nothing found", region_name=region_name)
        assert result.geometry["midline_source"] == source
        assert result.geometry["midline_x_mm"] == pytest.approx(midline_x, abs=0.6)
        if source != "image centroid":  # both nuclei whole, one per side
            assert result.sides["left"]["voxels"] == result.sides["right"]["voxels"] == 343
        else:  # the sides as the image centroid cuts them: the fragment is all the right side has
            assert result.sides["left"]["voxels"] == 343 and result.sides["right"]["voxels"] == 27
