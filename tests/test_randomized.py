"""Domain-randomized training images (dnqsm.synth.randomized): labelled, the dentate brighter than its
surroundings, sides right, written as a BIDS dataset that training reads, deterministic."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from dnqsm.synth import SynthError
from dnqsm.synth.randomized import DN_LEFT, DN_RIGHT, draw, phantom_anatomy, template_anatomy, write_randomized
from dnqsm.workflow.bids import chimap_sessions, dentate_labels

PHANTOM = Path(__file__).resolve().parents[2] / "shared" / "data" / "head-phantom" / "SegmentedModel.nii.gz"


def _check(drawn) -> None:
    image = drawn.image.get_fdata()
    labels = np.asarray(drawn.dseg.dataobj)
    assert set(np.unique(labels)) == {0, 1, 2}
    centroids = {side: drawn.dseg.affine[:3, :3] @ np.argwhere(labels == side).mean(0) for side in (1, 2)}
    assert centroids[1][0] < centroids[2][0], "left DN (1) lies at lower world x than right (2)"
    both = labels > 0
    shell = ndimage.binary_dilation(both, iterations=3) & ~ndimage.binary_dilation(both, iterations=1)
    assert image[both].mean() > np.median(image[shell]), "the dentate is brighter than its surroundings"
    voxel_mm3 = float(np.prod(drawn.image.header.get_zooms()[:3]))
    for side in (1, 2):
        assert 300 < (labels == side).sum() * voxel_mm3 < 4000
    assert drawn.record["dn_contrast_ppm"] >= 0.03


def test_template_image_is_labelled_and_the_dentate_stands_out():
    rng = np.random.default_rng(3)
    anatomy = template_anatomy(rng)
    assert (anatomy.labels == DN_LEFT).any() and (anatomy.labels == DN_RIGHT).any()
    _check(draw(anatomy, rng, max_voxels=3_000_000))


@pytest.mark.skipif(
    not PHANTOM.exists(),
    reason=f"{PHANTOM} is absent (a user's clone): the head phantom is "
    "shared with the project's developers and CI only",
)
def test_head_phantom_image_is_labelled_and_the_dentate_stands_out():
    anatomy = phantom_anatomy(PHANTOM)
    for side in (DN_LEFT, DN_RIGHT):
        assert 2000 < (anatomy.labels == side).sum() < 4000  # 0.80 and 0.67 cm3 at 0.64 mm
    _check(draw(anatomy, np.random.default_rng(1), max_voxels=3_000_000))


def test_written_dataset_is_training_ready_and_deterministic(tmp_path):
    first = write_randomized(tmp_path / "a", images=1, seed=5, first_label=7)
    second = write_randomized(tmp_path / "b", images=1, seed=5, first_label=7)
    sessions = chimap_sessions(first)
    assert [s.subject for s in sessions] == ["007"]
    labels = dentate_labels(first / "derivatives" / "manual", sessions[0])
    image = nib.load(sessions[0].image)
    assert np.allclose(nib.load(labels).affine, image.affine) and nib.load(labels).shape == image.shape
    assert (first / "derivatives" / "manual" / "drawn.tsv").read_text().count("\n") == 2
    assert sessions[0].image.read_bytes() == (second / sessions[0].image.relative_to(first)).read_bytes()
    assert not list(tmp_path.glob(".*partial"))


def test_bad_arguments_are_refused_naming_the_problem(tmp_path):
    bad = tmp_path / "labels.nii.gz"
    nib.save(nib.Nifti1Image(np.full((4, 4, 4), 40, np.int16), np.eye(4)), bad)
    with pytest.raises(SynthError, match="labels.nii.gz.*not those of the QSM Challenge"):
        write_randomized(tmp_path / "out", images=1, phantom=bad)
    with pytest.raises(SynthError, match="at least 1"):
        write_randomized(tmp_path / "out", images=0)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(SynthError, match="not empty"):
        write_randomized(tmp_path / "full", images=1)
