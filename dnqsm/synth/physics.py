"""QSM physics for synthesis: dipole forward model, imperfect background removal, dipole inversions,
referencing.

A susceptibility map becomes a local field by convolution with the unit dipole, whose k-space form is
``D(k) = 1/3 - (k.b0)^2/|k|^2`` with ``b0`` the main-field direction in the grid's frame (heads are
pitched relative to it). ``D`` is zero on the magic-angle cone, so every inversion trades streaks,
blur and underestimation differently; the synthesis reconstructs through one of four published kinds
(thresholded k-space division, closed-form L2 with gradient regularisation, iterative weighted L2 by
conjugate gradient, total variation by ADMM), so a network trained on the result has seen each look.

Everything works on real arrays of one isotropic grid and uses ``scipy.fft`` real transforms
(float32/complex64), padded so that the periodic convolution does not wrap the head onto itself.
The multi-echo signal and its noise come from the QSMxT team's ``qsm-forward`` (``acquire_field``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import fft, ndimage

#: Proton gyromagnetic ratio / 2 pi in MHz/T (as qsm-forward uses it).
GAMMA_MHZ_PER_T = 42.58
INVERSIONS = ("tkd", "tkd_rescaled", "l2", "iterative", "tv")
#: The inversions of the generator before total variation was added: the `train`, `test` and `retest`
#: presets keep drawing from these, so that the images the bundled models were trained and benchmarked
#: on stay the same (a new choice would redraw which image gets which inversion).
CLASSIC_INVERSIONS = INVERSIONS[:4]
REFERENCES = ("mean", "csf", "none")


@dataclass(frozen=True)
class Recon:
    """One reconstruction: how the field was measured and inverted. Recorded in the truth table."""

    inversion: str  # one of INVERSIONS
    threshold: float  # TKD threshold on |D|
    regularization: float  # lambda of the gradient penalty (l2, iterative, tv)
    iterations: int  # conjugate-gradient iterations (iterative), ADMM iterations (tv)
    reference: str  # one of REFERENCES
    erosion_mm: float  # brain-mask erosion by background-field removal
    residual_ppm: tuple[float, float, float]  # residual background field amplitude: left/right petrous, sinus
    residual_sigma_mm: float
    snr: float  # peak SNR of the multi-echo magnitude (0: Gaussian field noise of field_noise_ppm instead)
    field_noise_ppm: float
    echoes: int
    first_te_ms: float
    delta_te_ms: float


# --- the dipole kernel and the forward model -----------------------------------------------------


def padded_shape(shape: tuple[int, ...], pad: int) -> tuple[int, int, int]:
    """A fast FFT size at least ``pad`` voxels larger than ``shape`` on every side."""
    return tuple(fft.next_fast_len(int(n) + 2 * pad, real=True) for n in shape)


def dipole_kernel(
    shape: tuple[int, int, int], voxel_mm: float | tuple[float, float, float], b0_dir: np.ndarray
) -> np.ndarray:
    """The unit dipole in k-space for a real FFT of ``shape`` (last axis halved), float32.

    ``b0_dir`` is the main-field direction in the grid's axes; D(0) is set to 0 (the mean field is
    unknown in QSM, which is why maps need a reference).
    """
    voxel = np.broadcast_to(np.asarray(voxel_mm, float), (3,))
    b0 = np.asarray(b0_dir, float) / np.linalg.norm(b0_dir)
    k = [fft.fftfreq(shape[0], voxel[0]), fft.fftfreq(shape[1], voxel[1]), fft.rfftfreq(shape[2], voxel[2])]
    kx, ky, kz = (k[0][:, None, None], k[1][None, :, None], k[2][None, None, :])
    k2 = kx**2 + ky**2 + kz**2
    k2[0, 0, 0] = 1.0
    kernel = (1.0 / 3.0 - (kx * b0[0] + ky * b0[1] + kz * b0[2]) ** 2 / k2).astype(np.float32)
    kernel[0, 0, 0] = 0.0
    return kernel


def gradient_power(shape: tuple[int, int, int], voxel_mm: float) -> np.ndarray:
    """|E(k)|^2 of forward-difference gradients (sum over axes) for a real FFT of ``shape``, float32."""
    parts = []
    for axis, n in enumerate(shape):
        freq = fft.rfftfreq(n) if axis == 2 else fft.fftfreq(n)
        e2 = (2 - 2 * np.cos(2 * np.pi * freq)) / voxel_mm**2
        parts.append(e2.reshape([-1 if a == axis else 1 for a in range(3)]))
    return (parts[0] + parts[1] + parts[2]).astype(np.float32)


class Grid:
    """FFT helpers on one zero-padded grid (the image sits at offset ``pad``)."""

    def __init__(self, shape: tuple[int, int, int], voxel_mm: float, b0_dir: np.ndarray, pad: int = 16):
        self.shape, self.voxel_mm, self.pad = tuple(shape), float(voxel_mm), pad
        self.full = padded_shape(self.shape, pad)
        self.kernel = dipole_kernel(self.full, voxel_mm, b0_dir)
        self.inner = tuple(slice(pad, pad + n) for n in self.shape)

    def fft(self, x: np.ndarray) -> np.ndarray:
        full = np.zeros(self.full, np.float32)
        full[self.inner] = x
        return fft.rfftn(full, workers=-1)

    def ifft(self, spectrum: np.ndarray) -> np.ndarray:
        return fft.irfftn(spectrum, s=self.full, workers=-1)[self.inner].astype(np.float32)


def forward_field(chi_ppm: np.ndarray, grid: Grid) -> np.ndarray:
    """Local field (ppm of B0) of a susceptibility map (ppm): the dipole convolution."""
    return grid.ifft(grid.fft(chi_ppm) * grid.kernel)


# --- acquisition and background removal ----------------------------------------------------------


def acquire_field(
    field_ppm: np.ndarray,
    magnitude: np.ndarray,
    r2star: np.ndarray,
    recon: Recon,
    rng: np.random.Generator,
    b0_tesla: float = 3.0,
) -> np.ndarray:
    """The field as a multi-echo gradient-echo scan measures it (ppm), noise included.

    With ``recon.snr`` > 0, qsm-forward's signal model (``generate_signal``) makes each echo from the
    field, the magnitude and R2*, its ``add_noise`` adds complex noise at that peak SNR, and the field
    is estimated from the magnitude-weighted phase differences between echoes (no unwrapping needed
    for local fields). Noise then follows the magnitude and decay, as it does in real maps: iron-rich
    nuclei and veins are noisier. Otherwise white Gaussian noise of ``recon.field_noise_ppm``.
    """
    if recon.snr <= 0:
        return field_ppm + rng.standard_normal(field_ppm.shape, dtype=np.float32) * np.float32(recon.field_noise_ppm)
    from qsm_forward import add_noise, generate_signal

    tes = [(recon.first_te_ms + i * recon.delta_te_ms) / 1000.0 for i in range(recon.echoes)]
    weighted = np.zeros(field_ppm.shape, np.complex64)
    previous = None
    for te in tes:
        signal = generate_signal(field_ppm, B0=b0_tesla, TR=1, TE=te, flip_angle=90, M0=magnitude, R2star=r2star)
        signal = add_noise(signal, peak_snr=recon.snr, rng=rng).astype(np.complex64)
        if previous is not None:
            weighted += signal * np.conj(previous)
        previous = signal
    delta = recon.delta_te_ms / 1000.0
    return (np.angle(weighted) / (2 * np.pi * GAMMA_MHZ_PER_T * b0_tesla * delta)).astype(np.float32)


def residual_background(
    shape: tuple[int, int, int],
    affine: np.ndarray,
    sources_mm: list[np.ndarray],
    amplitudes_ppm: tuple[float, ...],
    sigma_mm: float,
) -> np.ndarray:
    """A smooth residual field left by imperfect background removal: Gaussian lobes around the given
    world points (petrous bones, sinuses), in ppm."""
    axes = [np.arange(n, dtype=np.float32) for n in shape]
    out = np.zeros(shape, np.float32)
    for amplitude, source in zip(amplitudes_ppm, sources_mm):
        vox = np.linalg.solve(affine[:3, :3], np.asarray(source, float) - affine[:3, 3])
        d2 = sum(
            ((axes[i] - vox[i]) * abs(affine[i, i])).reshape([-1 if a == i else 1 for a in range(3)]) ** 2
            for i in range(3)
        )
        out += np.float32(amplitude) * np.exp(-d2 / np.float32(2 * sigma_mm**2)).astype(np.float32)
    return out


def erode_mask(mask: np.ndarray, erosion_mm: float, voxel_mm: float) -> np.ndarray:
    """The brain mask as background-field removal leaves it: eroded by about ``erosion_mm``."""
    radius = erosion_mm / voxel_mm
    if radius < 0.5:
        return mask.copy()
    # keeps the voxels farther than ``radius`` from any voxel outside the mask (a Euclidean distance
    # transform's ``> radius``, exactly), by erosion with a ball: ten times faster on a head
    reach = int(np.floor(radius))
    offsets = np.arange(-reach, reach + 1)
    ball = offsets[:, None, None] ** 2 + offsets[None, :, None] ** 2 + offsets[None, None, :] ** 2 <= radius**2
    return ndimage.binary_erosion(mask, ball, border_value=1)


# --- dipole inversions ---------------------------------------------------------------------------


def tkd(field_ppm: np.ndarray, grid: Grid, threshold: float, rescale: bool = False) -> np.ndarray:
    """Thresholded k-space division: 1/D, with |D| < threshold replaced by sign(D) * threshold.

    Without rescaling, chi is underestimated (more with a higher threshold); ``rescale`` applies the
    usual correction, dividing by the mean of D * D_inv over k-space (Schweser et al. 2013).
    """
    d = grid.kernel
    inverse = np.where(np.abs(d) < threshold, np.sign(d) * np.float32(threshold), d)
    inverse = np.where(inverse == 0, np.float32(threshold), inverse)
    inverse = (1.0 / inverse).astype(np.float32)
    inverse[0, 0, 0] = 0.0
    chi = grid.ifft(grid.fft(field_ppm) * inverse)
    if rescale:
        chi /= np.float32(tkd_scale(grid, threshold))
    return chi


def tkd_scale(grid: Grid, threshold: float) -> float:
    """Mean over k-space of D / D_thresholded: the factor by which TKD scales chi down."""
    d = grid.kernel
    ratio = np.where(np.abs(d) < threshold, np.abs(d) / threshold, 1.0)
    weights = np.full(d.shape, 2.0, np.float32)  # rfft halves the last axis: count mirrored bins twice
    weights[..., 0] = 1.0
    if grid.full[2] % 2 == 0:
        weights[..., -1] = 1.0
    return float((ratio * weights).sum() / weights.sum())


def closed_form_l2(field_ppm: np.ndarray, grid: Grid, regularization: float) -> np.ndarray:
    """argmin ||D chi - f||^2 + lambda ||grad chi||^2, solved in one step in k-space (smooth, lower contrast)."""
    d = grid.kernel
    e2 = gradient_power(grid.full, grid.voxel_mm)
    denominator = d * d + np.float32(regularization) * e2
    denominator[0, 0, 0] = 1.0
    return grid.ifft(grid.fft(field_ppm) * (d / denominator))


def iterative_l2(
    field_ppm: np.ndarray, mask: np.ndarray, grid: Grid, regularization: float, iterations: int
) -> np.ndarray:
    """argmin ||W (D chi - f)||^2 + lambda ||grad chi||^2 by conjugate gradient, W = the brain mask.

    The data term counts only measured voxels (the field outside the mask is unknown), as iterative
    methods (iLSQR, MEDI-like weighted L2) do; edges and noise shape the result.
    """
    w = mask.astype(np.float32)
    e2 = gradient_power(grid.full, grid.voxel_mm) * np.float32(regularization)
    d = grid.kernel

    def normal(x: np.ndarray) -> np.ndarray:
        spectrum = grid.fft(x)
        data = grid.ifft(spectrum * d) * w
        return grid.ifft(grid.fft(data) * d + spectrum * e2)

    b = grid.ifft(grid.fft(field_ppm * w) * d)
    x = np.zeros_like(b)
    r = b.copy()
    p = r.copy()
    rr = float(np.vdot(r, r))
    for _ in range(iterations):
        ap = normal(p)
        alpha = rr / max(float(np.vdot(p, ap)), 1e-30)
        x += np.float32(alpha) * p
        r -= np.float32(alpha) * ap
        rr_new = float(np.vdot(r, r))
        p = r + np.float32(rr_new / max(rr, 1e-30)) * p
        rr = rr_new
    return x


def _difference(x: np.ndarray, axis: int, forward: bool) -> np.ndarray:
    """Periodic difference along ``axis`` (a new array): x[n + 1] - x[n] forward, x[n] - x[n - 1]
    backward. The backward difference, negated, is the forward one's adjoint."""

    def at(index: slice) -> tuple[slice, ...]:
        return tuple(index if a == axis else slice(None) for a in range(x.ndim))

    out = np.empty_like(x)
    inner, edge = (slice(0, -1), slice(-1, None)) if forward else (slice(1, None), slice(0, 1))
    np.subtract(x[at(slice(1, None))], x[at(slice(0, -1))], out=out[at(inner)])
    np.subtract(x[at(slice(0, 1))], x[at(slice(-1, None))], out=out[at(edge)])
    return out


def total_variation(
    field_ppm: np.ndarray, grid: Grid, regularization: float, iterations: int, penalty: float | None = None
) -> np.ndarray:
    """argmin 1/2 ||D chi - f||^2 + lambda ||grad chi||_1 (anisotropic TV) by ADMM (sharp edges, flat
    patches, texture lost: the look of TV/MEDI-type methods).

    The splitting z = grad chi makes every chi step one closed-form division in k-space, as in Bilgic
    et al.'s fast L1-regularized QSM (MRM 2014): chi = (D F f + mu F grad^T (z - u)) / (D^2 + mu |E|^2),
    then z = shrink(grad chi + u, lambda / mu) and u += grad chi - z. Periodic forward differences on
    the padded grid, whose k-space power is ``gradient_power``. ``penalty`` (mu) defaults to 10 lambda.
    """
    mu = np.float32(penalty if penalty is not None else 10.0 * regularization)
    shrink = np.float32(regularization) / mu
    h = np.float32(grid.voxel_mm)
    d = grid.kernel
    denominator = d * d + mu * gradient_power(grid.full, grid.voxel_mm)
    denominator[0, 0, 0] = 1.0
    data = grid.fft(field_ppm) * d
    # shrink(v) = v - clip(v), so u = clip(grad chi + u) and z - u = v - 2u: only u and z - u are kept
    u = [np.zeros(grid.full, np.float32) for _ in range(3)]
    z_minus_u = [np.zeros(grid.full, np.float32) for _ in range(3)]
    chi = np.zeros(grid.full, np.float32)
    for _ in range(iterations):
        adjoint = np.zeros(grid.full, np.float32)
        for axis, w in enumerate(z_minus_u):
            adjoint -= _difference(w, axis, forward=False)
        chi = fft.irfftn(
            (data + (mu / h) * fft.rfftn(adjoint, workers=-1)) / denominator, s=grid.full, workers=-1
        ).astype(np.float32)
        for axis in range(3):
            v = _difference(chi, axis, forward=True)
            v /= h
            v += u[axis]
            np.clip(v, -shrink, shrink, out=u[axis])
            v -= 2 * u[axis]
            z_minus_u[axis] = v
    return chi[grid.inner]


def invert(field_ppm: np.ndarray, mask: np.ndarray, grid: Grid, recon: Recon) -> np.ndarray:
    """Dipole inversion of the masked local field by ``recon.inversion``; zero outside the mask."""
    field = np.where(mask, field_ppm, 0).astype(np.float32)
    if recon.inversion in ("tkd", "tkd_rescaled"):
        chi = tkd(field, grid, recon.threshold, rescale=recon.inversion == "tkd_rescaled")
    elif recon.inversion == "l2":
        chi = closed_form_l2(field, grid, recon.regularization)
    elif recon.inversion == "iterative":
        chi = iterative_l2(field, mask, grid, recon.regularization, recon.iterations)
    elif recon.inversion == "tv":
        chi = total_variation(field, grid, recon.regularization, recon.iterations)
    else:
        raise ValueError(f"unknown inversion {recon.inversion!r}; choose one of {INVERSIONS}")
    return np.where(mask, chi, 0).astype(np.float32)


def reference(chi_ppm: np.ndarray, mask: np.ndarray, csf: np.ndarray, how: str) -> np.ndarray:
    """Reference a map: subtract the whole-brain mean, the mean over CSF voxels, or nothing."""
    if how == "none":
        return chi_ppm
    region = mask & csf if how == "csf" else mask
    if how not in REFERENCES:
        raise ValueError(f"unknown reference {how!r}; choose one of {REFERENCES}")
    if not region.any():
        region = mask
    return np.where(mask, chi_ppm - np.float32(chi_ppm[region].mean()), 0).astype(np.float32)
