"""What the antspyx-based steps share: images handed to ANTs, and the transform files ANTs leaves.

``ants.registration`` writes its transforms (affine ``.mat``, warp fields ``.nii.gz``) as temporary
files and never removes them: a cohort's atlas registrations left hundreds of megabytes in /tmp.
Every caller removes them with :func:`remove_transforms` once the transforms are applied.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np


def ants_image(data: np.ndarray, affine: np.ndarray) -> Any:
    """An ANTs image of ``data`` (float32) on the grid ``affine`` (RAS, as nibabel's)."""
    import ants

    img = nib.Nifti1Image(np.asarray(data, np.float32), affine)
    img.header.set_xyzt_units("mm", "sec")  # else ITK warns "spatial units are 'unknown'" for every image
    return ants.from_nibabel_nifti(img)


def remove_transforms(fits: Iterable[dict[str, Any]]) -> None:
    """Delete the transform files of ``ants.registration`` results (forward and inverse)."""
    for fit in fits:
        for path in list(fit.get("fwdtransforms", [])) + list(fit.get("invtransforms", [])):
            Path(path).unlink(missing_ok=True)


@contextlib.contextmanager
def seeded(seed: int = 1) -> Iterator[None]:
    """ANTs registrations inside draw their metric's sample points from ``seed`` (antspyx passes
    ``--random-seed`` from ``ants.config``), so the same image gives the same transform on every run;
    unseeded, an affine fit on the coarse grid moved by up to 10 mm between two runs of one image."""
    import ants

    before = ants.config._random_seed
    ants.config._random_seed = seed
    try:
        yield
    finally:
        ants.config._random_seed = before
