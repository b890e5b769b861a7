"""Robustness of the bundled models across the looks of real QSM: Dice per side, overall and per factor.

Usage: python benchmarks/robustness.py [--subjects 30] [--reference-subjects 12] [--models models/demo]
                                       [--out table.tsv | --table table.tsv] [--cohorts DIR] [--no-mirroring]
Generates a fresh `stress` cohort (its own random streams; every factor varied per image: the DN's
anatomy (the wider family), dipole inversion, referencing, noise model, DN contrast from child to
adult with an iron gradient, 0.5 mm isotropic to 3 mm slices, orientation and obliquity, head pitch
against B0) plus `test` and `external` cohorts, segments every image and prints one Markdown table:
overall, then per reconstruction method, DN contrast third, true DN volume third, slice thickness,
voxel orientation, age and referencing. "review" and "failed" count images the engine marked so (an
image under review is scored as it is, a failed one as empty); "volume vs truth" is the median, over
the images, of how much larger (+) or smaller (-) the label is than the truth, in per cent; "image
ceiling" is the mean Dice of a perfect reader of the image: the truth's partial-volume fractions
(the DN's share of each voxel's signal before reconstruction and noise) above one half, against the
labels at the voxel centres (`segment_accuracy.image_ceiling`): the part of the gap to 1 that the
image leaves unknowable (thick slices). "planned-grid ceiling" is the mean Dice a perfect network at
the segmentation model's planned spacing would reach (`segment_accuracy.spacing_ceiling`): the part
of the gap to 1 that is the grid's.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from segment_accuracy import add_mirroring_argument, evaluate, mirroring_used

from dnqsm.engine.segment import NnunetMethod, load_model_set
from dnqsm.io import write_tsv
from dnqsm.synth.cohort import STRESS_AGE_STRATA

# age groups as the stress preset draws them: children, adults, older people
ADULT, OLDER = STRESS_AGE_STRATA[1][0], STRESS_AGE_STRATA[2][0]

TARGETS = (
    "stress: mean Dice >= 0.88 per side, >= 0.80 in the lowest-contrast third and on 3 mm slices; test/external >= 0.92"
)


def _thirds(values: pd.Series, unit: str, words: tuple[str, str, str]) -> np.ndarray:
    """Label each value with its tercile in ``values``, naming the edges (e.g. "lowest (<= 55 ppb)")."""
    edges = np.quantile(values, [1 / 3, 2 / 3])
    return np.select(
        [values <= edges[0], values <= edges[1]],
        [f"{words[0]} (<= {edges[0]:.0f} {unit})", f"{words[1]} ({edges[0]:.0f}-{edges[1]:.0f} {unit})"],
        f"{words[2]} (> {edges[1]:.0f} {unit})",
    )


def factor_levels(table: pd.DataFrame) -> pd.DataFrame:
    """Add the factor columns the table is broken down by."""
    t = table.copy()
    t["contrast_third"] = _thirds(
        t[["dn_left_contrast_ppb", "dn_right_contrast_ppb"]].mean(axis=1), "ppb", ("lowest", "middle", "highest")
    )
    t["volume_third"] = _thirds(
        t[["true_left_mm3", "true_right_mm3"]].mean(axis=1), "mm³", ("smallest", "middle", "largest")
    )
    t["slice_thickness"] = pd.cut(
        t["voxel_z_mm"], [0, 1.2, 2.4, 10], labels=["<= 1.2 mm", "1.2-2.4 mm", "2.5-3 mm"]
    ).astype(str)
    t["orientation"] = t["acq_orientation"] + np.where(t["acq_oblique_deg"].abs() > 0, " oblique", "")
    t["age"] = pd.cut(
        t["baseline_age"],
        [0, ADULT, OLDER, np.inf],
        right=False,
        labels=[f"child (< {ADULT:g} y)", f"adult ({ADULT:g}-{OLDER - 1:g} y)", f"{OLDER:g} y and over"],
    ).astype(str)
    return t


def rows(table: pd.DataFrame) -> list[str]:
    def line(factor: str, level: str, t: pd.DataFrame) -> str:
        def both(column: str) -> str:  # "n/a" in a table written before the column was computed
            return (
                f"{t[column + '_left'].mean():.3f} / {t[column + '_right'].mean():.3f}"
                if column + "_left" in t
                else "n/a"
            )

        def size(side: str) -> str:  # the label's volume against the truth's, median per image
            return f"{100 * (t[f'pred_{side}_mm3'] / t[f'true_{side}_mm3'] - 1).median():+.0f}"

        return (
            f"| {factor} | {level} | {len(t)} | {(t.status == 'review').sum()} | {(t.status == 'failed').sum()} "
            f"| {t.dice_left.mean():.3f} ± {t.dice_left.std():.3f} "
            f"| {t.dice_right.mean():.3f} ± {t.dice_right.std():.3f} "
            f"| {t.dice_left.min():.2f} / {t.dice_right.min():.2f} | {size('left')} / {size('right')} "
            f"| {both('image_ceiling')} | {both('ceiling')} |"
        )

    out = [
        "| factor | level | images | review | failed | Dice left (mean ± SD) | Dice right (mean ± SD) | worst L / R "
        "| volume vs truth L / R (median %) | image ceiling L / R | planned-grid ceiling L / R |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    if (table.preset == "stress").any():
        stress = factor_levels(table[table.preset == "stress"])
        out.append(line("stress cohort", "all", stress))
        for factor, column in (
            ("reconstruction", "recon_inversion"),
            ("DN contrast third", "contrast_third"),
            ("DN volume third (true)", "volume_third"),
            ("slice thickness", "slice_thickness"),
            ("orientation", "orientation"),
            ("age", "age"),
            ("referencing", "recon_reference"),
        ):
            for level, t in sorted(stress.groupby(column), key=lambda kv: str(kv[0])):
                out.append(line(factor, str(level), t))
    for preset in ("test", "external"):
        t = table[table.preset == preset]
        if len(t):
            out.append(line(f"{preset} cohort", "all", t))
            # per site: which protocol holds the cohort back (each site is one inversion kind and
            # resolution range in `external`; `test` draws its inversion per image)
            for site, s in sorted(t.groupby("site"), key=lambda kv: str(kv[0])):
                kinds = "/".join(sorted(set(s.recon_inversion)))
                out.append(
                    line(
                        f"{preset} site",
                        f"{site} ({kinds}, {s.voxel_x_mm.min():.2f}-{s.voxel_x_mm.max():.2f} x "
                        f"{s.voxel_z_mm.min():.1f}-{s.voxel_z_mm.max():.1f} mm)",
                        s,
                    )
                )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subjects", type=int, default=30, help="stress images (0: test and external only)")
    parser.add_argument("--reference-subjects", type=int, default=12, help="images in each of test and external")
    parser.add_argument("--models", default=None)
    parser.add_argument("--out", default=None, help="also write the per-image table here (TSV)")
    parser.add_argument("--table", default=None, help="summarise a per-image table written by --out instead")
    parser.add_argument(
        "--cohorts",
        default=None,
        type=Path,
        help="keep the generated cohorts here and reuse them in later runs (compare model sets on the same images)",
    )
    add_mirroring_argument(parser)
    args = parser.parse_args()
    if args.table:
        table = pd.read_csv(args.table, sep="\t")
    else:
        segmenter = NnunetMethod(load_model_set(args.models), device="cpu", threads=2, mirroring=args.mirroring)
        with tempfile.TemporaryDirectory() as tmp:
            parts = (
                [evaluate(segmenter, "stress", args.subjects, 2001, Path(tmp), args.cohorts)] if args.subjects else []
            )
            if args.reference_subjects:
                parts += [
                    evaluate(segmenter, "test", args.reference_subjects, 1001, Path(tmp), args.cohorts),
                    evaluate(segmenter, "external", args.reference_subjects, 1002, Path(tmp), args.cohorts),
                ]
            table = pd.concat(parts)
    if args.out:
        write_tsv(args.out, table)  # atomic; makes the folder
    print(f"targets: {TARGETS}; test-time mirroring: {mirroring_used(table)}\n")
    print("\n".join(rows(table)))


if __name__ == "__main__":
    from dnqsm.benchmark_page import publish

    publish("robustness", "Robustness across the looks of real QSM", main, __doc__)
