"""One synthetic subject's anatomy on the MNI grid: tissue susceptibility, deep nuclei, veins, warp.

Everything here is fixed for a subject across visits; what changes between visits (the planted
dentate change, pose, noise, artifacts) lives in ``acquisition``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from dnqsm.synth.dentate import DentateShape, sample_dentate, vary_dentate
from dnqsm.synth.template import Template, brain_distance_mm, load_template

#: Susceptibility ranges (ppm, relative to CSF) from DOMAIN.md; drawn once per subject.
TISSUE_CHI_PPM: dict[str, tuple[float, float]] = {
    "csf": (-0.005, 0.005),
    "gm": (0.0, 0.02),
    "wm": (-0.05, -0.02),
    "cerebellar_gm": (0.0, 0.015),
    "cerebellar_wm": (-0.04, -0.02),
    "globus_pallidus": (0.15, 0.20),
    "substantia_nigra": (0.10, 0.15),
    "red_nucleus": (0.08, 0.12),
    "putamen": (0.05, 0.08),
    "caudate": (0.04, 0.07),
    "thalamus": (0.0, 0.03),
    "interposed": (0.03, 0.06),
    "vein": (0.2, 0.5),
}

#: Deep nuclei of the right hemisphere (mirrored for the left): parts as (centre mm, semi-axes mm, yaw deg).
NUCLEI: dict[str, list[tuple[tuple[float, float, float], tuple[float, float, float], float]]] = {
    "caudate": [
        ((13, 13, 9), (5.0, 8.0, 7.0), 5),
        ((16, -5, 17), (3.5, 10.0, 4.0), 10),
        ((22, -24, 16), (2.5, 8.0, 3.0), 25),
    ],
    "putamen": [((25, 2, 1), (5.5, 14.0, 9.0), 8)],
    "globus_pallidus": [((19, -4, -1), (3.5, 8.5, 4.5), 12)],
    "thalamus": [((11, -18, 7), (7.5, 14.0, 8.5), 18)],
    "substantia_nigra": [((11, -17, -11), (3.0, 8.0, 2.8), -35)],
    "red_nucleus": [((5, -19, -9), (3.0, 3.6, 3.4), 0)],
}


@dataclass
class SubjectAnatomy:
    """A subject: tissue susceptibility map (ppm, MNI grid, without the DN), warp, DN shapes."""

    tissue_chi_ppm: dict[str, float]
    dentate: dict[str, DentateShape]
    dn_size_factor: float  # subject's DN linear size relative to the sampled shape
    head_scale: np.ndarray  # (3,) anatomical scaling of the head
    warp_spacing_mm: float
    warp: np.ndarray  # (3, nx, ny, nz) displacement (mm) from subject space to MNI
    chi_ppm: np.ndarray = field(repr=False)  # MNI grid
    template: Template = field(repr=False)

    def to_mni(self, points_subject: np.ndarray) -> np.ndarray:
        """Map (3, N) subject-space points (mm) to MNI (mm) through the smooth warp."""
        origin = self.template.affine[:3, 3][:, None]
        grid = points_subject - origin
        grid /= self.warp_spacing_mm
        mni = np.empty(points_subject.shape, np.result_type(points_subject, self.warp))
        for axis, component in enumerate(self.warp):  # one axis at a time: no (3, N) displacement array
            mni[axis] = points_subject[axis] + ndimage.map_coordinates(component, grid, order=1, mode="nearest")
        return mni

    def warp_reach_mm(self) -> float:
        """The farthest the warp moves any point (mm): a bound from its largest value per axis (linear
        interpolation never exceeds the values it interpolates)."""
        return float(np.sqrt(sum(float(np.abs(c).max()) ** 2 for c in self.warp)))

    def may_hold_brain(self, points_subject: np.ndarray, margin_mm: float = 0.0) -> np.ndarray:
        """(N,) bool for (3, N) subject-space points: False only where the point's MNI position
        (:meth:`to_mni`) certainly samples a template brain fraction under one half, because every
        template voxel it interpolates from is farther from the brain than the warp can carry it.

        The bound: the template's distance to the brain, interpolated at the unwarped point, is at most
        one voxel diagonal above the true distance; the warp moves the point by at most
        :meth:`warp_reach_mm`; the voxels a point interpolates from lie within one voxel diagonal of it.
        ``margin_mm``: answer for every point within that distance of each given point as well."""
        distance = brain_distance_mm()
        diagonal = float(np.linalg.norm(np.linalg.norm(self.template.affine[:3, :3], axis=0)))
        # template voxel coordinates row by row in float32 (far within the margin), skipping the zeros of
        # the template's diagonal affine: Template.mni_to_voxel's float64 matrix product takes seconds on
        # the ten million points of a head's grid
        inv = np.linalg.inv(self.template.affine).astype(np.float32)
        voxels = np.empty(points_subject.shape, np.float32)
        for row in range(3):
            voxels[row] = inv[row, 3]
            for column in range(3):
                if inv[row, column]:
                    voxels[row] += inv[row, column] * points_subject[column]
        sampled = ndimage.map_coordinates(distance, voxels, order=1, mode="nearest")
        return sampled <= self.warp_reach_mm() + 2 * diagonal + margin_mm + 0.01


def build_anatomy(rng: np.random.Generator, dentate_variety: np.random.Generator | None = None) -> SubjectAnatomy:
    """Draw a subject's anatomy; deterministic for a given generator state. ``dentate_variety``: a
    separate stream that widens the nuclei's shapes (:func:`~dnqsm.synth.dentate.vary_dentate`);
    without it the draws, and so the images, are those of the narrow family."""
    tpl = load_template()
    chi = {name: float(rng.uniform(*rng_range)) for name, rng_range in TISSUE_CHI_PPM.items()}
    dentate = {side: sample_dentate(rng, side) for side in ("left", "right")}
    if dentate_variety is not None:
        dentate = vary_dentate(dentate, dentate_variety)
    cereb = ndimage.gaussian_filter(tpl.cerebellum, 1.0)
    gm_chi = chi["gm"] * (1 - cereb) + chi["cerebellar_gm"] * cereb
    wm_chi = chi["wm"] * (1 - cereb) + chi["cerebellar_wm"] * cereb
    gm, wm = tpl.gm.copy(), tpl.wm.copy()
    for shape in dentate.values():  # the nucleus sits in the cerebellar white-matter core
        weight = 0.85 * _bag_weight(tpl, shape, 1.25, rng)
        gm, wm = gm * (1 - weight), wm * (1 - weight) + weight * tpl.brain
    chi_map = (gm * gm_chi + wm * wm_chi + tpl.csf * chi["csf"]).astype(np.float32)
    for name, parts in NUCLEI.items():
        for mirror in (1.0, -1.0):
            occupancy = np.zeros(tpl.shape, np.float32)
            for center, semi, yaw in parts:
                c = np.array(center, float) * [mirror, 1, 1] + rng.normal(0, 1.0, 3)
                s = np.array(semi) * rng.uniform(0.88, 1.12, 3)
                _blob(tpl, occupancy, c, s, mirror * yaw + rng.normal(0, 4), rng)
            chi_map += occupancy * (chi[name] - chi_map)
    for shape in dentate.values():  # interposed nuclei, just medial to the dentate hilum
        occupancy = np.zeros(tpl.shape, np.float32)
        medial = 1.0 if shape.side == "left" else -1.0
        c = shape.center + np.array([7.5 * medial, 2.0, 3.0]) + rng.normal(0, 0.7, 3)
        _blob(tpl, occupancy, c, np.array([1.8, 4.0, 3.0]) * rng.uniform(0.85, 1.15, 3), medial * -20, rng)
        chi_map += occupancy * (chi["interposed"] - chi_map)
    _add_veins(tpl, chi_map, rng, chi["vein"], dentate)
    warp_spacing = 8.0
    warp_shape = tuple(int(np.ceil(n / warp_spacing)) + 2 for n in tpl.shape)
    warp = np.stack([ndimage.gaussian_filter(rng.normal(size=warp_shape), 1.5) for _ in range(3)])
    warp *= rng.uniform(1.5, 3.0) / np.sqrt((warp**2).sum(0).mean())
    return SubjectAnatomy(
        tissue_chi_ppm=chi,
        dentate=dentate,
        dn_size_factor=float(rng.uniform(0.9, 1.1)),
        head_scale=rng.uniform(0.92, 1.08) * rng.uniform(0.98, 1.02, 3),
        warp_spacing_mm=warp_spacing,
        warp=warp.astype(np.float32),
        chi_ppm=chi_map,
        template=tpl,
    )


def _box(tpl: Template, center: np.ndarray, radius: float) -> tuple[tuple[slice, ...], np.ndarray]:
    """Voxel box around an MNI point and the MNI coordinates of its voxels, shape (3, ...)."""
    lo = np.floor(tpl.mni_to_voxel(center - radius)).astype(int)
    hi = np.ceil(tpl.mni_to_voxel(center + radius)).astype(int) + 1
    lo, hi = np.maximum(lo, 0), np.minimum(hi, tpl.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    axes = [ax[s] for ax, s in zip(tpl.axes_mm(), box)]
    return box, np.stack(np.meshgrid(*axes, indexing="ij"))


def _bag_weight(tpl: Template, shape: DentateShape, scale: float, rng) -> np.ndarray:
    """Soft, irregular ellipsoid around a dentate nucleus (weight 1 inside, 0 beyond a 3 mm edge)."""
    weight = np.zeros(tpl.shape, np.float32)
    semi = shape.semi_axes * scale
    box, pts = _box(tpl, shape.center, semi.max() + 4)
    local = np.einsum("ij,i...->j...", shape.axes, pts - shape.center[:, None, None, None])
    rho = np.linalg.norm(local / semi[:, None, None, None], axis=0) + 1e-6
    waves = rng.normal(size=(4, 3)) * 4
    bump = sum(np.sin(np.einsum("i,i...->...", w, local / semi[:, None, None, None] / rho)) for w in waves) / 2
    dist_mm = (rho - 1 - 0.1 * bump) * semi.mean()
    weight[box] = np.clip(0.5 - dist_mm / 3, 0, 1)
    return weight


def _blob(tpl: Template, occupancy: np.ndarray, center: np.ndarray, semi: np.ndarray, yaw_deg: float, rng) -> None:
    """Add a smoothly perturbed ellipsoid (soft 1 mm edge) to ``occupancy`` in place (max-combined)."""
    box, pts = _box(tpl, center, semi.max() * 1.3 + 2)
    a = np.deg2rad(yaw_deg)
    rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    local = np.einsum("ij,i...->j...", rot, pts - center[:, None, None, None])
    scaled = local / semi[:, None, None, None]
    rho = np.linalg.norm(scaled, axis=0) + 1e-6
    waves = rng.normal(size=(3, 3)) * 2.5
    phases = rng.uniform(0, 2 * np.pi, 3)
    bump = sum(np.sin(np.einsum("i,i...->...", w, scaled / rho) + p) for w, p in zip(waves, phases)) / 3
    rho = rho / (1 + 0.12 * bump)
    occ = np.clip((1 - rho) * semi.min() + 0.5, 0, 1).astype(np.float32)
    occupancy[box] = np.maximum(occupancy[box], occ)


def _add_veins(tpl: Template, chi_map: np.ndarray, rng, vein_chi: float, dentate: dict[str, DentateShape]) -> None:
    """Thin bright tubes: cortical veins, deep veins and cerebellar veins (random smooth walks)."""
    brain = tpl.brain
    surface = np.argwhere((brain > 0.3) & (brain < 0.9) & (tpl.gm > 0.3))
    cerebellar = np.argwhere((tpl.cerebellum > 0.5) & (tpl.gm > 0.4))
    starts = [tpl.affine[:3, :3] @ v + tpl.affine[:3, 3] for v in surface[rng.choice(len(surface), 40)]]
    starts += [tpl.affine[:3, :3] @ v + tpl.affine[:3, 3] for v in cerebellar[rng.choice(len(cerebellar), 10)]]
    starts += [np.array([s * 2.5, 2.0, 16.0]) + rng.normal(0, 1, 3) for s in (-1, 1)]  # internal cerebral veins
    points, radii = [], []
    for i, start in enumerate(starts):
        deep = i >= len(starts) - 2
        direction = np.array([0, -1.0, -0.15]) if deep else rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        radius = 1.1 if deep else rng.uniform(0.45, 0.95)
        length = 38.0 if deep else rng.uniform(12, 40)
        p = start.astype(float)
        for _ in range(int(length / 0.4)):
            vox = np.round(tpl.mni_to_voxel(p)).astype(int)
            if np.any(vox < 0) or np.any(vox >= tpl.shape) or brain[tuple(vox)] < 0.2:
                break
            if any(np.linalg.norm(p - s.center) < s.semi_axes.max() + 4 for s in dentate.values()):
                break  # keep veins out of the dentate nucleus itself; they pass nearby
            points.append(p.copy())
            radii.append(radius)
            direction += rng.normal(0, 0.12, 3)
            direction /= np.linalg.norm(direction)
            p += 0.4 * direction
    if not points:
        return
    pts, radii = np.array(points), np.array(radii)
    near = np.zeros(tpl.shape, bool)
    vox = np.clip(np.round(tpl.mni_to_voxel(pts)).astype(int), 0, np.array(tpl.shape) - 1)
    near[tuple(vox.T)] = True
    near = ndimage.binary_dilation(near, iterations=2)
    idx = np.argwhere(near)
    mni = idx @ tpl.affine[:3, :3].T + tpl.affine[:3, 3]
    dist, nearest = cKDTree(pts).query(mni)
    occ = np.clip(radii[nearest] - dist + 0.5, 0, 1).astype(np.float32) * brain[tuple(idx.T)]
    cur = chi_map[tuple(idx.T)]
    chi_map[tuple(idx.T)] = cur + occ * (vein_chi - cur)
