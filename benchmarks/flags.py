"""Does dnqsm say when it is wrong? Sensitivity and false-review rate of the status, per degradation.

Usage: python benchmarks/flags.py [--subjects 12] [--models models/demo] [--no-mirroring]
                                 [--out table.tsv | --table table.tsv]
Generates a fresh `stress` cohort and degraded copies of every image (DN made invisible, heavy noise,
heavy blur, wrong unit, field of view cut through the cerebellum), segments all with `dnqsm segment`'s
engine and scores each result against the truth (labels cut with the image where the field of view
is cut). What users fear most, a label confidently too small or too large, is scored too: the
network's label on each clean image eroded or dilated by one voxel (``eroded``, ``dilated``), its
checks recomputed from the engine's crop, probabilities and metadata (the pass-agreement check needs
a network pass and is left out there); and the clean images are reported again per physics factor
(uncorrected TKD, 2.5 mm slices or thicker, the lowest DN-contrast third). Prints one Markdown table:
per degradation, how many results are poor (worse side Dice < 0.7)
and the share of them marked review or failed (sensitivity), how many are good (worse side Dice >= 0.85)
and the share of them marked review (false-review rate); then the cost of probabilities and checks
against the segmentation time (a second pass without probabilities on the clean images).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage
from segment_accuracy import add_mirroring_argument

from dnqsm.analysis.metrics import dice
from dnqsm.engine.confidence import assess, crop_numbers, thresholds
from dnqsm.engine.localize import Expectation, recorded_crop
from dnqsm.engine.segment import NnunetMethod, load_model_set
from dnqsm.io import bids_path, read_tsv, save_nifti, write_tsv
from dnqsm.labels import SIDES
from dnqsm.names import dentate_labels, result_file, result_path
from dnqsm.synth import write_dataset

TARGETS = "sensitivity >= 0.95 and false-review rate <= 0.10; probabilities + checks <= 15 % of segmentation time"


def degrade(kind: str, values: np.ndarray, labels: np.ndarray, zooms, rng) -> tuple[np.ndarray, np.ndarray]:
    """A degraded copy of one image (in its stored unit) and the truth that goes with it."""
    finite = np.isfinite(values)
    inside = finite & (values != 0)
    out = values.copy()
    if kind == "invisible":  # the nuclei painted over with the tissue around them
        near = ndimage.binary_dilation(labels > 0, iterations=2)
        shell = ndimage.binary_dilation(near, iterations=3) & ~near & inside
        out[near & inside] = rng.normal(np.median(values[shell]), values[shell].std(), int((near & inside).sum()))
    elif kind == "heavy_noise":
        contrast = abs(values[(labels > 0) & finite].mean() - np.median(values[inside]))
        out[inside] += rng.normal(0, 3 * contrast, int(inside.sum()))
    elif kind == "heavy_blur":
        filled = np.where(finite, values, 0)
        out = ndimage.gaussian_filter(filled, [4.0 / z for z in zooms])
        out[~finite] = np.nan
    elif kind == "wrong_unit":
        out = values * 1000.0
    return out.astype(np.float32), labels


def cut_fov(img: nib.Nifti1Image, labels: np.ndarray) -> tuple[nib.Nifti1Image, np.ndarray]:
    """Remove everything below the middle of the nuclei (in world z): a slab that misses half of them.
    Scored against the whole nucleus (``--cut-truth``: against the visible half only): a label of the
    visible half measures half a DN, which is not a result to trust."""
    data = img.get_fdata(dtype=np.float32)
    ijk = np.indices(data.shape).reshape(3, -1).T
    z = nib.affines.apply_affine(img.affine, ijk)[:, 2].reshape(data.shape)
    level = z[labels > 0].mean()
    below = z < level
    data[below] = 0
    return nib.Nifti1Image(data, img.affine, img.header), (np.where(below, 0, labels) if CUT_TRUTH else labels).astype(
        np.uint8
    )


CUT_TRUTH = False  # --cut-truth: score a cut field of view against the visible part of the nucleus only
KINDS = ("clean", "invisible", "heavy_noise", "heavy_blur", "wrong_unit", "cut_fov")
LABEL_KINDS = ("eroded", "dilated")  # the network's label on a clean image made too small / too large
CHECK_COLUMNS = (
    "data_edge_mm",
    "smoothness_fwhm_mm",
    "contrast_cnr",
    "mean_probability",
    "bright_shell_share",
    "dark_rim_share",
    "registration_offset_mm",
    "registration_overlap",
    "expected_volume_mm3",
)


def build(root: Path, tmp: Path) -> list[dict]:
    truth = read_tsv(root / "derivatives/manual/truth.tsv")
    rng = np.random.default_rng(0)
    cases = []
    for r in truth.itertuples():
        sub, ses = r.participant_id[4:], r.session_id[4:]
        image = bids_path(root, sub, ses, "Chimap")
        img = nib.load(image)
        labels = np.asarray(nib.load(dentate_labels(root / "derivatives/manual", sub, ses)).dataobj)
        values = img.get_fdata(dtype=np.float32)
        for kind in KINDS:
            if kind == "clean":
                cases.append({"kind": kind, "image": image, "labels": labels, "truth": truth_row(r)})
                continue
            if kind == "cut_fov":
                out_img, out_labels = cut_fov(img, labels)
            else:
                out, out_labels = degrade(kind, values, labels, img.header.get_zooms()[:3], rng)
                out_img = nib.Nifti1Image(out, img.affine, img.header)
                out_img.header.set_data_dtype(np.float32)
                out_img.header.set_slope_inter(1.0, 0.0)
            path = tmp / "degraded" / f"{image.name.removesuffix('.nii.gz')}_{kind}.nii.gz"
            save_nifti(path, out_img)
            cases.append({"kind": kind, "image": path, "labels": out_labels, "truth": truth_row(r)})
    return cases


def truth_row(r) -> dict:
    """What the per-factor rows need from truth.tsv."""
    return {
        "inversion": r.recon_inversion,
        "thickest_mm": max(r.voxel_x_mm, r.voxel_y_mm, r.voxel_z_mm),
        "dn_contrast_ppb": (r.dn_left_contrast_ppb + r.dn_right_contrast_ppb) / 2,
    }


def relabel(kind: str, folder: Path, meta: dict, truth: np.ndarray) -> dict:
    """The checks on the engine's label of one image made too small (``eroded``) or too large
    (``dilated``) by one voxel per side, recomputed from the engine's crop, probabilities and metadata;
    Dice against the truth on the same crop."""
    stem = meta["stem"]
    cropped = nib.load(result_file(folder, stem, "crop"))
    labeled = np.asarray(nib.load(result_file(folder, stem, "crop_labels")).dataobj)
    probability = nib.load(result_file(folder, stem, "crop_probability")).get_fdata(dtype=np.float32)
    values = cropped.get_fdata(dtype=np.float32)
    changed = np.zeros_like(labeled)
    for label in (1, 2):
        side = labeled == label
        side = ndimage.binary_erosion(side) if kind == "eroded" else ndimage.binary_dilation(side) & (changed == 0)
        changed[side & ((labeled == 0) | (labeled == label))] = label
    expected = Expectation.from_record(meta.get("localization"))
    voxel_mm3 = float(abs(np.linalg.det(cropped.affine[:3, :3])))
    voxels = {side: int((changed == label).sum()) for side, label in SIDES.items()}
    edges = recorded_crop(meta)[1]
    sides = crop_numbers(
        values, changed, probability, voxels, cropped.affine, meta["midline_x_mm"], None, expected, edges
    )
    volumes = {side: count * voxel_mm3 for side, count in voxels.items()}
    verdict = assess(
        sides, volumes, meta["box"], meta["image"]["spacing_mm"], thresholds(meta["confidence"]["thresholds"])
    )
    row = {"status": verdict.status, "reasons": "; ".join(verdict.reasons)}
    for side, label in SIDES.items():
        row[f"dice_{side}"] = dice(changed == label, truth == label)
        row[f"volume_mm3_{side}"] = volumes[side]
        for check in CHECK_COLUMNS:
            row[f"{check}_{side}"] = verdict.sides[side].get(check)  # with the expected volume
    return row


def truth_on_crop(labels: np.ndarray, image: Path, meta: dict) -> np.ndarray:
    """The truth on the engine's canonical crop (``crop_voxels_canonical`` of the metadata)."""
    img = nib.load(image)
    canonical = nib.as_closest_canonical(nib.Nifti1Image(labels.astype(np.uint8), img.affine))
    return np.asarray(canonical.dataobj)[recorded_crop(meta)[0]]


def score(segmenter: NnunetMethod, cases: list[dict], out: Path) -> pd.DataFrame:
    records = segmenter.run([c["image"] for c in cases], out)
    rows = []
    for case, rec in zip(cases, records):
        row = {
            "kind": case["kind"],
            "image": rec["stem"],
            "status": rec["status"],
            "reasons": "; ".join(rec.get("review_reasons") or []) or rec.get("error") or "",
            "seconds": rec["timings_s"]["total"],
        }
        pred = (
            np.asarray(nib.load(result_path(out, rec["stem"], "labels")).dataobj)
            if rec["status"] != "failed"
            else np.zeros_like(case["labels"])
        )
        for side, label in SIDES.items():
            row[f"dice_{side}"] = (
                dice(pred == label, case["labels"] == label) if (case["labels"] == label).any() else np.nan
            )
        row["dice_worse"] = np.nanmin([row["dice_left"], row["dice_right"]])
        sides = (rec.get("confidence") or {}).get("sides") or {}
        for side in ("left", "right"):  # the numbers behind the checks, to see where a threshold falls
            row[f"volume_mm3_{side}"] = ((rec.get("dentate") or {}).get(side) or {}).get("volume_mm3")
            for check in CHECK_COLUMNS:
                row[f"{check}_{side}"] = (sides.get(side) or {}).get(check)
        row.update(case["truth"])
        rows.append(row)
        if case["kind"] == "clean" and rec["status"] != "failed":
            truth = truth_on_crop(case["labels"], case["image"], rec)
            for kind in LABEL_KINDS:
                changed = {
                    "kind": kind,
                    "image": rec["stem"],
                    "seconds": np.nan,
                    **case["truth"],
                    **relabel(kind, out / rec["stem"], rec, truth),
                }
                changed["dice_worse"] = np.nanmin([changed["dice_left"], changed["dice_right"]])
                rows.append(changed)
    return pd.DataFrame(rows)


def summary(table: pd.DataFrame) -> list[str]:
    out = [
        "| degradation | results | poor (Dice < 0.7) | sensitivity | good (Dice >= 0.85) | false-review rate |",
        "| --- | --- | --- | --- | --- | --- |",
    ]

    def line(name: str, t: pd.DataFrame) -> str:
        poor, good = t[t.dice_worse < 0.7], t[t.dice_worse >= 0.85]
        sens = f"{(poor.status != 'ok').mean():.2f}" if len(poor) else "n/a"
        false = f"{(good.status == 'review').mean():.2f}" if len(good) else "n/a"
        return f"| {name} | {len(t)} | {len(poor)} | {sens} | {len(good)} | {false} |"

    for kind in KINDS + LABEL_KINDS:
        out.append(line(kind.replace("_", " "), table[table.kind == kind]))
    out.append(line("**all**", table))
    if "inversion" in table:  # the clean images again, per physics factor
        clean = table[table.kind == "clean"]
        third = clean.dn_contrast_ppb.quantile(1 / 3)
        for name, rows in (
            ("clean, TKD without correction", clean[clean.inversion == "tkd"]),
            ("clean, slices >= 2.5 mm", clean[clean.thickest_mm >= 2.5]),
            (f"clean, lowest DN-contrast third (<= {third:.0f} ppb)", clean[clean.dn_contrast_ppb <= third]),
        ):
            out.append(line(name, rows))
    return out


#: The checks' numbers shown per group of results, with the threshold they are held against.
RANGE_CHECKS = (  # numbers whose range the page shows, beside what the checks accept
    "bright_shell_share",
    "dark_rim_share",
    "registration_offset_mm",
    "registration_overlap",
    "expected_volume_ratio",
    "contrast_cnr",
    "smoothness_fwhm_mm",
    "data_edge_mm",
)


def check_ranges(table: pd.DataFrame) -> list[str]:
    """Where each check's number falls (min-max over both sides): on good results (worse side Dice
    >= 0.85) of the clean images, per reconstruction and for thick slices, and on the labels made too
    small or too large; beside the default threshold. Where a threshold comes from."""
    from dnqsm.engine.confidence import DEFAULTS, accepted_range

    table = table.copy()
    for side in ("left", "right"):
        if {f"volume_mm3_{side}", f"expected_volume_mm3_{side}"} <= set(table.columns):
            table[f"expected_volume_ratio_{side}"] = table[f"volume_mm3_{side}"] / table[f"expected_volume_mm3_{side}"]
    clean = table[(table.kind == "clean") & (table.dice_worse >= 0.85)]
    groups = [("good clean, all", clean)]
    groups += [(f"good clean, {name}", rows) for name, rows in clean.groupby("inversion")]
    groups += [
        ("good clean, slices >= 2.5 mm", clean[clean.thickest_mm >= 2.5]),
        ("eroded", table[table.kind == "eroded"]),
        ("dilated", table[table.kind == "dilated"]),
    ]

    def span(rows: pd.DataFrame, check: str) -> str:
        values = pd.concat([rows[f"{check}_left"], rows[f"{check}_right"]]).astype(float).dropna()
        return f"{values.min():.2f}–{values.max():.2f}" if len(values) else "n/a"

    out = [
        "| check | default threshold | " + " | ".join(f"{name} ({len(rows)})" for name, rows in groups) + " |",
        "| --- | --- | " + " | ".join("---" for _ in groups) + " |",
    ]
    for check in RANGE_CHECKS:
        if f"{check}_left" in table:
            bound = accepted_range(check, DEFAULTS)
            out.append(f"| {check} | {bound} | " + " | ".join(span(rows, check) for _, rows in groups) + " |")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subjects", type=int, default=12)
    parser.add_argument("--models", default=None)
    parser.add_argument("--out", default=None, help="also write the per-result table here (TSV)")
    parser.add_argument("--table", default=None, help="summarise a per-result table written by --out instead")
    add_mirroring_argument(parser)
    parser.add_argument("--cut-truth", action="store_true", help="score a cut field of view against the visible half")
    args = parser.parse_args()
    global CUT_TRUTH
    CUT_TRUTH = args.cut_truth
    cost = None
    if args.table:
        table = pd.read_csv(args.table, sep="\t")
    else:
        models = load_model_set(args.models)
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            root = write_dataset(tmp / "stress", "stress", subjects=args.subjects, sessions=1, seed=3001, jobs=2)
            cases = build(root, tmp)
            segmenter = NnunetMethod(models, device="cpu", threads=2, mirroring=args.mirroring)
            table = score(segmenter, cases, tmp / "out")
            clean = [c for c in cases if c["kind"] == "clean"]
            plain = NnunetMethod(models, device="cpu", threads=2, mirroring=args.mirroring, probabilities=False)
            records, timed = [], []
            for c in clean:  # alternating, so that load on the machine touches both alike
                records += plain.run([c["image"]], tmp / "plain")
                timed += segmenter.run([c["image"]], tmp / "timed")

            def seg(rs: list[dict]) -> float:
                return float(np.median([r["timings_s"]["localization"] + r["timings_s"]["segmentation"] for r in rs]))

            checks = float(np.median([r["timings_s"]["confidence"] for r in timed]))
            registration = float(np.median([r["timings_s"]["registration"] for r in timed]))
            cost = (seg(timed), seg(records), checks, registration)
    if args.out:
        write_tsv(args.out, table)  # atomic; makes the folder
    print(f"targets: {TARGETS}\n")
    print("\n".join(summary(table)))
    print("\nWhere each check's number falls (both sides; results in brackets):\n")
    print("\n".join(check_ranges(table)))
    if cost:
        with_probs, without, checks, registration = cost
        extra = with_probs - without + checks
        print(
            "\n| clean images, median s per image | localization + segmentation | checks | cost of confidence "
            "(probabilities + checks) | registration (the localization's second opinion) |"
        )
        print("| --- | --- | --- | --- | --- |")
        if extra > 0:
            share = f"{extra:.2f} s ({100 * extra / without:.0f} % of {without:.2f} s)"
        else:  # the two runs differ by less than the machine's run-to-run noise
            share = f"none measurable ({extra:+.2f} s: within run-to-run noise)"
        print(f"| with probabilities | {with_probs:.2f} | {checks:.3f} | {share} | {registration:.2f} |")
        print(f"| without probabilities | {without:.2f} | | | |")
        print(
            "\nThe registration places the crop where the localization network fails and carries the MNI nuclei "
            "onto the image; the registration checks (place, overlap, expected volume) reuse its fit at no cost "
            "of their own."
        )


if __name__ == "__main__":
    from dnqsm.benchmark_page import publish

    publish("flags", "Does dnqsm say when it is wrong?", main, __doc__)
