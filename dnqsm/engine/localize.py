"""Step one of the two-step method: the coarse world-aligned grid, the DN region, and the crop box.

The localization network sees the whole image resampled onto a world-aligned (RAS) grid at a coarse
spacing; its target is the "DN region" (both dentate nuclei, filled and dilated at that spacing),
which needs only DN labels, so any manually traced cohort can train it. The box around the predicted
region, plus a margin in millimetres, selects the native-resolution crop for step two.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import nibabel as nib
import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in world (RAS) millimetres."""

    lo: np.ndarray
    hi: np.ndarray

    def as_dict(self) -> dict:
        return {"min_mm": [round(float(v), 3) for v in self.lo], "max_mm": [round(float(v), 3) for v in self.hi]}


def image_world_box(img: nib.Nifti1Image) -> Box:
    """World bounding box of an image's field of view (voxel centres)."""
    n = np.array(img.shape[:3]) - 1
    corners = np.array([[i, j, k] for i in (0, n[0]) for j in (0, n[1]) for k in (0, n[2])], float)
    world = nib.affines.apply_affine(img.affine, corners)
    return Box(world.min(0), world.max(0))


def coarse_grid(img: nib.Nifti1Image, spacing_mm: float) -> tuple[np.ndarray, tuple[int, int, int]]:
    """World-aligned RAS grid at ``spacing_mm`` covering the image: (affine, shape)."""
    box = image_world_box(img)
    shape = tuple(int(v) for v in np.floor((box.hi - box.lo) / spacing_mm).astype(int) + 1)
    affine = np.diag([spacing_mm, spacing_mm, spacing_mm, 1.0])
    affine[:3, 3] = box.lo
    return affine, shape


def resample_to_grid(
    data: np.ndarray, affine: np.ndarray, grid_affine: np.ndarray, grid_shape, order: int = 1, smooth: bool = True
) -> np.ndarray:
    """Resample ``data`` (NaN treated as 0) onto a target grid; Gaussian pre-smoothing against aliasing."""
    values = np.nan_to_num(np.asarray(data, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    src_to_grid = np.linalg.inv(affine) @ grid_affine
    if smooth:
        # sigma in source voxels: ~0.4 of the target spacing along each source axis
        src_zooms = np.sqrt((affine[:3, :3] ** 2).sum(0))
        target = np.sqrt((grid_affine[:3, :3] ** 2).sum(0)).mean()
        sigma = np.maximum(0.4 * target / src_zooms - 0.25, 0)
        if np.any(sigma > 0):
            values = ndimage.gaussian_filter(values, sigma)
    return ndimage.affine_transform(
        values,
        src_to_grid[:3, :3],
        src_to_grid[:3, 3],
        output_shape=tuple(grid_shape),
        order=order,
        mode="constant",
        cval=0.0,
    ).astype(np.float32)


def localization_input(img: nib.Nifti1Image, spacing_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """The localization network's input: (data on the coarse grid, grid affine)."""
    grid_affine, shape = coarse_grid(img, spacing_mm)
    return resample_to_grid(img.get_fdata(dtype=np.float32), img.affine, grid_affine, shape), grid_affine


def label_region(labels: nib.Nifti1Image, grid_affine: np.ndarray, grid_shape, dilate_voxels: int = 2) -> np.ndarray:
    """The DN region on the coarse grid from DN labels: any DN fraction, holes filled, dilated."""
    fraction = resample_to_grid(
        (np.asarray(labels.dataobj) > 0).astype(np.float32),
        labels.affine,
        grid_affine,
        grid_shape,
        order=1,
        smooth=False,
    )
    region = ndimage.binary_fill_holes(fraction > 0.05)
    if dilate_voxels:
        region = ndimage.binary_dilation(region, iterations=dilate_voxels)
    return region.astype(np.uint8)


def region_components(region: np.ndarray, min_voxels: int = 3, keep: int = 2) -> np.ndarray:
    """Keep the ``keep`` largest connected components of a predicted region (one per DN, ideally)."""
    labels, n = ndimage.label(region > 0)
    if n == 0:
        return np.zeros(region.shape, bool)
    sizes = ndimage.sum(region > 0, labels, index=np.arange(1, n + 1))
    order = np.argsort(sizes)[::-1][:keep]
    chosen = [i + 1 for i in order if sizes[i] >= min_voxels]
    return np.isin(labels, chosen)


def region_box(region: np.ndarray, grid_affine: np.ndarray) -> Box | None:
    """World box around a region on a grid (voxel extents included), or None if it is empty."""
    idx = np.argwhere(region > 0)
    if len(idx) == 0:
        return None
    half = 0.5
    corners = np.array(
        [
            [a, b, c]
            for a in (idx[:, 0].min() - half, idx[:, 0].max() + half)
            for b in (idx[:, 1].min() - half, idx[:, 1].max() + half)
            for c in (idx[:, 2].min() - half, idx[:, 2].max() + half)
        ]
    )
    world = nib.affines.apply_affine(grid_affine, corners)
    return Box(world.min(0), world.max(0))


def region_slices(
    img: nib.Nifti1Image,
    region: np.ndarray,
    grid_affine: np.ndarray,
    margin_mm: float,
    jitter_mm: np.ndarray | None = None,
    snap: int = 8,
) -> tuple[tuple[slice, slice, slice], bool]:
    """Voxel slices of ``img`` around a coarse-grid region, plus a margin, snapped outwards to multiples
    of ``snap`` voxels; also whether the crop reached the image edge.

    The bounds come from the region's points in ``img``'s own voxel frame (not from a world-aligned
    box), so an image whose affine is rotated gets the same voxels cropped; snapping makes the crop
    insensitive to a voxel or two of localization wobble, so nnU-Net tiles it identically.
    ``jitter_mm`` (lo x, y, z, hi x, y, z) moves each face, for training-time augmentation.
    """
    idx = np.argwhere(region > 0).astype(float)
    offsets = np.array([[a, b, c] for a in (-0.5, 0.5) for b in (-0.5, 0.5) for c in (-0.5, 0.5)])
    corners = (idx[:, None, :] + offsets[None]).reshape(-1, 3)
    vox = nib.affines.apply_affine(np.linalg.inv(img.affine) @ grid_affine, corners)
    zooms = np.sqrt((img.affine[:3, :3] ** 2).sum(0))
    grow_lo = np.full(3, margin_mm) + (jitter_mm[:3] if jitter_mm is not None else 0)
    grow_hi = np.full(3, margin_mm) + (jitter_mm[3:] if jitter_mm is not None else 0)
    lo = np.floor(vox.min(0) - grow_lo / zooms)
    hi = np.ceil(vox.max(0) + grow_hi / zooms) + 1
    lo, hi = np.floor(lo / snap) * snap, np.ceil(hi / snap) * snap
    shape = np.array(img.shape[:3])
    touches = bool(np.any(lo < 0) or np.any(hi > shape))
    lo, hi = np.clip(lo, 0, shape).astype(int), np.clip(hi, 0, shape).astype(int)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi)), touches


def crop(img: nib.Nifti1Image, slices) -> nib.Nifti1Image:
    """A lossless voxel crop with the matching affine (no resampling)."""
    return img.slicer[slices]


def uncrop(labels: np.ndarray, slices, affine: np.ndarray, shape) -> np.ndarray:
    """Labels on a crop (``slices``) of the canonically oriented image back on the input's own grid
    (``affine``, ``shape``): zero outside the crop, the voxel axes turned back as they were."""
    ornt = nib.orientations.io_orientation(affine)
    canonical = np.zeros(canonical_shape(affine, shape), labels.dtype)
    canonical[slices] = labels
    to_input = nib.orientations.ornt_transform(nib.orientations.axcodes2ornt(("R", "A", "S")), ornt)
    return nib.orientations.apply_orientation(canonical, to_input)


def canonical_shape(affine: np.ndarray, shape) -> tuple[int, int, int]:
    """The shape of an image (``affine``, ``shape``) in its closest canonical orientation."""
    ornt = nib.orientations.io_orientation(affine)  # input axis i is canonical (RAS) axis ornt[i, 0]
    turned = [0, 0, 0]
    for axis, (to_axis, _) in enumerate(ornt):
        turned[int(to_axis)] = int(shape[axis])
    return tuple(turned)


def image_edges(slices, shape) -> tuple[bool, ...]:
    """Which faces of a crop (``slices`` of an array of ``shape``) are the array's own edges, beyond
    which the image holds no data: low x, y, z, then high x, y, z."""
    return tuple(s.start == 0 for s in slices) + tuple(s.stop >= int(n) for s, n in zip(slices, shape))


def recorded_crop(meta: dict) -> tuple[tuple[slice, ...], tuple[bool, ...]]:
    """A result's canonical crop as its metadata records it: the slices (``crop_voxels_canonical``) and
    which of the crop's faces are the image's own edges (:func:`image_edges`)."""
    slices = tuple(slice(int(lo), int(hi)) for lo, hi in meta["crop_voxels_canonical"])
    shape = canonical_shape(np.asarray(meta["image"]["affine"], float), meta["image"]["shape"])
    return slices, image_edges(slices, shape)


@dataclass
class Crop:
    """Where step two works, whichever locator placed it (network, registration, atlas, training labels):
    a DN region on the coarse world grid, its world box, and the lossless crop of the canonically
    oriented image around it (the region's voxels plus ``margin_mm``)."""

    canonical: nib.Nifti1Image
    region: np.ndarray
    grid_affine: np.ndarray
    box: Box
    margin_mm: float
    slices: tuple[slice, slice, slice]
    touches_edge: bool
    image: nib.Nifti1Image

    @property
    def image_edges(self) -> tuple[bool, ...]:
        """Which faces of the crop are the image's own edges (:func:`image_edges`)."""
        return image_edges(self.slices, self.canonical.shape[:3])


def crop_around(
    canonical: nib.Nifti1Image,
    region: np.ndarray,
    grid_affine: np.ndarray,
    margin_mm: float,
    jitter_mm: np.ndarray | None = None,
) -> Crop | None:
    """The :class:`Crop` of ``canonical`` (an image in its closest canonical orientation) around a coarse
    region (:func:`region_slices`; ``jitter_mm`` moves each face, for training), or None where the region
    is empty."""
    box = region_box(region, grid_affine)
    if box is None:
        return None
    slices, touches_edge = region_slices(canonical, region, grid_affine, margin_mm, jitter_mm)
    return Crop(canonical, region, grid_affine, box, margin_mm, slices, touches_edge, crop(canonical, slices))


# --- a second opinion: where an affine registration of the MNI brain puts the nuclei ----------------

#: Half the Diedrichsen atlas DN bounding box (DOMAIN.md: about 15-16 x 21-22 x 19-20 mm), in MNI mm:
#: each nucleus is proposed as an ellipsoid of these semi-axes around its MNI centroid.
DN_SEMI_AXES_MNI_MM = (8.0, 11.0, 10.0)
#: How far around the registration's expected nuclei its region reaches: the support registration
#: put them 0.7-9.7 mm from the nuclei on 28 synthetic whole brains and slabs, about 5 mm on a real slab.
REGISTRATION_REACH_MM = 12.0
#: The network's region must hold a voxel within this distance of each expected nucleus, else the
#: registration's region is added to the crop (the fit was 17 mm off on one of 28 synthetic images).
AGREEMENT_MM = 20.0
#: How far beyond the MNI ellipsoid a label still counts as where the registration expects it (the
#: registration's error; :meth:`Expectation.overlap`).
OVERLAP_MARGIN_MM = 6.0


def data_support(img: nib.Nifti1Image) -> np.ndarray:
    """Where an image holds data, on its own grid: finite stored values other than the most common one
    (0 for a masked QSM map, a constant offset that some scanners store, whatever the scaling)."""
    data = np.asanyarray(img.dataobj)
    finite = np.isfinite(data)
    sample = data[::2, ::2, ::2][finite[::2, ::2, ::2]]
    if sample.size == 0:
        return np.zeros(data.shape[:3], bool)
    values, counts = np.unique(sample, return_counts=True)
    return finite & (data != values[np.argmax(counts)])


def filled(mask: np.ndarray) -> np.ndarray:
    """A support mask without specks (one opening) and without holes: the head or brain as one body."""
    return ndimage.binary_fill_holes(ndimage.binary_opening(mask, iterations=1))


@dataclass
class Expectation:
    """Where the affine registration of the MNI brain expects the nuclei, and how large, without asking
    any network: each nucleus's world centre on the image and the fitted map from the image's world mm
    to MNI mm. Empty (no centres, no map) where the registration was off or failed."""

    centres_mm: dict[str, list[float] | None] = field(default_factory=dict)  # None: outside the grid
    to_template: np.ndarray | None = None  # 4 x 4, image world mm -> MNI mm (RAS)

    @property
    def volume_scale(self) -> float | None:
        """Volume on the image per volume in MNI space (1 / the fitted map's determinant): how much larger
        or smaller than the MNI152 brain the registration found this head."""
        if self.to_template is None:
            return None
        return 1.0 / abs(float(np.linalg.det(self.to_template[:3, :3])))

    def overlap(self, side: str, points_mm: np.ndarray, margin_mm: float = OVERLAP_MARGIN_MM) -> float | None:
        """Share of ``points_mm`` (world, N x 3) inside the MNI nucleus of ``side`` (the DN ellipsoid
        widened by ``margin_mm``, the registration's error) once carried into MNI space."""
        if self.to_template is None or not len(points_mm):
            return None
        from dnqsm.synth.template import DN_CENTROID_MNI

        mni = nib.affines.apply_affine(self.to_template, points_mm)
        semi = np.asarray(DN_SEMI_AXES_MNI_MM) + margin_mm
        inside = (((mni - np.asarray(DN_CENTROID_MNI[side])) / semi) ** 2).sum(1) <= 1
        return float(inside.mean())

    def record(self) -> dict:
        return {
            "registration_expected_mm": self.centres_mm,
            "registration_to_template": None
            if self.to_template is None
            else [[round(float(v), 6) for v in row] for row in self.to_template],
            "registration_volume_scale": None if self.volume_scale is None else round(self.volume_scale, 4),
        }

    @classmethod
    def from_record(cls, record: dict | None) -> Expectation:
        """The expectation as :meth:`record` (the engine's metadata ``localization``) kept it."""
        record = record or {}
        matrix = record.get("registration_to_template")
        return cls(record.get("registration_expected_mm") or {}, None if matrix is None else np.asarray(matrix, float))


@dataclass
class Localization:
    """Where step two crops, and why: the region on the coarse grid and which locator gave it."""

    region: np.ndarray  # bool, coarse grid
    locator: str  # network, registration or network+registration
    reasons: list[str]  # why the registration was consulted for the crop, or why it could not be
    network_components: int
    expected: Expectation  # where and how large the registration expects the nuclei
    refined: bool = False  # step two ran again on the crop around what it found in the wide crop

    def record(self) -> dict:
        return {
            "locator": self.locator,
            "reasons": list(self.reasons),
            "network_components": self.network_components,
            **self.expected.record(),
            "refined": self.refined,
        }


class RegistrationLocator:
    """An affine registration (antspyx, mean squares on smoothed masks) of the MNI152 brain mask onto the
    image's data support, on the coarse grid; the MNI dentate ellipsoids it carries across are where it
    expects the nuclei. It looks at the brain's outline only, never at the image's contrast, so it
    cannot be fooled by a look the network has not seen; the metric is computed over the image's own
    field of view, so a slab is matched by the part of the brain it holds."""

    def __init__(self, spacing_mm: float, reach_mm: float = REGISTRATION_REACH_MM):
        self.spacing_mm = float(spacing_mm)
        self.reach_mm = float(reach_mm)
        self._template = None

    def _moving(self):
        """(smoothed MNI brain support, MNI nuclei 1 left 2 right) as ANTs images at the coarse spacing."""
        if self._template is None:
            import ants

            from dnqsm.engine.registration import ants_image
            from dnqsm.synth.template import DN_CENTROID_MNI, axes_mm, load_template

            tpl = load_template()
            brain = ants_image((tpl.brain > 0.5).astype(np.float32), tpl.affine)
            brain = ants.resample_image(brain, (self.spacing_mm,) * 3, use_voxels=False, interp_type=0)
            x, y, z = np.meshgrid(*axes_mm(tpl.affine, tpl.shape), indexing="ij", sparse=True)
            nuclei = np.zeros(tpl.shape, np.float32)
            for label, side in ((1, "left"), (2, "right")):
                c, s = DN_CENTROID_MNI[side], DN_SEMI_AXES_MNI_MM
                nuclei[((x - c[0]) / s[0]) ** 2 + ((y - c[1]) / s[1]) ** 2 + ((z - c[2]) / s[2]) ** 2 <= 1] = label
            self._template = (
                ants.smooth_image(brain, 1.5, sigma_in_physical_coordinates=False),
                ants_image(nuclei, tpl.affine),
            )
        return self._template

    def expected_nuclei(
        self, img: nib.Nifti1Image, grid_affine: np.ndarray, grid_shape
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """The MNI nuclei (1 left, 2 right) carried onto the coarse grid (all zero where they fall outside)
        and the fitted map from the image's world mm to MNI mm (None where the image holds no data)."""
        import ants

        from dnqsm.engine.registration import ants_image, remove_transforms, seeded

        brain, nuclei = self._moving()
        # the support is found on the stored values and then resampled: on the coarse grid, the zeros
        # outside an oblique field of view would outnumber a constant background offset
        native = (
            resample_to_grid(
                data_support(img).astype(np.float32), img.affine, grid_affine, grid_shape, order=1, smooth=False
            )
            > 0.5
        )
        support = filled(native).astype(np.float32)
        if not support.any():
            return np.zeros(tuple(grid_shape), np.uint8), None
        fixed = ants.smooth_image(ants_image(support, grid_affine), 1.5, sigma_in_physical_coordinates=False)
        with seeded():
            fit = ants.registration(fixed, brain, type_of_transform="Affine", aff_metric="meansquares")
        try:
            carried = ants.apply_transforms(fixed, nuclei, fit["fwdtransforms"], interpolator="genericLabel")
            to_template = world_map(ants.read_transform(fit["fwdtransforms"][0]))
        finally:
            remove_transforms([fit])
        return np.rint(carried.numpy()).astype(np.uint8), to_template

    def region(self, nuclei: np.ndarray) -> np.ndarray:
        """The expected nuclei widened by ``reach_mm`` (the registration's error), on the same grid."""
        if not nuclei.any():
            return np.zeros(nuclei.shape, bool)
        return ndimage.distance_transform_edt(nuclei == 0) * self.spacing_mm <= self.reach_mm


def world_map(transform) -> np.ndarray:
    """An ITK affine transform (ANTs' forward transform of a fit: points of the fixed image to the
    moving one, in LPS mm, about its centre) as a 4 x 4 map between RAS world coordinates, nibabel's."""
    matrix = np.asarray(transform.parameters[:9], float).reshape(3, 3)
    translation = np.asarray(transform.parameters[9:12], float)
    centre = np.asarray(transform.fixed_parameters[:3], float)
    lps = np.eye(4)
    lps[:3, :3] = matrix
    lps[:3, 3] = translation + centre - matrix @ centre
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    return flip @ lps @ flip


def centres_mm(nuclei: np.ndarray, grid_affine: np.ndarray) -> dict[str, list[float] | None]:
    """World centre of each expected nucleus (1 left, 2 right), None where it fell outside the grid."""
    out: dict[str, list[float] | None] = {}
    for label, side in ((1, "left"), (2, "right")):
        idx = np.argwhere(nuclei == label)
        out[side] = (
            [round(float(v), 1) for v in nib.affines.apply_affine(grid_affine, idx.mean(0))] if len(idx) else None
        )
    return out


def second_opinion(
    network: np.ndarray,
    grid_affine: np.ndarray,
    expected: dict[str, list[float] | None],
    min_box_mm: float,
    max_box_mm: float,
    agreement_mm: float = AGREEMENT_MM,
) -> list[str]:
    """Why the network's region (coarse grid) is not enough on its own: missing, implausibly sized, or
    holding nothing near one of the nuclei the registration expects. "Near" a nucleus is within
    ``agreement_mm`` of it and, where both are expected, nearer to it than to the other: the nuclei lie
    only 20-30 mm apart, so a region around one nucleus alone is within ``agreement_mm`` of both, and
    only the side it lies on tells that it is one-sided. Empty when it is fine."""
    box = region_box(network, grid_affine)
    if box is None:
        return ["the localization network found no dentate region"]
    reasons = []
    extent = box.hi - box.lo
    if extent.min() < min_box_mm or extent.max() > max_box_mm:
        reasons.append(
            f"the localization network's region measures {' x '.join(f'{e:.0f}' for e in extent)} mm "
            f"(expected {min_box_mm:g}-{max_box_mm:g} mm along each axis)"
        )
    points = nib.affines.apply_affine(grid_affine, np.argwhere(network))
    centres = {side: np.asarray(centre, float) for side, centre in expected.items() if centre is not None}
    for side, centre in centres.items():
        distance = np.linalg.norm(points - centre, axis=1)
        others = [np.linalg.norm(points - c, axis=1) for other, c in centres.items() if other != side]
        on_its_side = np.all([distance < d for d in others], axis=0) if others else np.ones(len(points), bool)
        if not on_its_side.any():
            reasons.append(
                f"the localization network's region lies wholly nearer the other nucleus than where "
                f"registration expects the {side} one (one-sided)"
            )
        elif (nearest := float(distance[on_its_side].min())) > agreement_mm:
            reasons.append(
                f"the localization network's region is {nearest:.0f} mm from where registration expects "
                f"the {side} nucleus (more than {agreement_mm:g} mm)"
            )
    return reasons


def localize(
    network: np.ndarray,
    img: nib.Nifti1Image,
    grid_affine: np.ndarray,
    registration: RegistrationLocator | None,
    min_box_mm: float,
    max_box_mm: float,
) -> Localization:
    """The crop's region: the network's where the registration's second opinion finds nothing wrong
    with it; the registration's where the network found nothing; both together where they disagree (so
    the crop holds both candidates and step two decides). Without a registration: the network's."""
    components = int(ndimage.label(network)[1])
    if registration is None:
        return Localization(network, "network", [], components, Expectation())
    try:
        nuclei, to_template = registration.expected_nuclei(img, grid_affine, network.shape)
    except RuntimeError as exc:  # ITK's errors: a second opinion that fails must not fail the image
        message = (str(exc).strip().splitlines() or ["no message"])[-1][:200]
        return Localization(network, "network", [f"the registration failed: {message}"], components, Expectation())
    expected = Expectation(centres_mm(nuclei, grid_affine), to_template)
    reasons = second_opinion(network, grid_affine, expected.centres_mm, min_box_mm, max_box_mm)
    if not reasons:
        return Localization(network, "network", [], components, expected)
    proposed = registration.region(nuclei)
    if not network.any():
        return Localization(proposed, "registration", reasons, components, expected)
    return Localization(network | proposed, "network+registration", reasons, components, expected)


def refine_region(
    mask: np.ndarray,
    mask_affine: np.ndarray,
    grid_affine: np.ndarray,
    grid_shape,
    expected: dict[str, list[float] | None],
    agreement_mm: float = AGREEMENT_MM,
) -> np.ndarray:
    """A DN region on the coarse grid from step two's mask on a wide crop, built as the training target
    is (:func:`label_region`: any DN fraction, filled, dilated): per nucleus the registration expects,
    the part nearest to it, if within ``agreement_mm`` (a wide crop also holds veins and sinuses that
    step two may mark; the nuclei are where the registration expects them, give or take its error).
    Without expected nuclei: the two largest parts. Empty when nothing is left."""
    fraction = resample_to_grid(mask.astype(np.float32), mask_affine, grid_affine, grid_shape, order=1, smooth=False)
    region = ndimage.binary_dilation(ndimage.binary_fill_holes(fraction > 0.05), iterations=2)
    centres = [np.asarray(c) for c in expected.values() if c is not None]
    if not centres or not region.any():
        return region_components(region, min_voxels=1, keep=2)
    parts, n = ndimage.label(region)
    points = [nib.affines.apply_affine(grid_affine, np.argwhere(parts == part)) for part in range(1, n + 1)]
    chosen = set()
    for centre in centres:
        distances = [float(np.linalg.norm(p - centre, axis=1).min()) for p in points]
        nearest = int(np.argmin(distances))
        if distances[nearest] <= agreement_mm:
            chosen.add(nearest + 1)
    return np.isin(parts, sorted(chosen))
