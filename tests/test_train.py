"""Training rules end to end on a tiny cohort with a minimal schedule (real nnU-Net, real Snakemake)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest
import yaml

from dnqsm.engine.nnunet import model_folder, sha256
from dnqsm.io import InputError
from dnqsm.settings import defaults
from dnqsm.training.datasets import build_training_datasets
from dnqsm.workflow.command import snakemake_command
from dnqsm.workflow.config import training_cohorts

REPO = Path(__file__).resolve().parents[1]


def relabelled_copy(bids: Path, out: Path, old: str, new: str) -> Path:
    """A copy of a BIDS cohort (images and labels) with participant ``old`` renamed ``new``, the others left out."""
    out.mkdir(parents=True)
    shutil.copyfile(bids / "dataset_description.json", out / "dataset_description.json")
    for base in ("", "derivatives/manual"):
        for f in (bids / base / f"sub-{old}").rglob("*"):
            if f.is_file():
                dst = (
                    out
                    / base
                    / f"sub-{new}"
                    / str(f.relative_to(bids / base / f"sub-{old}")).replace(f"sub-{old}", f"sub-{new}")
                )
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(f, dst)
    return out


def test_train_models_produces_loadable_exported_models(tmp_path, small_cohort):
    # two labelled cohorts pooled into one training set (sub-001 from one, sub-002 from the other)
    cohorts = [relabelled_copy(small_cohort, tmp_path / f"bids{n}", n, n) for n in ("001", "002")]
    config = defaults()
    tiny = {
        "features": [4, 8, 8],
        "patch_size": [32, 32, 32],
        "batch_size": 2,
        "epochs": 1,
        "iterations": 2,
        "val_iterations": 1,
        "folds": ["all"],
    }
    config["train"].update(
        {
            "bids_dir": [str(b) for b in cohorts],
            "labels_dir": [str(b / "derivatives" / "manual") for b in cohorts],
            "work_dir": str(tmp_path / "work"),
            "out_dir": str(tmp_path / "models"),
            "threads": 2,
            "localization": {"dataset_id": 991, "spacing_mm": 4.0, **tiny},
            "segmentation": {"dataset_id": 992, "margin_mm": 6.0, "jitter_mm": 2.0, **tiny},
        }
    )
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    run = subprocess.run(
        snakemake_command(tmp_path, "train_models"),
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    models = tmp_path / "models"
    provenance = json.loads((models / "provenance.json").read_text())
    assert provenance["training_cases"] == 4
    cases = json.loads((tmp_path / "work" / "datasets.json").read_text())["cases"]
    assert cases == ["sub-001_ses-01", "sub-001_ses-02", "sub-002_ses-01", "sub-002_ses-02"], cases
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
    from dnqsm.engine.segment import NnunetMethod, load_model_set

    segmenter = NnunetMethod(load_model_set(models), device="cpu", threads=1)
    plans = json.loads((model_folder(models / "segmentation.zip", tmp_path / "cache") / "plans.json").read_text())
    assert plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]["features_per_stage"] == [4, 8, 8]
    assert set(segmenter.predictors) == {"localization", "segmentation"}
    # a rerun with nothing changed does nothing
    again = subprocess.run(
        snakemake_command(tmp_path, "-n", "train_models"),
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert "Nothing to be done" in again.stdout + again.stderr

    # fine-tuning starts from the exported model's weights (a learning rate of ~0 keeps them)
    import torch

    from dnqsm.engine.nnunet import initial_weights

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
    tuned = subprocess.run(
        snakemake_command(tmp_path, checkpoint, "--rerun-triggers", "mtime", "--forcerun", checkpoint),
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert tuned.returncode == 0, tuned.stdout[-3000:] + tuned.stderr[-3000:]
    after = torch.load(
        tmp_path / "work" / "results" / "segmentation" / "fold_all" / "checkpoint_final.pth",
        map_location="cpu",
        weights_only=False,
    )["network_weights"]
    assert set(after) == set(start)
    assert all(torch.allclose(after[k].float(), start[k].float(), atol=1e-5) for k in start), (
        "weights loaded, not random"
    )
    training = json.loads((tmp_path / "work" / "results" / "segmentation" / "fold_all" / "training.json").read_text())
    assert training["init_from"] == str(stage1 / "segmentation.zip")
    # fold "all" holds no case out: no validation on the training cases, so no Dice that would flatter it
    summary = json.loads((Path(training["nnunet_fold_dir"]) / "validation" / "summary.json").read_text())
    assert (
        training["validation_dice"] is None
        and summary["foreground_mean"] is None
        and "no validation" in summary["note"]
    )
    # the new stage's provenance names the zip it started from and carries that zip's own provenance
    exported = subprocess.run(
        snakemake_command(tmp_path, "train_models", "--rerun-triggers", "mtime"),
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
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

    # a third stage twice as wide starts from the narrower zip: embedded, so its first channels keep the
    # source's weights (a learning rate of ~0 keeps them) and the log says so
    config["train"]["segmentation"].update(features=[8, 16, 16])
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    # ... and plans its cohort at the source model's spacing, not at one of its own: here a source
    # planned 1.25 times coarser than this cohort's plan (its zip's plans.json rewritten)
    source_zip = stage1 / "segmentation.zip"
    with zipfile.ZipFile(source_zip) as archive:
        entries = {info: archive.read(info) for info in archive.infolist()}
    own_spacing = json.loads(next(data for info, data in entries.items() if info.filename.endswith("/plans.json")))[
        "configurations"
    ]["3d_fullres"]["spacing"]
    source_spacing = [round(1.25 * s, 4) for s in own_spacing]
    with zipfile.ZipFile(source_zip, "w") as rewritten:
        for info, data in entries.items():
            if info.filename.endswith("/plans.json"):
                plans_json = json.loads(data)
                plans_json["configurations"]["3d_fullres"]["spacing"] = source_spacing
                data = json.dumps(plans_json).encode()
            rewritten.writestr(info, data)
    plans = str(tmp_path / "work" / "preprocessed" / "segmentation.plans.json")  # planned again: wider
    widened = subprocess.run(
        snakemake_command(tmp_path, checkpoint, "--rerun-triggers", "mtime", "--forcerun", plans, checkpoint),
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert widened.returncode == 0, widened.stdout[-3000:] + widened.stderr[-3000:]
    replanned = json.loads(Path(plans).read_text())["configurations"]["3d_fullres"]
    assert replanned["spacing"] == source_spacing != own_spacing
    assert "are kept" in (tmp_path / "work" / "logs" / "train_preprocess_segmentation.log").read_text()
    wide = torch.load(checkpoint, map_location="cpu", weights_only=False)["network_weights"]
    assert set(wide) == set(start) and wide["encoder.stages.0.0.convs.0.conv.weight"].shape[0] == 8
    for key, source in start.items():
        if re.fullmatch(r"decoder\.stages\.\d+\.convs\.0\.(conv|all_modules\.0)\.weight", key):
            continue  # input channels in two concatenated halves (the embed_weights test checks those)
        leading = wide[key]
        for dim, n in enumerate(source.shape):
            leading = leading.narrow(dim, 0, n)
        assert torch.allclose(leading.float(), source.float(), atol=1e-5), key
    logs = (
        Path(
            json.loads((tmp_path / "work" / "results" / "segmentation" / "fold_all" / "training.json").read_text())[
                "nnunet_fold_dir"
            ]
        )
    ).glob("training_log_*.txt")
    assert any("a narrower network, embedded" in log.read_text() for log in logs)


def test_pooled_cohorts_need_distinct_participant_labels(tmp_path, small_cohort):
    labels = small_cohort / "derivatives" / "manual"
    other = relabelled_copy(small_cohort, tmp_path / "other", "002", "102")
    anat = other / "sub-102" / "ses-01" / "anat"  # a second reconstruction of one session: its own case
    shutil.copyfile(anat / "sub-102_ses-01_Chimap.nii.gz", anat / "sub-102_ses-01_rec-l2_Chimap.nii.gz")
    geometry = {"spacing_mm": 3.0, "margin_mm": 5.0, "jitter_mm": 0.0}
    cohorts = [small_cohort, other], [labels, other / "derivatives" / "manual"]
    summary = build_training_datasets(*cohorts, tmp_path / "loc", tmp_path / "seg", **geometry)
    assert [c for c in summary["cases"] if c.startswith("sub-102")] == [
        "sub-102_ses-01",
        "sub-102_ses-01_rec-l2",
        "sub-102_ses-02",
    ]
    assert len(summary["cases"]) == 7 and len(list((tmp_path / "seg" / "imagesTr").iterdir())) == 7
    # the same participant label in two cohorts would silently merge two people: refused, naming both files
    clash = relabelled_copy(small_cohort, tmp_path / "clash", "002", "001")
    with pytest.raises(InputError, match=r"sub-001_ses-01 is also in .*small.*--first-label"):
        clashing = [small_cohort, clash], [labels, clash / "derivatives" / "manual"]
        build_training_datasets(*clashing, tmp_path / "loc2", tmp_path / "seg2", **geometry)
    desc = other / "sub-102" / "ses-02" / "anat"  # within one cohort: two images only desc- tells apart
    shutil.copyfile(desc / "sub-102_ses-02_Chimap.nii.gz", desc / "sub-102_ses-02_desc-x_Chimap.nii.gz")
    with pytest.raises(InputError, match=r"sub-102_ses-02 is also in .*other.*only entities dnqsm does not keep"):
        build_training_datasets(
            [other],
            [other / "derivatives" / "manual"],
            tmp_path / "loc3",
            tmp_path / "seg3",
            spacing_mm=3.0,
            margin_mm=5.0,
            jitter_mm=0.0,
        )
    with pytest.raises(ValueError, match="lists 2 cohorts but train.labels_dir 1"):
        training_cohorts([small_cohort, other], labels)
    # ... and through the workflow: Snakemake stops while reading the config, naming the setting
    config = defaults()
    config["train"].update(
        bids_dir=[str(small_cohort), str(other)],
        labels_dir=[str(labels)],
        work_dir=str(tmp_path / "work"),
        out_dir=str(tmp_path / "models"),
    )
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    run = subprocess.run(
        snakemake_command(tmp_path, "-n", "train_models", cores=1),
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    said = run.stdout + run.stderr
    assert run.returncode != 0 and "config train: train.bids_dir lists 2 cohorts but train.labels_dir 1" in said, said[
        -2000:
    ]


def bundled_architecture(tmp_path: Path, features: list[int] | None = None):
    """nnU-Net's own network for the bundled segmentation model's plans, optionally with other features per stage."""
    import copy

    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from dnqsm.engine.nnunet import BUNDLED_MODELS, CONFIGURATION, small_plans

    folder = model_folder(BUNDLED_MODELS / "segmentation.zip", tmp_path / "cache")
    plans = json.loads((folder / "plans.json").read_text())
    labels = json.loads((folder / "dataset.json").read_text())["labels"]
    if features is not None:
        config = plans["configurations"][CONFIGURATION]
        plans = small_plans(copy.deepcopy(plans), features, config["patch_size"][::-1], config["batch_size"])
    config = PlansManager(plans).get_configuration(CONFIGURATION)
    return get_network_from_plans(
        config.network_arch_class_name,
        config.network_arch_init_kwargs,
        config.network_arch_init_kwargs_req_import,
        1,
        len(labels),
        allow_init=True,
        deep_supervision=True,
    )


def test_a_narrower_model_is_embedded_in_a_wider_network_computing_the_same_function(tmp_path):
    import torch

    from dnqsm.engine.nnunet import BUNDLED_MODELS, embed_weights, initial_weights

    weights = initial_weights(BUNDLED_MODELS / "segmentation.zip", 0)
    narrow = bundled_architecture(tmp_path)
    narrow.load_state_dict(weights)
    features = narrow.encoder.output_channels
    torch.manual_seed(0)
    wide = bundled_architecture(tmp_path, [2 * f for f in features])
    embed_weights(wide, weights)
    first = wide.state_dict()["encoder.stages.0.0.convs.0.conv.weight"]
    assert torch.equal(first[: features[0]], weights["encoder.stages.0.0.convs.0.conv.weight"])
    assert first[features[0] :].abs().sum() > 0, "the added channels keep nnU-Net's random initialisation"
    narrow.eval()
    wide.eval()
    image = torch.randn(1, 1, 40, 56, 56)
    with torch.no_grad():
        expected, got = narrow(image), wide(image)
    assert len(expected) == len(got) == len(features) - 1  # deep supervision: one output per decoder stage
    for a, b in zip(expected, got):
        assert a.shape == b.shape and torch.allclose(a, b, atol=1e-4), float((a - b).abs().max())
    # the added channels are wired in: only the zero weights out of them keep the function, so training
    # (which moves those weights) can use them
    with torch.no_grad():
        wide.decoder.seg_layers[-1].weight[:, features[0] :] = 0.5
        assert not torch.allclose(wide(image)[0], expected[0], atol=1e-2)

    # a wider model does not fit into a narrower network, nor a model of another depth
    first_layer = r"encoder\.stages\.0\.0\.convs\.0\.conv\.weight"
    with pytest.raises(ValueError, match=rf"{first_layer}: the source's \({2 * features[0]}, 1"):
        embed_weights(bundled_architecture(tmp_path), wide.state_dict())
    with pytest.raises(ValueError, match="not the same depth"):
        embed_weights(bundled_architecture(tmp_path, [2 * f for f in features[:-1]]), weights)


def test_plans_put_patch_and_spacing_on_nnunets_planned_axes(tmp_path):
    """nnU-Net plans a cohort of sagittal slices (x coarsest) with its axes transposed to (x, z, y):
    the patch size and a pinned spacing, given in (x, y, z), must land on those axes, as nnU-Net's own
    preprocessor reads them. And fine-tuning keeps the source model's axis order and spacing."""
    import copy

    import numpy as np
    from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from dnqsm.engine.nnunet import (
        BUNDLED_MODELS,
        CONFIGURATION,
        keep_source_geometry,
        planned_spacing_xyz,
        small_plans,
        source_plans,
    )

    bundled = source_plans(BUNDLED_MODELS / "segmentation.zip")
    planned = copy.deepcopy(bundled)  # as nnU-Net plans an image of 3 x 0.7 x 0.8 mm voxels (x, y, z)
    planned["transpose_forward"], planned["transpose_backward"] = [2, 0, 1], [1, 2, 0]
    plans = small_plans(copy.deepcopy(planned), [4, 8], [16, 32, 24], 2, spacing=[1.5, 0.7, 0.8])
    config = plans["configurations"][CONFIGURATION]
    assert config["patch_size"] == [16, 24, 32] and config["spacing"] == [1.5, 0.8, 0.7]  # (x, z, y)
    manager = PlansManager(plans)
    image = np.random.default_rng(0).normal(size=(1, 30, 40, 12)).astype(np.float32)  # nnU-Net's (z, y, x)
    data, _, _ = DefaultPreprocessor(verbose=False).run_case_npy(
        image, None, {"spacing": [0.8, 0.7, 3.0]}, manager, manager.get_configuration(CONFIGURATION), {}
    )
    assert data.shape[1:] == (24, 30, 40), "x resampled 3 -> 1.5 mm (12 -> 24 voxels), y and z kept"
    assert planned_spacing_xyz(plans) == [1.5, 0.7, 0.8]

    # fine-tuning from the bundled model: its axis order and spacing, not the new cohort's plan
    kept = keep_source_geometry(copy.deepcopy(planned), bundled, spacing_pinned=False)
    kept = small_plans(kept, [4, 8], [16, 32, 24], 2)
    assert kept["transpose_forward"] == bundled["transpose_forward"] == [0, 1, 2]
    assert kept["configurations"][CONFIGURATION]["spacing"] == bundled["configurations"][CONFIGURATION]["spacing"]
    assert kept["configurations"][CONFIGURATION]["patch_size"] == [24, 32, 16]  # (z, y, x)
    pinned = small_plans(
        keep_source_geometry(copy.deepcopy(planned), bundled, spacing_pinned=True),
        [4, 8],
        [16, 32, 24],
        2,
        spacing=[1.5, 0.7, 0.8],
    )
    assert pinned["configurations"][CONFIGURATION]["spacing"] == [0.8, 0.7, 1.5]
    checkpoint = tmp_path / "checkpoint_final.pth"  # a checkpoint carries its plans too
    with zipfile.ZipFile(BUNDLED_MODELS / "segmentation.zip") as archive:
        checkpoint.write_bytes(archive.read(next(n for n in archive.namelist() if n.endswith("checkpoint_final.pth"))))
    assert source_plans(checkpoint) == bundled
    with pytest.raises(FileNotFoundError, match="names no file"):
        source_plans(tmp_path / "missing.zip")
    (tmp_path / "notes.pth").write_bytes(b"")
    with pytest.raises(ValueError, match="notes.pth.*not an nnU-Net checkpoint"):
        source_plans(tmp_path / "notes.pth")


def test_a_model_that_failed_its_own_validation_is_not_exported():
    """A fold whose held-out Dice is below train.min_validation_dice stops the export, naming the fold,
    its Dice and what to do; fold "all" holds no case out and is not judged."""
    from dnqsm.training.provenance import ValidationFailure, check_validation

    floor = defaults("train")["min_validation_dice"]
    check_validation("localization", [{"fold": "all", "validation_dice": None}], floor)
    check_validation("localization", [{"fold": "0", "validation_dice": 0.86}], floor)
    with pytest.raises(ValidationFailure, match=r"fold 1 reached 0\.00") as failure:
        check_validation(
            "localization",
            [{"fold": "0", "validation_dice": 0.86}, {"fold": "1", "validation_dice": 0.0}],
            floor,
        )
    assert "fold 0" not in str(failure.value)
    assert "train.localization.epochs" in str(failure.value) and "--rerun-triggers mtime" in str(failure.value)
    check_validation("localization", [{"fold": "1", "validation_dice": 0.0}], 0.0)  # the user's choice


def test_every_training_recipe_make_demo_models_names_exists_and_is_valid():
    """`make demo-models` runs its stages from config/training/: a recipe it names that is missing or
    no longer valid against the schema would stop a reproduction hours in, so check them all here."""
    from dnqsm.settings import SCHEMA, check

    makefile = (REPO / "Makefile").read_text()
    named = re.findall(r"--configfile (config/training/\S+\.yaml)", makefile)
    assert "config/training/stage1.yaml" in named, "the first stage gives the localization network its schedule"
    for recipe in sorted(set(named) | {str(p.relative_to(REPO)) for p in (REPO / "config/training").glob("*.yaml")}):
        path = REPO / recipe
        assert path.exists(), f"Makefile names {recipe}, which does not exist"
        check(yaml.safe_load(path.read_text()), SCHEMA)  # raises, naming the key, on an invalid recipe
    # what stage 1's recipe is for: a localization schedule longer than the schema's default, which a
    # from-scratch run can end before the network predicts anything (the validation guard then stops it)
    default = check({}, SCHEMA)["train"]["localization"]["epochs"]
    stage1 = check(yaml.safe_load((REPO / "config/training/stage1.yaml").read_text()), SCHEMA)
    assert stage1["train"]["localization"]["epochs"] > default
