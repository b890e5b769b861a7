"""One real brain, several reconstructions: do the labels agree, and is each one "ok"?

Usage: python benchmarks/real_variants.py [MAP] [--out results/real_variants] [--models DIR] [--no-mirroring]
MAP: a real ``*_Chimap.nii.gz`` (default: the development map in ``../shared/data/real-qsm``).
Reviewers run dnqsm on real brains reconstructed several ways and ask that the DN masks of one brain
agree (Dice >= 0.75 between reconstructions) with status ok on every map. With one real map at hand,
the other reconstructions are made from it: the map resampled to 1 mm isotropic; its local field (the
dipole forward model of the brain-masked map at 1 mm, with noise) inverted again by TKD without
correction (threshold 0.2: contrast lost, streaks) and by closed-form L2 (smoother); the map smoothed
(Gaussian, sigma 0.7 mm); the map with white noise added (10 ppb); and the head turned in the scanner
(the 1 mm map's affine turned about the image centre, then resampled by nibabel onto an axis-aligned
grid that holds all of it: pitched by +-30 degrees about the left-right axis, rolled by 12 degrees
about the front-back axis). Each is segmented as ``benchmarks/real.py`` does (montage per image in OUT)
and its labels are scored against the labels of the map as given, on the given map's grid (nearest
neighbour; a turned head's labels turned back first). These are derived reconstructions of one map, not
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

from dnqsm.labels import SIDES

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
#: The turned heads: name -> (world axis turned about, right-handed: 0 left-right, 1 front-back; degrees).
TURNS = {"pitch_plus": (0, 30.0), "pitch_minus": (0, -30.0), "roll": (1, 12.0)}
MIN_DICE = 0.75  # the reviewers' criterion between reconstructions of one brain


def turning(axis: int, degrees: float, centre_mm: np.ndarray) -> np.ndarray:
    """The world transform (4 x 4, mm) that turns a head by ``degrees`` about world ``axis`` (0 left-right,
    1 front-back) through ``centre_mm``."""
    from nibabel.eulerangles import euler2mat

    angles = {0: (0.0, 0.0, np.deg2rad(degrees)), 1: (0.0, np.deg2rad(degrees), 0.0)}[axis]  # (z, y, x)
    turn = np.eye(4)
    turn[:3, :3] = euler2mat(*angles)
    turn[:3, 3] = centre_mm - turn[:3, :3] @ centre_mm
    return turn


def turned(data: np.ndarray, mask: np.ndarray, affine: np.ndarray, turn: np.ndarray) -> nib.Nifti1Image:
    """The brain-masked map ``data`` (``mask``, ``affine``) with the head turned in the scanner by the world
    transform ``turn``, stored as a scanner stores it: on an axis-aligned 1 mm grid that holds all of it
    (``nibabel.processing.resample_to_output``)."""
    from nibabel.processing import resample_to_output

    values = resample_to_output(nib.Nifti1Image(data, turn @ affine), voxel_sizes=1.0, order=1)
    inside = resample_to_output(nib.Nifti1Image(mask.astype(np.float32), turn @ affine), voxel_sizes=1.0, order=1)
    return nib.Nifti1Image(np.asarray(values.dataobj, np.float32) * (np.asarray(inside.dataobj) >= 0.5), values.affine)


def variants(
    path: Path, folder: Path, only: tuple[str, ...] = tuple(VARIANTS), seed: int = 3
) -> dict[str, tuple[Path, np.ndarray]]:
    """Write the derived reconstructions ``only`` of the map at ``path`` (in ppb) into ``folder``; returns
    each one's file and the world transform that took the given head to it (identity but for the turned
    heads)."""
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
    }
    centre_mm = nib.affines.apply_affine(iso.affine, (np.asarray(iso_data.shape) - 1) / 2)
    turns = {name: turning(*TURNS[name], centre_mm) for name in TURNS if name in only}
    made.update({name: turned(iso_data, mask, iso.affine, turn) for name, turn in turns.items()})
    out = {}
    for name, img in made.items():
        if name not in only:
            continue
        target = folder / f"{stem}_rec-{name}_Chimap.nii.gz"
        save_nifti(target, nib.Nifti1Image(np.asarray(img.dataobj, np.float32), img.affine))
        target.with_name(target.name.replace(".nii.gz", ".json")).write_text('{"Units": "ppb"}\n')
        out[name] = (target, turns.get(name, np.eye(4)))
    return out


def agreement(labels: nib.Nifti1Image, reference: nib.Nifti1Image, turn: np.ndarray) -> dict[str, float]:
    """Dice per side of ``labels`` (a variant's) against ``reference`` (the given map's labels), on the
    given map's grid (nearest neighbour), turned back first by ``turn`` (the world transform that took the
    given head to the variant: the identity but for the turned heads)."""
    from nibabel.processing import resample_from_to

    from dnqsm.analysis.metrics import dice

    labels = nib.Nifti1Image(np.asarray(labels.dataobj), np.linalg.inv(turn) @ labels.affine)
    found = np.asarray(resample_from_to(labels, reference, order=0).dataobj)
    truth = np.asarray(reference.dataobj)
    return {side: dice(found == value, truth == value) for side, value in SIDES.items()}


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
    stems = {name: image_stem(file) for name, (file, _) in made.items()}
    reference = nib.load(result_path(out / "engine", stems["given"], "labels"))
    table = []
    for name, stem in stems.items():
        row = by_stem[stem]
        found = row["status"] != "failed"
        scores = (
            agreement(nib.load(result_path(out / "engine", stem, "labels")), reference, made[name][1]) if found else {}
        )
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
