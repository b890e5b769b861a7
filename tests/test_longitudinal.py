"""The longitudinal mode's library (dnqsm.engine.longitudinal) on hand-made engine results: a subject whose two
visits show the same nuclei in another head position, each with its own noisy probabilities."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from dnqsm.analysis.metrics import dice
from dnqsm.engine.longitudinal import longitudinal_subject
from dnqsm.io import save_nifti, write_json

SHAPE = (60, 40, 30)


def _visit(
    folder: Path, stem: str, shift_mm: tuple[float, float, float], seed: int, status: str = "ok", scale: float = 1.0
) -> np.ndarray:
    """An engine result folder as `dnqsm segment` writes it: the crop is the whole image (1 mm, RAS),
    the nuclei two ellipsoids 15 mm either side of the midline, moved by ``shift_mm`` in the world;
    the probabilities put the boundary off by a smooth random displacement (another seed per visit)."""
    rng = np.random.default_rng(seed)
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    affine[:3, 3] = np.array([-30.0, -20.0, -15.0]) + np.asarray(shift_mm)
    grid = np.indices(SHAPE).astype(float)
    truth = np.zeros(SHAPE, bool)
    for centre_i in (15, 45):
        truth |= ((grid[0] - centre_i) / 6) ** 2 + ((grid[1] - 20) / 5) ** 2 + ((grid[2] - 15) / 4) ** 2 <= scale**2
    chi = rng.normal(-20, 8, SHAPE) + 110 * ndimage.gaussian_filter(truth.astype(float), 0.7)
    # segmentation noise as a network makes it: the boundary displaced by a smooth random field (mm)
    displacement = ndimage.gaussian_filter(rng.normal(0, 1, SHAPE), 2.0)
    displacement *= 0.8 / displacement.std()
    distance = ndimage.distance_transform_edt(~truth) - ndimage.distance_transform_edt(truth)
    prob = 1 / (1 + np.exp((distance - displacement) / 0.5))
    own = (prob > 0.5).astype(np.uint8)
    labels = np.where(own > 0, np.where(grid[0] < 30, 1, 2), 0).astype(np.uint8)
    result = folder / stem
    result.mkdir(parents=True)
    save_nifti(result / f"{stem}_cropped.nii.gz", nib.Nifti1Image(chi.astype(np.float32), affine))
    probability = nib.Nifti1Image(np.round(prob * 255).astype(np.uint8), affine)
    probability.header.set_slope_inter(1 / 255, 0)
    save_nifti(result / f"{stem}_cropped_prob.nii.gz", probability)
    save_nifti(result / f"{stem}_seg.nii.gz", nib.Nifti1Image(labels, affine))
    save_nifti(result / f"{stem}_cerebellar_mask.nii.gz", nib.Nifti1Image(np.ones(SHAPE, np.uint8), affine))
    sides = {
        name: {
            "voxels": int((labels == label).sum()),
            "volume_mm3": float((labels == label).sum()),
            "components": 1,
            "predicted_voxels": int((labels == label).sum()),
        }
        for name, label in (("left", 1), ("right", 2))
    }
    write_json(
        result / f"{stem}_metadata.json",
        {
            "stem": stem,
            "status": status,
            "review_reasons": [],
            "method": "nnunet",
            "dentate": sides,
            "midline_x_mm": float(shift_mm[0]),
            "crop_voxels_canonical": [[0, s] for s in SHAPE],
            "image": {"shape": list(SHAPE), "affine": affine.tolist(), "spacing_mm": [1.0, 1.0, 1.0]},
            "box": {"min_mm": [-26.0 + shift_mm[0], -8.0, -6.0], "max_mm": [26.0 + shift_mm[0], 8.0, 6.0]},
            "confidence": {"sides": {}, "thresholds": {}},
            # where the registration of the MNI brain expected the nuclei (its map to MNI: a shift)
            "localization": {
                "registration_expected_mm": {
                    "left": list(nib.affines.apply_affine(affine, (15, 20, 15))),
                    "right": list(nib.affines.apply_affine(affine, (45, 20, 15))),
                },
                "registration_to_template": [[1, 0, 0, 0], [0, 1, 0, -60], [0, 0, 1, -34], [0, 0, 0, 1]],
            },
        },
    )
    return truth


def _three_visits(engine: Path) -> tuple[np.ndarray, list[tuple[Path, str]]]:
    """Three visits of one subject in other head positions: the first visit's truth and the visit list."""
    truth = _visit(engine, "v1", (0.0, 0.0, 0.0), seed=1)
    _visit(engine, "v2", (3.0, -2.0, 1.0), seed=2)
    _visit(engine, "v3", (-1.0, 2.0, -2.0), seed=3)
    return truth, [(engine, s) for s in ("v1", "v2", "v3")]


def _labels(folder: Path, stem: str) -> np.ndarray:
    return np.asarray(nib.load(folder / stem / f"{stem}_seg.nii.gz").dataobj)


def _volumes(folder: Path, stem: str) -> tuple[float, float]:
    meta = json.loads((folder / stem / f"{stem}_metadata.json").read_text())
    return meta["dentate"]["left"]["volume_mm3"], meta["dentate"]["right"]["volume_mm3"]


def test_visits_share_a_prior_and_their_volumes_agree_better(tmp_path):
    engine = tmp_path / "batch"
    truth, visits = _three_visits(engine)  # the same nuclei, the head moved
    cross = [_volumes(engine, s) for s in ("v1", "v2", "v3")]
    metas = longitudinal_subject(visits, tmp_path / "long")
    assert [m["longitudinal"]["mode"] for m in metas] == ["longitudinal"] * 3
    assert len(metas[0]["longitudinal"]["alignment_correlation"]) == 3
    long = [_volumes(tmp_path / "long", s) for s in ("v1", "v2", "v3")]
    spread = lambda volumes: np.sqrt(np.mean([np.var([v[side] for v in volumes]) for side in (0, 1)]))  # noqa: E731
    assert spread(long) < 0.6 * spread(cross), (cross, long)  # scans of one day: the prior is their mean
    for side in (0, 1):
        # the mean shape of distance maps sits slightly inside the visits' boundaries (a distance is a
        # minimum over the surface): measured 4-6 % below the truth here, the visits' own 3 % above
        half = float(truth[:30].sum() if side == 0 else truth[30:].sum())
        assert np.mean([v[side] for v in long]) == pytest.approx(half, rel=0.08), (side, half, long)
    # labels stay on each visit's own grid and match the truth there better than its own noisy labels
    stems = ("v1", "v2", "v3")
    assert np.mean([dice(_labels(tmp_path / "long", s) > 0, truth) for s in stems]) > np.mean(
        [dice(_labels(engine, s) > 0, truth) for s in stems]
    )
    labels = _labels(tmp_path / "long", "v2")
    assert set(np.unique(labels)) == {0, 1, 2} and (labels[:30] != 2).all() and (labels[30:] != 1).all()
    assert metas[1]["status"] in ("ok", "review") and metas[1]["confidence"]["sides"]["left"]["voxels"] > 0
    # the relabelled visits are checked against the registration's expectation as their own results were
    assert metas[1]["confidence"]["sides"]["right"]["registration_offset_mm"] < 5
    assert metas[1]["confidence"]["sides"]["right"]["expected_volume_mm3"] == 1000.0


def test_no_registration_file_is_left_in_the_temporary_folder(tmp_path, monkeypatch):
    # ants.registration writes its transforms to tempfile's folder and never removes them; every
    # template round's files must go (a cohort of thousands of subjects filled /tmp otherwise)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    engine = tmp_path / "batch"
    _visit(engine, "v1", (0.0, 0.0, 0.0), seed=1)
    _visit(engine, "v2", (3.0, -2.0, 1.0), seed=2)
    metas = longitudinal_subject([(engine, "v1"), (engine, "v2")], tmp_path / "long", settings={"iterations": 3})
    assert [m["longitudinal"]["mode"] for m in metas] == ["longitudinal"] * 2
    assert sorted(p.name for p in scratch.iterdir()) == []


def test_a_failed_visit_is_kept_as_it_is_and_one_usable_visit_stays_cross_sectional(tmp_path):
    engine = tmp_path / "batch"
    _visit(engine, "v1", (0.0, 0.0, 0.0), seed=1)
    _visit(engine, "v2", (3.0, -2.0, 1.0), seed=2, status="failed")
    metas = longitudinal_subject([(engine, "v1"), (engine, "v2")], tmp_path / "long")
    assert metas[1]["status"] == "failed" and "longitudinal" not in metas[1]
    assert metas[0]["longitudinal"]["mode"].startswith("cross-sectional")
    assert _volumes(tmp_path / "long", "v1") == _volumes(engine, "v1")
    assert (tmp_path / "long" / "v1" / "v1_seg.nii.gz").read_bytes() == (engine / "v1" / "v1_seg.nii.gz").read_bytes()


def test_steady_change_is_kept_when_visit_times_are_known(tmp_path):
    """Nuclei that shrink every year: the prior is a line in time, so the yearly change measured in the
    longitudinal mode stays that of the truth; a prior without times (the plain mean) would pull each
    visit toward the mean and flatten the change."""
    engine = tmp_path / "batch"
    years = [0.0, 1.0, 2.0, 3.0]
    truths = [
        _visit(engine, f"v{k}", ((-1) ** k * 1.5, k - 1.5, 0.5 * k), seed=10 + k, scale=1 - 0.05 * t)
        for k, t in enumerate(years)
    ]
    visits = [(engine, f"v{k}") for k in range(len(years))]
    slope = lambda volumes: np.polyfit(years, volumes, 1)[0]  # noqa: E731
    truth_slope = slope([t.sum() for t in truths])
    timed = longitudinal_subject(visits, tmp_path / "timed", years=years)
    untimed = longitudinal_subject(visits, tmp_path / "untimed")
    total = lambda metas: [m["dentate"]["left"]["volume_mm3"] + m["dentate"]["right"]["volume_mm3"] for m in metas]  # noqa: E731
    assert truth_slope < -100
    assert slope(total(timed)) == pytest.approx(truth_slope, rel=0.15), (truth_slope, total(timed))
    assert abs(slope(total(untimed))) < 0.75 * abs(truth_slope), "a plain mean prior flattens change"
    assert timed[0]["longitudinal"]["years"] == years and "unknown" in untimed[0]["longitudinal"]["years"]


def test_aligning_on_a_coarser_grid_gives_the_labels_of_the_template_grid(tmp_path):
    """The rigid alignment may run on a grid coarser than the template (``registration_spacing_mm``:
    several times faster); the transforms are in millimetres, so the prior, still built on the template
    grid, and the labels stay those of the alignment on the template grid itself."""
    engine = tmp_path / "batch"
    truth, visits = _three_visits(engine)
    fine = longitudinal_subject(visits, tmp_path / "fine", settings={"registration_spacing_mm": None})
    coarse = longitudinal_subject(visits, tmp_path / "coarse", settings={"registration_spacing_mm": 2.0})
    finer = longitudinal_subject(visits, tmp_path / "finer", settings={"registration_spacing_mm": 0.5})
    assert fine[0]["longitudinal"]["registration_spacing_mm"] == fine[0]["longitudinal"]["template_spacing_mm"] == 1.0
    assert coarse[0]["longitudinal"]["registration_spacing_mm"] == 2.0
    assert finer[0]["longitudinal"]["registration_spacing_mm"] == 1.0  # never finer than the template
    assert [m["longitudinal"]["mode"] for m in coarse] == ["longitudinal"] * 3
    for stem in ("v1", "v2", "v3"):
        a, b = _labels(tmp_path / "fine", stem), _labels(tmp_path / "coarse", stem)
        for label in (1, 2):
            assert dice(a == label, b == label) > 0.985, (stem, label)  # measured 0.994-0.999 (4 mm: 0.981)
    stems = ("v1", "v2", "v3")
    assert np.mean([dice(_labels(tmp_path / "coarse", s) > 0, truth) for s in stems]) > np.mean(
        [dice(_labels(engine, s) > 0, truth) for s in stems]
    )


def test_starting_each_round_from_the_last_alignment_gives_the_labels_of_identity_starts(tmp_path):
    """After the first template round every visit's alignment starts from its last one (``warm_start``,
    the default: fewer optimizer steps); it must end where starting from the identity ends, which also
    checks that ANTs takes the start transform as part of the fit instead of adding it on top."""
    engine = tmp_path / "batch"
    truth, visits = _three_visits(engine)
    cold = longitudinal_subject(visits, tmp_path / "cold", settings={"warm_start": False})
    warm = longitudinal_subject(visits, tmp_path / "warm")
    assert [m["longitudinal"]["warm_start"] for m in cold + warm] == [False] * 3 + [True] * 3
    assert [m["longitudinal"]["mode"] for m in warm] == ["longitudinal"] * 3
    for stem in ("v1", "v2", "v3"):
        a, b = _labels(tmp_path / "cold", stem), _labels(tmp_path / "warm", stem)
        for label in (1, 2):
            assert dice(a == label, b == label) > 0.985, (stem, label)
        assert dice(b > 0, truth) > 0.9, stem


def test_subject_prior_refuses_zero_template_rounds():
    """The config schema refuses iterations < 1; a library caller gets the same answer, not a NameError."""
    from dnqsm.engine.longitudinal import subject_prior

    with pytest.raises(ValueError, match="iterations must be at least 1"):
        subject_prior([], [], None, {"iterations": 0})
