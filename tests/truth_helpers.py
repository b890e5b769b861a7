"""Reading planted effects back from a synthetic cohort's truth table (shared by the tests)."""

from __future__ import annotations

import pandas as pd


def calibrated_chi(truth: pd.DataFrame, side: str) -> pd.Series:
    """The DN's mean chi (ppb) as a perfect segmentation would measure it, on the planted scale.

    Absolute QSM values move with head pitch and referencing, and each site's reconstruction scales
    the DN's contrast (TKD, L2 and partial volume lose some). What a reconstruction keeps is the DN's
    contrast against its surroundings; dividing out each site's median ratio of image contrast to
    planted contrast (as a study would calibrate a site) and adding the white matter back gives chi
    on the planted scale, with every image's own measurement noise kept."""
    white_matter = 1000 * truth["chi_cerebellar_wm_ppm"]
    planted = truth[f"dn_{side}_planted_chi_ppb"] - white_matter
    seen = truth[f"dn_{side}_contrast_ppb"]
    scale = (seen / planted).groupby(truth["site"]).transform("median")
    return seen / scale + white_matter
