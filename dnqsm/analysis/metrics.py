"""Agreement metrics between label maps and between volume series."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two boolean masks; NaN when both are empty (as nnU-Net's evaluation reports it)."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    total = int(a.sum()) + int(b.sum())
    if total == 0:
        return float("nan")
    return 2.0 * int(np.logical_and(a, b).sum()) / total


def hd95(a: np.ndarray, b: np.ndarray, spacing_mm) -> float:
    """95th-percentile symmetric surface distance in mm (the pooled distances of both surfaces to
    each other, as medpy's ``hd95`` defines it): NaN when both masks are empty, inf when one is."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    if not a.any() and not b.any():
        return float("nan")
    if not a.any() or not b.any():
        return float("inf")
    # Only the box around both masks matters (every surface voxel lies in it): a whole-head image
    # would make the distance transforms a hundred times slower for the same answer.
    idx = np.argwhere(a | b)
    box = tuple(slice(lo, hi + 1) for lo, hi in zip(idx.min(0), idx.max(0)))
    a, b = np.pad(a[box], 1), np.pad(b[box], 1)
    surfaces = [
        m & ~ndimage.binary_erosion(m, structure=ndimage.generate_binary_structure(3, 1), border_value=0)
        for m in (a, b)
    ]
    to_b = ndimage.distance_transform_edt(~surfaces[1], sampling=spacing_mm)[surfaces[0]]
    to_a = ndimage.distance_transform_edt(~surfaces[0], sampling=spacing_mm)[surfaces[1]]
    return float(np.percentile(np.concatenate([to_b, to_a]), 95))


def volume_agreement(truth: np.ndarray, estimate: np.ndarray) -> dict[str, float]:
    """ICC(A,1) (two-way random effects, absolute agreement, single rater; pingouin) and Pearson r."""
    import pingouin as pg

    n = len(truth)
    long = pd.DataFrame(
        {
            "target": np.tile(np.arange(n), 2),
            "rater": ["truth"] * n + ["estimate"] * n,
            "volume": np.concatenate([truth, estimate]),
        }
    )
    icc = pg.intraclass_corr(long, targets="target", raters="rater", ratings="volume").set_index("Type")
    return {"icc_a1": float(icc.loc["ICC(A,1)", "ICC"]), "pearson_r": float(np.corrcoef(truth, estimate)[0, 1])}
