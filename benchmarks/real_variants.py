"""One real brain, several reconstructions: do the labels agree, and is each one "ok"?

Usage: python benchmarks/real_variants.py [MAP] [--out results/real_variants] [--models DIR] [--no-mirroring]
MAP: a real ``*_Chimap.nii.gz`` (default: the development map in ``../shared/data/real-qsm``).
Reviewers run dnqsm on real brains reconstructed several ways and ask that the DN masks of one brain
agree (Dice >= 0.75 between reconstructions) with status ok on every map. With one real map at hand,
the other reconstructions are made from it: the map resampled to 1 mm isotropic; its local field (the
dipole forward model of the brain-masked map at 1 mm, with noise) inverted again by TKD without
correction (threshold 0.2: contrast lost, streaks) and by closed-form L2 (smoother); the map smoothed
(Gaussian, sigma 0.7 mm); the map with white noise added (10 ppb); and the head turned in the scanner
(the 1 mm map rotated about the image centre and stored on an axis-aligned grid wide enough to hold
it: pitched by +-30 degrees about the left-right axis, rolled by 12 degrees about the front-back axis). Each is
segmented as ``benchmarks/real.py`` does (montage per image in OUT) and its labels are scored against
the labels of the map as given (nearest neighbour onto the given map's grid; for a turned head, the
given labels turned the same way onto its grid). These are derived reconstructions of one map, not
independent acquisitions: agreement here is necessary, not sufficient.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
from real import DEFAULT_FOLDER, REPO, add_engine_arguments, real_maps
from real import run as run_real

#: The derived reconstructions: name -> what it stands for.
VARIANTS = {
    "given": "the map as given",
    "iso1mm": "resampled to 1 mm isotropic",
    "tkd": "field re-inverted by TKD without correction (threshold 0.2), 1 mm",
    "l2": "field re-inverted by closed-form L2 (lambda 0.03), 1 mm",
    "smoothed": "Gaussian smoothing, sigma 0.7 mm",
    "noisier": "white noise added, 10 ppb",
    "pitch_plus": "head pitched +30 degrees (about left-right), 1 mm",
    "pitch_minus": "head pitched -30 degrees (about left-right), 1 mm",
    "roll": "head rolled 12 degrees (about front-back), 1 mm",
}
#: The turned heads: name -> (world axis turned about: 0 left-right, 1 front-back; degrees).
TURNS = {"pitch_plus": (0, 30.0), "pitch_minus": (0, -30.0), "roll": (1, 12.0)}
MIN_DICE = 0.75  # the reviewers' criterion between reconstructions of one brain


def turn(data: np.ndarray, axis: int, degrees: float, order: int) -> np.ndarray:
    """``data`` (on a 1 mm grid whose axes are the world's, as ``resample_to_output`` gives) with its
    contents rotated by ``degrees`` about world ``axis`` through the array's centre; what comes from
    outside the array is 0 (``order`` 0 for labels)."""
    from scipy import ndimage

    theta = np.deg2rad(degrees)
    c, s = np.cos(theta), np.sin(theta)
    i, j = [a for a in range(3) if a != axis]
    rotation = np.eye(3)
    rotation[i, i], rotation[i, j], rotation[j, i], rotation[j, j] = c, -s, s, c
    centre = (np.asarray(data.shape, float) - 1) / 2
    back = rotation.T  # each output voxel samples the input where the rotation came from
    return ndimage.affine_transform(data, back, offset=centre - back @ centre, order=order, cval=0.0)


def turned(data: np.ndarray, mask: np.ndarray, affine: np.ndarray, axis: int, degrees: float) -> nib.Nifti1Image:
    """The brain-masked 1 mm map ``data`` (``mask``, ``affine`` axis-aligned) with the head turned
    (:func:`turn`), on a grid widened across the plane of the turn so that nothing turns out of it."""
    plane = [a for a in range(3) if a != axis]
    side = int(np.ceil(np.hypot(*(data.shape[a] for a in plane))))
    pad = [(0, 0)] * 3
    for a in plane:
        extra = max(side - data.shape[a], 0)
        pad[a] = (extra // 2, extra - extra // 2)
    widened = affine.copy()
    widened[:3, 3] -= affine[:3, :3] @ np.array([lo for lo, _ in pad], float)
    values = turn(np.pad(data, pad), axis, degrees, order=1)
    inside = turn(np.pad(mask.astype(np.float32), pad), axis, degrees, order=0) > 0
    return nib.Nifti1Image((values * inside).astype(np.float32), widened)


def variants(path: Path, folder: Path, only: tuple[str, ...] = tuple(VARIANTS), seed: int = 3) -> dict[str, Path]:
    """Write the derived reconstructions ``only`` of the map at ``path`` (in ppb) into ``folder``."""
    from nibabel.processing import resample_to_output
    from scipy import ndimage

    from dnqsm.io import save_nifti
    from dnqsm.synth import physics
    from dnqsm.workflow.preprocess import preprocess

    chi, _ = preprocess(path)  # ppb, as the workflow's segment step sees it
    stem = path.name.split("_Chimap")[0]
    rng = np.random.default_rng(seed)
    data = chi.get_fdata(dtype=np.float32)
    zooms = np.asarray(chi.header.get_zooms()[:3], float)
    iso = resample_to_output(chi, voxel_sizes=1.0, order=1)
    iso_mask = resample_to_output(nib.Nifti1Image((data != 0).astype(np.float32), chi.affine), 1.0, order=1)
    mask = np.asarray(iso_mask.dataobj) >= 0.5
    iso_data = np.asarray(iso.dataobj, np.float32) * mask
    grid = physics.Grid(iso_data.shape, 1.0, np.array([0.0, 0.0, 1.0]))
    field = physics.forward_field(iso_data / 1000, grid) + rng.normal(0, 0.004, iso_data.shape).astype(np.float32)
    made = {
        "given": nib.Nifti1Image(data, chi.affine),
        "iso1mm": nib.Nifti1Image(iso_data, iso.affine),
        "tkd": nib.Nifti1Image(physics.tkd(field, grid, 0.2) * 1000 * mask, iso.affine),
        "l2": nib.Nifti1Image(physics.closed_form_l2(field, grid, 0.03) * 1000 * mask, iso.affine),
        "smoothed": nib.Nifti1Image(ndimage.gaussian_filter(data, 0.7 / zooms) * (data != 0), chi.affine),
        "noisier": nib.Nifti1Image((data + rng.normal(0, 10, data.shape)) * (data != 0), chi.affine),
        **{name: turned(iso_data, mask, iso.affine, *TURNS[name]) for name in TURNS if name in only},
    }
    out = {}
    for name, img in made.items():
        if name not in only:
            continue
        target = folder / f"{stem}_rec-{name}_Chimap.nii.gz"
        save_nifti(target, nib.Nifti1Image(np.asarray(img.dataobj, np.float32), img.affine))
        target.with_name(target.name.replace(".nii.gz", ".json")).write_text('{"Units": "ppb"}\n')
        out[name] = target
    return out


def agreement(labels: nib.Nifti1Image, reference: nib.Nifti1Image, variant: str = "given") -> dict[str, float]:
    """Dice per side of ``labels`` (a variant's) against ``reference`` (the given map's labels), on the
    given map's grid (nearest neighbour); for a turned head (:data:`TURNS`) on the variant's grid, the
    given labels turned as the map was."""
    from nibabel.processing import resample_from_to

    from dnqsm.analysis.metrics import dice

    if variant in TURNS:  # the given labels on the turned map's grid, turned as its contents were
        found = np.asarray(labels.dataobj)
        truth = turn(np.asarray(resample_from_to(reference, labels, order=0).dataobj), *TURNS[variant], order=0)
    else:  # the variant's labels on the given map's grid
        found = np.asarray(resample_from_to(labels, reference, order=0).dataobj)
        truth = np.asarray(reference.dataobj)
    return {side: dice(found == value, truth == value) for side, value in (("left", 1), ("right", 2))}


def run(
    path: Path, out: Path, models: str | None = None, mirroring: bool = True, only: tuple[str, ...] = tuple(VARIANTS)
) -> list[dict]:
    """Segment each derived reconstruction (``only`` these; the map as given always) and score its
    labels against the given map's; returns one row per reconstruction."""
    from dnqsm.engine.segment import image_stem
    from dnqsm.names import result_path

    with tempfile.TemporaryDirectory(prefix="dnqsm-variants-") as scratch:
        made = variants(path, Path(scratch), ("given", *only))
        rows = run_real([Path(scratch)], out, models, mirroring)
    by_stem = {row["image"]: row for row in rows}
    stems = {name: image_stem(file) for name, file in made.items()}
    reference = nib.load(result_path(out / "engine", stems["given"], "labels"))
    table = []
    for name, stem in stems.items():
        row = by_stem[stem]
        found = row["status"] != "failed"
        scores = agreement(nib.load(result_path(out / "engine", stem, "labels")), reference, name) if found else {}
        table.append({"variant": name, "made": VARIANTS[name], **row, **{f"dice_{k}": v for k, v in scores.items()}})
    return table


def markdown(table: list[dict]) -> str:
    def number(value, digits: int) -> str:
        return "n/a" if value is None else f"{value:.{digits}f}"

    lines = [
        "| reconstruction | status | locator | left mm³ | right mm³ | Dice left / right vs as given | reasons |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in table:
        lines.append(
            f"| {r['made']} | {r['status']} | {r['locator']} "
            f"| {number(r['left mm³'], 0)} | {number(r['right mm³'], 0)} "
            f"| {number(r.get('dice_left'), 3)} / {number(r.get('dice_right'), 3)} | {r['reasons']} |"
        )
    others = [r for r in table if r["variant"] != "given"]
    agree = sum(
        1 for r in others if r["status"] == "ok" and min(r.get("dice_left", 0), r.get("dice_right", 0)) >= MIN_DICE
    )
    lines += ["", f"Reconstructions with status ok and Dice >= {MIN_DICE} on both sides: {agree} of {len(others)}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("map", nargs="?", type=Path, default=None)
    add_engine_arguments(parser, REPO / "results" / "real_variants")
    args = parser.parse_args(argv)
    path = args.map or real_maps([DEFAULT_FOLDER])[0]
    table = run(path, args.out, args.models, args.mirroring)
    sys.stdout.write(markdown(table))
    print(f"montages: {args.out}/<image>.png (look at every one)")


if __name__ == "__main__":
    from dnqsm.benchmark_page import publish

    publish("real_variants", "One real brain, several reconstructions", main, __doc__)
