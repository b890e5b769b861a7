"""Domain-randomized training images drawn from label maps, in the manner of SynthSeg.

Billot et al. (Medical Image Analysis 2023) trained networks only on images drawn from label maps with
random intensities per structure, random deformations, bias fields, resolutions, blur and noise, and
those networks segmented real scans of any contrast. Here the same recipe makes QSM-like maps: every
structure gets a random susceptibility except that the dentate nucleus stays paramagnetic relative to
the white matter around it (from barely visible to very bright), and the images come as whole heads,
brain-masked maps and axial slabs, pitched up to 30 degrees, at 0.5-3 mm slices.

Two anatomies: the MNI152 template with the project's nuclei, veins and a fresh dentate shape per
image (:func:`template_anatomy`), and any real head segmentation, such as the QSM Challenge 2.0 head
phantom (Marques et al., Magn Reson Med 2021; :func:`phantom_anatomy`), each deformed per image.
"""

from __future__ import annotations

import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from multiprocessing import get_context
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage

from dnqsm import __version__, names
from dnqsm.io import bids_path, save_nifti, write_json, write_tsv
from dnqsm.synth.anatomy import NUCLEI, _add_veins, _blob
from dnqsm.synth.dataset import BIDS_VERSION, TRUTH_DERIVATIVE, SynthError
from dnqsm.synth.dentate import dentate_sdf, sample_dentate, vary_dentate
from dnqsm.synth.template import load_template

# One label vocabulary for both anatomies.
AIR, DN_LEFT, DN_RIGHT, WM, GM, CSF, VEIN, BONE, SOFT, CALCIFICATION = range(10)
DEEP_NUCLEI = {
    "caudate": 10,
    "globus_pallidus": 11,
    "putamen": 12,
    "red_nucleus": 13,
    "substantia_nigra": 14,
    "thalamus": 15,
}
BRAIN_LABELS = (DN_LEFT, DN_RIGHT, WM, GM, CSF, VEIN, CALCIFICATION, *DEEP_NUCLEI.values())
#: The head phantom's labels (qsm-forward's label.json) in this vocabulary; 5, the dentate, is split by side.
PHANTOM_LABELS = {
    1: 10,
    2: 11,
    3: 12,
    4: 13,
    5: DN_LEFT,
    6: 14,
    7: 15,
    8: WM,
    9: GM,
    10: CSF,
    11: VEIN,
    12: SOFT,
    13: BONE,
    14: AIR,
    15: SOFT,
    16: CALCIFICATION,
}


@dataclass(frozen=True)
class LabelAnatomy:
    """A head as labels of the vocabulary above on a RAS grid (``affine``: voxel to mm)."""

    name: str
    labels: np.ndarray
    affine: np.ndarray

    @cached_property
    def dentate_centre_mm(self) -> np.ndarray:
        """Midpoint of the two nuclei (mm)."""
        voxels = np.argwhere((self.labels == DN_LEFT) | (self.labels == DN_RIGHT)).mean(0)
        return self.affine[:3, :3] @ voxels + self.affine[:3, 3]

    @cached_property
    def head_extent_mm(self) -> tuple[np.ndarray, np.ndarray]:
        """Lowest and highest corner (mm) of the brain."""
        voxels = np.argwhere(np.isin(self.labels[::2, ::2, ::2], BRAIN_LABELS)) * 2
        corners = self.affine[:3, :3] @ np.stack([voxels.min(0), voxels.max(0)]).T + self.affine[:3, 3:4]
        return corners.min(1), corners.max(1)


def phantom_anatomy(path: str | Path) -> LabelAnatomy:
    """A real head segmentation in the QSM Challenge 2.0 labels (1-16, dentate 5), split into left
    and right nuclei by side (the lower x of the array is taken as the left)."""
    img = nib.as_closest_canonical(nib.load(path))
    raw = np.asarray(img.dataobj).astype(np.int16)
    unknown = set(np.unique(raw).tolist()) - set(PHANTOM_LABELS) - {0}
    if unknown:
        raise ValueError(f"{path}: labels {sorted(unknown)} are not those of the QSM Challenge 2.0 head phantom")
    if not (raw == 5).any():
        raise ValueError(f"{path}: no dentate label (5)")
    lookup = np.zeros(max(PHANTOM_LABELS) + 1, np.int16)
    for source, target in PHANTOM_LABELS.items():
        lookup[source] = target
    labels = lookup[raw]
    dentate = raw == 5
    middle = np.argwhere(dentate)[:, 0].mean()
    labels[dentate & (np.arange(raw.shape[0])[:, None, None] > middle)] = DN_RIGHT
    return LabelAnatomy(Path(path).name, labels, img.affine)


def template_anatomy(rng: np.random.Generator) -> LabelAnatomy:
    """The MNI152 template as labels: tissue by largest fraction, the project's deep nuclei and veins,
    a dentate pair drawn from the wider shape family, and a skull and scalp as shells around the brain."""
    tpl = load_template()
    labels = np.full(tpl.shape, AIR, np.int16)
    brain = tpl.brain > 0.5
    tissue = np.argmax(np.stack([tpl.wm, tpl.gm, tpl.csf]), axis=0)
    labels[brain] = np.array([WM, GM, CSF], np.int16)[tissue[brain]]
    outside_mm = ndimage.distance_transform_edt(~brain)
    shells = rng.uniform([1.0, 5.0, 10.0], [3.0, 9.0, 16.0])
    labels[(outside_mm > 0) & (outside_mm <= shells[0])] = CSF
    labels[(outside_mm > shells[0]) & (outside_mm <= shells[1])] = BONE
    labels[(outside_mm > shells[1]) & (outside_mm <= shells[2])] = SOFT
    for name, parts in NUCLEI.items():
        occupancy = np.zeros(tpl.shape, np.float32)
        for mirror in (1.0, -1.0):
            for center, semi, yaw in parts:
                c = np.array(center, float) * [mirror, 1, 1] + rng.normal(0, 1.0, 3)
                _blob(tpl, occupancy, c, np.array(semi) * rng.uniform(0.88, 1.12, 3), mirror * yaw, rng)
        labels[occupancy > 0.5] = DEEP_NUCLEI[name]
    shapes = vary_dentate({side: sample_dentate(rng, side) for side in ("left", "right")}, rng)
    veins = np.zeros(tpl.shape, np.float32)
    _add_veins(tpl, veins, rng, 1.0, shapes)
    labels[veins > 0.5] = VEIN
    axes = [tpl.affine[i, i] * np.arange(n) + tpl.affine[i, 3] for i, n in enumerate(tpl.shape)]
    for side, value in (("left", DN_LEFT), ("right", DN_RIGHT)):
        shape = shapes[side]
        reach = shape.reach_mm + 2
        box = tuple(np.flatnonzero(np.abs(ax - c) <= reach) for ax, c in zip(axes, shape.center))
        grid = np.stack(np.meshgrid(*[ax[b] for ax, b in zip(axes, box)], indexing="ij"), -1)
        inside = (dentate_sdf(grid.reshape(-1, 3), shape) < 0).reshape(grid.shape[:3])
        region = np.ix_(*box)
        labels[region] = np.where(inside, value, labels[region])
    return LabelAnatomy("MNI152", labels, tpl.affine)


@dataclass(frozen=True)
class Drawn:
    """One randomized image (ppm) with its dentate labels (left 1, right 2) and what was drawn."""

    image: nib.Nifti1Image
    dseg: nib.Nifti1Image
    record: dict


def _rotation(pitch: float, roll: float, yaw: float) -> np.ndarray:
    a, b, c = np.deg2rad([pitch, roll, yaw])
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _smooth_field(rng: np.random.Generator, shape: tuple[int, ...], cells: int, sigma: float = 1.0) -> np.ndarray:
    """A smooth random field of ``shape`` in about [-1, 1], from ``cells`` random values per axis."""
    coarse = ndimage.gaussian_filter(rng.normal(size=(cells,) * 3), sigma)
    coarse /= np.abs(coarse).max() + 1e-9
    zoom = [n / cells for n in shape]
    return ndimage.zoom(coarse, zoom, order=1, mode="nearest", grid_mode=True)[: shape[0], : shape[1], : shape[2]]


def _intensities(rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Susceptibility (ppm) per label: the dentate above its white matter, every other structure random."""
    n = max(DEEP_NUCLEI.values()) + 1
    chi = rng.uniform(-0.08, 0.25, n)
    chi[WM] = rng.uniform(-0.08, 0.01)
    chi[GM] = chi[WM] + rng.uniform(-0.01, 0.08)
    chi[CSF] = rng.uniform(-0.04, 0.04)
    chi[VEIN] = rng.uniform(0.1, 0.6)
    chi[CALCIFICATION] = rng.uniform(-0.4, -0.05)
    contrast = float(np.exp(rng.uniform(np.log(0.03), np.log(0.35))))
    chi[DN_LEFT] = chi[DN_RIGHT] = chi[WM] + contrast
    return chi.astype(np.float32), {"wm_ppm": float(chi[WM]), "dn_contrast_ppm": contrast}


@dataclass
class _Grid:
    """Where one drawn image lies: its voxels and the finer slices a thick one averages, and the map
    from scanner mm to the anatomy's voxels."""

    layout: str
    spacing: np.ndarray
    shape: np.ndarray
    sub: int  # thin slices averaged into one (the slice profile)
    fine_spacing: np.ndarray
    fine_shape: np.ndarray
    axes: list[np.ndarray]
    matrix: np.ndarray  # scanner mm -> anatomy voxels: matrix @ mm + offset
    offset: np.ndarray
    origin_mm: np.ndarray
    record: dict


def _grid(anatomy: LabelAnatomy, rng: np.random.Generator, max_voxels: int) -> _Grid:
    """Pose (pitch to 30 degrees), field of view (head, brain-masked or slab) and resolution."""
    pitch, roll, yaw = rng.uniform(-30, 30), rng.uniform(-8, 8), rng.uniform(-8, 8)
    scale = rng.uniform(0.9, 1.1) * rng.uniform(0.96, 1.04, 3)
    rotation = _rotation(pitch, roll, yaw) * scale  # anatomy mm (about the dentate centre) -> scanner mm
    centre = anatomy.dentate_centre_mm
    lo, hi = anatomy.head_extent_mm
    corners = np.array(np.meshgrid(*zip(lo, hi), indexing="ij")).reshape(3, -1) - centre[:, None]
    extent_lo, extent_hi = (rotation @ corners).min(1) - 4, (rotation @ corners).max(1) + 4
    layout = str(rng.choice(["head", "brain", "slab"], p=[0.3, 0.35, 0.35]))
    if layout == "slab":  # an axial slab around the nuclei, its bottom sometimes cutting the cerebellum
        extent_lo[2] = max(extent_lo[2], -rng.uniform(8, 45))
        extent_hi[2] = min(extent_hi[2], rng.uniform(25, 100))
    in_plane = rng.uniform(0.5, 1.1)
    thick = rng.uniform(0.5, 1.2) if rng.random() < 0.5 else rng.uniform(1.5, 3.0)
    spacing = np.array([in_plane, in_plane * rng.uniform(0.95, 1.05), thick])
    shape = np.ceil((extent_hi - extent_lo) / spacing).astype(int)
    sub = max(1, int(np.ceil(thick / 1.0)))
    while np.prod(shape) * sub > max_voxels:
        spacing[:2] *= 1.08
        shape = np.ceil((extent_hi - extent_lo) / spacing).astype(int)
    fine_spacing = spacing / [1, 1, sub]
    fine_shape = shape * [1, 1, sub]
    axes = [extent_lo[i] + fine_spacing[i] * (np.arange(fine_shape[i]) + 0.5) for i in range(3)]
    to_voxel = np.linalg.inv(anatomy.affine)
    record = {
        "anatomy": anatomy.name,
        "layout": layout,
        "pitch_deg": float(pitch),
        "roll_deg": float(roll),
        "yaw_deg": float(yaw),
        "voxel_mm": [float(v) for v in spacing],
    }
    return _Grid(
        layout,
        spacing,
        shape,
        sub,
        fine_spacing,
        fine_shape,
        axes,
        to_voxel[:3, :3] @ np.linalg.inv(rotation),
        to_voxel[:3, :3] @ centre + to_voxel[:3, 3],
        extent_lo,
        record,
    )


def _labels(anatomy: LabelAnatomy, grid: _Grid, rng: np.random.Generator) -> np.ndarray:
    """The anatomy's labels on the fine grid, deformed by a smooth field of up to a few mm."""
    warp_mm = rng.uniform(0.0, 3.0)
    grid.record["warp_mm"] = float(warp_mm)
    fine_shape, fine_spacing, axes = grid.fine_shape, grid.fine_spacing, grid.axes
    coarse = tuple(max(2, int(np.ceil(n * s / 16))) for n, s in zip(fine_shape, fine_spacing))
    labels = np.empty(fine_shape, np.int16)
    for k in range(fine_shape[2]):  # plane by plane: a whole head's points at once take gigabytes
        x, y = np.meshgrid(axes[0], axes[1], indexing="ij")
        points = np.stack([x, y, np.full_like(x, axes[2][k])]).reshape(3, -1)
        voxels = grid.matrix @ points + grid.offset[:, None]
        labels[:, :, k] = ndimage.map_coordinates(anatomy.labels, voxels, order=0, mode="constant", cval=AIR).reshape(
            x.shape
        )
    if warp_mm > 0:  # deform the label grid itself (nearest-neighbour resampling through a smooth field)
        indices = np.indices(fine_shape, dtype=np.float32)
        for axis in range(3):
            field = _smooth_field(rng, tuple(fine_shape), max(coarse), 1.0)
            indices[axis] += field * warp_mm / fine_spacing[axis]
        labels = ndimage.map_coordinates(labels, indices, order=0, mode="nearest")
    return labels


def _values(labels: np.ndarray, grid: _Grid, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Susceptibility on the fine grid (random per structure, texture, iron gradient, background field,
    streaks) and the mask it is kept inside (the brain, grown or eroded, for brain-masked layouts)."""
    fine_shape, fine_spacing = tuple(grid.fine_shape), grid.fine_spacing
    chi, drawn = _intensities(rng)
    grid.record.update(drawn)
    values = chi[labels]
    brain = np.isin(labels, BRAIN_LABELS)
    # texture: each structure's values vary smoothly; the cortex and white matter carry fine grain
    values += (_smooth_field(rng, fine_shape, 12, 1.0) * rng.uniform(0.0, 0.03)).astype(np.float32)
    grain = ndimage.gaussian_filter(rng.normal(size=fine_shape).astype(np.float32), rng.uniform(0.5, 1.5))
    values += grain / (grain.std() + 1e-9) * rng.uniform(0.0, 0.015) * brain
    dentate = (labels == DN_LEFT) | (labels == DN_RIGHT)
    iron = 1 + rng.uniform(0.0, 0.5) * _smooth_field(rng, fine_shape, 16, 1.0)
    values = np.where(dentate, chi[WM] + (values - chi[WM]) * iron, values)
    # residual background field (low spatial frequency) and streaks along the main field
    values += (_smooth_field(rng, fine_shape, 4, 0.7) * rng.uniform(0.0, 0.05)).astype(np.float32)
    if rng.random() < 0.4:
        streak = ndimage.gaussian_filter(
            rng.normal(size=fine_shape).astype(np.float32), (0.6, 0.6, rng.uniform(4, 12) / fine_spacing[2])
        )
        values += streak / (streak.std() + 1e-9) * rng.uniform(0.005, 0.03)
    mask = brain
    if grid.layout != "head":  # brain-masked: zeros outside, the edge sometimes eroded or grown
        steps = int(rng.integers(-2, 3))
        if steps:
            grow = ndimage.binary_dilation if steps > 0 else ndimage.binary_erosion
            mask = grow(brain, iterations=abs(steps))
        values = np.where(mask, values, 0.0)
    else:  # outside the brain: whatever the reconstruction left there
        values = np.where(brain, values, values + rng.normal(0, rng.uniform(0.0, 0.1), fine_shape))
    return values, mask


def draw(anatomy: LabelAnatomy, rng: np.random.Generator, max_voxels: int = 9_000_000) -> Drawn:
    """One randomized image of ``anatomy``: pose, deformation, field of view, resolution, intensities,
    texture, background field, streaks, blur and noise all drawn from ``rng``."""
    grid = _grid(anatomy, rng, max_voxels)
    labels = _labels(anatomy, grid, rng)
    values, mask = _values(labels, grid, rng)
    shape, sub = grid.shape, grid.sub
    blur = rng.uniform(0.0, 0.8, 3) * [1, 1, sub]
    values = ndimage.gaussian_filter(values.astype(np.float32), blur)

    def acquired(fine: np.ndarray) -> np.ndarray:  # each voxel: the mean of its ``sub`` thin slices
        return fine.reshape(shape[0], shape[1], shape[2], sub).mean(-1)

    image = acquired(values)
    dseg = np.zeros(shape, np.uint8)
    dseg[acquired(labels == DN_LEFT) >= 0.5] = 1
    dseg[acquired(labels == DN_RIGHT) >= 0.5] = 2
    noise = ndimage.gaussian_filter(rng.normal(size=shape).astype(np.float32), rng.uniform(0.0, 1.0))
    image += noise / (noise.std() + 1e-9) * rng.uniform(0.002, 0.03)
    if grid.layout != "head":
        image *= acquired(mask) >= 0.5
    affine = np.diag([*grid.spacing, 1.0])
    affine[:3, 3] = grid.origin_mm + grid.spacing / 2
    return Drawn(nib.Nifti1Image(image.astype(np.float32), affine), nib.Nifti1Image(dseg, affine), grid.record)


_PHANTOM: LabelAnatomy | None = None  # the head phantom, loaded once before worker processes fork


def _draw_case(task: tuple[Path, int, int, str, int]) -> dict:
    out, seed, index, label, first_anatomy = task
    rng = np.random.default_rng([seed, index])
    use_phantom = _PHANTOM is not None and (index + first_anatomy) % 2 == 0
    anatomy = _PHANTOM if use_phantom else template_anatomy(rng)
    drawn = draw(anatomy, rng)
    save_nifti(bids_path(out, label, None, "Chimap"), drawn.image)
    save_nifti(names.dentate_labels(out / TRUTH_DERIVATIVE, label, None), drawn.dseg)
    return {"participant_id": f"sub-{label}", **drawn.record}


def write_randomized(
    out: str | Path,
    images: int,
    seed: int = 0,
    phantom: str | Path | None = None,
    first_label: int = 1,
    jobs: int = 1,
    overwrite: bool = False,
) -> Path:
    """Write ``images`` randomized images as a labelled BIDS dataset (one participant each, labels in
    ``derivatives/manual``, what was drawn in ``derivatives/manual/drawn.tsv``), half of them from
    the head segmentation at ``phantom`` when given, the rest from the template. Built in a hidden
    folder beside ``out`` and moved into place when complete."""
    global _PHANTOM
    out = Path(out)
    if images < 1:
        raise SynthError(f"--images must be at least 1, not {images}")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise SynthError(f"{out} exists and is not empty (use --overwrite to replace it)")
    try:
        _PHANTOM = phantom_anatomy(phantom) if phantom else None
    except (OSError, ValueError) as exc:
        raise SynthError(f"head phantom {phantom}: {exc}") from None
    partial = out.parent / f".{out.name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    tasks = [(partial, seed, i, f"{first_label + i:03d}", 0) for i in range(images)]
    load_template()
    if jobs == 1:
        rows = [_draw_case(task) for task in tasks]
    else:
        with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("fork")) as pool:
            rows = list(pool.map(_draw_case, tasks))
    generator = {
        "Name": "dnqsm randomize",
        "Version": __version__,
        "Description": f"{images} domain-randomized images, seed {seed}, head phantom "
        f"{Path(phantom).name if phantom else 'none'}",
    }
    write_json(
        partial / "dataset_description.json",
        {
            "Name": "dnqsm domain-randomized QSM-like images",
            "BIDSVersion": BIDS_VERSION,
            "DatasetType": "raw",
            "GeneratedBy": [generator],
        },
    )
    write_json(
        partial / TRUTH_DERIVATIVE / "dataset_description.json",
        {
            "Name": "Dentate nucleus labels of the randomized images",
            "BIDSVersion": BIDS_VERSION,
            "DatasetType": "derivative",
            "GeneratedBy": [generator],
            "SourceDatasets": [{"URL": "../.."}],
        },
    )
    write_tsv(partial / "participants.tsv", pd.DataFrame({"participant_id": [r["participant_id"] for r in rows]}))
    write_tsv(partial / TRUTH_DERIVATIVE / "drawn.tsv", pd.DataFrame(rows))
    if out.exists():
        shutil.rmtree(out)
    partial.rename(out)
    _PHANTOM = None
    return out
