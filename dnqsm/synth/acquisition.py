"""One synthetic acquisition: head pose, voxel grid and orientation, artifacts, noise, units, storage.

Rendering maps every output voxel to subject space (undoing pose and head scale) and then through the
subject's warp to MNI, samples the subject's susceptibility map there, and evaluates the analytic
dentate nuclei at the same points, so labels and image agree exactly on the output grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import nibabel as nib
import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

from dnqsm.synth.anatomy import SubjectAnatomy
from dnqsm.synth.dentate import dentate_sdf
from dnqsm.units import from_ppb, to_ppb

#: Grid axis directions (columns, RAS world) before any oblique tilt. Third column = slice direction.
ORIENTATIONS: dict[str, np.ndarray] = {
    "RAS": np.eye(3),
    "LAS": np.diag([-1.0, 1.0, 1.0]),
    "LPS": np.diag([-1.0, -1.0, 1.0]),
    "PIR": np.array([[0, 0, 1.0], [-1.0, 0, 0], [0, -1.0, 0]]),  # sagittal slices
}
#: Petrous bone / mastoid air cells (MNI mm), where residual background field lingers.
PETROUS_MNI = ((-42.0, -30.0, -38.0), (42.0, -30.0, -38.0))
LABEL_LEFT, LABEL_RIGHT = 1, 2


@dataclass(frozen=True)
class SiteProtocol:
    """Acquisition and reconstruction habits of one site; ranges are sampled per image."""

    name: str
    inplane_mm: tuple[float, float]
    slice_mm: tuple[float, float]
    orientations: tuple[str, ...]
    oblique_prob: float
    oblique_deg: tuple[float, float]
    unit: str
    scale: tuple[float, float]  # range of the site's fixed intensity scaling (reconstruction / calibration)
    dtype: str  # float32, or int16 with scl_slope
    mask_fill: str  # "zero" or "nan"
    noise_ppm: tuple[float, float]
    streak_ppm: tuple[float, float]
    background_ppm: tuple[float, float]
    crop_top_mm: tuple[float, float]
    crop_bottom_mm: tuple[float, float]
    min_voxel_mm3: float = 0.4


@dataclass(frozen=True)
class Acquisition:
    """Per-image parameters, all recorded in the truth table."""

    site: str
    orientation: str
    oblique_deg: float
    voxel_mm: tuple[float, float, float]
    rotation_deg: tuple[float, float, float]  # head pose: pitch (x), roll (y), yaw (z)
    translation_mm: tuple[float, float, float]
    unit: str
    scale: float
    dtype: str
    mask_fill: str
    noise_ppm: float
    streak_ppm: float
    background_ppm: tuple[float, float]
    background_sigma_mm: float
    crop_top_mm: float
    crop_bottom_mm: float


@dataclass
class Rendered:
    """A rendered image (as the site stores it), its labels and the affine."""

    image: nib.Nifti1Image
    dentate_dseg: np.ndarray  # uint8, 1 = left DN, 2 = right DN
    cerebellum_mask: np.ndarray  # uint8
    affine: np.ndarray
    pose: np.ndarray  # 4x4 subject space -> world


def sample_acquisition(rng: np.random.Generator, site: SiteProtocol, site_scale: float) -> Acquisition:
    """Draw one image's acquisition from a site protocol; the site's intensity scaling is fixed per cohort."""
    inplane = float(rng.uniform(*site.inplane_mm))
    slice_mm = max(float(rng.uniform(*site.slice_mm)), site.min_voxel_mm3 / inplane**2)
    oblique = float(rng.uniform(*site.oblique_deg) * rng.choice([-1, 1])) if rng.random() < site.oblique_prob else 0.0
    return Acquisition(
        site=site.name,
        orientation=str(rng.choice(site.orientations)),
        oblique_deg=oblique,
        voxel_mm=(inplane, inplane * float(rng.uniform(0.95, 1.05)), slice_mm),
        rotation_deg=(float(rng.uniform(-15, 15)), float(rng.uniform(-8, 8)), float(rng.uniform(-8, 8))),
        translation_mm=(float(rng.uniform(-20, 20)), float(rng.uniform(-25, 25)), float(rng.uniform(-20, 20))),
        unit=site.unit,
        scale=site_scale,
        dtype=site.dtype,
        mask_fill="zero" if site.dtype != "float32" else site.mask_fill,
        noise_ppm=float(rng.uniform(*site.noise_ppm)),
        streak_ppm=float(rng.uniform(*site.streak_ppm)),
        background_ppm=(float(rng.uniform(*site.background_ppm)), float(rng.uniform(*site.background_ppm))),
        background_sigma_mm=float(rng.uniform(8, 15)),
        crop_top_mm=float(rng.uniform(*site.crop_top_mm)),
        crop_bottom_mm=float(rng.uniform(*site.crop_bottom_mm)),
    )


def head_pose(anatomy: SubjectAnatomy, acq: Acquisition) -> np.ndarray:
    """4x4 transform from subject space to scanner world (RAS mm) for one acquisition."""
    return pose_matrix(acq.rotation_deg, acq.translation_mm, anatomy.head_scale)


def pose_matrix(rotation_deg, translation_mm, head_scale) -> np.ndarray:
    """Subject space -> world: scale the head, rotate (x, y, z Euler angles), translate.

    The truth table records all three, so ``pose_matrix`` rebuilds any image's pose from its row.
    """
    pose = np.eye(4)
    rot = Rotation.from_euler("xyz", rotation_deg, degrees=True).as_matrix()
    pose[:3, :3] = rot @ np.diag(head_scale)
    pose[:3, 3] = translation_mm
    return pose


def pose_from_truth(row) -> np.ndarray:
    """The pose of the image described by one truth-table row (a mapping or namedtuple)."""
    get = row.__getitem__ if hasattr(row, "__getitem__") and not isinstance(row, tuple) else lambda k: getattr(row, k)
    return pose_matrix([get(f"rotation_{a}_deg") for a in "xyz"], [get(f"translation_{a}_mm") for a in "xyz"],
                       [get(f"head_scale_{a}") for a in "xyz"])


def grid_affine(anatomy: SubjectAnatomy, acq: Acquisition, pose: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Output voxel grid covering the head (with field-of-view crops) in the requested orientation."""
    axes = ORIENTATIONS[acq.orientation]
    if acq.oblique_deg:
        axes = Rotation.from_euler("x", acq.oblique_deg, degrees=True).as_matrix() @ axes
    tpl = anatomy.template
    idx = np.argwhere(tpl.brain > 0.5)
    lo, hi = idx.min(0), idx.max(0)
    corners = np.array([[a, b, c] for a in (lo[0], hi[0]) for b in (lo[1], hi[1]) for c in (lo[2], hi[2])], float)
    mni = corners @ tpl.affine[:3, :3].T + tpl.affine[:3, 3]
    world = mni @ pose[:3, :3].T + pose[:3, 3]
    in_grid = world @ axes  # coordinates along each grid axis
    gmin, gmax = in_grid.min(0) - 6.0, in_grid.max(0) + 6.0
    up = int(np.argmax(np.abs(axes[2])))  # grid axis closest to superior
    if axes[2, up] > 0:
        gmax[up] -= acq.crop_top_mm
        gmin[up] += acq.crop_bottom_mm
    else:
        gmin[up] += acq.crop_top_mm
        gmax[up] -= acq.crop_bottom_mm
    voxel = np.array(acq.voxel_mm)
    shape = tuple(int(n) for n in np.ceil((gmax - gmin) / voxel).astype(int) + 1)
    affine = np.eye(4)
    affine[:3, :3] = axes @ np.diag(voxel)
    affine[:3, 3] = axes @ gmin
    return affine, shape


def render(
    anatomy: SubjectAnatomy,
    acq: Acquisition,
    rng: np.random.Generator,
    dn_size_factor: dict[str, float],
    dn_chi_ppm: dict[str, float],
) -> Rendered:
    """Render one image and its labels on the acquisition grid."""
    tpl = anatomy.template
    pose = head_pose(anatomy, acq)
    affine, shape = grid_affine(anatomy, acq, pose)
    to_subject = np.linalg.inv(pose) @ affine
    ijk = [np.arange(n, dtype=np.float32) for n in shape]
    subject = np.stack(
        [
            (to_subject[r, 0] * ijk[0][:, None, None] + to_subject[r, 1] * ijk[1][None, :, None]
             + to_subject[r, 2] * ijk[2][None, None, :] + to_subject[r, 3]).astype(np.float32).ravel()
            for r in range(3)
        ]
    )
    mni = anatomy.to_mni(subject)
    del subject
    tpl_vox = np.linalg.inv(tpl.affine)[:3, :3] @ mni + np.linalg.inv(tpl.affine)[:3, 3:4]
    chi = ndimage.map_coordinates(anatomy.chi_ppm, tpl_vox, order=1, mode="constant", cval=0.0)
    artifacts = _artifact_field(anatomy, acq, pose)
    chi += ndimage.map_coordinates(artifacts, tpl_vox / 2.0, order=1, mode="nearest")
    brain = ndimage.map_coordinates(tpl.brain, tpl_vox, order=1, mode="constant", cval=0.0) >= 0.5
    cerebellum = ndimage.map_coordinates(tpl.cerebellum, tpl_vox, order=1, mode="constant", cval=0.0) >= 0.5
    del tpl_vox
    dseg = np.zeros(chi.shape, np.uint8)
    voxel_size = float(np.cbrt(abs(np.linalg.det(affine[:3, :3]))))
    background = anatomy.tissue_chi_ppm["cerebellar_wm"]
    for label, side in ((LABEL_LEFT, "left"), (LABEL_RIGHT, "right")):
        shape_ = anatomy.dentate[side]
        size = dn_size_factor[side]
        reach = shape_.reach_mm * size
        near = np.flatnonzero(np.sum((mni - shape_.center[:, None]) ** 2, axis=0) < reach**2)
        sdf = dentate_sdf(mni[:, near].T, shape_, size)
        occupancy = np.clip(0.5 - sdf / voxel_size, 0, 1)
        chi[near] += occupancy * (dn_chi_ppm[side] - background)
        inside = near[(sdf <= 0) & brain[near]]
        dseg[inside] = label
    del mni
    chi += rng.standard_normal(chi.shape, dtype=np.float32) * np.float32(acq.noise_ppm)
    stored = chi * np.float32(acq.scale * from_ppb(to_ppb(1.0, "ppm"), acq.unit))
    fill = np.nan if acq.mask_fill == "nan" else 0.0
    stored[~brain] = fill
    stored = stored.reshape(shape)
    return Rendered(
        image=_store(stored, affine, acq.dtype),
        dentate_dseg=dseg.reshape(shape),
        cerebellum_mask=((cerebellum & brain) | (dseg > 0)).astype(np.uint8).reshape(shape),
        affine=affine,
        pose=pose,
    )


def _artifact_field(anatomy: SubjectAnatomy, acq: Acquisition, pose: np.ndarray) -> np.ndarray:
    """Streaking around strong sources along the magic-angle cone plus a residual background field
    near the petrous bones, on a 2 mm MNI grid (ppm)."""
    tpl = anatomy.template
    coarse = anatomy.chi_ppm[::2, ::2, ::2]
    strong = np.where(coarse > 0.12, coarse, 0.0)
    b0 = np.linalg.inv(pose[:3, :3]) @ np.array([0.0, 0.0, 1.0])  # scanner field direction in MNI
    b0 /= np.linalg.norm(b0)
    k = np.meshgrid(*[np.fft.fftfreq(n) for n in strong.shape], indexing="ij", sparse=True)
    k2 = k[0] ** 2 + k[1] ** 2 + k[2] ** 2
    k2[0, 0, 0] = 1.0
    dipole = 1 / 3 - (k[0] * b0[0] + k[1] * b0[1] + k[2] * b0[2]) ** 2 / k2
    cone = np.exp(-((dipole / 0.06) ** 2))
    cone[0, 0, 0] = 0.0
    streak = np.fft.irfftn(np.fft.rfftn(strong) * cone[..., : strong.shape[2] // 2 + 1], s=strong.shape, axes=(0, 1, 2))
    peak = np.percentile(np.abs(streak), 99.95)
    field = streak * (acq.streak_ppm / peak if peak > 0 else 0.0)
    xs, ys, zs = (ax[::2] for ax in tpl.axes_mm())
    for amplitude, center in zip(acq.background_ppm, PETROUS_MNI):
        d2 = (xs[:, None, None] - center[0]) ** 2 + (ys[None, :, None] - center[1]) ** 2 + (zs[None, None, :] - center[2]) ** 2
        field += amplitude * np.exp(-d2 / (2 * acq.background_sigma_mm**2))
    return field.astype(np.float32)


def _store(values: np.ndarray, affine: np.ndarray, dtype: str) -> nib.Nifti1Image:
    """Build the NIfTI as a site would store it: float32, or int16 with scl_slope/scl_inter."""
    header = nib.Nifti1Header()
    header.set_xyzt_units("mm")
    if dtype not in ("float32", "int16"):
        raise ValueError(f"unsupported storage dtype {dtype!r}")
    img = nib.Nifti1Image(values.astype(np.float32), affine, header)
    img.set_data_dtype(np.dtype(dtype))  # nibabel picks slope/intercept for int16
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    return img
