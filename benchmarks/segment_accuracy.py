"""Accuracy of the two-step engine against synthetic truth, on cohorts never used for training.

Usage: python benchmarks/segment_accuracy.py [--subjects 12] [--models models/demo] [--no-mirroring]
                                             [--cohorts DIR] [--out table.tsv | --table table.tsv ...]
Generates fresh `test` and `external` cohorts (fixed seeds, disjoint from the training streams),
segments every image in one process and prints Dice per side, volume ICC(A,1) and Pearson r, one
row per cohort and mirroring. The documentation's page shows both ways of running the networks on
the same images: the one-pass table of `robustness.py --no-mirroring --out` and the mirrored table
(dnqsm's default) of `segment_accuracy.py --cohorts DIR --out`, summarised with `--table` twice.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from dnqsm.analysis.metrics import dice, volume_agreement
from dnqsm.engine.nnunet import CONFIGURATION, from_nnunet, to_nnunet
from dnqsm.engine.segment import NnunetMethod, load_model_set
from dnqsm.io import bids_path, read_tsv, write_tsv
from dnqsm.labels import SIDES
from dnqsm.names import dentate_fractions, dentate_labels, result_path
from dnqsm.synth import write_dataset

#: Truth-table columns kept per image, so results can be broken down by what made the image.
FACTORS = (
    "site",
    "baseline_age",
    "acq_orientation",
    "acq_oblique_deg",
    "voxel_x_mm",
    "voxel_z_mm",
    "recon_inversion",
    "recon_reference",
    "recon_snr",
    "rotation_x_deg",
    "dn_left_contrast_ppb",
    "dn_right_contrast_ppb",
)


def planned_configuration(model_folder: Path):
    """nnU-Net's configuration manager of a trained model (its planned spacing and resampling)."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    return PlansManager(str(model_folder / "plans.json")).get_configuration(CONFIGURATION)


def spacing_ceiling(labels: nib.Nifti1Image, config, margin_voxels: int = 8) -> dict[str, float]:
    """Dice per side that a segmentation network working at its planned spacing (``config``, from
    :func:`planned_configuration`) could reach at best on this image: the truth labels (closest
    canonical orientation, as the engine crops the image) go to that spacing as class probabilities
    and back with nnU-Net's own resampling of probabilities, then argmax. What is lost there is the
    planned grid's, not the network's."""
    canonical = nib.as_closest_canonical(labels)
    truth = np.asarray(canonical.dataobj).astype(np.uint8)
    found = np.argwhere(truth > 0)
    box = tuple(slice(max(lo - margin_voxels, 0), hi + margin_voxels + 1) for lo, hi in zip(found.min(0), found.max(0)))
    data, props = to_nnunet(truth[box], canonical.header.get_zooms()[:3])
    classes = np.concatenate([data == label for label in (0, 1, 2)]).astype(np.float32)
    shape = data.shape[1:]
    planned = [int(round(n * s / t)) for n, s, t in zip(shape, props["spacing"], config.spacing)]
    down = config.resampling_fn_probabilities(classes, planned, props["spacing"], config.spacing)
    back = from_nnunet(config.resampling_fn_probabilities(down, shape, config.spacing, props["spacing"]).argmax(0))
    return {side: dice(back == label, truth[box] == label) for side, label in SIDES.items()}


def image_ceiling(fraction: nib.Nifti1Image, labels: np.ndarray) -> dict[str, float]:
    """Dice per side of a perfect reader of the image: the truth's partial-volume fractions
    (``desc-dentate_probseg``: the DN's share of each voxel's signal as the image holds it, before
    reconstruction and noise) above one half, against the labels at the voxel centres. What is lost
    there is the image's (a thick slice averages over what the label at its centre says), not the
    network's."""
    shares = fraction.get_fdata(dtype=np.float32)
    return {side: dice(shares[..., index] > 0.5, labels == label) for index, (side, label) in enumerate(SIDES.items())}


def evaluate(
    segmenter: NnunetMethod, preset: str, subjects: int, seed: int, tmp: Path, cohorts: Path | None = None
) -> pd.DataFrame:
    """Segment a fresh cohort of ``preset`` and score every image against its truth. With ``cohorts``,
    the cohort is kept there and reused by later runs with the same arguments (synthesis is
    deterministic), so that two model sets are compared on the same images without regenerating them."""
    kept = cohorts is not None
    root = write_dataset(
        Path(cohorts) / f"{preset}_subjects-{subjects}_seed-{seed}" if kept else tmp / preset,
        preset,
        subjects=subjects,
        sessions=1,
        seed=seed,
        overwrite=kept,
        reuse=kept,
        jobs=2,
    )
    truth = read_tsv(root / "derivatives/manual/truth.tsv")
    images = [bids_path(root, r.participant_id[4:], r.session_id[4:], "Chimap") for r in truth.itertuples()]
    start = time.perf_counter()
    records = segmenter.run(images, tmp / f"{preset}_out")
    seconds = (time.perf_counter() - start) / len(images)
    planned = planned_configuration(segmenter.models.segmentation.folder)
    rows = []
    for r, rec in zip(truth.itertuples(), records):
        row = {
            "preset": preset,
            "image": rec["stem"],
            "status": rec["status"],
            "locator": (rec.get("localization") or {}).get("locator"),
            "seconds": seconds,
            "mirroring": segmenter.mirroring,
        }
        row.update({k: getattr(r, k) for k in FACTORS if hasattr(r, k)})
        labels_img = nib.load(dentate_labels(root / "derivatives/manual", r.participant_id[4:], r.session_id[4:]))
        labels = np.asarray(labels_img.dataobj)
        # an image under review still has labels, scored as they are; a failed one has none
        found = rec["status"] != "failed"
        pred = (
            np.asarray(nib.load(result_path(tmp / f"{preset}_out", rec["stem"], "labels")).dataobj)
            if found
            else np.zeros_like(labels)
        )
        ceiling = spacing_ceiling(labels_img, planned)
        readable = image_ceiling(
            nib.load(dentate_fractions(root / "derivatives/manual", r.participant_id[4:], r.session_id[4:])), labels
        )
        for side, label in SIDES.items():
            row[f"dice_{side}"] = dice(pred == label, labels == label)
            row[f"ceiling_{side}"] = ceiling[side]
            row[f"image_ceiling_{side}"] = readable[side]
            row[f"true_{side}_mm3"] = getattr(r, f"dn_{side}_volume_mm3")
            row[f"pred_{side}_mm3"] = rec["dentate"][side]["volume_mm3"] if found else 0.0
        rows.append(row)
    return pd.DataFrame(rows)


def add_mirroring_argument(parser: argparse.ArgumentParser) -> None:
    """``--mirroring/--no-mirroring``, the same in every benchmark: on by default, as in dnqsm."""
    parser.add_argument(
        "--mirroring",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="test-time mirroring (dnqsm's default; --no-mirroring: one pass, about 5x faster on CPU)",
    )


def mirroring_used(table: pd.DataFrame) -> str:
    """How a per-image table was segmented: "on", "off", or "not recorded" (tables written before the
    column existed)."""
    if "mirroring" not in table:
        return "not recorded"
    return ", ".join(sorted({"on" if used else "off" for used in table["mirroring"]}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subjects", type=int, default=12)
    parser.add_argument("--models", default=None)
    add_mirroring_argument(parser)
    parser.add_argument("--out", default=None, help="also write the per-image table here (TSV)")
    parser.add_argument(
        "--table",
        action="append",
        default=None,
        help="summarise per-image tables written by --out instead (repeat: e.g. one pass and mirrored)",
    )
    parser.add_argument(
        "--cohorts",
        default=None,
        type=Path,
        help="keep the generated cohorts here and reuse them (robustness.py --cohorts keeps the same ones)",
    )
    args = parser.parse_args()
    if args.table:
        table = pd.concat([pd.read_csv(path, sep="\t") for path in args.table], ignore_index=True)
    else:
        segmenter = NnunetMethod(load_model_set(args.models), device="cpu", mirroring=args.mirroring, threads=2)
        with tempfile.TemporaryDirectory() as tmp:
            table = pd.concat(
                [
                    evaluate(segmenter, "test", args.subjects, 1001, Path(tmp), args.cohorts),
                    evaluate(segmenter, "external", args.subjects, 1002, Path(tmp), args.cohorts),
                ]
            )
    if args.out:
        write_tsv(args.out, table)  # atomic; makes the folder
    print(
        f"test-time mirroring: {mirroring_used(table)}; images per cohort: {table.groupby('preset').size().to_dict()}\n"
    )
    print(
        "| cohort | mirroring | images | review | failed | Dice left (mean ± SD) | Dice right (mean ± SD) "
        "| volume ICC(A,1) L / R | Pearson r L / R | s per image |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    if "mirroring" not in table:
        table = table.assign(mirroring="not recorded")
    for (preset, _), t in table.groupby(["preset", "mirroring"], sort=False):
        agree = {
            s: volume_agreement(t[f"true_{s}_mm3"].to_numpy(), t[f"pred_{s}_mm3"].to_numpy()) for s in ("left", "right")
        }
        print(
            f"| {preset} | {mirroring_used(t)} | {len(t)} | {(t.status == 'review').sum()} "
            f"| {(t.status == 'failed').sum()} "
            f"| {t.dice_left.mean():.3f} ± {t.dice_left.std():.3f} "
            f"| {t.dice_right.mean():.3f} ± {t.dice_right.std():.3f} "
            f"| {agree['left']['icc_a1']:.3f} / {agree['right']['icc_a1']:.3f} "
            f"| {agree['left']['pearson_r']:.3f} / {agree['right']['pearson_r']:.3f} | {t.seconds.iloc[0]:.1f} |"
        )


if __name__ == "__main__":
    from dnqsm.benchmark_page import publish

    publish("segment_accuracy", "Accuracy against synthetic truth", main, __doc__)
