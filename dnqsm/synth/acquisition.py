"""One synthetic acquisition: head pose, voxel grid and orientation, QSM reconstruction, units, storage.

Rendering happens twice. First the subject's true susceptibility (dentate nuclei included, with their
iron gradient) is sampled on an isotropic grid aligned with the scanner, where B0 points along world
z and so is tilted relative to the head by its pitch; QSM physics (``dnqsm.synth.physics``) turns it
into a local field, adds what measurement and background removal leave, and inverts it as the site's
pipeline does. Then every voxel of the site's own grid (any orientation, thick slices averaged over
their thickness) samples that reconstruction, while the labels come from the analytic dentate shape
at the same voxel centres: truth never depends on the artifacts. Finer voxels than the physics grid's
would show the nuclei blurred to that grid while their labels stay sharp, so each nucleus's edges are
redrawn at the site's own resolution, at the contrast the reconstruction gave it.
"""

from __future__ import annotations

from dataclasses import dataclass

import nibabel as nib
import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

from dnqsm.labels import LEFT, RIGHT
from dnqsm.synth import physics
from dnqsm.synth.anatomy import SubjectAnatomy
from dnqsm.synth.dentate import dentate_sdf, iron_pattern
from dnqsm.units import from_ppb, to_ppb

#: Grid axis directions (columns, RAS world) before any oblique tilt. Third column = slice direction.
ORIENTATIONS: dict[str, np.ndarray] = {
    "RAS": np.eye(3),
    "LAS": np.diag([-1.0, 1.0, 1.0]),
    "LPS": np.diag([-1.0, -1.0, 1.0]),
    "PIR": np.array([[0, 0, 1.0], [-1.0, 0, 0], [0, -1.0, 0]]),  # sagittal slices
}
#: Petrous bones / mastoid air cells and the sphenoid sinus (MNI mm), where residual background field lingers.
AIR_BOUNDARIES_MNI = ((-42.0, -30.0, -38.0), (42.0, -30.0, -38.0), (0.0, 12.0, -28.0))
#: Scanner-aligned grid on which the QSM physics runs (mm); the site's grid samples it.
PHYSICS_MM = 1.0
LABEL_LEFT, LABEL_RIGHT = LEFT, RIGHT  # the output convention (dnqsm.labels)


@dataclass(frozen=True)
class SiteProtocol:
    """Acquisition and reconstruction habits of one site; ranges are sampled per image (or per site)."""

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
    noise_ppm: tuple[float, float]  # white noise on the final map (on top of the field noise)
    crop_top_mm: tuple[float, float]
    crop_bottom_mm: tuple[float, float]
    pitch_deg: tuple[float, float] = (0.0, 25.0)  # head pitch relative to B0
    # reconstruction pipeline (physics.Recon); the site draws one, or one per image with recon_per_image
    inversions: tuple[str, ...] = physics.INVERSIONS
    references: tuple[str, ...] = physics.REFERENCES
    tkd_threshold: tuple[float, float] = (0.1, 0.25)
    l2_lambda: tuple[float, float] = (0.01, 0.06)
    iterative_lambda: tuple[float, float] = (0.002, 0.015)
    tv_lambda: tuple[float, float] = (0.0003, 0.002)
    iterations: tuple[int, int] = (10, 25)
    erosion_mm: tuple[float, float] = (1.0, 4.0)
    residual_ppm: tuple[float, float] = (-0.01, 0.012)
    signal_prob: float = 0.5  # share of images made through the multi-echo signal model
    snr: tuple[float, float] = (60.0, 200.0)
    field_noise_ppm: tuple[float, float] = (0.001, 0.004)
    recon_per_image: bool = False
    min_voxel_mm3: float = 0.4


@dataclass(frozen=True)
class Acquisition:
    """Per-image parameters, all recorded in the truth table."""

    site: str
    orientation: str
    oblique_deg: float
    voxel_mm: tuple[float, float, float]
    rotation_deg: tuple[float, float, float]  # head pose: pitch (x), roll (y), yaw (z); B0 is world z
    translation_mm: tuple[float, float, float]
    unit: str
    scale: float
    dtype: str
    mask_fill: str
    noise_ppm: float
    crop_top_mm: float
    crop_bottom_mm: float
    recon: physics.Recon


@dataclass
class Rendered:
    """A rendered image (as the site stores it), its labels and the affine."""

    image: nib.Nifti1Image
    dentate_dseg: np.ndarray  # uint8, 1 = left DN, 2 = right DN
    cerebellum_mask: np.ndarray  # uint8
    affine: np.ndarray
    pose: np.ndarray  # 4x4 subject space -> world
    #: float32 (2, *shape): the share of each voxel's signal that comes from the left / right DN, as the
    #: image holds it (the voxel's in-plane resolution, averaged across the slice; before reconstruction
    #: and noise): what a perfect reader of the image could know of the labels at best
    dentate_fraction: np.ndarray


def sample_recon(rng: np.random.Generator, site: SiteProtocol) -> physics.Recon:
    """Draw a reconstruction pipeline (inversion and its parameters, referencing, noise) for a site."""
    inversion = str(rng.choice(site.inversions))
    signal = rng.random() < site.signal_prob
    return physics.Recon(
        inversion=inversion,
        threshold=float(rng.uniform(*site.tkd_threshold)),
        regularization=float(
            rng.uniform(*{"l2": site.l2_lambda, "tv": site.tv_lambda}.get(inversion, site.iterative_lambda))
        ),
        iterations=int(rng.integers(site.iterations[0], site.iterations[1] + 1)),
        reference=str(rng.choice(site.references)),
        erosion_mm=float(rng.uniform(*site.erosion_mm)),
        residual_ppm=tuple(float(rng.uniform(*site.residual_ppm)) for _ in AIR_BOUNDARIES_MNI),
        residual_sigma_mm=float(rng.uniform(8, 16)),
        snr=float(rng.uniform(*site.snr)) if signal else 0.0,
        field_noise_ppm=float(rng.uniform(*site.field_noise_ppm)),
        echoes=int(rng.integers(3, 7)),
        first_te_ms=float(rng.uniform(4, 8)),
        delta_te_ms=float(rng.uniform(4, 8)),
    )


def sample_acquisition(
    rng: np.random.Generator, site: SiteProtocol, site_scale: float, site_recon: physics.Recon | None = None
) -> Acquisition:
    """Draw one image's acquisition from a site protocol; the site's intensity scaling (and, unless the
    site varies it per image, its reconstruction pipeline) is fixed per cohort."""
    inplane = float(rng.uniform(*site.inplane_mm))
    slice_mm = max(float(rng.uniform(*site.slice_mm)), site.min_voxel_mm3 / inplane**2)
    oblique = float(rng.uniform(*site.oblique_deg) * rng.choice([-1, 1])) if rng.random() < site.oblique_prob else 0.0
    orientation = str(rng.choice(site.orientations))
    rotation = (float(rng.uniform(*site.pitch_deg)), float(rng.uniform(-8, 8)), float(rng.uniform(-8, 8)))
    translation = (float(rng.uniform(-20, 20)), float(rng.uniform(-25, 25)), float(rng.uniform(-20, 20)))
    image_recon = sample_recon(rng, site)
    if site_recon is not None and not site.recon_per_image:  # the site's pipeline; this scan's noise and mask
        image_recon = physics.Recon(
            **{
                **site_recon.__dict__,
                "erosion_mm": image_recon.erosion_mm,
                "residual_ppm": image_recon.residual_ppm,
                "residual_sigma_mm": image_recon.residual_sigma_mm,
            }
        )
    return Acquisition(
        site=site.name,
        orientation=orientation,
        oblique_deg=oblique,
        voxel_mm=(inplane, inplane * float(rng.uniform(0.95, 1.05)), slice_mm),
        rotation_deg=rotation,
        translation_mm=translation,
        unit=site.unit,
        scale=site_scale,
        dtype=site.dtype,
        mask_fill="zero" if site.dtype != "float32" else site.mask_fill,
        noise_ppm=float(rng.uniform(*site.noise_ppm)),
        crop_top_mm=float(rng.uniform(*site.crop_top_mm)),
        crop_bottom_mm=float(rng.uniform(*site.crop_bottom_mm)),
        recon=image_recon,
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
    return pose_matrix(
        [get(f"rotation_{a}_deg") for a in "xyz"],
        [get(f"translation_{a}_mm") for a in "xyz"],
        [get(f"head_scale_{a}") for a in "xyz"],
    )


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


def physics_grid(
    anatomy: SubjectAnatomy, pose: np.ndarray, voxel_mm: float = PHYSICS_MM
) -> tuple[np.ndarray, tuple[int, int, int]]:
    """World-aligned (RAS) isotropic grid around the posed head: where the QSM physics runs."""
    tpl = anatomy.template
    idx = np.argwhere(tpl.brain > 0.5)
    lo, hi = idx.min(0), idx.max(0)
    corners = np.array([[a, b, c] for a in (lo[0], hi[0]) for b in (lo[1], hi[1]) for c in (lo[2], hi[2])], float)
    world = (corners @ tpl.affine[:3, :3].T + tpl.affine[:3, 3]) @ pose[:3, :3].T + pose[:3, 3]
    gmin, gmax = world.min(0) - 8.0, world.max(0) + 8.0
    shape = tuple(int(n) for n in np.ceil((gmax - gmin) / voxel_mm).astype(int) + 1)
    affine = np.diag([voxel_mm, voxel_mm, voxel_mm, 1.0])
    affine[:3, 3] = gmin
    return affine, shape


def _head_points(
    anatomy: SubjectAnatomy, pose: np.ndarray, affine: np.ndarray, shape, nuclei_reach_mm: float
) -> tuple[np.ndarray, np.ndarray]:
    """MNI coordinates (3, M) of the voxel centres of a grid that may hold brain, and their flat indices
    (M,), ascending. Most of a grid around the head is air: there every tissue map samples zero brain
    (:meth:`SubjectAnatomy.may_hold_brain`) and nothing is drawn, so the warp and the maps are never
    sampled there. Every point within ``nuclei_reach_mm`` of a dentate centre (in MNI) is kept as well,
    so that the nuclei's neighbourhoods are whole."""
    to_subject = np.linalg.inv(pose) @ affine
    points = _grid_points(to_subject, shape, (0.0, 0.0, 0.0))
    # asked at the centres of blocks of 4 x 4 x 4 voxels, for every voxel of the block (a margin of the
    # farthest one's distance), then spread to the voxels: 64 times fewer points to ask about
    step = 4
    blocks = tuple(int(np.ceil(n / step)) for n in shape)
    centres = _grid_points(to_subject @ np.diag([step, step, step, 1.0]), blocks, ((step - 1) / (2 * step),) * 3)
    half_block_mm = float((step - 1) / 2 * np.linalg.norm(to_subject[:3, :3], axis=0).sum())  # any voxel to its centre
    keep = anatomy.may_hold_brain(centres, margin_mm=half_block_mm).reshape(blocks)
    for axis, n in enumerate(shape):
        keep = np.repeat(keep, step, axis=axis).take(np.arange(n), axis=axis)
    keep = keep.ravel()
    reach = nuclei_reach_mm + anatomy.warp_reach_mm() + 0.01  # the warp moves a point at most this far
    for nucleus in anatomy.dentate.values():
        keep[_within(points, nucleus.center, reach)] = True
    keep = np.flatnonzero(keep)
    return anatomy.to_mni(points[:, keep]), keep


def _everywhere(values: np.ndarray, keep: np.ndarray, size: int) -> np.ndarray:
    """Values at the kept points of a grid of ``size`` points, zero at the others."""
    out = np.zeros(size, values.dtype)
    out[keep] = values
    return out


def _template_voxels(anatomy: SubjectAnatomy, mni: np.ndarray) -> np.ndarray:
    inv = np.linalg.inv(anatomy.template.affine)
    return inv[:3, :3] @ mni + inv[:3, 3:4]


def _within(points: np.ndarray, center: np.ndarray, radius: float) -> np.ndarray:
    """Flat indices of the (3, N) ``points`` (mm) closer than ``radius`` to ``center``.

    A nucleus's neighbourhood holds tens of thousands of a head's millions of points: a box test along each
    axis finds them, and the distance test runs only there, with the same arithmetic as over all points
    (a coordinate difference whose square is below radius squared is never outside the box)."""
    box = radius + 1e-3  # a float32 coordinate difference is off by far less than a micrometre
    candidates = np.flatnonzero(np.abs(points[0] - np.float32(center[0])) <= box)
    for axis in (1, 2):
        candidates = candidates[np.abs(points[axis, candidates] - center[axis]) <= box]
    distance2 = np.sum((points[:, candidates] - center[:, None]) ** 2, axis=0)
    return candidates[distance2 < radius**2]


def _sample(volume: np.ndarray, tpl_vox: np.ndarray) -> np.ndarray:
    return ndimage.map_coordinates(volume, tpl_vox, order=1, mode="constant", cval=0.0)


def true_chi(
    anatomy: SubjectAnatomy,
    mni: np.ndarray,
    voxel_mm: float,
    dn_size_factor: dict[str, float],
    dn_chi_ppm: dict[str, float],
    dn_iron_gradient: float,
) -> dict[str, np.ndarray]:
    """True susceptibility (ppm) with partial-volume dentate nuclei, tissue maps and the nuclei's
    partial-volume occupancy (``dn_left``, ``dn_right``), at MNI points."""
    tpl = anatomy.template
    tpl_vox = _template_voxels(anatomy, mni)
    chi = _sample(anatomy.chi_ppm, tpl_vox)
    brain = _sample(tpl.brain, tpl_vox)
    csf = _sample(tpl.csf, tpl_vox)
    wm = _sample(tpl.wm, tpl_vox)
    background = anatomy.tissue_chi_ppm["cerebellar_wm"]
    fraction = {}
    for side in ("left", "right"):
        shape_ = anatomy.dentate[side]
        size = dn_size_factor[side]
        near = _within(mni, shape_.center, shape_.reach_mm * size)
        sdf = dentate_sdf(mni[:, near].T, shape_, size)
        occupancy = np.clip(0.5 - sdf / voxel_mm, 0, 1)
        local = nucleus_contrast(
            mni[:, near].T, shape_, occupancy > 0.5, dn_chi_ppm[side] - background, dn_iron_gradient
        )
        chi[near] += occupancy * (background + local - chi[near])
        fraction[side] = np.zeros(chi.shape, np.float32)
        fraction[side][near] = occupancy
    return {
        "chi": chi,
        "brain": brain,
        "csf": csf,
        "wm": wm,
        "dn_left": fraction["left"],
        "dn_right": fraction["right"],
    }


def reconstruct(
    anatomy: SubjectAnatomy,
    acq: Acquisition,
    pose: np.ndarray,
    rng: np.random.Generator,
    dn_size_factor: dict[str, float],
    dn_chi_ppm: dict[str, float],
    dn_iron_gradient: float,
    physics_mm: float = PHYSICS_MM,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The site's QSM of this head on the physics grid: (chi ppm, eroded brain mask, grid affine, the left
    and right DN's true occupancy stacked)."""
    affine, shape = physics_grid(anatomy, pose, physics_mm)
    mni, keep = _head_points(anatomy, pose, affine, shape, _nuclei_reach_mm(anatomy, dn_size_factor))
    tissue = true_chi(anatomy, mni, physics_mm, dn_size_factor, dn_chi_ppm, dn_iron_gradient)
    del mni
    tissue = {k: _everywhere(v, keep, int(np.prod(shape))).reshape(shape) for k, v in tissue.items()}
    brain = tissue["brain"] >= 0.5
    chi = np.where(brain, tissue["chi"], 0).astype(np.float32)
    grid = physics.Grid(shape, physics_mm, b0_dir=np.array([0.0, 0.0, 1.0]))
    field = physics.forward_field(chi, grid)
    recon = acq.recon
    sources = [pose[:3, :3] @ np.asarray(p) + pose[:3, 3] for p in AIR_BOUNDARIES_MNI]
    field += physics.residual_background(shape, affine, sources, recon.residual_ppm, recon.residual_sigma_mm)
    # magnitude and R2* for the signal model: CSF brightest, white matter darker; iron shortens T2*
    magnitude = np.where(brain, 0.8 + 0.2 * tissue["csf"] - 0.15 * tissue["wm"], 0).astype(np.float32)
    r2star = (15.0 + 8.0 * tissue["wm"] - 10.0 * tissue["csf"] + 150.0 * np.clip(chi, 0, None)).astype(np.float32)
    occupancy = np.stack([tissue.pop("dn_left"), tissue.pop("dn_right")])
    del tissue["chi"], tissue["wm"]
    field = physics.acquire_field(field, magnitude, r2star, recon, rng)
    del magnitude, r2star
    mask = physics.erode_mask(brain, recon.erosion_mm, physics_mm)
    chi_rec = physics.invert(field, mask, grid, recon)
    chi_rec = physics.reference(chi_rec, mask, tissue["csf"] > 0.9, recon.reference)
    return chi_rec, mask, affine, occupancy


def render(
    anatomy: SubjectAnatomy,
    acq: Acquisition,
    rng: np.random.Generator,
    dn_size_factor: dict[str, float],
    dn_chi_ppm: dict[str, float],
    dn_iron_gradient: float = 0.0,
    physics_mm: float = PHYSICS_MM,
) -> Rendered:
    """Render one image (through the site's QSM reconstruction) and its exact labels on the site's grid.

    ``physics_mm``: the physics grid's voxel size. Cohorts always use :data:`PHYSICS_MM`; a coarser grid
    (8 times fewer voxels at 2 mm) is for checks of geometry alone, since the labels never depend on it."""
    tpl = anatomy.template
    pose = head_pose(anatomy, acq)
    chi_rec, mask, physics_affine, occupancy = reconstruct(
        anatomy, acq, pose, rng, dn_size_factor, dn_chi_ppm, dn_iron_gradient, physics_mm
    )
    affine, shape = grid_affine(anatomy, acq, pose)
    to_physics = np.linalg.inv(physics_affine) @ affine
    n_sub = max(1, int(round(acq.voxel_mm[2] / physics_mm)))
    image, measured = _site_voxels(chi_rec, mask, to_physics, shape, n_sub)
    del chi_rec, mask
    # labels: the analytic nuclei at the voxel centres
    mni, keep = _head_points(
        anatomy, pose, affine, shape, _nuclei_reach_mm(anatomy, dn_size_factor) + float(np.max(acq.voxel_mm))
    )
    tpl_vox = _template_voxels(anatomy, mni)
    brain = _everywhere(_sample(tpl.brain, tpl_vox) >= 0.5, keep, image.size)
    cerebellum = _everywhere(_sample(tpl.cerebellum, tpl_vox) >= 0.5, keep, image.size)
    del tpl_vox
    dseg = np.zeros(image.shape, np.uint8)
    fraction = np.zeros((2, image.size), np.float32)
    for index, (label, side) in enumerate(((LABEL_LEFT, "left"), (LABEL_RIGHT, "right"))):
        shape_ = anatomy.dentate[side]
        size = dn_size_factor[side]
        local = _within(mni, shape_.center, shape_.reach_mm * size)
        sdf = dentate_sdf(mni[:, local].T, shape_, size)
        near = keep[local]
        dseg[near[(sdf <= 0) & brain[near]]] = label
        # the nucleus as the image holds it, in a slightly wider neighbourhood (a thick slice reaches
        # beyond the centre's reach): first as sampled from the physics grid
        around = keep[_within(mni, shape_.center, shape_.reach_mm * size + float(np.max(acq.voxel_mm)))]
        coarse = _slab_average(occupancy[index], to_physics, np.unravel_index(around, shape), n_sub)
        fine, contrast = _fine_nucleus(
            anatomy,
            pose,
            affine,
            shape,
            acq,
            around,
            shape_,
            size,
            dn_chi_ppm[side] - anatomy.tissue_chi_ppm["cerebellar_wm"],
            dn_iron_gradient,
        )
        # the physics grid (1 mm) cannot carry the nucleus's sub-millimetre edges that a finer acquisition
        # shows: they go back in at the contrast this reconstruction gives the nucleus (fitted here)
        gain = _reconstructed_gain(image[around], coarse * contrast)
        image[around] += np.float32(gain) * (fine - coarse) * contrast
        fraction[index, around] = fine
    del mni, occupancy
    image += rng.standard_normal(image.shape, dtype=np.float32) * np.float32(acq.noise_ppm)
    stored = image * np.float32(acq.scale * from_ppb(to_ppb(1.0, "ppm"), acq.unit))
    stored[~measured] = np.nan if acq.mask_fill == "nan" else 0.0
    return Rendered(
        image=_store(stored.reshape(shape), affine, acq.dtype),
        dentate_dseg=dseg.reshape(shape),
        cerebellum_mask=((cerebellum & brain) | (dseg > 0)).astype(np.uint8).reshape(shape),
        affine=affine,
        pose=pose,
        dentate_fraction=fraction.reshape((2,) + tuple(shape)),
    )


def _site_voxels(
    chi_rec: np.ndarray, mask: np.ndarray, to_physics: np.ndarray, shape, n_sub: int
) -> tuple[np.ndarray, np.ndarray]:
    """The site's voxels (flat) sampled from the reconstruction, averaged over the slice thickness
    (``n_sub`` samples across it), and where the reconstruction's mask covers at least half a voxel."""
    image = np.zeros(int(np.prod(shape)), np.float32)
    measured = np.zeros(int(np.prod(shape)), np.float32)
    for i in range(n_sub):
        offset = (i + 0.5) / n_sub - 0.5
        coords = _grid_points(to_physics, shape, (0.0, 0.0, offset))
        image += ndimage.map_coordinates(chi_rec, coords, order=1, mode="constant", cval=0.0)
        measured += ndimage.map_coordinates(mask.astype(np.float32), coords, order=1, mode="constant", cval=0.0)
        del coords
    image /= n_sub
    return image, measured / n_sub >= 0.5


def _nuclei_reach_mm(anatomy: SubjectAnatomy, dn_size_factor: dict[str, float]) -> float:
    """How far from its centre (MNI mm) either nucleus, at this visit's size, is ever looked at."""
    return max(nucleus.reach_mm * dn_size_factor[side] for side, nucleus in anatomy.dentate.items())


def _fine_nucleus(
    anatomy: SubjectAnatomy,
    pose: np.ndarray,
    affine: np.ndarray,
    shape,
    acq: Acquisition,
    voxels: np.ndarray,
    nucleus,
    size: float,
    contrast_ppm: float,
    iron_gradient: float,
) -> tuple[np.ndarray, np.ndarray]:
    """The nucleus as the site's own voxels (flat indices ``voxels``) hold it, at their resolution: its
    occupancy (partial volume with an edge as wide as the in-plane voxel, averaged over points across
    the slice thickness) and its local contrast over white matter (ppm, iron gradient included)."""
    inplane = float(np.mean(acq.voxel_mm[:2]))
    n_points = max(1, int(np.ceil(acq.voxel_mm[2] / inplane)))
    ijk = np.stack(np.unravel_index(voxels, shape)).astype(np.float64)
    to_subject = np.linalg.inv(pose) @ affine
    occupancy = np.zeros(len(voxels), np.float32)
    for i in range(n_points):
        points = ijk + np.array([[0.0], [0.0], [(i + 0.5) / n_points - 0.5]])
        mni = anatomy.to_mni(to_subject[:3, :3] @ points + to_subject[:3, 3:4])
        occupancy += np.clip(0.5 - dentate_sdf(mni.T, nucleus, size) / inplane, 0, 1)
    occupancy /= n_points
    centre = anatomy.to_mni(to_subject[:3, :3] @ ijk + to_subject[:3, 3:4]).T
    return occupancy, nucleus_contrast(centre, nucleus, occupancy > 0.5, contrast_ppm, iron_gradient).astype(np.float32)


def nucleus_contrast(
    points_mni: np.ndarray, nucleus, inside: np.ndarray, contrast_ppm: float, iron_gradient: float
) -> np.ndarray:
    """The nucleus's contrast over white matter (ppm) at (N, 3) MNI points: iron is not uniform, the
    dorsal and caudal parts brighter than the hilum side, with the planted mean over the points
    ``inside`` it."""
    pattern = iron_pattern(points_mni, nucleus)
    if inside.any():
        pattern = pattern - pattern[inside].mean()
    return contrast_ppm * (1 + iron_gradient * pattern)


def _reconstructed_gain(values: np.ndarray, planted: np.ndarray) -> float:
    """How much of the planted nucleus contrast (``planted``: occupancy x contrast, ppm) the reconstructed
    ``values`` carry around it: the least-squares slope, kept within [0, 1.5]."""
    centred = planted - planted.mean()
    spread = float(centred @ centred)
    return float(np.clip(centred @ (values - values.mean()) / spread, 0.0, 1.5)) if spread > 0 else 0.0


def _slab_average(volume: np.ndarray, to_physics: np.ndarray, ijk: tuple[np.ndarray, ...], n_sub: int) -> np.ndarray:
    """A physics-grid volume at the site's voxels ``ijk`` as the image samples it: linearly, averaged over
    ``n_sub`` points across the slice thickness."""
    total = np.zeros(len(ijk[0]), np.float32)
    for i in range(n_sub):
        voxels = np.stack([ijk[0], ijk[1], ijk[2] + (i + 0.5) / n_sub - 0.5]).astype(np.float32)
        coords = to_physics[:3, :3].astype(np.float32) @ voxels + to_physics[:3, 3:4].astype(np.float32)
        total += ndimage.map_coordinates(volume, coords, order=1, mode="constant", cval=0.0)
    return total / n_sub


def _grid_points(transform: np.ndarray, shape, offset) -> np.ndarray:
    """(3, N) coordinates, under ``transform``, of every voxel centre of a grid shifted by ``offset`` voxels."""
    ijk = [np.arange(n, dtype=np.float32) + np.float32(o) for n, o in zip(shape, offset)]
    return np.stack(
        [
            (
                transform[r, 0] * ijk[0][:, None, None]
                + transform[r, 1] * ijk[1][None, :, None]
                + transform[r, 2] * ijk[2][None, None, :]
                + transform[r, 3]
            )
            .astype(np.float32)
            .ravel()
            for r in range(3)
        ]
    )


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
