"""Known answers for the QSM physics the synthesis runs through (dnqsm.synth.physics)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from synth_helpers import recon as synth_recon

from dnqsm.synth import physics

N, RADIUS, CHI = 64, 8.0, 0.1


@pytest.fixture(scope="module")
def sphere():
    """A sphere of chi = 0.1 ppm in a uniform medium (chi = 0), 1 mm voxels, B0 along z."""
    axis = np.arange(N) - N / 2
    r2 = axis[:, None, None] ** 2 + axis[None, :, None] ** 2 + axis[None, None, :] ** 2
    chi = (r2 <= RADIUS**2).astype(np.float32) * CHI
    grid = physics.Grid(chi.shape, 1.0, np.array([0.0, 0.0, 1.0]))
    return chi, grid, physics.forward_field(chi, grid)


def test_forward_field_of_a_sphere_is_the_analytic_dipole(sphere):
    chi, grid, field = sphere
    c = N // 2
    # inside a uniformly magnetised sphere the (Lorentz-corrected) field is zero
    assert abs(field[c, c, c]) < 0.05 * CHI
    # outside: chi a^3 / r^3 * (3 cos^2 theta - 1) / 3, +2/3 chi (a/r)^3 along B0, -1/3 across it
    r = 2 * RADIUS
    assert field[c, c, c + int(r)] == pytest.approx(CHI * 2 / 3 / 8, rel=0.15)
    assert field[c + int(r), c, c] == pytest.approx(-CHI / 3 / 8, rel=0.15)


def test_forward_field_agrees_with_qsm_forward(sphere):
    from qsm_forward import generate_field

    chi, grid, field = sphere
    reference = generate_field(chi.astype(np.float64), voxel_size=[1, 1, 1], B0_dir=[0, 0, 1])
    band = np.abs(reference) > 0.002
    assert np.corrcoef(field[band], reference[band])[0, 1] > 0.99
    assert np.abs(field - reference).max() < 0.1 * np.abs(reference).max()


def test_kernel_follows_the_tilted_field():
    tilted = physics.dipole_kernel((32, 32, 32), 1.0, np.array([0.0, np.sin(0.3), np.cos(0.3)]))
    straight = physics.dipole_kernel((32, 32, 32), 1.0, np.array([0.0, 0.0, 1.0]))
    assert not np.allclose(tilted, straight)
    assert tilted[0, 0, 0] == 0 and tilted.min() >= -2 / 3 - 1e-6 and tilted.max() <= 1 / 3 + 1e-6


def _inside_mean(chi: np.ndarray) -> float:
    axis = np.arange(N) - N / 2
    r2 = axis[:, None, None] ** 2 + axis[None, :, None] ** 2 + axis[None, None, :] ** 2
    return float(chi[r2 <= (RADIUS - 2) ** 2].mean())


@pytest.mark.parametrize("inversion", ["l2", "iterative", "tkd_rescaled"])
def test_inversions_recover_the_sphere_within_ten_percent(sphere, inversion):
    chi, grid, field = sphere
    recon = synth_recon(
        inversion=inversion, threshold=0.15, regularization=1e-3, iterations=40, reference="none", erosion_mm=0
    )
    mask = np.ones(chi.shape, bool)
    result = physics.invert(field, mask, grid, recon)
    assert _inside_mean(result) == pytest.approx(CHI, rel=0.10)


def test_total_variation_recovers_the_sphere_and_flattens_the_noise(sphere):
    """TV by ADMM: the sphere's chi within 10 %, and flat where closed-form L2 leaves the noise."""
    chi, grid, field = sphere
    noisy = field + np.random.default_rng(0).standard_normal(field.shape).astype(np.float32) * np.float32(0.002)
    tv = physics.total_variation(noisy, grid, regularization=3e-4, iterations=25)
    l2 = physics.closed_form_l2(noisy, grid, regularization=1e-3)
    assert _inside_mean(tv) == pytest.approx(CHI, rel=0.10)
    axis = np.arange(N) - N / 2
    outside = axis[:, None, None] ** 2 + axis[None, :, None] ** 2 + axis[None, None, :] ** 2 > (RADIUS + 3) ** 2
    assert tv[outside].std() < 0.3 * l2[outside].std()
    # a stronger penalty flattens more and costs contrast, as TV does
    strong = physics.total_variation(noisy, grid, regularization=3e-3, iterations=25)
    assert _inside_mean(strong) < _inside_mean(tv)


def test_difference_operators_are_adjoint():
    """The ADMM step needs grad^T exactly: <grad x, w> = <x, grad^T w> on the periodic grid."""
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal((2, 5, 6, 7))
    for axis in range(3):
        forward = physics._difference(x, axis, forward=True)
        assert np.allclose(forward, np.roll(x, -1, axis) - x)
        assert np.vdot(forward, w) == pytest.approx(-np.vdot(x, physics._difference(w, axis, forward=False)))


def test_tkd_underestimates_as_its_threshold_says(sphere):
    chi, grid, field = sphere
    ratios = []
    for threshold in (0.1, 0.2, 0.3):
        ratio = _inside_mean(physics.tkd(field, grid, threshold)) / CHI
        ratios.append(ratio)
        # the recovered share is the k-space mean of D / D_thresholded (what rescaling divides by)
        assert ratio == pytest.approx(physics.tkd_scale(grid, threshold), abs=0.08)
    assert ratios[0] > ratios[1] > ratios[2]
    assert ratios[2] < 0.85


def test_reference_modes():
    chi = np.array([[[0.1, 0.2, 0.3, 5.0]]], np.float32)
    mask = np.array([[[True, True, True, False]]])
    csf = np.array([[[True, False, False, False]]])
    assert physics.reference(chi, mask, csf, "none") is chi
    assert np.allclose(physics.reference(chi, mask, csf, "mean")[mask], [-0.1, 0.0, 0.1])
    assert np.allclose(physics.reference(chi, mask, csf, "csf")[mask], [0.0, 0.1, 0.2])
    with pytest.raises(ValueError, match="unknown reference"):
        physics.reference(chi, mask, csf, "median")


def test_erosion_removes_edge_voxels():
    mask = np.zeros((30, 30, 30), bool)
    mask[5:25, 5:25, 5:25] = True
    eroded = physics.erode_mask(mask, 3.0, 1.0)
    assert eroded.sum() < mask.sum() and not eroded[5:8].any() and eroded[15, 15, 15]
    assert physics.erode_mask(mask, 0.2, 1.0).sum() == mask.sum()


@pytest.mark.parametrize("erosion_mm", [0.6, 1.0, 1.7, 2.0, 3.3, 4.0])
def test_erosion_keeps_exactly_the_voxels_farther_than_the_radius_from_the_outside(erosion_mm):
    # an irregular mask touching the array's border: the ball erosion must equal a Euclidean distance
    # transform's threshold (what "eroded by r mm" means), voxel for voxel
    rng = np.random.default_rng(3)
    mask = ndimage.gaussian_filter(rng.normal(size=(40, 46, 36)), 2.5) > -0.03
    for voxel_mm in (1.0, 0.8):
        expected = ndimage.distance_transform_edt(mask) > erosion_mm / voxel_mm
        assert np.array_equal(physics.erode_mask(mask, erosion_mm, voxel_mm), expected)


def test_multi_echo_field_estimate_is_unbiased_and_noisier_at_low_snr():
    rng = np.random.default_rng(0)
    field = np.full((20, 20, 20), 0.05, np.float32)
    magnitude = np.ones_like(field)
    r2star = np.full_like(field, 20.0)
    base = dict(reference="none", erosion_mm=0, echoes=4)
    high = physics.acquire_field(field, magnitude, r2star, synth_recon(snr=300, **base), rng)
    low = physics.acquire_field(field, magnitude, r2star, synth_recon(snr=30, **base), rng)
    assert high.mean() == pytest.approx(0.05, abs=0.005)
    assert low.std() > 3 * high.std()
