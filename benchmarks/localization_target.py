"""Which localization target: the DN region or the cerebellum? Measured Dice and speed.

Usage: python benchmarks/localization_target.py [--work results/train/compare]
Trains a cerebellum localization model with exactly the default schedule (the configuration schema) on the same
`train` cohort (results/train/bids, from `make demo-models`), then compares it with the DN-region
model trained there: nnU-Net validation Dice, training time, and the crop each target leads to
(box + margin, in native voxels), which sets the cost of the segmentation step.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import yaml

from dnqsm.engine.localize import label_region, localization_input, region_slices
from dnqsm.names import structure_labels
from dnqsm.settings import defaults
from dnqsm.workflow.bids import chimap_sessions, dentate_labels

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work", default="results/train/compare")
    args = parser.parse_args()
    config = defaults()
    train = config["train"]
    dn_record = Path(train["work_dir"]) / "results/localization/fold_0/training.json"
    work = Path(args.work).absolute()
    train.update({"work_dir": str(work), "out_dir": str(work / "models")})
    train["localization"].update({"target": "cerebellum", "dataset_id": 511})
    train["segmentation"]["dataset_id"] = 512
    work.mkdir(parents=True, exist_ok=True)
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    target = str(work / "results/localization/fold_0/checkpoint_final.pth")
    subprocess.run(
        [sys.executable, "-m", "snakemake", target, "--cores", "2", "--configfile", str(work / "config.yaml")],
        check=True,
        cwd=REPO,
    )
    records = {
        "DN region": json.loads(dn_record.read_text()),
        "cerebellum": json.loads((work / "results/localization/fold_0/training.json").read_text()),
    }
    spacing, margin = train["localization"]["spacing_mm"], train["segmentation"]["margin_mm"]
    crops = {"DN region": [], "cerebellum": []}
    for session in chimap_sessions(train["bids_dir"])[:10]:
        img = nib.load(session.image)
        coarse, grid = localization_input(img, spacing)
        masks = {
            "DN region": nib.load(dentate_labels(train["labels_dir"], session)),
            "cerebellum": nib.load(
                structure_labels(train["labels_dir"], session.subject, session.session, "cerebellum")
            ),
        }
        for name, mask in masks.items():
            region = label_region(mask, grid, coarse.shape, dilate_voxels=2 if name == "DN region" else 0)
            slices, _ = region_slices(img, region, grid, margin)
            crops[name].append(np.prod([s.stop - s.start for s in slices]) / 1e6)
    print("| localization target | nnU-Net validation Dice | training s | crop M voxels (median of 10) |")
    print("| --- | --- | --- | --- |")
    for name, record in records.items():
        print(f"| {name} | {record['validation_dice']:.3f} | {record['seconds']:.0f} | {np.median(crops[name]):.2f} |")


if __name__ == "__main__":
    from dnqsm.benchmark_page import publish

    publish("localization_target", "Localization target: DN region or cerebellum", main, __doc__)
