"""Snakemake entry point: provenance of the trained models (what made them, how well they did)."""

import json
import os
import platform
from importlib.metadata import version
from pathlib import Path

from dnqsm.io import write_json
from dnqsm.engine.nnunet import TRAINER, sha256
from dnqsm.engine.nnunet_trainers.nnUNetTrainerDNQSM import QSM_AUGMENTATION

snakemake = globals()["snakemake"]
train = snakemake.params.train
records = {json.loads(Path(r).read_text())["model"]: json.loads(Path(r).read_text()) for r in snakemake.input.records}
datasets = json.loads(Path(snakemake.input.datasets).read_text())
# A model fine-tuned from another (train.<model>.init_from) carries that model's hash and, when its
# provenance.json lies beside the zip, the whole record: the chain of stages stays reproducible.
# A model carried over unchanged (train.<model>.keep) is linked the same way, under "keep".
for model, record in records.items():
    for key in ("init_from", "keep"):
        source = train[model].get(key)
        if source:
            beside = Path(source).with_name("provenance.json")
            record[key] = {"zip": str(source), "sha256": sha256(source),
                           "provenance": json.loads(beside.read_text()) if beside.is_file() else None}
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
