"""Peak memory and wall time per rule from a workflow run's Snakemake benchmark records.

    .venv/bin/python benchmarks/workflow_peaks.py results/demo/work/benchmarks

Prints a Markdown table (the profiles' resource sizing comes from it).
"""

import sys
from pathlib import Path

import pandas as pd


def main(folder: str) -> None:
    rows = []
    for tsv in sorted(Path(folder).rglob("*.tsv")):
        parts = tsv.relative_to(folder).parts
        rule = "/".join(parts[:-1]) if len(parts) > 1 else tsv.stem  # segment/<method> for the segment batches
        record = pd.read_csv(tsv, sep="\t")
        rows.append({"rule": rule, "s": float(record["s"].iloc[0]), "max_rss_mb": float(record["max_rss"].iloc[0])})
    table = (
        pd.DataFrame(rows)
        .groupby("rule")
        .agg(jobs=("s", "size"), median_s=("s", "median"), max_s=("s", "max"), peak_rss_mb=("max_rss_mb", "max"))
    )
    print("| rule | jobs | median s | max s | peak RSS (MB) |")
    print("| --- | --- | --- | --- | --- |")
    for rule, r in table.iterrows():
        print(f"| {rule} | {int(r.jobs)} | {r.median_s:.1f} | {r.max_s:.1f} | {r.peak_rss_mb:.0f} |")


if __name__ == "__main__":
    from dnqsm.benchmark_page import publish

    publish(
        "workflow_peaks",
        "Workflow resources per rule",
        lambda: main(sys.argv[1] if len(sys.argv) > 1 else "results/demo/work/benchmarks"),
        __doc__,
    )
