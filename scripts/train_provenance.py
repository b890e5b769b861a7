"""Snakemake entry point: provenance of the trained models (what made them, how well they did)."""

import json
import os
import platform
from importlib.metadata import version
from pathlib import Path

from dnqsm.io import write_json
from dnqsm.nnunet import TRAINER
from dnqsm.nnunet_trainers.nnUNetTrainerDNQSM import QSM_AUGMENTATION

snakemake = globals()["snakemake"]
train = snakemake.params.train
records = {json.loads(Path(r).read_text())["model"]: json.loads(Path(r).read_text()) for r in snakemake.input.records}
datasets = json.loads(Path(snakemake.input.datasets).read_text())
write_json(snakemake.output.provenance, {
    "command": os.environ.get("DNQSM_TRAIN_COMMAND", "snakemake --cores 2 train_models"),
    "config": train,
    "seed": train["seed"],
    "training_cases": len(datasets["cases"]),
    "skipped_cases": datasets["skipped"],
    "geometry": {"localization_spacing_mm": train["localization"]["spacing_mm"],
                 "margin_mm": train["segmentation"]["margin_mm"]},
    "trainer": TRAINER,
    "augmentation_beyond_nnunet_defaults": QSM_AUGMENTATION,
    "models": records,
    "versions": {pkg: version(pkg) for pkg in ("dnqsm", "nnunetv2", "torch", "numpy", "nibabel")},
    "python": platform.python_version(),
})
