"""Training rules end to end on a tiny cohort with a minimal schedule (real nnU-Net, real Snakemake)."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import yaml

from dnqsm.nnunet import model_folder, sha256
from dnqsm.synth import write_dataset

REPO = Path(__file__).resolve().parents[1]


def test_train_models_produces_loadable_exported_models(tmp_path):
    bids = write_dataset(tmp_path / "bids", "train", subjects=2, sessions=1, seed=21, jobs=2)
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    tiny = {"features": [4, 8, 8], "patch_size": [32, 32, 32], "batch_size": 2, "epochs": 1, "iterations": 2,
            "val_iterations": 1, "folds": ["all"]}
    config["train"].update({
        "bids_dir": str(bids), "labels_dir": str(bids / "derivatives" / "manual"),
        "work_dir": str(tmp_path / "work"), "out_dir": str(tmp_path / "models"), "threads": 2,
        "localization": {"dataset_id": 991, "spacing_mm": 4.0, **tiny},
        "segmentation": {"dataset_id": 992, "margin_mm": 6.0, "jitter_mm": 2.0, **tiny},
    })
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    run = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(tmp_path),
                          "--configfile", str(tmp_path / "config.yaml"), "--cores", "2", "train_models"],
                         capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    models = tmp_path / "models"
    provenance = json.loads((models / "provenance.json").read_text())
    assert provenance["training_cases"] == 2
    assert provenance["geometry"] == {"localization_spacing_mm": 4.0, "margin_mm": 6.0}
    assert set(provenance["versions"]) >= {"nnunetv2", "torch", "dnqsm"}
    for role in ("localization", "segmentation"):
        zip_path = models / f"{role}.zip"
        assert provenance["models"][role]["sha256"] == sha256(zip_path)
        names = zipfile.ZipFile(zip_path).namelist()
        assert any(n.endswith("fold_all/checkpoint_final.pth") for n in names)
        assert any(n.endswith("plans.json") for n in names) and any(n.endswith("dataset.json") for n in names)
        assert provenance["models"][role]["training"][0]["seconds"] > 0
    # the exported models load in nnU-Net's predictor, through dnqsm's loader (unpacked once, by checksum)
    from dnqsm.segment import DentateSegmenter, load_model_set

    segmenter = DentateSegmenter(load_model_set(models), device="cpu", threads=1)
    plans = json.loads((model_folder(models / "segmentation.zip", tmp_path / "cache") / "plans.json").read_text())
    assert plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]["features_per_stage"] == [4, 8, 8]
    assert set(segmenter.predictors) == {"localization", "segmentation"}
    # a rerun with nothing changed does nothing
    again = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory",
                            str(tmp_path), "--configfile", str(tmp_path / "config.yaml"), "--cores", "2", "-n",
                            "train_models"], capture_output=True, text=True, cwd=tmp_path)
    assert "Nothing to be done" in again.stdout + again.stderr

    # fine-tuning starts from the exported model's weights (a learning rate of ~0 keeps them)
    import torch

    from dnqsm.nnunet import initial_weights

    # a second stage starts from the first stage's zip, kept beside its provenance (as make demo-models does)
    stage1 = tmp_path / "stage1"
    stage1.mkdir()
    for name in ("segmentation.zip", "localization.zip", "provenance.json"):
        (stage1 / name).write_bytes((models / name).read_bytes())
    start = initial_weights(stage1 / "segmentation.zip", "all")
    config["train"]["segmentation"].update(init_from=str(stage1 / "segmentation.zip"), initial_lr=1e-12)
    config["train"]["localization"]["keep"] = str(stage1 / "localization.zip")  # this stage trains segmentation only
    localization_checkpoint = tmp_path / "work" / "results" / "localization" / "fold_all" / "checkpoint_final.pth"
    trained_at = localization_checkpoint.stat().st_mtime_ns
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    checkpoint = str(tmp_path / "work" / "results" / "segmentation" / "fold_all" / "checkpoint_final.pth")
    tuned = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(tmp_path),
                            "--configfile", str(tmp_path / "config.yaml"), "--cores", "2", checkpoint,
                            "--rerun-triggers", "mtime", "--forcerun", checkpoint],
                           capture_output=True, text=True, cwd=tmp_path)
    assert tuned.returncode == 0, tuned.stdout[-3000:] + tuned.stderr[-3000:]
    after = torch.load(tmp_path / "work" / "results" / "segmentation" / "fold_all" / "checkpoint_final.pth",
                       map_location="cpu", weights_only=False)["network_weights"]
    assert set(after) == set(start)
    assert all(torch.allclose(after[k].float(), start[k].float(), atol=1e-5) for k in start), "weights loaded, not random"
    training = json.loads((tmp_path / "work" / "results" / "segmentation" / "fold_all" / "training.json").read_text())
    assert training["init_from"] == str(stage1 / "segmentation.zip")
    # the new stage's provenance names the zip it started from and carries that zip's own provenance
    exported = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory",
                               str(tmp_path), "--configfile", str(tmp_path / "config.yaml"), "--cores", "2",
                               "train_models", "--rerun-triggers", "mtime"], capture_output=True, text=True, cwd=tmp_path)
    assert exported.returncode == 0, exported.stdout[-3000:] + exported.stderr[-3000:]
    chained = json.loads((models / "provenance.json").read_text())
    source = chained["models"]["segmentation"]["init_from"]
    assert source["sha256"] == sha256(stage1 / "segmentation.zip") != chained["models"]["segmentation"]["sha256"]
    assert source["provenance"] == provenance and "init_from" not in chained["models"]["localization"]
    # the kept localization model is stage 1's zip, byte for byte, linked to its provenance, not retrained
    kept = chained["models"]["localization"]
    assert sha256(models / "localization.zip") == sha256(stage1 / "localization.zip") == kept["sha256"]
    assert kept["keep"]["sha256"] == kept["sha256"] and kept["keep"]["provenance"] == provenance
    assert kept["training"] == [] and localization_checkpoint.stat().st_mtime_ns == trained_at
