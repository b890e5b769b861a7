"""Provenance of trained models: what made them (configuration, data, trainer, versions) and, for a
model continued from another, that model's own record, so that the chain of stages stays reproducible."""

from __future__ import annotations

import json
import os
import platform
from importlib.metadata import version
from pathlib import Path
from typing import Any

from dnqsm.engine.nnunet import TRAINER, sha256
from dnqsm.engine.nnunet_trainers.nnUNetTrainerDNQSM import QSM_AUGMENTATION
from dnqsm.io import write_json


class ValidationFailure(ValueError):
    """A trained fold that failed nnU-Net's own validation: the model would find next to nothing."""


def check_validation(model: str, runs: list[dict[str, Any]], floor: float) -> None:
    """Raise ValidationFailure naming every fold of ``model`` whose validation Dice (its training record,
    ``training.json``) is below ``floor``; folds without validation (fold ``all``) are not judged."""
    failed = [run for run in runs if run.get("validation_dice") is not None and run["validation_dice"] < floor]
    if failed:
        folds = ", ".join(f"fold {run['fold']} reached {run['validation_dice']:.2f}" for run in failed)
        raise ValidationFailure(
            f"the {model} model failed nnU-Net's own validation: {folds} (mean Dice on held-out cases; "
            f"train.min_validation_dice is {floor:g}). Train longer (train.{model}.epochs) or continue "
            f"from the bundled models (train.{model}.init_from: models/demo/{model}.zip); to export it "
            "anyway, set train.min_validation_dice: 0 and add --rerun-triggers mtime to keep the trained folds"
        )


def provenance(records: list[str | Path], datasets: str | Path, train: dict[str, Any]) -> dict[str, Any]:
    """The provenance record of both models from their training records (``models/<model>.json``),
    the training datasets' record and the ``train`` configuration. A model fine-tuned from another
    (``train.<model>.init_from``) carries that model's hash and, when its provenance.json lies beside
    the zip, the whole record; a model carried over unchanged (``train.<model>.keep``) is linked the
    same way, under ``keep``."""
    by_model = {}
    for path in records:
        record = json.loads(Path(path).read_text())
        by_model[record["model"]] = record
    cases = json.loads(Path(datasets).read_text())
    for model, record in by_model.items():
        for key in ("init_from", "keep"):
            source = train[model].get(key)
            if source:
                beside = Path(source).with_name("provenance.json")
                record[key] = {
                    "zip": str(source),
                    "sha256": sha256(source),
                    "provenance": json.loads(beside.read_text()) if beside.is_file() else None,
                }
    return {
        "command": os.environ.get("DNQSM_TRAIN_COMMAND", "snakemake --cores 2 train_models"),
        "config": train,
        "seed": train["seed"],
        "training_cases": len(cases["cases"]),
        "skipped_cases": cases["skipped"],
        "geometry": {
            "localization_spacing_mm": train["localization"]["spacing_mm"],
            "margin_mm": train["segmentation"]["margin_mm"],
        },
        "trainer": TRAINER,
        "augmentation_beyond_nnunet_defaults": QSM_AUGMENTATION,
        "models": by_model,
        "versions": {pkg: version(pkg) for pkg in ("dnqsm", "nnunetv2", "torch", "numpy", "nibabel")},
        "python": platform.python_version(),
    }


def write_provenance(path: str | Path, records: list[str | Path], datasets: str | Path, train: dict[str, Any]) -> None:
    """:func:`provenance`, written (atomically) to ``path``."""
    write_json(path, provenance(records, datasets, train))
