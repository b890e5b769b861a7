"""The ``dnqsm`` command line."""

from __future__ import annotations

import argparse
import sys
import time

from dnqsm import __version__
from dnqsm.names import RESULT_FILES


def _generated(command: str, make, where: list[str]) -> int:
    """Run a generator of a labelled BIDS dataset for ``dnqsm <command>``: one line on success naming
    the folder and where things are in it, one on a SynthError (exit code 2)."""
    from dnqsm.synth import SynthError

    start = time.perf_counter()
    try:
        out = make()
    except SynthError as exc:
        print(f"dnqsm {command}: error: {exc}", file=sys.stderr)
        return 2
    print(f"dnqsm {command}: wrote {out} ({time.perf_counter() - start:.1f} s)")
    for line in where:
        print(line.format(out=out))
    return 0


def _synth(args: argparse.Namespace) -> int:
    from dnqsm.synth import write_dataset
    from dnqsm.synth.dataset import parse_age_strata

    def make():
        ages = parse_age_strata(args.ages) if args.ages else None
        return write_dataset(
            args.out,
            args.preset,
            args.subjects,
            args.sessions,
            args.seed,
            args.overwrite,
            args.jobs,
            age_strata=ages,
            first_label=args.first_label,
        )

    return _generated(
        "synth",
        make,
        [
            "  images: {out}/sub-*/ses-*/anat/*_Chimap.nii.gz",
            "  truth:  {out}/derivatives/manual (labels, cerebellum masks, truth.tsv)",
        ],
    )


def _randomize(args: argparse.Namespace) -> int:
    from dnqsm.synth.randomized import write_randomized

    def make():
        return write_randomized(
            args.out, args.images, args.seed, args.phantom, args.first_label, args.jobs, args.overwrite
        )

    return _generated(
        "randomize",
        make,
        [
            "  images: {out}/sub-*/anat/*_Chimap.nii.gz",
            "  labels: {out}/derivatives/manual (and drawn.tsv: what each image drew)",
        ],
    )


def _checks(pairs: list[str]) -> dict[str, float]:
    """``NAME=VALUE`` pairs of --check into threshold overrides (the names of config ``confidence``)."""
    from dnqsm.engine.confidence import thresholds

    overrides = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"--check {pair!r}: expected NAME=VALUE, e.g. min_volume_mm3=300")
        try:
            overrides[name.strip()] = float(value)
        except ValueError:
            raise ValueError(f"--check {pair!r}: {value!r} is not a number") from None
    return thresholds(overrides)


def _segment(args: argparse.Namespace) -> int:
    from dnqsm.engine.segment import NnunetMethod, load_model_set

    try:
        checks = _checks(args.check or [])
    except ValueError as exc:
        print(f"dnqsm segment: error: {exc}", file=sys.stderr)
        return 2
    try:
        models = load_model_set(args.models, args.localization_model, args.segmentation_model)
        if args.localization_spacing_mm:
            models.geometry["localization_spacing_mm"] = args.localization_spacing_mm
        if args.margin_mm is not None:
            models.geometry["margin_mm"] = args.margin_mm
        folds = tuple(args.folds) if args.folds else None
        segmenter = NnunetMethod(
            models, device=args.device, folds=folds, mirroring=args.mirroring, threads=args.threads
        )
        segmenter.checks = checks
        segmenter.allow_unknown_orientation = args.allow_unknown_orientation
    except (FileNotFoundError, RuntimeError) as exc:
        print(f"dnqsm segment: error: {exc}", file=sys.stderr)
        return 2
    records = segmenter.run(args.input, args.output)
    failed = [r for r in records if r["status"] == "failed"]
    review = [r for r in records if r["status"] == "review"]
    for r in records:
        if r["status"] == "failed":
            print(f"FAILED  {r['stem']}: {r['error']}", file=sys.stderr)
            continue
        d = r["dentate"]
        line = (
            f"{r['status']:<7} {r['stem']}: left {d['left']['volume_mm3']:.0f} mm3, "
            f"right {d['right']['volume_mm3']:.0f} mm3, {r['timings_s']['total']:.1f} s"
        )
        if r["review_reasons"]:
            line += " -- needs review: " + "; ".join(r["review_reasons"])
        print(line)
    print(
        f"dnqsm segment: {len(records) - len(failed)} of {len(records)} images segmented into {args.output} "
        f"({len(records) - len(failed) - len(review)} ok, {len(review)} need review, {len(failed)} failed)"
    )
    if failed:
        return 1
    return 3 if (review and args.strict) else 0


def build_parser() -> argparse.ArgumentParser:
    """The ``dnqsm`` command line: one subcommand each for synth, randomize and segment."""
    parser = argparse.ArgumentParser(prog="dnqsm", description="Dentate nucleus segmentation on QSM, cohort-scale.")
    parser.add_argument("--version", action="version", version=f"dnqsm {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_synth(sub)
    _add_randomize(sub)
    _add_segment(sub)
    return parser


def _add_synth(sub: argparse._SubParsersAction) -> None:
    from dnqsm.synth import PRESETS

    synth = sub.add_parser(
        "synth",
        help="generate a synthetic BIDS QSM cohort with ground truth",
        description="Generate a synthetic BIDS QSM cohort with known dentate labels and planted effects.",
    )
    synth.add_argument("--out", required=True, help="output BIDS directory (must be new or empty unless --overwrite)")
    synth.add_argument(
        "--preset",
        default="demo",
        choices=sorted(PRESETS),
        metavar="PRESET",
        help=f"cohort recipe: {', '.join(PRESETS)} (default: demo)",
    )
    synth.add_argument("--subjects", type=int, default=None, help="number of participants (default: the preset's)")
    synth.add_argument(
        "--sessions",
        type=int,
        default=None,
        help="visits per participant, before missed visits (default: the preset's)",
    )
    synth.add_argument("--seed", type=int, default=0, help="random seed; same arguments give byte-identical files")
    synth.add_argument(
        "--jobs", type=int, default=1, help="parallel worker processes, each generating one scan at a time (default: 1)"
    )
    synth.add_argument("--overwrite", action="store_true", help="replace an existing non-empty output directory")
    synth.add_argument(
        "--ages",
        default=None,
        metavar="RANGES",
        help="baseline ages drawn from these ranges in turn, each group through each, e.g. "
        "8-17,18-59,60-80 (default: the preset's age range per group)",
    )
    synth.add_argument(
        "--first-label",
        type=int,
        default=1,
        metavar="N",
        help="number participants from N, e.g. 101, so that cohorts can be pooled for training "
        "without shared labels; the images do not depend on it (default: 1)",
    )
    synth.set_defaults(func=_synth)


def _add_randomize(sub: argparse._SubParsersAction) -> None:
    rand = sub.add_parser(
        "randomize",
        help="generate domain-randomized labelled training images (SynthSeg-style)",
        description="Draw QSM-like training images from label maps with random intensities per "
        "structure (the dentate kept above its white matter), pose, deformation, "
        "field of view, resolution, texture, background field, blur and noise.",
    )
    rand.add_argument("--out", required=True, help="output BIDS directory (must be new or empty unless --overwrite)")
    rand.add_argument("--images", type=int, default=40, help="number of images, one participant each (default: 40)")
    rand.add_argument(
        "--phantom",
        default=None,
        metavar="NIFTI",
        help="a head segmentation in the QSM Challenge 2.0 labels (SegmentedModel.nii.gz; dentate 5) "
        "drawn for every other image; without it every image is drawn from the MNI template",
    )
    rand.add_argument("--seed", type=int, default=0, help="random seed; same arguments give the same images")
    rand.add_argument("--jobs", type=int, default=1, help="parallel worker processes (default: 1)")
    rand.add_argument("--overwrite", action="store_true", help="replace an existing non-empty output directory")
    rand.add_argument(
        "--first-label",
        type=int,
        default=1,
        metavar="N",
        help="number participants from N, so the images can be pooled with another cohort (default: 1)",
    )
    rand.set_defaults(func=_randomize)


def _add_segment(sub: argparse._SubParsersAction) -> None:
    seg = sub.add_parser(
        "segment",
        help="segment the dentate nuclei of one or more QSM images",
        description="Two-step nnU-Net dentate segmentation. Writes DentateSeg's layout per image: "
        f"OUTDIR/<stem>/<stem>{RESULT_FILES['labels']} (left 1, right 2 on the input "
        f"grid), {', '.join(v for k, v in RESULT_FILES.items() if k not in ('labels', 'metadata'))} "
        f"and {RESULT_FILES['metadata']} (status ok, review with review_reasons, or "
        "failed). Exit code 1 if any image failed; 3 with --strict if any needs review.",
    )
    seg.add_argument("-i", "--input", nargs="+", required=True, metavar="IMG", help="QSM NIfTI images")
    seg.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="output folder")
    seg.add_argument(
        "--models",
        default=None,
        metavar="DIR",
        help="folder with localization.zip and segmentation.zip (default: the bundled demo models)",
    )
    seg.add_argument("--localization-model", default=None, metavar="PATH", help="nnU-Net model folder or exported zip")
    seg.add_argument("--segmentation-model", default=None, metavar="PATH", help="nnU-Net model folder or exported zip")
    seg.add_argument("--device", choices=["cpu", "cuda", "auto"], default="auto", help="default: auto")
    seg.add_argument("--folds", nargs="+", default=None, help="folds to ensemble (default: all trained folds)")
    seg.add_argument(
        "--mirroring",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="test-time mirroring, nnU-Net's default (8 passes in 3D, about 5x the time on CPU; "
        "default: on; --no-mirroring for speed)",
    )
    seg.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    seg.add_argument("--localization-spacing-mm", type=float, default=None, help=argparse.SUPPRESS)
    seg.add_argument(
        "--margin-mm",
        type=float,
        default=None,
        help="margin around the localized region (default: the models' provenance, else 5)",
    )
    seg.add_argument(
        "--allow-unknown-orientation",
        action="store_true",
        help="segment images whose sform and qform codes are both 0, taking their default affine "
        "as scanner space (left and right are then only as right as that guess)",
    )
    seg.add_argument(
        "--strict", action="store_true", help="exit with code 3 when any image needs review (default: review exits 0)"
    )
    seg.add_argument(
        "--check",
        action="append",
        default=None,
        metavar="NAME=VALUE",
        help="override a plausibility threshold, e.g. --check min_volume_mm3=300 (names: docs/status.md)",
    )
    seg.set_defaults(func=_segment)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
