"""Hand-made known cases for every plausibility check (dnqsm.engine.confidence)."""

from __future__ import annotations

import numpy as np
import pytest

from dnqsm.engine.confidence import DEFAULTS, accepted_range, assess, crop_numbers, reassess, thresholds
from dnqsm.engine.localize import Expectation

SHAPE = (60, 40, 30)
AFFINE = np.diag([1.0, 1.0, 1.0, 1.0])
AFFINE[:3, 3] = (-30, -20, -15)  # world x = i - 30: the midline (x = 0) is at i = 30
BOX = {"min_mm": [-25.0, -12.0, -10.0], "max_mm": [25.0, 12.0, 10.0]}


def _blob(labels: np.ndarray, centre_i: int, value: int, half: int = 5) -> None:
    labels[centre_i - half : centre_i + half, 15:25, 10:20] = value


def _case(seed: int = 0, contrast: float = 100.0, noise: float = 10.0):
    """Two 1000 mm3 nuclei 15 mm either side of the midline, bright against noisy tissue."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(SHAPE, np.uint8)
    _blob(labels, 15, 1)  # x = -15: left
    _blob(labels, 45, 2)  # x = +15: right
    values = rng.normal(-30, noise, SHAPE).astype(np.float32) + contrast * (labels > 0)
    probability = np.where(labels > 0, 0.95, 0.02).astype(np.float32)
    return labels, values, probability


def _voxels(labels) -> dict[str, int]:
    return {name: int((labels == label).sum()) for name, label in (("left", 1), ("right", 2))}


def _verdict(labels, values, probability, predicted=None, spacing=(1.0, 1.0, 1.0), box=BOX, checks=None):
    sides = crop_numbers(values, labels, probability, {**_voxels(labels), **(predicted or {})}, AFFINE, 0.0)
    volumes = {name: float((labels == label).sum()) for name, label in (("left", 1), ("right", 2))}
    return assess(sides, volumes, box, list(spacing), checks or thresholds())


def test_a_good_case_is_ok():
    verdict = _verdict(*_case())
    assert verdict.status == "ok", verdict.reasons
    assert verdict.sides["left"]["contrast_cnr"] > 5
    assert verdict.sides["left"]["mean_probability"] == pytest.approx(0.95)


def test_empty_side_is_reviewed():
    labels, values, probability = _case()
    labels[labels == 2] = 0
    verdict = _verdict(labels, values, probability)
    assert verdict.status == "review"
    assert "no right DN was found" in verdict.reasons


def test_tiny_label_is_reviewed():
    labels, values, probability = _case()
    labels[labels == 1] = 0
    labels[13:16, 18:21, 13:15] = 1  # 18 mm3
    verdict = _verdict(labels, values, probability)
    assert any(r.startswith("left DN volume 18 mm³ is below") for r in verdict.reasons), verdict.reasons
    assert any("ratio" in r for r in verdict.reasons)


def test_prediction_in_pieces_is_reviewed():
    labels, values, probability = _case()
    # the network predicted 3000 left voxels in two pieces; post-processing kept the 1000-voxel one
    verdict = _verdict(labels, values, probability, predicted={"left": 3000})
    assert any("left DN prediction was in pieces: the kept piece holds 33 %" in r for r in verdict.reasons)


def test_label_in_the_wrong_place_is_reviewed():
    labels, values, probability = _case()
    labels[labels == 1] = 0
    _blob(labels, 28, 1, half=4)  # centroid 2.5 mm from the midline
    verdict = _verdict(labels, values, probability)
    assert any("left DN centroid is 2 mm from the midline" in r for r in verdict.reasons), verdict.reasons
    far_box = {"min_mm": [5.0, -12.0, -10.0], "max_mm": [25.0, 12.0, 10.0]}
    labels, values, probability = _case()
    verdict = _verdict(labels, values, probability, box=far_box)
    assert "left DN centroid lies outside the localization box" in verdict.reasons


def test_a_nucleus_flattened_to_a_faint_contrast_is_reviewed():
    """A reconstruction that all but erases the DN (contrast-to-noise about 1.5: a strongly regularized
    total variation on a child's faint nucleus) is doubted, though a label of the right size was found."""
    verdict = _verdict(*_case(contrast=15.0))
    assert 1.0 < verdict.sides["left"]["contrast_cnr"] < 1.8
    assert verdict.status == "review" and any("left DN hardly stands out" in r for r in verdict.reasons), (
        verdict.reasons
    )


def test_right_size_but_no_contrast_is_reviewed():
    labels, values, probability = _case(contrast=0.0)
    verdict = _verdict(labels, values, probability)
    assert verdict.status == "review"
    assert any(r.startswith("left DN hardly stands out") for r in verdict.reasons)
    assert any(r.startswith("right DN hardly stands out") for r in verdict.reasons)


def test_unsure_network_is_reviewed():
    labels, values, _ = _case()
    probability = np.where(labels > 0, 0.5, 0.3).astype(np.float32)
    verdict = _verdict(labels, values, probability)
    assert any("network unsure of the left DN: mean probability 0.50" in r for r in verdict.reasons)
    assert any("network unsure of the right DN boundary" in r for r in verdict.reasons)


def test_box_and_slices_out_of_range_are_reviewed():
    labels, values, probability = _case()
    huge = {"min_mm": [-90.0, -12.0, -10.0], "max_mm": [90.0, 12.0, 10.0]}
    verdict = _verdict(labels, values, probability, spacing=(0.7, 0.7, 5.0), box=huge)
    assert any("localization box is 180 mm along x" in r for r in verdict.reasons)
    assert any("5.0 mm voxels are coarser" in r for r in verdict.reasons)


def test_thresholds_are_overridable_and_checked():
    labels, values, probability = _case()
    assert _verdict(labels, values, probability, checks=thresholds({"min_volume_mm3": 1500})).status == "review"
    assert thresholds({"min_volume_mm3": None})["min_volume_mm3"] == DEFAULTS["min_volume_mm3"]
    with pytest.raises(ValueError, match="unknown confidence check 'min_volume'"):
        thresholds({"min_volume": 3})


def test_reassess_reads_an_engine_record():
    labels, values, probability = _case()
    verdict = _verdict(labels, values, probability)
    meta = {
        "confidence": {"sides": verdict.sides},
        "box": BOX,
        "image": {"spacing_mm": [1.0, 1.0, 1.0]},
        "dentate": {"left": {"volume_mm3": 1000.0}, "right": {"volume_mm3": 1000.0}},
    }
    assert reassess(meta, thresholds()).status == "ok"
    assert reassess(meta, thresholds({"max_volume_mm3": 900})).status == "review"
    # a reason no threshold can see again (the longitudinal prior did not fit the visit) stays
    meta["standing_review_reasons"] = ["the longitudinal prior does not fit this visit"]
    kept = reassess(meta, thresholds())
    assert kept.status == "review" and kept.reasons == ["the longitudinal prior does not fit this visit"]
    both = reassess(meta, thresholds({"max_volume_mm3": 900}))
    assert both.status == "review" and len(both.reasons) == 3 and both.reasons[-1].startswith("the longitudinal prior")


def test_mirrored_and_plain_passes_that_disagree_are_reviewed():
    labels, values, probability = _case()
    agreeing = (labels > 0).astype(np.uint8)

    def sides(single):
        return crop_numbers(values, labels, probability, _voxels(labels), AFFINE, 0.0, single)

    volumes = {"left": 1000.0, "right": 1000.0}
    assert sides(agreeing)["left"]["mirror_agreement"] == 1.0
    assert assess(sides(agreeing), volumes, BOX, [1.0] * 3, thresholds()).status == "ok"
    shifted = np.roll(agreeing, 4, axis=0)  # the plain pass puts the nuclei 4 mm elsewhere
    verdict = assess(sides(shifted), volumes, BOX, [1.0] * 3, thresholds())
    assert any(r.startswith("mirrored and plain passes disagree on the left DN (Dice 0.67") for r in verdict.reasons), (
        verdict.reasons
    )


def test_smoothness_estimator_recovers_a_known_blur():
    from scipy import ndimage

    from dnqsm.engine.confidence import smoothness_fwhm_mm

    noise = np.random.default_rng(3).normal(0, 1, (64, 64, 64))
    for sigma_voxels, voxel_mm in ((2.0, 1.0), (3.0, 0.5)):
        smooth = ndimage.gaussian_filter(noise, sigma_voxels) + 5.0  # offset: no voxel is exactly zero
        expected = 2.3548 * sigma_voxels * voxel_mm
        assert smoothness_fwhm_mm(smooth, (voxel_mm,) * 3) == pytest.approx(expected, rel=0.15)
    thick = ndimage.gaussian_filter(noise, (1.0, 1.0, 4.0)) + 5.0  # blurred along z only: the sharpest axis counts
    assert smoothness_fwhm_mm(thick, (1.0, 1.0, 1.0)) == pytest.approx(2.3548, rel=0.15)


def test_a_blurred_image_is_reviewed_even_when_the_label_looks_fine():
    from scipy import ndimage

    labels, values, probability = _case()
    assert _verdict(labels, values, probability).sides["left"]["smoothness_fwhm_mm"] < 4
    blurred = ndimage.gaussian_filter(values, 4.0).astype(np.float32)  # 4 mm: FWHM 9.4 mm
    verdict = _verdict(labels, blurred, probability)
    assert verdict.status == "review"
    assert any(r.startswith("the image around the left DN is blurred: smoothness") for r in verdict.reasons), (
        verdict.reasons
    )


def test_a_nucleus_cut_by_the_field_of_view_is_reviewed_but_isolated_zeros_are_not():
    labels, values, probability = _case()
    speckled = values.copy()
    speckled[16, 18, 14] = speckled[44, 20, 12] = 0.0  # single zero voxels inside the nuclei (int16 rounding)
    speckled[:, :, :3] = 0.0  # the field of view ends 7 mm below the nuclei
    verdict = _verdict(labels, speckled, probability)
    assert verdict.status == "ok", verdict.reasons
    assert verdict.sides["left"]["data_edge_mm"] >= 7
    cut = values.copy()
    cut[:, :, :15] = 0.0  # a slab that ends through the middle of both nuclei (they span z 10-20)
    labels_cut = np.where(np.arange(SHAPE[2]) >= 15, labels, 0).astype(np.uint8)
    verdict = _verdict(labels_cut, cut, probability)
    assert any(r.startswith("the left DN reaches the edge of the image data") for r in verdict.reasons), verdict.reasons


def test_a_nucleus_cut_by_the_last_slice_of_the_image_is_reviewed_where_the_crop_ends_there():
    """A slab whose last slice runs through the nuclei holds no zeros there: the array just ends. Where
    that face of the crop is the image's own edge it counts as the data's edge; where the crop ends
    inside the image (more data beyond) it does not."""
    from dnqsm.engine.localize import image_edges

    labels, values, probability = _case()
    cut = (slice(None), slice(None), slice(15, None))  # the image's first slice is z = 15, mid-nuclei
    labels, values, probability = labels[cut], values[cut], probability[cut]

    def verdict(edges):
        sides = crop_numbers(values, labels, probability, _voxels(labels), AFFINE, 0.0, image_edges=edges)
        volumes = {name: float((labels == label).sum()) for name, label in (("left", 1), ("right", 2))}
        return assess(sides, volumes, BOX, [1.0] * 3, thresholds())

    at_edge = image_edges((slice(0, 60), slice(0, 40), slice(0, 15)), (60, 40, 40))
    assert at_edge == (True, True, True, True, True, False)  # the crop spans the image in x and y
    cut_verdict = verdict(at_edge)
    assert cut_verdict.sides["left"]["data_edge_mm"] == pytest.approx(1.0)
    assert any(r.startswith("the left DN reaches the edge of the image data") for r in cut_verdict.reasons), (
        cut_verdict.reasons
    )
    inside = image_edges((slice(5, 65), slice(3, 43), slice(20, 35)), (80, 60, 60))
    assert inside == (False,) * 6
    assert not any("edge of the image data" in r for r in verdict(inside).reasons)
    assert "data_edge_mm" not in verdict(()).sides["left"]  # no zeros and no image edge: nothing to measure


def test_a_cut_nucleus_whose_label_stops_short_of_the_data_edge_is_still_reviewed():
    """Networks often leave the last millimetres before a cut unlabelled: in the flags benchmark the
    labels of cut nuclei stopped 2-3 mm short of the data edge (clean images: 5 mm or more)."""
    labels, values, probability = _case()
    cut = values.copy()
    cut[:, :, :15] = 0.0
    short = np.where(np.arange(SHAPE[2]) >= 17, labels, 0).astype(np.uint8)  # 3 mm from the last zero slice
    verdict = _verdict(short, cut, probability)
    assert verdict.sides["left"]["data_edge_mm"] == pytest.approx(3.0)
    assert any(r.startswith("the left DN reaches the edge of the image data") for r in verdict.reasons), verdict.reasons
    lenient = _verdict(short, cut, probability, checks=thresholds({"min_data_edge_mm": 2.0}))
    assert not any("edge of the image data" in r for r in lenient.reasons), "the threshold is the config's"


def _blurred_case(seed: int = 0):
    """The two nuclei with the partial-volume edge a real image has (Gaussian blur of 1 voxel)."""
    from scipy import ndimage

    labels, values, probability = _case(seed)
    return labels, ndimage.gaussian_filter(values, 1.0), probability


def _reshaped(labels: np.ndarray, values: np.ndarray, morph) -> object:
    """The verdict on each side's label changed by ``morph`` (two voxels), the network sure of it."""
    changed = np.zeros_like(labels)
    for label in (1, 2):
        changed[morph(labels == label, iterations=2)] = label
    return _verdict(changed, values, np.where(changed > 0, 0.95, 0.02).astype(np.float32))


def test_a_label_eroded_inside_a_bright_nucleus_is_reviewed_and_the_exact_one_is_not():
    """Under-segmentation: the label stops two voxels inside the nucleus, confidently (probabilities
    high, contrast high, one piece): only the boundary against the image can tell."""
    from scipy import ndimage

    labels, values, probability = _blurred_case()
    exact = _verdict(labels, values, probability)
    assert exact.status == "ok", exact.reasons
    assert exact.sides["left"]["bright_shell_share"] < 0.2
    verdict = _reshaped(labels, values, ndimage.binary_erosion)
    assert verdict.sides["left"]["bright_shell_share"] > 0.8
    assert any("left DN label stops inside a bright region" in r for r in verdict.reasons), verdict.reasons
    assert not any("hardly stands out" in r or "unsure" in r for r in verdict.reasons)  # no other check saw it


def test_a_label_spilling_into_white_matter_is_reviewed():
    from scipy import ndimage

    labels, values, _ = _blurred_case()
    verdict = _reshaped(labels, values, ndimage.binary_dilation)
    assert verdict.sides["right"]["dark_rim_share"] > 0.8
    assert any("right DN label spills into darker tissue" in r for r in verdict.reasons), verdict.reasons


def _expectation(centres: dict | None = None, scale: float = 1.0) -> Expectation:
    """An affine registration's result on this test's world: the nuclei's centres where it expects them,
    and a map to MNI that puts the two test nuclei onto the MNI ones, the head ``scale`` times MNI's size."""
    to_template = np.diag([1 / scale] * 3 + [1.0])
    to_template[:3, 3] = (0.0, -60.0, -34.0)  # test nuclei at (-15.5 | 14.5, -0.5, -0.5) -> MNI (-14 | 15, -60, -34)
    return Expectation(centres or {"left": [-15.5, -0.5, -0.5], "right": [14.5, -0.5, -0.5]}, to_template)


def _registered_verdict(labels, values, probability, expected: Expectation, checks=None):
    sides = crop_numbers(values, labels, probability, _voxels(labels), AFFINE, 0.0, expected=expected)
    volumes = {name: float((labels == label).sum()) for name, label in (("left", 1), ("right", 2))}
    return sides, volumes, assess(sides, volumes, BOX, [1.0, 1.0, 1.0], checks or thresholds())


def test_a_label_far_from_where_registration_expects_the_nucleus_is_reviewed():
    labels, values, probability = _case()
    expected = _expectation({"left": [-15.5, -0.5, -0.5], "right": [14.5, 24.5 + 5, -0.5]})
    sides, volumes, verdict = _registered_verdict(labels, values, probability, expected)
    assert sides["left"]["registration_offset_mm"] < 1 and sides["right"]["registration_offset_mm"] > 25
    assert verdict.reasons == [
        "the right DN label lies 30 mm from where registration of the MNI brain expects it (expected ≤ 20 mm)"
    ]
    assert assess(sides, volumes, BOX, [1.0, 1.0, 1.0], thresholds({"max_registration_offset_mm": 35})).status == "ok"


def test_a_label_of_the_size_registration_expects_is_ok_and_a_far_smaller_one_is_reviewed():
    """The registration's volume: the reference DN (1000 mm³ in an MNI-sized head) scaled by the
    fitted head size. Each test nucleus holds 1000 mm³: right for an MNI-sized head, under a quarter
    of what a head 1.6 times MNI's size along each axis (4.1 times the volume) is expected to hold."""
    labels, values, probability = _case()
    sides, volumes, verdict = _registered_verdict(labels, values, probability, _expectation())
    assert verdict.status == "ok", verdict.reasons
    assert verdict.sides["left"]["registration_overlap"] == 1.0
    assert verdict.sides["left"]["expected_volume_mm3"] == 1000.0
    assert "expected_volume_mm3" not in sides["left"], "the numbers given are left as they were"
    sides, volumes, verdict = _registered_verdict(labels, values, probability, _expectation(scale=1.6))
    assert sides["right"]["registration_volume_scale"] == pytest.approx(4.096)
    assert verdict.reasons[0] == (
        "left DN volume 1000 mm³ is 0.24 times the 4096 mm³ that registration of the MNI "
        "brain expects for this head (expected 0.3–4 times)"
    ), verdict.reasons
    assert len(verdict.reasons) == 2  # and the right side's
    lenient = thresholds({"min_expected_volume_ratio": 0.2})
    assert assess(sides, volumes, BOX, [1.0, 1.0, 1.0], lenient).status == "ok", "the threshold is the config's"
    smaller = thresholds({"expected_volume_mm3": 300})  # a reference of another labelling convention
    assert assess(sides, volumes, BOX, [1.0, 1.0, 1.0], smaller).status == "ok"


def test_a_label_mostly_outside_where_registration_expects_the_nucleus_is_reviewed():
    """A label that runs along a vein away from the nucleus: most of it outside the MNI nucleus the
    registration carried across (its ellipsoid widened by the registration's error), even with its
    centroid within reach of the expected centre."""
    expected = _expectation()
    nucleus = np.argwhere(np.ones((10, 10, 10))) + (9.5, -5.5, -5.5)  # the right test nucleus, world mm
    vein = np.stack([np.full(121, 14.5), np.linspace(-60, 60, 121), np.full(121, -0.5)], axis=1)  # 1 mm steps
    assert expected.overlap("right", nucleus) == 1.0
    assert expected.overlap("right", np.concatenate([nucleus[:20], vein])) < 0.5
    assert expected.overlap("left", nucleus) == 0.0  # the other side's nucleus
    labels, values, probability = _case()
    sides, volumes, _ = _registered_verdict(labels, values, probability, expected)
    sides["right"]["registration_overlap"] = 0.3
    verdict = assess(sides, volumes, BOX, [1.0, 1.0, 1.0], thresholds())
    assert verdict.reasons == [
        "only 30 % of the right DN label lies where registration of the MNI brain expects the nucleus (expected ≥ 50 %)"
    ]


def test_an_ants_transform_becomes_a_map_between_world_coordinates():
    """ANTs (ITK) fits map points of the fixed image to the moving one in LPS about a centre; the
    map between RAS world coordinates must send every point where ANTs sends it."""
    import ants

    from dnqsm.engine.localize import world_map

    rng = np.random.default_rng(2)
    matrix = np.eye(3) * 1.1 + rng.normal(0, 0.1, (3, 3))
    transform = ants.create_ants_transform(
        transform_type="AffineTransform",
        dimension=3,
        matrix=matrix,
        translation=(3.0, -7.0, 11.0),
        center=(10.0, -20.0, 5.0),
    )
    to_template = world_map(transform)
    for ras in rng.normal(0, 50, (5, 3)):
        lps = ants.apply_ants_transform_to_point(transform, (-ras[0], -ras[1], ras[2]))
        assert np.allclose(to_template[:3, :3] @ ras + to_template[:3, 3], (-lps[0], -lps[1], lps[2]), atol=1e-4)
    assert Expectation(to_template=to_template).volume_scale == pytest.approx(1 / abs(np.linalg.det(matrix)))


def test_what_a_check_accepts_is_read_from_the_check_table():
    """The flags benchmark shows each number's accepted range beside where it fell: one rule (the
    check table's) for which way a threshold points."""
    c = thresholds({"min_expected_volume_ratio": 0.25})
    assert accepted_range("registration_overlap", c) == f"≥ {c['min_registration_overlap']:g}"
    assert accepted_range("registration_offset_mm", c) == f"≤ {c['max_registration_offset_mm']:g}"
    assert accepted_range("expected_volume_ratio", c) == f"0.25–{c['max_expected_volume_ratio']:g}"
    assert accepted_range("centroid_mm", c) == ""
