"""The benchmark scripts' own arithmetic: they are run by hand for README, so a broken import or a
wrong summary would otherwise only show when someone reruns a 30-minute benchmark."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from dnqsm.engine.segment import load_model_set

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))  # the scripts import each other as top-level modules


@pytest.mark.parametrize("script", sorted(p.stem for p in BENCHMARKS.glob("*.py")))
def test_every_benchmark_imports(script):
    module = importlib.import_module(script)
    assert callable(module.main), f"benchmarks/{script}.py has no main()"


@pytest.fixture(scope="module")
def planned():
    """The bundled segmentation model's nnU-Net configuration (planned spacing and resampling)."""
    from segment_accuracy import planned_configuration

    return planned_configuration(load_model_set().segmentation.folder)


def two_nuclei(spacing_xyz, thickness_mm: float) -> nib.Nifti1Image:
    """Two slabs (left 1, right 2) ``thickness_mm`` thick along z on a grid of ``spacing_xyz``."""
    spacing = np.asarray(spacing_xyz, float)
    shape = np.ceil(np.array([60.0, 30.0, 30.0]) / spacing).astype(int)
    x, y, z = (np.indices(shape).T * spacing).T
    slab = (y > 8) & (y < 22) & (np.abs(z - 15) < thickness_mm / 2)
    labels = np.zeros(shape, np.uint8)
    labels[slab & (x > 8) & (x < 24)] = 1
    labels[slab & (x > 36) & (x < 52)] = 2
    return nib.Nifti1Image(labels, np.diag([*spacing, 1.0]))


def test_spacing_ceiling_is_one_on_the_planned_grid_and_lower_on_a_finer_one(planned):
    from segment_accuracy import spacing_ceiling

    spacing = tuple(planned.spacing[::-1])  # nnU-Net's (z, y, x) to (x, y, z)
    on_plan = spacing_ceiling(two_nuclei(spacing, 6.0), planned)
    assert on_plan == {"left": 1.0, "right": 1.0}, "no resampling, nothing lost"
    fine = spacing_ceiling(two_nuclei((0.5, 0.5, 0.5), 2.0), planned)  # 2 mm thin at 0.5 mm, planned z > 1 mm
    assert 0.5 < fine["left"] < 0.99 and 0.5 < fine["right"] < 0.99, fine


def test_image_ceiling_reads_the_stored_fractions(tmp_path):
    """A perfect reader's Dice from the 8-bit probseg as the generator writes it: shares just above and
    below one half survive the storage, and each side is scored against its own label."""
    from segment_accuracy import image_ceiling

    from dnqsm.io import save_nifti
    from dnqsm.synth.dataset import fraction_image

    labels = np.zeros((6, 4, 4), np.uint8)
    labels[1:3, 1:3, 1:3] = 1  # 8 voxels each side
    labels[4:6, 1:3, 1:3] = 2
    fraction = np.zeros((2,) + labels.shape, np.float32)
    fraction[0][labels == 1] = 0.51
    fraction[1][labels == 2] = 0.9
    fraction[1, 5, 1:3, 1:3] = 0.49  # 4 of the right's 8 voxels read as outside
    fraction[0, 0, 1, 1] = 0.6  # one voxel beside the left label reads as inside
    stored = nib.load(save_nifti(tmp_path / "probseg.nii.gz", fraction_image(fraction, np.eye(4))))
    ceiling = image_ceiling(stored, labels)
    assert ceiling["left"] == pytest.approx(2 * 8 / (9 + 8))
    assert ceiling["right"] == pytest.approx(2 * 4 / (4 + 8))


def test_retest_truth_error_and_floor():
    """Mean signed volume error of the scans with labels; the truth's own CV on the accepted pairs."""
    from retest import truth_error

    table = pd.DataFrame(
        {
            "method": "longitudinal",
            "participant_id": ["sub-1", "sub-1", "sub-2", "sub-2"],
            "visit": 1,
            "rescan": [False, True, False, True],
            "status": ["ok", "ok", "review", "failed"],
            "left_volume_mm3": [110.0, 90.0, 100.0, None],
            "right_volume_mm3": [100.0, 100.0, 100.0, None],
            "left_truth_volume_mm3": [100.0, 100.0, 100.0, 100.0],
            "right_truth_volume_mm3": [100.0, 80.0, 100.0, 100.0],
        }
    )
    # errors (3 scans): left (1.1 + 0.9 + 1.0) / 3 - 1 = 0, right (1.0 + 1.25 + 1.0) / 3 - 1 = +8.3 %;
    # the one accepted pair (sub-1): truth left identical (CV 0), right 100 vs 80: sqrt(20^2 / 2) / 90
    assert truth_error(table)[2] == "| longitudinal | 3 | +0.0 / +8.3 | 1 | 0.0 / 15.7 |"
    assert truth_error(table.drop(columns="left_truth_volume_mm3")) == [], "an older table: no row"


def test_tables_say_whether_they_were_mirrored():
    from segment_accuracy import mirroring_used

    assert mirroring_used(pd.DataFrame({"mirroring": [True, True]})) == "on"
    assert mirroring_used(pd.DataFrame({"mirroring": [False]})) == "off"
    assert mirroring_used(pd.DataFrame({"mirroring": [True, False]})) == "off, on"
    assert mirroring_used(pd.DataFrame({"dice_left": [0.9]})) == "not recorded"


def test_robustness_rows_show_how_much_larger_the_labels_are():
    """The "volume vs truth" column: the median over images of label / truth - 1, in per cent."""
    from robustness import rows

    table = pd.DataFrame(
        {
            "preset": ["test"] * 3,
            "site": ["A"] * 3,
            "recon_inversion": ["tkd"] * 3,
            "voxel_x_mm": [0.7] * 3,
            "voxel_z_mm": [1.0] * 3,
            "status": ["ok"] * 3,
            "dice_left": [0.9] * 3,
            "dice_right": [0.9] * 3,
            "true_left_mm3": [1000.0, 1000.0, 1000.0],
            "pred_left_mm3": [1100.0, 1080.0, 900.0],  # +10, +8, -10 %: median +8
            "true_right_mm3": [800.0, 800.0, 800.0],
            "pred_right_mm3": [760.0, 800.0, 700.0],  # -5, 0, -12.5 %: median -5
        }
    )
    header, _, cohort, site = rows(table)
    assert "volume vs truth L / R (median %)" in header
    assert "| +8 / -5 |" in cohort and "| +8 / -5 |" in site


def test_flags_relabelled_rows_keep_the_registrations_expected_volume(small_cohort, tmp_path):
    """The flags benchmark recomputes every check on labels made a voxel too small or too large; the
    verdict's side records (not the numbers it was given) carry the registration's expected volume."""
    from flags import relabel, truth_on_crop

    from dnqsm.engine.segment import NnunetMethod
    from dnqsm.io import bids_path
    from dnqsm.names import dentate_labels

    image = bids_path(small_cohort, "001", "01", "Chimap")
    labels = np.asarray(nib.load(dentate_labels(small_cohort / "derivatives/manual", "001", "01")).dataobj)
    method = NnunetMethod(load_model_set(), mirroring=False, threads=2)
    (record,) = method.run([image], tmp_path)
    assert record["status"] != "failed"
    truth = truth_on_crop(labels, image, record)
    rows = {kind: relabel(kind, tmp_path / record["stem"], record, truth) for kind in ("eroded", "dilated")}
    for side in ("left", "right"):
        expected = [rows[kind][f"expected_volume_mm3_{side}"] for kind in rows]
        assert all(e is not None and e > 0 for e in expected), expected
        assert rows["eroded"][f"volume_mm3_{side}"] < record["dentate"][side]["volume_mm3"]
        assert rows["dilated"][f"volume_mm3_{side}"] > record["dentate"][side]["volume_mm3"]
