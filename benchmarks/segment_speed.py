"""Speed and memory of the two-step engine on 1 mm whole-brain images, 2 CPU threads.

Usage: python benchmarks/segment_speed.py [--models models/demo] [--images 8]
Rows: one image per process (model loading included each time) versus a batch in one process,
test-time mirroring off and on, and a single-step baseline (the segmentation model slid over the
whole image, no localization). Each configuration runs in a fresh child process so its peak RSS
is its own.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
from dnqsm.engine.segment import NnunetMethod, load_model_set
args = json.loads(sys.argv[1])
seg = NnunetMethod(load_model_set(args["models"]), device="cpu", mirroring=args["mirroring"], threads=2)
load = time.perf_counter() - t0
start = time.perf_counter()
if args["baseline"]:
    import nibabel as nib, numpy as np
    from dnqsm.engine.nnunet import to_nnunet
    for path in args["images"]:
        img = nib.as_closest_canonical(nib.load(path))
        data, props = to_nnunet(np.nan_to_num(img.get_fdata(dtype=np.float32)), img.header.get_zooms()[:3])
        seg.predictors["segmentation"].predict_single_npy_array(data, props)
else:
    records = seg.run(args["images"], args["out"])
    # a result marked review is a finished segmentation (its time counts); a failed one is not
    assert all(r["status"] != "failed" for r in records), [r.get("error") for r in records]
work = time.perf_counter() - start
print(json.dumps({"load": load, "work": work, "peak_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))
"""


def child(models, images, out, mirroring=False, baseline=False) -> dict:
    start = time.perf_counter()
    args = json.dumps(
        {
            "models": models,
            "images": [str(i) for i in images],
            "out": str(out),
            "mirroring": mirroring,
            "baseline": baseline,
        }
    )
    run = subprocess.run([sys.executable, "-c", CHILD, args], capture_output=True, text=True)
    if run.returncode != 0:
        raise SystemExit(f"the benchmark's child process failed on {args}:\n{run.stderr[-3000:]}")
    result = json.loads(run.stdout.strip().splitlines()[-1])
    result["wall"] = time.perf_counter() - start
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", default=None)
    parser.add_argument("--images", type=int, default=8)
    args = parser.parse_args()
    from dnqsm.synth import write_dataset

    with tempfile.TemporaryDirectory() as tmp:
        root = write_dataset(Path(tmp) / "bids", "demo", subjects=args.images, sessions=1, seed=77, jobs=2)
        images = sorted(root.glob("sub-*/ses-*/anat/*_Chimap.nii.gz"))
        out = Path(tmp) / "out"
        rows = []
        singles = [child(args.models, [img], out) for img in images]
        rows.append(
            (
                "one image per process, mirroring off",
                len(images),
                sum(s["wall"] for s in singles) / len(images),
                sum(s["load"] for s in singles) / len(images),
                max(s["peak_gib"] for s in singles),
            )
        )
        batch = child(args.models, images, out)
        rows.append(
            (
                f"batch of {len(images)} in one process, mirroring off",
                len(images),
                batch["wall"] / len(images),
                batch["load"],
                batch["peak_gib"],
            )
        )
        few = images[:2]
        mirrored = child(args.models, few, out, mirroring=True)
        rows.append(
            ("batch, mirroring on", len(few), mirrored["wall"] / len(few), mirrored["load"], mirrored["peak_gib"])
        )
        base = child(args.models, few, out, baseline=True)
        rows.append(
            (
                "single-step baseline (segmentation model on the whole image)",
                len(few),
                base["wall"] / len(few),
                base["load"],
                base["peak_gib"],
            )
        )
    print("| configuration | images | wall s per image (incl. start-up) | model load s | peak RSS GiB |")
    print("| --- | --- | --- | --- | --- |")
    for name, n, per, load, peak in rows:
        print(f"| {name} | {n} | {per:.1f} | {load:.1f} | {peak:.2f} |")


if __name__ == "__main__":
    from dnqsm.benchmark_page import publish

    publish("segment_speed", "Engine speed and memory", main, __doc__)
