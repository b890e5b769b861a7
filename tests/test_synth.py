"""The synthetic cohort generator: BIDS layout, determinism, orientation, truth, planted effects."""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from scipy import ndimage
from synth_helpers import acquisition, render_geometry
from truth_helpers import calibrated_chi

from dnqsm.analysis.metrics import dice
from dnqsm.cli import main
from dnqsm.io import bids_path, read_tsv
from dnqsm.qc.views import world_centroid
from dnqsm.synth import SynthError, physics, write_dataset
from dnqsm.synth import dataset as synth_dataset
from dnqsm.synth.acquisition import ORIENTATIONS, head_pose, pose_from_truth, render, sample_acquisition
from dnqsm.synth.anatomy import build_anatomy
from dnqsm.synth.cohort import (
    ANATOMY_STREAM,
    DEFAULT_EFFECTS,
    PRESETS,
    STRESS_AGE_STRATA,
    participants,
    scan_stream,
    seed_sequence,
    visits,
)
from dnqsm.synth.dentate import DentateShape, dentate_sdf, sample_dentate, vary_dentate
from dnqsm.synth.template import DN_CENTROID_MNI

TRUTH = Path("derivatives") / "manual"


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_arguments_give_identical_files(tmp_path, small_cohort, demo_cohort):
    """Byte-identical for the same arguments, whatever the number of processes; and a cohort that grows
    by more participants keeps the earlier ones' files: each subject draws from its own streams. The
    shared small cohort (2 participants x 2 visits, seed 11, two processes) is made again here with one
    participant in one process."""
    one = write_dataset(tmp_path / "one", "demo", subjects=1, sessions=2, seed=11, jobs=1)
    mine = {k: v for k, v in _digest(one).items() if "sub-001" in k}
    assert len(mine) >= 6 and mine == {k: v for k, v in _digest(small_cohort).items() if "sub-001" in k}
    for table in ("participants.tsv", TRUTH / "truth.tsv"):
        first = read_tsv(small_cohort / table)
        pd.testing.assert_frame_equal(
            read_tsv(one / table), first[first.participant_id == "sub-001"].reset_index(drop=True), check_dtype=False
        )  # a column read back as int alone, float beside sub-002
    images = [k for k in mine if k.endswith("_Chimap.nii.gz")]
    other_seed = _digest(demo_cohort)  # seed 7
    assert images and all(other_seed[k] != mine[k] for k in images if k in other_seed), "another seed, other images"
    assert any(k in other_seed for k in images)


def test_train_and_test_presets_draw_disjoint_streams():
    """Every draw of a subject comes from a stream keyed by (seed, preset, subject, part): the same seed
    in two presets gives other anatomy and other acquisitions (no test image repeats a training one)."""
    draws = {}
    for name in ("train", "test"):
        preset = PRESETS[name]
        person = participants(preset, 1, 0)[0]
        baseline = visits(preset, person, 1, 0)[0]
        anatomy = build_anatomy(np.random.default_rng(seed_sequence(0, preset, person.index, ANATOMY_STREAM)))
        acq = sample_acquisition(
            np.random.default_rng(seed_sequence(0, preset, person.index, scan_stream(baseline))),
            person.site,
            person.site_scale,
            person.site_recon,
        )
        draws[name] = (float(anatomy.dentate["left"].center[0]), acq.voxel_mm, person.age, person.baseline)
    assert all(a != b for a, b in zip(draws["train"], draws["test"])), draws


def test_stress_cohort_holds_children_adults_and_older_people_in_every_group():
    """The robustness benchmark's small stress cohorts must hold the low-contrast children: ages come
    from the strata in turn, and each group passes through every stratum."""
    for seed in (0, 2001):
        people = participants(PRESETS["stress"], 9, seed)
        seen = {(p.group, next(i for i, (lo, hi) in enumerate(STRESS_AGE_STRATA) if lo <= p.age <= hi)) for p in people}
        assert seen == {(g, i) for g in PRESETS["stress"].groups for i in range(len(STRESS_AGE_STRATA))}, people
    train = participants(PRESETS["train"], 30, 1)  # the other presets keep each group's own age range
    assert all(18 <= p.age <= 65 for p in train if p.group == "ms"), [p.age for p in train if p.group == "ms"]


def test_every_group_is_scanned_at_every_site():
    """Groups and sites are crossed: with as many subjects as group x site pairs, each pair occurs once,
    in every preset (with four sites and three groups an earlier rotation never used the fourth site)."""
    for preset in PRESETS.values():
        n = len(preset.groups) * len(preset.sites)
        pairs = {(p.group, p.site.name) for p in participants(preset, n, 1)}
        assert pairs == {(g, s.name) for g in preset.groups for s in preset.sites}, (preset.name, sorted(pairs))


def _baseline_acquisitions(preset, subjects: int, seed: int):
    """A preset's participants and the acquisition drawn for each one's baseline scan (no images made)."""
    people = participants(preset, subjects, seed)
    acqs = []
    for person in people:
        scan = visits(preset, person, 1, seed)[0]
        acqs.append(
            sample_acquisition(
                np.random.default_rng(seed_sequence(seed, preset, person.index, scan_stream(scan))),
                person.site,
                person.site_scale,
                person.site_recon,
            )
        )
    return people, acqs


def test_wide_preset_reaches_beyond_the_train_ranges():
    """The `wide` training preset spans what `train` does not: sub-0.5 mm in-plane voxels, 1.2 mm and
    coarser isotropic voxels, 3 mm-class slices and obliquity beyond 20 degrees, every site drawing its
    reconstruction per image; a few dozen images already hold each of these."""
    preset = PRESETS["wide"]
    people, acqs = _baseline_acquisitions(preset, 32, 4)
    assert {p.site.name for p in people} == {s.name for s in preset.sites}
    inplane = [min(a.voxel_mm[:2]) for a in acqs]
    assert min(inplane) < 0.5 and any(min(a.voxel_mm) >= 1.15 for a in acqs), [a.voxel_mm for a in acqs]
    assert max(max(a.voxel_mm) for a in acqs) > 2.5 and max(a.oblique_deg for a in acqs) > 20
    assert len({a.recon.inversion for a in acqs}) >= 3
    train_max_oblique = max(s.oblique_deg[1] for s in PRESETS["train"].sites)
    assert max(s.oblique_deg[1] for s in preset.sites) > train_max_oblique
    assert min(s.inplane_mm[0] for s in preset.sites) < min(s.inplane_mm[0] for s in PRESETS["train"].sites)


def test_presets_that_redraw_every_factor_include_total_variation():
    """Total variation (the look of TV/MEDI-type inversions) is drawn by the presets that vary every
    factor (`stress`, `wide`; `hard`'s 3 mm and low-SNR sites offer it too); `train`, `test` and
    `retest` keep the four kinds they were made with, so the images the bundled models were trained and
    benchmarked on stay the same."""
    for name, seed in (("stress", 2001), ("wide", 4)):
        _, acqs = _baseline_acquisitions(PRESETS[name], 24, seed)
        kinds = {a.recon.inversion for a in acqs}
        assert "tv" in kinds and len(kinds) >= 4, (name, kinds)
        tv = [a.recon for a in acqs if a.recon.inversion == "tv"]
        site_range = PRESETS[name].sites[0].tv_lambda
        assert all(site_range[0] <= r.regularization <= site_range[1] for r in tv)
    assert any("tv" in site.inversions for site in PRESETS["hard"].sites)
    for name in ("train", "test", "retest"):
        assert all(site.inversions == physics.CLASSIC_INVERSIONS for site in PRESETS[name].sites), name


def _dentate_volume_mm3(shape: DentateShape, step_mm: float = 0.5) -> float:
    """Volume of a nucleus (size factor 1) by counting points of a fine grid inside its surface."""
    axis = np.arange(-1.3 * shape.reach_mm, 1.3 * shape.reach_mm, step_mm)
    grid = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3) + shape.center
    return float((dentate_sdf(grid, shape) < 0).sum() * step_mm**3)


def test_varied_dentate_spans_tracing_to_atlas_sized_nuclei():
    """The wider anatomical family reaches both the size of manual QSM tracings (about 1 cm3) and of the
    probabilistic atlas (about 2 cm3), where the narrow family stays at 1.1-1.8 cm3; a subject's two
    nuclei stay alike (drawn once per subject: a left/right volume ratio of 0.5 would be flagged as
    implausible by the engine, rightly); every nucleus still opens its hilum medially and anteriorly and
    sits where it was drawn."""
    rng, variety = np.random.default_rng(3), np.random.default_rng(4)
    narrow, varied, ratios = [], [], []
    for _ in range(8):
        pair = {side: sample_dentate(rng, side) for side in ("left", "right")}
        wide = vary_dentate(pair, variety)
        for side, medial in (("left", 1.0), ("right", -1.0)):
            narrow.append(_dentate_volume_mm3(pair[side]))
            varied.append(_dentate_volume_mm3(wide[side]))
            hilum = wide[side].axes @ wide[side].hilum
            assert hilum[0] * medial > 0.4 and hilum[1] > 0.3, (side, hilum)
            np.testing.assert_array_equal(wide[side].center, pair[side].center)
        ratios.append(varied[-2] / varied[-1])
    assert 1000 < min(narrow) and max(narrow) < 1900, narrow
    assert min(varied) < 1100 and max(varied) > 2000, varied
    assert 700 < min(varied) and max(varied) < 3000, varied
    assert np.std(varied) > 2 * np.std(narrow)
    assert 0.75 < min(ratios) and max(ratios) < 1.35, ratios


def test_only_the_presets_that_vary_every_factor_draw_the_wider_anatomy():
    """`stress` and `wide` draw the wider family; the presets the bundled models were trained and
    benchmarked on before it (`train`, `test`, `external`, `retest`) and `demo` keep their nuclei, so
    their images stay byte-identical; the variety has its own stream, so without it the anatomy is the
    narrow family's, draw for draw."""
    assert {name for name, preset in PRESETS.items() if preset.varied_dentate} == {"stress", "wide"}
    narrow = build_anatomy(np.random.default_rng(7))
    again = build_anatomy(np.random.default_rng(7), None)
    varied = build_anatomy(np.random.default_rng(7), np.random.default_rng(8))
    np.testing.assert_array_equal(narrow.chi_ppm, again.chi_ppm)
    assert narrow.tissue_chi_ppm == varied.tissue_chi_ppm
    assert narrow.dentate["left"].thickness_mm != varied.dentate["left"].thickness_mm


def test_hard_preset_pushes_the_weakest_looks_beyond_wide():
    """The `hard` training preset holds what the robustness benchmark found hardest, beyond `wide`:
    two of every three participants are under 18 (low DN contrast), smooth inversions regularized
    more strongly than `wide` draws on coarse near-isotropic voxels, 3 mm-class slices and lower SNR."""
    preset, wide = PRESETS["hard"], PRESETS["wide"]
    people, acqs = _baseline_acquisitions(preset, 18, 6)  # each group passes through the age strata in turn
    assert sum(p.age < 18 for p in people) == 12, [round(p.age) for p in people]
    smooth = [a for a in acqs if a.recon.inversion == "l2" and min(a.voxel_mm) >= 0.9]
    assert smooth and max(a.recon.regularization for a in smooth) > max(s.l2_lambda[1] for s in wide.sites)
    assert max(max(a.voxel_mm) for a in acqs) > 2.9 and len({a.recon.inversion for a in acqs}) >= 3
    assert min(s.snr[0] for s in preset.sites) < min(s.snr[0] for s in wide.sites)


def test_first_label_renames_participants_without_changing_their_draws():
    """Cohorts to be pooled for training are numbered apart (dnqsm synth --first-label): the labels
    change, every draw (group, site, age, sex, dates) stays the subject's own."""
    default = participants(PRESETS["train"], 3, 5)
    shifted = participants(PRESETS["train"], 3, 5, first_label=101)
    assert [p.label for p in shifted] == ["101", "102", "103"]
    assert [replace(p, label="") for p in shifted] == [replace(p, label="") for p in default]


@pytest.fixture
def coarse_physics(monkeypatch):
    """Datasets written through the real generator with the QSM physics on a 2 mm grid (8 times fewer
    voxels), for tests of what a dataset holds and how it is written, not of how its images look."""
    monkeypatch.setattr(synth_dataset, "render", functools.partial(render, physics_mm=2.0))


def test_retest_scans_share_the_nucleus_but_not_the_acquisition(tmp_path, coarse_physics):
    root = write_dataset(tmp_path / "retest", "retest", subjects=1, sessions=1, seed=5, jobs=2)
    truth = read_tsv(root / TRUTH / "truth.tsv").set_index("session_id")
    assert sorted(truth.index) == ["ses-01", "ses-01r"]
    for pid, rows in truth.reset_index().groupby("participant_id"):
        scan, rescan = rows[~rows.rescan].iloc[0], rows[rows.rescan].iloc[0]
        for column in (
            "dn_left_planted_chi_ppb",
            "dn_right_planted_volume_factor",
            "dn_left_size_factor",
            "years_since_baseline",
            "visit",
        ):
            assert scan[column] == rescan[column], (pid, column)  # the same nucleus, the same day
        assert scan["rotation_x_deg"] != rescan["rotation_x_deg"] and scan["voxel_x_mm"] != rescan["voxel_x_mm"]
        images = [
            np.asarray(nib.load(bids_path(root, pid[4:], ses[4:], "Chimap")).dataobj)
            for ses in (scan["session_id"], rescan["session_id"])
        ]
        assert images[0].shape != images[1].shape or not np.array_equal(images[0], images[1])
    acq = {
        r.session_id: pd.Timestamp(r.acq_time) for r in read_tsv(root / "sub-001" / "sub-001_sessions.tsv").itertuples()
    }
    assert pd.Timedelta(0) < acq["ses-01r"] - acq["ses-01"] < pd.Timedelta(hours=5)


def test_dataset_loads_with_pybids(demo_cohort):
    from bids import BIDSLayout

    layout = BIDSLayout(demo_cohort)
    participants = read_tsv(demo_cohort / "participants.tsv")
    assert sorted(layout.get_subjects()) == sorted(p.removeprefix("sub-") for p in participants["participant_id"])
    assert layout.get_sessions() == ["01", "02", "03"]
    images = layout.get(suffix="Chimap", extension=".nii.gz")
    truth = read_tsv(demo_cohort / TRUTH / "truth.tsv")
    assert len(images) == len(truth) >= 8
    assert set(participants["group"]) == {"control", "ataxia"} and participants["site"].nunique() == 2
    for image in images:
        sidecar = image.get_metadata()
        assert sidecar["Units"] in ("ppm", "ppb")
    for sub in layout.get_subjects():
        sessions = read_tsv(demo_cohort / f"sub-{sub}" / f"sub-{sub}_sessions.tsv")
        assert list(sessions.columns) == ["session_id", "acq_time", "age"]
        assert pd.to_datetime(sessions["acq_time"]).is_monotonic_increasing


def test_truth_table_matches_the_files(demo_cohort):
    truth = read_tsv(demo_cohort / TRUTH / "truth.tsv")
    assert (demo_cohort / TRUTH / "desc-dentate_dseg.tsv").exists()
    for row in truth.itertuples():
        sub, ses = row.participant_id.removeprefix("sub-"), row.session_id.removeprefix("ses-")
        image = nib.load(bids_path(demo_cohort, sub, ses, "Chimap"))
        labels = nib.load(bids_path(demo_cohort / TRUTH, sub, ses, "dseg", desc="dentate"))
        cerebellum = nib.load(bids_path(demo_cohort / TRUTH, sub, ses, "mask", desc="cerebellum"))
        assert labels.shape == image.shape == cerebellum.shape
        assert np.allclose(labels.affine, image.affine) and np.allclose(cerebellum.affine, image.affine)
        values, seg = image.get_fdata(), np.asarray(labels.dataobj)
        voxel_mm3 = abs(np.linalg.det(image.affine[:3, :3]))
        to_ppb = 1000.0 if row.acq_unit == "ppm" else 1.0
        for side, label in (("left", 1), ("right", 2)):
            mask = seg == label
            assert mask.sum() > 100
            assert getattr(row, f"dn_{side}_volume_mm3") == pytest.approx(mask.sum() * voxel_mm3, rel=1e-5)
            assert getattr(row, f"dn_{side}_mean_chi_ppb") == pytest.approx(values[mask].mean() * to_ppb, rel=1e-5)
            # the nucleus is bright: well above the surrounding image
            assert values[mask].mean() > np.nanmedian(values[np.asarray(cerebellum.dataobj) > 0])
        assert np.all(np.asarray(cerebellum.dataobj)[seg > 0] == 1), "the DN lies inside the cerebellum mask"
        # the partial-volume truth: each nucleus's share of every voxel, consistent with the labels
        fraction = nib.load(bids_path(demo_cohort / TRUTH, sub, ses, "probseg", desc="dentate"))
        assert fraction.shape == image.shape + (2,) and np.allclose(fraction.affine, image.affine)
        shares = fraction.get_fdata(dtype=np.float32)
        assert shares.min() >= 0 and shares.max() == pytest.approx(1, abs=1e-6)
        for index, label in enumerate((1, 2)):
            mask, share = seg == label, shares[..., index]
            assert dice(share > 0.5, mask) > 0.85, "a voxel mostly inside the nucleus is mostly labelled"
            assert share.sum() * voxel_mm3 == pytest.approx(mask.sum() * voxel_mm3, rel=0.15)
            far = ~ndimage.binary_dilation(seg > 0, iterations=3)
            assert share[far].max() < 0.5, "no voxel mostly of a nucleus lies far from both labels"
    assert "Volumes" in json.loads((demo_cohort / TRUTH / "desc-dentate_probseg.json").read_text())


def test_left_label_is_on_the_subjects_left_in_every_file(demo_cohort):
    truth = read_tsv(demo_cohort / TRUTH / "truth.tsv")
    assert truth["acq_orientation"].nunique() >= 2
    for row in truth.itertuples():
        sub, ses = row.participant_id.removeprefix("sub-"), row.session_id.removeprefix("ses-")
        labels = nib.load(bids_path(demo_cohort / TRUTH, sub, ses, "dseg", desc="dentate"))
        seg = np.asarray(labels.dataobj)
        pose = pose_from_truth(row)
        subject = {
            lab: np.linalg.solve(pose[:3, :3], world_centroid(seg == lab, labels.affine) - pose[:3, 3])
            for lab in (1, 2)
        }
        assert subject[1][0] < subject[2][0]
        assert np.linalg.norm(subject[1] - DN_CENTROID_MNI["left"]) < 9
        assert np.linalg.norm(subject[2] - DN_CENTROID_MNI["right"]) < 9


@pytest.fixture(scope="module")
def anatomy():
    return build_anatomy(np.random.default_rng(11))


@pytest.mark.parametrize("warp_gain", [1.0, 4.0])
def test_points_skipped_as_air_never_sample_brain(anatomy, warp_gain):
    # rendering samples the tissue maps only where a point may hold brain; the bound must hold for any
    # warp (also one four times stronger than the generator draws) and still skip most of the air
    warped = replace(anatomy, warp=anatomy.warp * np.float32(warp_gain))
    rng = np.random.default_rng(4)
    tpl = anatomy.template
    lo = tpl.affine[:3, 3] - 15.0
    hi = tpl.affine[:3, :3] @ (np.array(tpl.shape) - 1) + tpl.affine[:3, 3] + 15.0
    points = rng.uniform(np.minimum(lo, hi)[:, None], np.maximum(lo, hi)[:, None], size=(3, 400_000)).astype(np.float32)
    keep = warped.may_hold_brain(points)
    inv = np.linalg.inv(tpl.affine)
    brain = ndimage.map_coordinates(
        tpl.brain, inv[:3, :3] @ warped.to_mni(points) + inv[:3, 3:4], order=1, mode="constant", cval=0.0
    )
    assert (brain >= 0.5).any() and not (brain[~keep] >= 0.5).any()
    assert (~keep).mean() > 0.25


@pytest.mark.parametrize("warp_gain", [1.0, 0.0])
def test_every_grid_point_with_brain_is_rendered(anatomy, warp_gain):
    # the renderer samples tissue only at the points _head_points keeps (decided per block of voxels):
    # on an oblique, anisotropic grid around a posed head, every point whose warped position samples
    # brain must be among them, and so must every point near a nucleus (without a warp the margins are
    # tightest)
    from dnqsm.synth.acquisition import _grid_points, _head_points, grid_affine

    anatomy = replace(anatomy, warp=anatomy.warp * np.float32(warp_gain))

    acq = acquisition(
        orientation="LPS",
        oblique_deg=17.0,
        voxel_mm=(1.1, 0.9, 2.6),
        rotation_deg=(20.0, -6.0, 7.0),
        translation_mm=(30.0, -10.0, 12.0),
        mask_fill="zero",
    )
    pose = head_pose(anatomy, acq)
    affine, shape = grid_affine(anatomy, acq, pose)
    mni, keep = _head_points(anatomy, pose, affine, shape, 25.0)
    every = anatomy.to_mni(_grid_points(np.linalg.inv(pose) @ affine, shape, (0.0, 0.0, 0.0)))
    assert np.array_equal(mni, every[:, keep])
    tpl = anatomy.template
    inv = np.linalg.inv(tpl.affine)
    brain = ndimage.map_coordinates(tpl.brain, inv[:3, :3] @ every + inv[:3, 3:4], order=1, mode="constant")
    kept = np.zeros(brain.size, bool)
    kept[keep] = True
    assert (brain >= 0.5).sum() > 10_000 and kept[brain >= 0.5].all()
    for nucleus in anatomy.dentate.values():
        assert kept[np.linalg.norm(every - nucleus.center[:, None], axis=0) < 25.0].all()
    assert kept.mean() < 0.6  # most of the grid is air, never sampled


@pytest.mark.parametrize("orientation,oblique", [(o, 0.0) for o in ORIENTATIONS] + [("RAS", 18.0), ("LPS", -14.0)])
def test_left_label_is_on_the_left_in_every_orientation(anatomy, orientation, oblique):
    acq = acquisition(
        recon_changes={"residual_ppm": (0.02, 0.0, 0.0), "field_noise_ppm": 0.002},
        orientation=orientation,
        oblique_deg=oblique,
        voxel_mm=(1.4, 1.4, 1.6),
        rotation_deg=(12.0, -6.0, 7.0),
        translation_mm=(38.0, -10.0, 12.0),
        noise_ppm=0.002,
        crop_top_mm=10.0,
    )  # head far right of x = 0
    # geometry only: the labels never depend on the physics grid, so a coarse one saves 90 % of the time
    out = render_geometry(anatomy, acq)
    # round trip through the NIfTI header, as a reader would see the file
    img = nib.Nifti1Image.from_bytes(nib.Nifti1Image(out.dentate_dseg, out.affine).to_bytes())
    if not oblique:
        assert "".join(nib.aff2axcodes(img.affine)) == orientation
    seg = np.asarray(img.dataobj)
    left, right = world_centroid(seg == 1, img.affine), world_centroid(seg == 2, img.affine)
    assert left[0] > 0 and right[0] > 0, "the head is off-centre: both nuclei at x > 0"
    pose = head_pose(anatomy, acq)
    left_s, right_s = (np.linalg.solve(pose[:3, :3], c - pose[:3, 3]) for c in (left, right))
    assert left_s[0] < right_s[0]
    assert np.linalg.norm(left_s - DN_CENTROID_MNI["left"]) < 9
    assert np.linalg.norm(right_s - DN_CENTROID_MNI["right"]) < 9


def test_a_fine_image_shows_the_nucleus_at_its_own_resolution(anatomy):
    """The physics grid is coarser than a 0.5 mm acquisition; the nucleus's edges must still be those
    of the site's voxels (as its labels are), not the physics grid's. With physics on a 2 mm grid,
    the noiseless image thresholded halfway between the nucleus and its surroundings agreed with the
    labels at Dice 0.82 before the nuclei were drawn at the site's resolution, 0.98 after."""
    acq = acquisition(
        voxel_mm=(0.5, 0.5, 0.5), rotation_deg=(12.0, -6.0, 7.0), translation_mm=(3.0, -1.0, 2.0), crop_top_mm=30.0
    )
    out = render_geometry(anatomy, acq)
    image = out.image.get_fdata()
    for label in (1, 2):
        nucleus = out.dentate_dseg == label
        near = ndimage.binary_dilation(nucleus, iterations=6)  # 3 mm
        shell = near & ~ndimage.binary_dilation(nucleus, iterations=1)
        halfway = (np.nanmean(image[nucleus]) + np.nanmean(image[shell])) / 2
        assert dice((image > halfway) & near, nucleus) > 0.93
        assert dice(out.dentate_fraction[label - 1] > 0.5, nucleus) > 0.99, "isotropic voxels: nothing unknowable"


def test_regression_recovers_planted_group_by_time_effects(demo_cohort):
    truth = read_tsv(demo_cohort / TRUTH / "truth.tsv")
    assert truth.groupby("participant_id").size().max() >= 3
    long = pd.concat(
        [
            truth.assign(side=side, volume=truth[f"dn_{side}_volume_mm3"], chi=calibrated_chi(truth, side))
            for side in ("left", "right")
        ],
        ignore_index=True,
    )
    long["log_volume"] = np.log(long["volume"])
    planted = {g: DEFAULT_EFFECTS[g] for g in ("control", "ataxia")}
    model = "~ C(participant_id):C(side) + years_since_baseline:C(group)"
    vol = smf.ols("log_volume" + model, long).fit()
    chi = smf.ols("chi" + model, long).fit()
    for group, effect in planted.items():
        term = f"years_since_baseline:C(group)[{group}]"
        lo, hi = vol.conf_int(0.01).loc[term]
        assert lo <= np.log(1 + effect.volume_pct_per_year / 100) <= hi, (group, vol.params[term])
    ataxia, control = (f"years_since_baseline:C(group)[{g}]" for g in ("ataxia", "control"))
    assert vol.params[ataxia] < vol.params[control]
    # chi, per site's scale: the planted order and size of the yearly change survive the reconstruction
    assert chi.params[ataxia] == pytest.approx(planted["ataxia"].chi_ppb_per_year, rel=0.35)
    assert chi.params[ataxia] - chi.params[control] > 2.0


def test_cli_writes_a_dataset(tmp_path, capsys, coarse_physics):
    assert (
        main(
            [
                "synth",
                "--out",
                str(tmp_path / "ds"),
                "--preset",
                "demo",
                "--subjects",
                "1",
                "--sessions",
                "1",
                "--seed",
                "2",
                "--ages",
                "9-11",
            ]
        )
        == 0
    )
    assert 9 <= read_tsv(tmp_path / "ds" / "participants.tsv").age.iloc[0] <= 11, "a child, as --ages asked"
    description = (tmp_path / "ds" / "dataset_description.json").read_text()
    assert "preset=demo subjects=1 sessions=1 seed=2 ages=9-11" in description, "the record says how it was made"
    assert "wrote" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args,message",
    [
        (["--subjects", "0"], "--subjects must be at least 1"),
        (["--sessions", "0"], "--sessions must be at least 1"),
        (["--seed", "-1"], "--seed must be a non-negative integer"),
        (["--ages", "8-a"], "--ages: '8-a' is not an age range such as 8-17"),
        (["--ages", "20-10"], "age ranges must be non-empty LOW-HIGH pairs with 0 <= LOW <= HIGH"),
        (["--first-label", "0"], "--first-label must be at least 1"),
    ],
)
def test_bad_arguments_fail_clearly(tmp_path, capsys, args, message):
    assert main(["synth", "--out", str(tmp_path / "ds"), *args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "ds").exists()


def test_unknown_preset_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["synth", "--out", str(tmp_path / "ds"), "--preset", "nope"])
    assert exc.value.code == 2
    assert "invalid choice: 'nope'" in capsys.readouterr().err


def test_unwritable_output_fails_clearly(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    assert main(["synth", "--out", str(blocker / "ds"), "--subjects", "1"]) == 2
    err = capsys.readouterr().err
    assert "cannot write output" in err and str(blocker) in err


def test_existing_output_needs_overwrite(tmp_path, capsys, coarse_physics):
    out = tmp_path / "ds"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    assert main(["synth", "--out", str(out), "--subjects", "1", "--sessions", "1"]) == 2
    assert "exists and is not empty; pass --overwrite" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "precious"
    assert main(["synth", "--out", str(out), "--subjects", "1", "--sessions", "1", "--overwrite"]) == 0
    assert not (out / "keep.txt").exists() and (out / "participants.tsv").exists()


def test_reuse_keeps_a_dataset_made_with_the_same_arguments_only(small_cohort):
    before = {f: f.stat().st_mtime_ns for f in small_cohort.rglob("*")}
    assert write_dataset(small_cohort, "demo", subjects=2, sessions=2, seed=11, reuse=True) == small_cohort
    assert {f: f.stat().st_mtime_ns for f in small_cohort.rglob("*")} == before  # nothing rewritten
    with pytest.raises(SynthError, match="exists and is not empty"):  # other arguments: made again, if allowed
        write_dataset(small_cohort, "demo", subjects=2, sessions=2, seed=12, reuse=True)
    with pytest.raises(SynthError, match="exists and is not empty"):
        write_dataset(small_cohort, "demo", subjects=2, sessions=2, seed=11, first_label=5, reuse=True)
    assert {f: f.stat().st_mtime_ns for f in small_cohort.rglob("*")} == before


def test_reuse_refuses_a_dataset_of_a_changed_generator(small_cohort, tmp_path, monkeypatch):
    """Same arguments and version, but the generator's source (between releases) or a library that
    shapes the images changed: made again."""
    described = json.loads((small_cohort / "dataset_description.json").read_text())["GeneratedBy"][0]
    assert described["Description"].endswith(f" code={synth_dataset.generator_code()}")
    source = Path(synth_dataset.__file__).parent

    def copied(name: str) -> Path:  # a copy of the generator's source elsewhere
        package = tmp_path / name / "dnqsm" / "synth"
        shutil.copytree(source, package, ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copyfile(source.parent / "units.py", package.parent / "units.py")
        return package

    assert synth_dataset.generator_code(copied("same")) == synth_dataset.generator_code(), "same source, same code"
    package = copied("changed")
    (package / "physics.py").write_text((package / "physics.py").read_text() + "\n# a changed generator\n")
    changed = synth_dataset.generator_code(package)
    assert changed != synth_dataset.generator_code()
    installed = synth_dataset.library_versions()
    assert [name for name, _ in installed] == list(synth_dataset.SHAPING_LIBRARIES)
    assert synth_dataset.generator_code(source, installed) == synth_dataset.generator_code(), "installed by default"
    other_numpy = tuple((name, "0.0" if name == "numpy" else version) for name, version in installed)
    assert synth_dataset.generator_code(source, other_numpy) != synth_dataset.generator_code(), (
        "the same source on another numpy may draw other images"
    )
    copy = Path(shutil.copytree(small_cohort, tmp_path / "copy"))
    monkeypatch.setattr(synth_dataset, "generator_code", lambda: changed)  # as if this were the installed source
    with pytest.raises(SynthError, match="exists and is not empty"):
        write_dataset(copy, "demo", subjects=2, sessions=2, seed=11, reuse=True)


def test_failure_midway_leaves_no_half_written_dataset(tmp_path, monkeypatch):
    calls = []

    def flaky(task):  # the first scan writes a file (as a real one would), the second fails
        calls.append(task)
        if len(calls) == 2:
            raise RuntimeError("disk full")
        root = task[0]
        (root / "sub-001").mkdir()
        (root / "sub-001" / "sub-001_Chimap.nii.gz").write_bytes(b"")
        return {}

    monkeypatch.setattr(synth_dataset, "_scan", flaky)
    with pytest.raises(RuntimeError, match="disk full"):
        write_dataset(tmp_path / "ds", "demo", subjects=2, sessions=1, seed=0)
    assert list(tmp_path.iterdir()) == [], "neither the output nor a temporary folder may remain"
