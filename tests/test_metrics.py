"""Agreement metrics on hand-made inputs with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dnqsm.analysis.metrics import dice, hd95, volume_agreement


def test_dice_known_answers():
    a = np.zeros((4, 4, 4), bool)
    b = np.zeros((4, 4, 4), bool)
    assert math.isnan(dice(a, b)), "both empty: undefined, reported as NaN"
    a[0, 0, :2] = True
    assert dice(a, b) == 0.0, "one side empty"
    b[0, 0, 1:3] = True
    assert dice(a, b) == pytest.approx(0.5)
    assert dice(a, a) == 1.0


def test_volume_agreement_known_answers():
    truth = np.array([800.0, 950, 1100, 1200, 1400, 1600])
    perfect = volume_agreement(truth, truth.copy())
    assert perfect["icc_a1"] == pytest.approx(1.0) and perfect["pearson_r"] == pytest.approx(1.0)
    shifted = volume_agreement(truth, truth + 300)  # consistent but biased: r stays 1, absolute agreement drops
    assert shifted["pearson_r"] == pytest.approx(1.0)
    assert shifted["icc_a1"] < 0.85


def test_hd95_known_answers():
    a = np.zeros((12, 12, 12), bool)
    b = np.zeros((12, 12, 12), bool)
    assert math.isnan(hd95(a, b, (1, 1, 1))), "both empty: undefined"
    a[5, 5, 5] = True
    assert hd95(a, b, (1, 1, 1)) == math.inf, "one side empty"
    b[5, 5, 8] = True
    assert hd95(a, b, (1.0, 1.0, 2.0)) == pytest.approx(6.0), "3 voxels apart along z at 2 mm"
    block = np.zeros((12, 12, 12), bool)
    block[2:8, 2:8, 2:8] = True
    assert hd95(block, block, (0.7, 0.7, 1.5)) == 0.0
    shifted = np.roll(block, 1, axis=0)
    assert hd95(block, shifted, (2.0, 1.0, 1.0)) == pytest.approx(2.0), "one voxel shift along a 2 mm axis"


def test_dice_agrees_with_nnunet_evaluation(tmp_path):
    """Our Dice equals nnU-Net's own evaluation (compute_metrics) on the same files, to 1e-6,
    including a label absent from both (NaN) and a label present on one side only (0)."""
    import nibabel as nib
    from nnunetv2.evaluation.evaluate_predictions import compute_metrics
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    rng = np.random.default_rng(0)
    affine = np.diag([0.8, 0.9, 1.5, 1.0])
    cases = []
    for i in range(4):
        reference = np.zeros((30, 28, 20), np.uint8)
        reference[5:14, 6:20, 4:15] = 1
        reference[17:26, 6:20, 4:15] = 2
        prediction = np.where(rng.random(reference.shape) < 0.15, rng.integers(0, 3, reference.shape), reference)
        if i == 2:
            reference[reference == 2] = 0  # right absent from the reference only
        if i == 3:
            reference[reference == 2] = 0  # right absent from both
            prediction[prediction == 2] = 0
        cases.append((reference.astype(np.uint8), prediction.astype(np.uint8)))
    for i, (reference, prediction) in enumerate(cases):
        ref_file, pred_file = tmp_path / f"ref_{i}.nii.gz", tmp_path / f"pred_{i}.nii.gz"
        nib.save(nib.Nifti1Image(reference, affine), ref_file)
        nib.save(nib.Nifti1Image(prediction, affine), pred_file)
        theirs = compute_metrics(str(ref_file), str(pred_file), SimpleITKIO(), [1, 2])["metrics"]
        for label in (1, 2):
            ours = dice(prediction == label, reference == label)
            if math.isnan(theirs[label]["Dice"]):
                assert math.isnan(ours), (i, label)
            else:
                assert ours == pytest.approx(theirs[label]["Dice"], abs=1e-6), (i, label)
    assert math.isnan(dice(cases[3][1] == 2, cases[3][0] == 2)) and dice(cases[2][1] == 2, cases[2][0] == 2) == 0.0
