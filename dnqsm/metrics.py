"""Agreement metrics between label maps and between volume series."""

from __future__ import annotations

import numpy as np
import pandas as pd


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two boolean masks; NaN when both are empty (as nnU-Net's evaluation reports it)."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    total = int(a.sum()) + int(b.sum())
    if total == 0:
        return float("nan")
    return 2.0 * int(np.logical_and(a, b).sum()) / total


def volume_agreement(truth: np.ndarray, estimate: np.ndarray) -> dict[str, float]:
    """ICC(A,1) (two-way random effects, absolute agreement, single rater; pingouin) and Pearson r."""
    import pingouin as pg

    n = len(truth)
    long = pd.DataFrame({"target": np.tile(np.arange(n), 2), "rater": ["truth"] * n + ["estimate"] * n,
                         "volume": np.concatenate([truth, estimate])})
    icc = pg.intraclass_corr(long, targets="target", raters="rater", ratings="volume").set_index("Type")
    return {"icc_a1": float(icc.loc["ICC(A,1)", "ICC"]), "pearson_r": float(np.corrcoef(truth, estimate)[0, 1])}
