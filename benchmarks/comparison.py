"""The paper's comparison on synthetic cohorts: the networks against the atlas baseline.

Usage: make comparison   (runs this script last), or python benchmarks/comparison.py [--root results/comparison]
`make comparison` generates three labelled `train` subjects (one per site) as the atlases and a `test`
and an `external` cohort (20 subjects each, seed 1), and runs `snakemake comparison` on each: both
methods segment every labelled session; Dice is compared with the two-sided Wilcoxon signed-rank test
on the same sessions (pingouin), a failed session counts as Dice 0, time per session is the wall time
the method spent on it with its models or atlases loaded once per job. This script prints both
cohorts' tables (``validation/desc-comparison_table.md``).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("results/comparison"))
    args = parser.parse_args()
    for cohort in ("test", "external"):
        table = args.root / cohort / "dnqsm" / "validation" / "desc-comparison_table.md"
        if not table.exists():
            raise SystemExit(f"{table}: not found; run make comparison first")
        print(table.read_text().rstrip() + "\n")


if __name__ == "__main__":
    from dnqsm.benchmark_page import publish

    publish("comparison", "The paper's comparison on synthetic cohorts", main, __doc__)
