"""The atlas baseline's inputs: atlas discovery, label checks, head support and leave-one-out."""

from __future__ import annotations

import tempfile

import nibabel as nib
import numpy as np
import pytest

from dnqsm.engine.atlas import AtlasMethod, atlas_pairs, head_support, load_atlases
from dnqsm.engine.registration import ants_image
from dnqsm.io import InputError, bids_path
from dnqsm.workflow.pipeline import preproc_files, preprocess_session

TRUTH = "derivatives/manual"


def test_atlases_are_the_labelled_sessions_plus_explicit_files(demo_cohort, tmp_path):
    pairs = atlas_pairs(demo_cohort, demo_cohort / TRUTH, ["001"])
    assert pairs and all(image.name.startswith("sub-001_") and labels.exists() for image, labels in pairs)
    extra = {"image": str(pairs[0][0]), "labels": str(pairs[0][1])}
    assert atlas_pairs(files=[extra]) == [pairs[0]]
    assert len(atlas_pairs(demo_cohort, demo_cohort / TRUTH, ["001"], [extra])) == len(pairs) + 1
    with pytest.raises(InputError, match="no atlas"):
        atlas_pairs(demo_cohort, tmp_path)  # a labels folder without labels
    with pytest.raises(InputError, match="missing.nii.gz: atlas file does not exist"):
        atlas_pairs(files=[{"image": str(pairs[0][0]), "labels": str(tmp_path / "missing.nii.gz")}])
    with pytest.raises(InputError, match="labels_dir"):
        atlas_pairs(demo_cohort, None)


def test_atlas_labels_must_be_left_and_right_on_the_image_grid(demo_cohort, tmp_path):
    image = bids_path(demo_cohort, "001", "01", "Chimap")
    labels = nib.load(bids_path(demo_cohort / TRUTH, "001", "01", "dseg", desc="dentate"))
    one_side = np.asarray(labels.dataobj).copy()
    one_side[one_side == 2] = 0
    nib.save(nib.Nifti1Image(one_side, labels.affine, labels.header), tmp_path / "one_side.nii.gz")
    with pytest.raises(InputError, match=r"one_side.nii.gz: atlas labels must hold left \(1\) and right \(2\)"):
        load_atlases([(image, tmp_path / "one_side.nii.gz")])
    nib.save(labels.slicer[1:], tmp_path / "shifted.nii.gz")
    with pytest.raises(InputError, match="shifted.nii.gz: atlas labels are not on the grid of"):
        load_atlases([(image, tmp_path / "shifted.nii.gz")])


def test_head_support_ignores_a_constant_background_offset():
    data = np.full((20, 20, 20), -0.001, np.float32)  # what an int16 image with an intercept stores outside
    rng = np.random.default_rng(0)
    data[5:15, 5:15, 5:15] = rng.normal(0, 0.05, (10, 10, 10))
    support = head_support(nib.Nifti1Image(data, np.eye(4)))
    inside = np.zeros(data.shape, bool)
    inside[5:15, 5:15, 5:15] = True
    assert not support[~inside].any(), "the offset background is not head"
    assert support[inside].mean() > 0.85, "the head is (the opening only trims the cube edges)"


def test_a_session_is_never_its_own_atlas(demo_cohort, tmp_path):
    image = bids_path(demo_cohort, "001", "01", "Chimap")
    labels = bids_path(demo_cohort / TRUTH, "001", "01", "dseg", desc="dentate")
    preprocess_session(image, tmp_path / "pre" / "sub-001_ses-01", "auto")
    segmenter = AtlasMethod(load_atlases([(image, labels)]))
    [record] = segmenter.run([preproc_files(tmp_path / "pre" / "sub-001_ses-01")[0]], tmp_path / "seg")
    assert record["status"] == "failed" and "the only atlas is this image itself" in record["error"]
    assert record["method"] == "atlas" and record["options"]["atlases_left_out"] == ["sub-001_ses-01"]


def test_atlas_registrations_leave_no_transform_files(demo_cohort, tmp_path, monkeypatch):
    """ANTs writes every transform as a temporary file; a cohort's atlas runs once left hundreds of MB."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where ants.registration puts its transforms
    pairs = [
        (
            bids_path(demo_cohort, "002", "01", "Chimap"),
            bids_path(demo_cohort / TRUTH, "002", "01", "dseg", desc="dentate"),
        )
    ]
    preprocess_session(bids_path(demo_cohort, "001", "01", "Chimap"), tmp_path / "pre" / "sub-001_ses-01", "auto")
    [record] = AtlasMethod(load_atlases(pairs), threads=2).run(
        [preproc_files(tmp_path / "pre" / "sub-001_ses-01")[0]], tmp_path / "seg"
    )
    assert record["status"] != "failed", record.get("error")
    assert record["dentate"]["left"]["voxels"] > 0 and record["dentate"]["right"]["voxels"] > 0
    assert sorted(p.name for p in scratch.iterdir()) == []


def test_label_fusion_leaves_no_probability_files(tmp_path, monkeypatch):
    """antspyx's joint label fusion writes its probabilities to /tmp and keeps them: two files per
    session (a cohort's atlas run left thousands)."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    shape, affine = (24, 16, 12), np.eye(4)
    grid = np.indices(shape)
    labels = np.where(((grid[0] - 6) ** 2 + (grid[1] - 8) ** 2 + (grid[2] - 6) ** 2) < 12, 1, 0)
    labels = np.where(((grid[0] - 17) ** 2 + (grid[1] - 8) ** 2 + (grid[2] - 6) ** 2) < 12, 2, labels)
    rng = np.random.default_rng(0)
    chi = [ants_image(100.0 * (labels > 0) + rng.normal(0, 5, shape), affine) for _ in range(2)]
    carried = [ants_image(labels, affine), ants_image(np.roll(labels, 1, axis=1), affine)]
    target = ants_image(100.0 * (labels > 0), affine)
    fused = AtlasMethod([])._fuse(target, chi, carried)
    assert set(np.unique(fused)) == {0, 1, 2} and (fused[:12] != 2).all() and (fused[12:] != 1).all()
    assert sorted(p.name for p in scratch.iterdir()) == []
