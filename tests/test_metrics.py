"""Agreement metrics on hand-made inputs with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dnqsm.metrics import dice, volume_agreement


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
