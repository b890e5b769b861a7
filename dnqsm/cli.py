"""The ``dnqsm`` command line."""

from __future__ import annotations

import argparse
import sys
import time

from dnqsm import __version__


def _synth(args: argparse.Namespace) -> int:
    from dnqsm.synth import SynthError, write_dataset

    start = time.perf_counter()
    try:
        out = write_dataset(args.out, args.preset, args.subjects, args.sessions, args.seed, args.overwrite, args.jobs)
    except SynthError as exc:
        print(f"dnqsm synth: error: {exc}", file=sys.stderr)
        return 2
    print(f"dnqsm synth: wrote {out} ({time.perf_counter() - start:.1f} s)")
    print(f"  images: {out}/sub-*/ses-*/anat/*_Chimap.nii.gz")
    print(f"  truth:  {out}/derivatives/manual (labels, cerebellum masks, truth.tsv)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from dnqsm.synth import PRESETS

    parser = argparse.ArgumentParser(prog="dnqsm", description="Dentate nucleus segmentation on QSM, cohort-scale.")
    parser.add_argument("--version", action="version", version=f"dnqsm {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    synth = sub.add_parser("synth", help="generate a synthetic BIDS QSM cohort with ground truth",
                           description="Generate a synthetic BIDS QSM cohort with known dentate labels and planted effects.")
    synth.add_argument("--out", required=True, help="output BIDS directory (must be new or empty unless --overwrite)")
    synth.add_argument("--preset", default="demo", choices=sorted(PRESETS), metavar="PRESET",
                       help=f"cohort recipe: {', '.join(PRESETS)} (default: demo)")
    synth.add_argument("--subjects", type=int, default=None, help="number of participants (default: the preset's)")
    synth.add_argument("--sessions", type=int, default=None, help="visits per participant, before missed visits (default: the preset's)")
    synth.add_argument("--seed", type=int, default=0, help="random seed; same arguments give byte-identical files")
    synth.add_argument("--jobs", type=int, default=1, help="parallel worker processes (default: 1)")
    synth.add_argument("--overwrite", action="store_true", help="replace an existing non-empty output directory")
    synth.set_defaults(func=_synth)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
