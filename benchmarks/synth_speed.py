"""Benchmark: wall time and peak memory of `dnqsm synth`, per subject-session, on this machine.

Usage: python benchmarks/synth_speed.py [--images N]
Prints a Markdown table (one row per preset).
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from dnqsm.io import read_tsv
from dnqsm.synth import write_dataset
from dnqsm.synth.template import load_template


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=4, help="subject-sessions per preset (1 session each)")
    args = parser.parse_args()
    t0 = time.perf_counter()
    load_template()
    template_s = time.perf_counter() - t0
    print(f"template load (once per process): {template_s:.1f} s\n")
    print("| preset | images | voxels per image (median) | voxel size mm (median) | seconds per image | peak RSS GiB |")
    print("| --- | --- | --- | --- | --- | --- |")
    for preset in ("demo", "train", "external"):
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            out = write_dataset(Path(tmp) / preset, preset, subjects=args.images, sessions=1, seed=123, jobs=1)
            per_image = (time.perf_counter() - start) / args.images
            truth = read_tsv(out / "derivatives/manual/truth.tsv")
            voxels = np.median(truth.shape_i * truth.shape_j * truth.shape_k) / 1e6
            size = np.median(np.cbrt(truth.voxel_x_mm * truth.voxel_y_mm * truth.voxel_z_mm))
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
            print(f"| {preset} | {len(truth)} | {voxels:.1f} M | {size:.2f} | {per_image:.1f} | {peak:.1f} |")


if __name__ == "__main__":
    from dnqsm.benchmark_page import publish

    publish("synth_speed", "Synthetic cohort generation speed", main, __doc__)
