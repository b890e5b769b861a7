"""Hand-made acquisitions for the synthesis tests: a plain TKD reconstruction and a 1 mm RAS scan,
each test changing only what it is about."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from dnqsm.synth.acquisition import Acquisition, Rendered, render
from dnqsm.synth.physics import Recon

TKD = Recon(
    inversion="tkd",
    threshold=0.2,
    regularization=0.0,
    iterations=0,
    reference="mean",
    erosion_mm=2.0,
    residual_ppm=(0.0, 0.0, 0.0),
    residual_sigma_mm=10.0,
    snr=0.0,
    field_noise_ppm=0.0,
    echoes=3,
    first_te_ms=5.0,
    delta_te_ms=5.0,
)
SCAN = Acquisition(
    site="T",
    orientation="RAS",
    oblique_deg=0.0,
    voxel_mm=(1.0, 1.0, 1.0),
    rotation_deg=(0.0, 0.0, 0.0),
    translation_mm=(0.0, 0.0, 0.0),
    unit="ppm",
    scale=1.0,
    dtype="float32",
    mask_fill="nan",
    noise_ppm=0.0,
    crop_top_mm=0.0,
    crop_bottom_mm=0.0,
    recon=TKD,
)


def recon(**changes) -> Recon:
    """:data:`TKD` with ``changes``."""
    return replace(TKD, **changes)


def acquisition(recon_changes: dict | None = None, **changes) -> Acquisition:
    """:data:`SCAN` with ``changes``, its reconstruction with ``recon_changes``."""
    return replace(SCAN, recon=recon(**(recon_changes or {})), **changes)


def render_geometry(anatomy, acq: Acquisition) -> Rendered:
    """Both nuclei at their own size and 90 ppb, rendered on a coarse (2 mm) physics grid: for checks of
    geometry and of the nuclei's edges, which never depend on the physics grid."""
    return render(anatomy, acq, np.random.default_rng(0), {"left": 1.0, "right": 1.0}, {"left": 0.09, "right": 0.09},
                  physics_mm=2.0)  # fmt: skip
