"""Time of the longitudinal mode per subject, two ways of aligning the visits.

Usage: python benchmarks/longitudinal_speed.py --keep DIR [--subjects 4] [--compare grid|warm-start]
       [--registration-spacing 1.0]
``DIR`` is a kept test-retest run (``benchmarks/retest.py --keep DIR``: its ``retest/`` cohort and the
networks' results in ``nnunet/``). For each of the first ``--subjects`` subjects, all its scans go through
``dnqsm.engine.longitudinal.longitudinal_subject`` twice in this process, one subject after another (ANTs
single-threaded, as the workflow runs it), the defaults otherwise:
- ``--compare grid``: aligned on the template grid itself (``registration_spacing_mm: null``, the mode
  before 2026-12-01), then on the coarser grid of ``--registration-spacing``;
- ``--compare warm-start``: every template round's alignment started from the identity
  (``warm_start: false``, the mode before 2026-12-02), then each later round from the visit's last one.
Prints one Markdown table: per subject the template grid, seconds each way, and how far the two ways'
labels differ (Dice per side between them, and the largest volume difference of any scan in % of its
volume).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib

from dnqsm.analysis.metrics import dice
from dnqsm.engine.longitudinal import longitudinal_subject
from dnqsm.io import read_tsv
from dnqsm.labels import SIDES
from dnqsm.names import result_path


def markdown(rows: list[dict]) -> list[str]:
    """A Markdown table of dicts with the same keys."""
    head = list(rows[0])
    return [
        "| " + " | ".join(head) + " |",
        "|" + " --- |" * len(head),
        *("| " + " | ".join(str(r[k]) for k in head) + " |" for r in rows),
    ]


def run(keep: Path, rows, out: Path, settings: dict) -> tuple[float, list[dict]]:
    """One subject's scans (``rows`` of the cohort's truth table) through the longitudinal mode."""
    stems = [f"{r.participant_id}_{r.session_id}_Chimap" for r in rows.itertuples()]
    years = [float(v) - 1.0 for v in rows.visit]
    tick = time.perf_counter()
    metas = longitudinal_subject([(keep / "nnunet", s) for s in stems], out, settings=settings, years=years)
    return time.perf_counter() - tick, metas


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", required=True, type=Path, help="folder of a `retest.py --keep` run")
    parser.add_argument("--subjects", type=int, default=4)
    parser.add_argument("--compare", choices=("grid", "warm-start"), default="grid")
    parser.add_argument("--registration-spacing", type=float, default=1.0)
    args = parser.parse_args()
    if args.compare == "grid":
        ways = (
            ("template grid", {"registration_spacing_mm": None}),
            (f"{args.registration_spacing:g} mm grid", {"registration_spacing_mm": args.registration_spacing}),
        )
    else:
        ways = (("identity starts", {"warm_start": False}), ("warm starts", {"warm_start": True}))
    truth = read_tsv(args.keep / "retest" / "derivatives" / "manual" / "truth.tsv")
    (before, before_settings), (after, after_settings) = ways
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for subject in sorted(truth.participant_id.unique())[: args.subjects]:
            scans = truth[truth.participant_id == subject]
            before_dir, after_dir = Path(tmp) / "before" / subject, Path(tmp) / "after" / subject
            before_s, before_metas = run(args.keep, scans, before_dir, before_settings)
            after_s, after_metas = run(args.keep, scans, after_dir, after_settings)
            scores = {"left": [], "right": []}
            worst = 0.0
            for a, b in zip(before_metas, after_metas):
                la = nib.load(result_path(before_dir, a["stem"], "labels")).get_fdata()
                lb = nib.load(result_path(after_dir, b["stem"], "labels")).get_fdata()
                for side, label in SIDES.items():
                    scores[side].append(dice(la == label, lb == label))
                    va, vb = a["dentate"][side]["volume_mm3"], b["dentate"][side]["volume_mm3"]
                    worst = max(worst, 100.0 * abs(vb - va) / max(va, 1e-9))
            record = before_metas[0]["longitudinal"]
            rows.append(
                {
                    "subject": subject,
                    "scans": len(before_metas),
                    "template grid": f"{record['template_shape']} at {record['template_spacing_mm']:.2f} mm",
                    f"s, {before}": round(before_s, 1),
                    f"s, {after}": round(after_s, 1),
                    "speed-up": f"{before_s / after_s:.1f}x",
                    "Dice between the two, left / right (lowest scan)": (
                        f"{min(scores['left']):.3f} / {min(scores['right']):.3f}"
                    ),
                    "largest volume difference %": round(worst, 2),
                }
            )
            print(rows[-1], file=sys.stderr, flush=True)  # progress, not the page's table
    print("\n".join(markdown(rows)))


if __name__ == "__main__":
    from dnqsm.benchmark_page import publish

    publish("longitudinal_speed", "Longitudinal mode: time per subject", main, __doc__)
