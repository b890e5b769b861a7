"""The dentate nucleus as a folded ribbon: a crumpled bag with its hilum facing medially and anteriorly.

The shape is analytic (a signed distance in MNI millimetres), so it can be evaluated at any output
voxel without a resolution limit: the labels and the partial-volume image stay exactly consistent.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from dnqsm.synth.template import DN_CENTROID_MNI


@dataclass(frozen=True)
class DentateShape:
    """One dentate nucleus. Lengths in mm, in MNI space, before the subject's size factor."""

    side: str
    center: np.ndarray  # (3,)
    axes: np.ndarray  # (3, 3) columns: local u (lateral-medial), v (long axis), w (up), in MNI
    semi_axes: np.ndarray  # (3,) half-lengths of the bag along u, v, w
    thickness_mm: float
    fold_waves: np.ndarray  # (K, 4): wave vector on the unit sphere and phase
    fold_amplitude: float  # radial folding, fraction of the bag radius
    serration_waves: np.ndarray  # (K, 4)
    serration_amplitude: float  # relative thickness modulation
    hilum: np.ndarray  # (3,) unit vector in local coordinates
    hilum_half_angle_deg: float

    @property
    def reach_mm(self) -> float:
        """Radius of a sphere around the centre that holds the whole nucleus (size factor 1)."""
        return float(self.semi_axes.max() * (1 + 2.5 * self.fold_amplitude) + self.thickness_mm + 1.0)


def sample_dentate(rng: np.random.Generator, side: str) -> DentateShape:
    """Draw one subject's dentate nucleus around the DOMAIN.md MNI centroid."""
    medial = 1.0 if side == "left" else -1.0  # +x is medial for the left nucleus
    center = np.asarray(DN_CENTROID_MNI[side]) + rng.normal(0, 1.5, 3)
    # The long axes of the two nuclei converge anteriorly (rotate +y towards medial).
    yaw = np.deg2rad(medial * -25.0 + rng.normal(0, 6))
    pitch = np.deg2rad(rng.normal(10, 6))
    axes = _rot_z(yaw) @ _rot_x(pitch)
    semi = np.array([5.5, 9.0, 8.0]) * rng.uniform(0.9, 1.1, 3)
    hilum_mni = np.array([0.75 * medial, 0.65, 0.12])
    hilum = axes.T @ (hilum_mni / np.linalg.norm(hilum_mni))
    return DentateShape(
        side=side,
        center=center,
        axes=axes,
        semi_axes=semi,
        thickness_mm=float(rng.uniform(2.3, 3.0)),
        fold_waves=_waves(rng, 6, 6.0, 10.0),
        fold_amplitude=float(rng.uniform(0.12, 0.17)),
        serration_waves=_waves(rng, 4, 12.0, 18.0),
        serration_amplitude=float(rng.uniform(0.2, 0.35)),
        hilum=hilum,
        hilum_half_angle_deg=float(rng.uniform(45, 58)),
    )


def vary_dentate(shapes: dict[str, DentateShape], rng: np.random.Generator) -> dict[str, DentateShape]:
    """Widen a subject's pair of nuclei beyond :func:`sample_dentate`'s narrow family, with draws from a
    separate stream (``rng``) so that presets without it keep their images. Real nuclei and their
    tracings differ more than that family: manual QSM tracings are about 1 cm3 per side, the
    probabilistic atlas 1.8-2.1 cm3 (DOMAIN.md), the ribbon can look thin and deeply folded or thick
    and nearly solid at 1 mm, and its orientation varies with the cerebellum's. Drawn once per subject
    (a person's two nuclei are alike): each semi-axis x0.8-1.2, the ribbon 1.8-4.5 mm thick, folding
    0.05-0.22 of the radius, serration 0.1-0.45, the hilum 35-65 degrees wide; then per side a few
    per cent of difference in each, its own folds, and its own turn of about 6 degrees (SD) about each
    axis. About 0.85-2.8 cm3 per side at size factor 1 (1.0-2.4 for the middle 80 %), against the
    narrow family's 1.1-1.8 (1.2-1.6); left/right volume ratios within about 0.8-1.3."""
    scale = rng.uniform(0.8, 1.2, 3)
    thickness = rng.uniform(1.8, 4.5)
    fold = rng.uniform(0.05, 0.22)
    serration = rng.uniform(0.1, 0.45)
    hilum_deg = rng.uniform(35, 65)
    waves = int(rng.integers(4, 9))
    varied = {}
    for side, shape in shapes.items():
        turn = _rot_z(np.deg2rad(rng.normal(0, 6))) @ _rot_x(np.deg2rad(rng.normal(0, 6)))
        roll = np.deg2rad(rng.normal(0, 6))
        c, s = np.cos(roll), np.sin(roll)
        turn = turn @ np.array([[c, 0, s], [0, 1.0, 0], [-s, 0, c]])
        varied[side] = replace(
            shape,
            axes=turn @ shape.axes,  # the hilum is held in local coordinates, so it turns with the nucleus
            semi_axes=shape.semi_axes * scale * rng.uniform(0.96, 1.04, 3),
            thickness_mm=float(thickness * rng.uniform(0.93, 1.07)),
            fold_waves=_waves(rng, waves, 4.0, 12.0),
            fold_amplitude=float(fold * rng.uniform(0.85, 1.15)),
            serration_waves=_waves(rng, 4, 10.0, 20.0),
            serration_amplitude=float(serration * rng.uniform(0.85, 1.15)),
            hilum_half_angle_deg=float(hilum_deg + rng.uniform(-3, 3)),
        )
    return varied


def dentate_sdf(points_mni: np.ndarray, shape: DentateShape, size_factor: float = 1.0) -> np.ndarray:
    """Signed distance (mm, negative inside) of (N, 3) MNI points to the ribbon scaled by ``size_factor``."""
    local = ((points_mni - shape.center) / size_factor) @ shape.axes  # (N, 3)
    norm = np.linalg.norm(local, axis=1) + 1e-6
    scaled = local / shape.semi_axes
    rho = np.linalg.norm(scaled, axis=1) + 1e-6
    direction = scaled / rho[:, None]
    surface = 1.0 + shape.fold_amplitude * _wave_sum(direction, shape.fold_waves)
    # radius of the bag along this direction (guarded at the centre, which lies outside the ribbon)
    radius_mm = 1.0 / np.maximum(np.linalg.norm(local / norm[:, None] / shape.semi_axes, axis=1), 1e-6)
    thickness = shape.thickness_mm * (1.0 + shape.serration_amplitude * _wave_sum(direction, shape.serration_waves))
    ribbon = np.abs(rho - surface) * radius_mm - thickness / 2
    cos_to_hilum = (local @ shape.hilum) / norm
    angle = np.arccos(np.clip(cos_to_hilum, -1, 1))
    inside_hilum = norm * np.sin(np.deg2rad(shape.hilum_half_angle_deg) - np.minimum(angle, np.pi / 2))
    return (np.maximum(ribbon, inside_hilum) * size_factor).astype(np.float32)


def iron_pattern(points_mni: np.ndarray, shape: DentateShape) -> np.ndarray:
    """Where iron sits inside the nucleus, in [-1, 1] per (N, 3) MNI point: +1 on the dorsal side
    opposite the hilum (the brightest part on QSM), -1 towards the hilum. Callers centre it on the
    nucleus so the mean chi stays as planted."""
    bright = -(shape.axes @ shape.hilum) + np.array([0.0, 0.0, 0.4])
    bright /= np.linalg.norm(bright)
    offset = points_mni - shape.center
    return ((offset @ bright) / (np.linalg.norm(offset, axis=1) + 1e-6)).astype(np.float32)


def _waves(rng: np.random.Generator, count: int, lo: float, hi: float) -> np.ndarray:
    vec = rng.normal(size=(count, 3))
    vec *= (rng.uniform(lo, hi, count) / np.linalg.norm(vec, axis=1))[:, None]
    return np.column_stack([vec, rng.uniform(0, 2 * np.pi, count)])


def _wave_sum(direction: np.ndarray, waves: np.ndarray) -> np.ndarray:
    return np.sin(direction @ waves[:, :3].T + waves[:, 3]).sum(axis=1) / np.sqrt(len(waves))


def _rot_z(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


def _rot_x(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[1.0, 0, 0], [0, c, -s], [0, s, c]])
