"""Glue to nnU-Net v2: folders, axis order, raw datasets, small plans, training, model zips.

nnU-Net reads its folder locations from environment variables when it is first imported, so
``use_workdir`` must run before anything imports nnunetv2 in a training process. Inference never
needs those folders: predictors are built straight from a model folder or an exported zip.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np

#: nnU-Net configuration dnqsm trains (with small custom plans, see ``small_plans``).
CONFIGURATION = "3d_fullres"
PLANS = "nnUNetPlans"
TRAINER = "nnUNetTrainerDNQSM"  # nnUNetTrainer + QSM intensity augmentation (dnqsm/engine/nnunet_trainers)
CHANNEL = "QSM"
TRAINERS_DIR = Path(__file__).parent / "nnunet_trainers"
#: Where the bundled demo models live in a source checkout.
BUNDLED_MODELS = Path(__file__).resolve().parents[2] / "models" / "demo"


def register_trainers() -> None:
    """Let nnU-Net find dnqsm's trainer classes, the nnU-Net way: the ``nnUNet_extTrainer`` search path."""
    paths = [p for p in os.environ.get("nnUNet_extTrainer", "").split(os.pathsep) if p]
    if str(TRAINERS_DIR) not in paths:
        os.environ["nnUNet_extTrainer"] = os.pathsep.join([*paths, str(TRAINERS_DIR)])


def use_workdir(workdir: str | Path) -> dict[str, str]:
    """Point nnU-Net's raw/preprocessed/results folders into ``workdir`` (before importing nnunetv2)."""
    workdir = Path(workdir).absolute()
    paths = {
        key: str(workdir / name)
        for key, name in (("nnUNet_raw", "raw"), ("nnUNet_preprocessed", "preprocessed"), ("nnUNet_results", "results"))
    }
    for key, value in paths.items():
        Path(value).mkdir(parents=True, exist_ok=True)
        os.environ[key] = value
    os.environ.setdefault("nnUNet_compile", "f")  # torch.compile gains nothing on CPU and costs minutes
    register_trainers()
    return paths


def dataset_name(dataset_id: int, name: str) -> str:
    return f"Dataset{dataset_id:03d}_{name}"


# --- axis order -------------------------------------------------------------------------------
# dnqsm arrays are (x, y, z) as nibabel reads them; nnU-Net's NibabelIO transposes to (z, y, x).


def to_nnunet(array_xyz: np.ndarray, spacing_xyz) -> tuple[np.ndarray, dict]:
    """An (x, y, z) array and spacing as nnU-Net's NibabelIO would have read them from a file."""
    data = np.ascontiguousarray(np.asarray(array_xyz, np.float32).transpose(2, 1, 0)[None])
    return data, {"spacing": [float(s) for s in list(spacing_xyz)[::-1]]}


def from_nnunet(array_zyx: np.ndarray) -> np.ndarray:
    """Back from nnU-Net's (z, y, x) order to (x, y, z)."""
    return np.ascontiguousarray(np.asarray(array_zyx).transpose(2, 1, 0))


# --- raw datasets ------------------------------------------------------------------------------


def write_case(raw: Path, case: str, image_xyz: np.ndarray, affine: np.ndarray, label_xyz: np.ndarray) -> None:
    """One training case in nnU-Net's raw layout (imagesTr/<case>_0000.nii.gz, labelsTr/<case>.nii.gz)."""
    import nibabel as nib  # here: the workflow imports this module for model_files() at every parse

    from dnqsm.io import save_nifti

    image = nib.Nifti1Image(np.nan_to_num(image_xyz.astype(np.float32)), affine)
    label = nib.Nifti1Image(label_xyz.astype(np.uint8), affine)
    for img in (image, label):
        img.set_sform(affine, 1)
        img.set_qform(affine, 1)
    save_nifti(raw / "imagesTr" / f"{case}_0000.nii.gz", image)
    save_nifti(raw / "labelsTr" / f"{case}.nii.gz", label)


def write_dataset_json(raw: Path, label_name: str, n_cases: int) -> None:
    from dnqsm.io import write_json

    write_json(
        raw / "dataset.json",
        {
            "channel_names": {"0": CHANNEL},
            "labels": {"background": 0, label_name: 1},
            "numTraining": n_cases,
            "file_ending": ".nii.gz",
            "overwrite_image_reader_writer": "NibabelIO",
        },
    )


# --- planning, preprocessing, training ---------------------------------------------------------


def small_plans(
    plans: dict, features: list[int], patch_size: list[int], batch_size: int, spacing: list[float] | None = None
) -> dict:
    """Shrink nnU-Net's planned 3d_fullres network to something that trains on 2 CPU cores.

    ``patch_size`` and ``spacing`` are given in (x, y, z); nnU-Net stores a configuration's axes in
    its planned order, ``transpose_forward`` of (z, y, x) (the coarsest axis first, e.g. (x, z, y)
    for a cohort of sagittal slices), so each value goes to its axis there.
    """
    config = plans["configurations"][CONFIGURATION]
    order = plans.get("transpose_forward", [0, 1, 2])
    n_stages = len(features)
    config["patch_size"] = [int(patch_size[::-1][axis]) for axis in order]
    config["batch_size"] = int(batch_size)
    if spacing is not None:
        config["spacing"] = [float(spacing[::-1][axis]) for axis in order]
    arch = config["architecture"]["arch_kwargs"]
    arch.update(
        {
            "n_stages": n_stages,
            "features_per_stage": [int(f) for f in features],
            "kernel_sizes": [[3, 3, 3]] * n_stages,
            "strides": [[1, 1, 1]] + [[2, 2, 2]] * (n_stages - 1),
            "n_conv_per_stage": [2] * n_stages,
            "n_conv_per_stage_decoder": [2] * (n_stages - 1),
        }
    )
    return plans


def source_plans(source: str | Path) -> dict:
    """The nnU-Net plans of a model to fine-tune from: an exported zip, or a checkpoint (.pth, whose
    ``init_args`` hold the plans it was trained with)."""
    source = Path(source)
    if not source.is_file():
        raise FileNotFoundError(f"{source}: train.<model>.init_from names no file")
    if source.suffix != ".zip":
        import torch

        try:
            return torch.load(source, map_location="cpu", weights_only=False)["init_args"]["plans"]
        except Exception as exc:  # torch's unpickling errors do not name the file
            raise ValueError(
                f"{source}: not an nnU-Net checkpoint with its plans ({type(exc).__name__}: {exc})"
            ) from None
    with zipfile.ZipFile(source) as archive:
        names = sorted(n for n in archive.namelist() if n.endswith("/plans.json"))
        if not names:
            raise ValueError(f"{source}: no plans.json inside; not an nnU-Net model zip")
        return json.loads(archive.read(names[0]))


def keep_source_geometry(plans: dict, source: dict, spacing_pinned: bool) -> dict:
    """Plans for fine-tuning from a model planned as ``source``: its axis order (``transpose_forward``,
    ``transpose_backward``) and, unless ``spacing_pinned``, its 3d_fullres target spacing, so that the
    weights see the voxels they were trained on, not a plan of the new cohort's own (nnU-Net's recipe
    for pretrained weights, ``nnUNetv2_move_plans_between_datasets``). Call before ``small_plans``."""
    plans["transpose_forward"] = list(source["transpose_forward"])
    plans["transpose_backward"] = list(source["transpose_backward"])
    if not spacing_pinned:
        plans["configurations"][CONFIGURATION]["spacing"] = list(source["configurations"][CONFIGURATION]["spacing"])
    return plans


def planned_spacing_xyz(plans: dict) -> list[float]:
    """The 3d_fullres target spacing of ``plans`` in (x, y, z) mm, whatever nnU-Net's axis order."""
    stored = plans["configurations"][CONFIGURATION]["spacing"]
    zyx = [0.0] * 3
    for position, axis in enumerate(plans["transpose_forward"]):
        zyx[axis] = stored[position]
    return [round(float(v), 4) for v in zyx[::-1]]


def plan_and_preprocess(
    dataset_id: int,
    features: list[int],
    patch_size: list[int],
    batch_size: int,
    spacing: list[float] | None,
    processes: int = 2,
    init_from: str | Path | None = None,
) -> Path:
    """nnU-Net's fingerprint, planner and preprocessor, with the plans edited by ``small_plans``; with
    ``init_from`` (a model zip to fine-tune from), that model's axis order and, unless ``spacing``
    pins another, its target spacing (``keep_source_geometry``)."""
    from nnunetv2.experiment_planning.plan_and_preprocess_api import extract_fingerprints, plan_experiments, preprocess
    from nnunetv2.paths import nnUNet_preprocessed
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

    source = source_plans(init_from) if init_from else None  # a missing source fails before the fingerprint
    extract_fingerprints(
        [dataset_id], num_processes=processes, check_dataset_integrity=True, verbose=False, show_progress_bar=False
    )
    plan_experiments([dataset_id])
    plans_file = Path(nnUNet_preprocessed) / maybe_convert_to_dataset_name(dataset_id) / f"{PLANS}.json"
    plans = json.loads(plans_file.read_text())
    if source is not None:
        own = planned_spacing_xyz(plans), plans["transpose_forward"]
        plans = keep_source_geometry(plans, source, spacing_pinned=spacing is not None)
        print(
            f"fine-tuning from {init_from}: its axis order {plans['transpose_forward']}"
            + ("" if spacing is not None else f" and target spacing (x, y, z) {planned_spacing_xyz(plans)} mm")
            + f" are kept (this cohort's own plan: spacing {own[0]} mm, axis order {own[1]})"
        )
    plans = small_plans(plans, features, patch_size, batch_size, spacing)
    plans_file.write_text(json.dumps(plans, indent=2))
    preprocess([dataset_id], PLANS, (CONFIGURATION,), (processes,), verbose=False, show_progress_bar=False)
    return plans_file


def initial_weights(source: str | Path, fold: int | str) -> dict:
    """Network weights to fine-tune from: a checkpoint (.pth) or an exported model zip (its fold, else the first)."""
    import io
    import zipfile

    import torch

    source = Path(source)
    if not source.is_file():
        raise FileNotFoundError(f"{source}: train.<model>.init_from names no file")
    if source.suffix == ".zip":
        with zipfile.ZipFile(source) as archive:
            names = sorted(n for n in archive.namelist() if n.endswith("checkpoint_final.pth"))
            wanted = [n for n in names if f"/fold_{fold}/" in n] or names
            if not wanted:
                raise ValueError(f"{source}: no checkpoint_final.pth inside; not an nnU-Net model zip")
            state = torch.load(io.BytesIO(archive.read(wanted[0])), map_location="cpu", weights_only=False)
    else:
        state = torch.load(source, map_location="cpu", weights_only=False)
    if "network_weights" not in state:
        raise ValueError(f"{source}: not an nnU-Net checkpoint (no network_weights)")
    return state["network_weights"]


#: In nnU-Net's plain U-Net the first convolution of each decoder stage reads the upsampled features and the
#: encoder's skip features concatenated, in that order.
_CONCATENATED_INPUT = re.compile(r"^decoder\.stages\.\d+\.convs\.0\.conv$")


def embed_weights(network, weights: dict) -> None:
    """Load a narrower network's weights into ``network`` so that it computes exactly the same function.

    For nnU-Net's plain U-Net (``PlainConvUNet``) of the same depth whose every layer is at least as wide
    as the source's: each layer's first channels take the source's weights, the added channels keep their
    random initial weights, and every weight from an added channel into a source channel is zero, so the
    source channels (and so the outputs) do not see the added ones until training moves those weights
    (function-preserving widening in the manner of Net2Net, Chen et al. 2016, with zero outgoing weights).
    Raises ``ValueError`` naming the layer where the source does not fit.
    """
    import torch
    from torch import nn

    kind = type(network).__name__
    if kind != "PlainConvUNet":
        raise ValueError(f"widening supports nnU-Net's PlainConvUNet, not {kind}")
    own = network.state_dict()
    extra = sorted(set(weights) - set(own))
    missing = sorted(set(own) - set(weights))
    if extra or missing:
        raise ValueError(f"the networks differ in their layers (e.g. {(extra or missing)[0]}): not the same depth")
    with torch.no_grad():
        for name, module in network.named_modules():
            if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
                out_dim, in_dim = 0, 1
            elif isinstance(module, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
                out_dim, in_dim = 1, 0
            elif isinstance(module, nn.modules.batchnorm._NormBase):
                out_dim, in_dim = 0, None
            else:
                if next(module.parameters(recurse=False), None) is not None:
                    raise ValueError(f"{name}: widening does not know layers of type {type(module).__name__}")
                continue
            for key, tensor in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]:
                source = weights[f"{name}.{key}"].to(tensor.dtype)
                if source.dim() == 0:
                    tensor.copy_(source)
                    continue
                if source.dim() != tensor.dim() or any(a > b for a, b in zip(source.shape, tensor.shape)):
                    raise ValueError(
                        f"{name}.{key}: the source's {tuple(source.shape)} does not fit in {tuple(tensor.shape)}"
                    )
                if source.dim() == 1:  # a bias or a norm's per-channel parameter
                    tensor[: len(source)] = source
                    continue
                n_out, n_in, n_in_new = source.shape[out_dim], source.shape[in_dim], tensor.shape[in_dim]
                if _CONCATENATED_INPUT.match(name) and n_in != n_in_new:
                    half, half_new = n_in // 2, n_in_new // 2
                    inputs = [*range(half), *range(half_new, half_new + half)]
                else:
                    inputs = list(range(n_in))
                inputs = torch.tensor(inputs, dtype=torch.long)
                source_rows = tensor.narrow(out_dim, 0, n_out)  # a view: writes go into the network
                source_rows.zero_()  # nothing flows from an added channel into a source channel ...
                source_rows.index_copy_(in_dim, inputs, source)  # ... and the source's weights are kept


def train(
    dataset_id: int,
    fold: int | str,
    epochs: int,
    iterations: int,
    val_iterations: int,
    device: str = "cpu",
    init_from: str | Path | None = None,
    initial_lr: float | None = None,
) -> Path:
    """Train one fold with nnU-Net's own ``nnUNetTrainer`` on a short schedule; return the fold folder.

    ``init_from`` fine-tunes: every weight (output layer included, the labels being the same) starts
    from that model instead of nnU-Net's random initialisation; the plans must match, or the model may be
    a narrower one of the same depth, embedded by ``embed_weights`` (the added channels start from
    nnU-Net's random initialisation, the function from the source's). ``initial_lr``
    replaces nnU-Net's 0.01 at the start of its polynomial schedule. The optimizer state is stripped
    from the final checkpoint (inference does not need it).
    """
    import torch
    from nnunetv2.run.run_training import get_trainer_from_args

    trainer = get_trainer_from_args(str(dataset_id), CONFIGURATION, fold, TRAINER, PLANS, False, torch.device(device))
    trainer.num_epochs = epochs
    trainer.num_iterations_per_epoch = iterations
    trainer.num_val_iterations_per_epoch = val_iterations
    trainer.save_every = max(1, epochs // 4)
    if initial_lr is not None:
        trainer.initial_lr = float(initial_lr)
    if init_from is not None:
        weights = initial_weights(init_from, fold)
        trainer.initialize()
        network = getattr(trainer.network, "_orig_mod", trainer.network)
        own = network.state_dict()
        if set(own) == set(weights) and all(own[k].shape == v.shape for k, v in weights.items()):
            network.load_state_dict(weights)
        else:  # a narrower network of the same depth (e.g. a wider train.<model>.features): embed it
            try:
                embed_weights(network, weights)
            except ValueError as error:
                raise ValueError(
                    f"{init_from}: its network does not match this model's plans and cannot be "
                    f"widened into it ({error})"
                ) from None
            trainer.print_to_log_file(
                f"init_from {init_from}: a narrower network, embedded so that this wider "
                "one starts computing the same function"
            )
    trainer.run_training()
    fold_dir = Path(trainer.output_folder)
    if str(fold) != "all":
        trainer.perform_actual_validation(False)
    else:
        # fold "all" holds nothing out: nnU-Net would "validate" on the training cases, predicting every
        # one of them (minutes) for a Dice that says nothing about new images. Its model export wants a
        # validation summary, so the summary says that there was none (and no Dice is reported).
        from dnqsm.io import write_json

        write_json(
            fold_dir / "validation" / "summary.json",
            {
                "foreground_mean": None,
                "mean": None,
                "metric_per_case": [],
                "note": "no validation: fold 'all' trains on every case and holds none out",
            },
        )
    checkpoint = fold_dir / "checkpoint_final.pth"
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    broken = [k for k, v in state["network_weights"].items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if broken:
        raise RuntimeError(
            f"training of dataset {dataset_id} fold {fold} diverged: {len(broken)} weight tensors are "
            f"NaN or infinite (e.g. {broken[0]}); see the training log in {trainer.output_folder}"
        )
    for key in ("optimizer_state", "grad_scaler_state"):
        state.pop(key, None)
    torch.save(state, checkpoint)
    (fold_dir / "checkpoint_best.pth").unlink(missing_ok=True)
    (fold_dir / "checkpoint_latest.pth").unlink(missing_ok=True)
    return fold_dir


def validation_dice(fold_dir: Path) -> float | None:
    """Mean foreground Dice of nnU-Net's own validation of a fold (summary.json), if there was one."""
    summary = Path(fold_dir) / "validation" / "summary.json"
    if not summary.exists():
        return None
    mean = json.loads(summary.read_text()).get("foreground_mean")
    return None if mean is None else float(mean["Dice"])


# --- model zips ---------------------------------------------------------------------------------


def sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def export_zip(dataset_id: int, folds: tuple, out_zip: str | Path) -> str:
    """nnU-Net's own model export (nnUNetv2_export_model_to_zip); returns the zip's sha256."""
    from nnunetv2.model_sharing.model_export import export_pretrained_model

    from dnqsm.io import atomic_path

    with atomic_path(out_zip) as tmp:
        export_pretrained_model(
            dataset_id,
            str(tmp),
            configurations=(CONFIGURATION,),
            trainer=TRAINER,
            plans_identifier=PLANS,
            folds=tuple(folds),
            strict=True,
            save_checkpoints=("checkpoint_final.pth",),
        )
    return sha256(out_zip)


def model_folder(model: str | Path, cache_dir: str | Path | None = None) -> Path:
    """A trained-model folder (the one holding plans.json and fold_*) from a folder or an exported zip.

    Zips are unpacked once into ``cache_dir`` (default ``$DNQSM_CACHE`` or ``~/.cache/dnqsm``), keyed
    by their sha256, so a changed zip is never confused with an old one.
    """
    model = Path(model)
    if model.is_dir():
        return _find_trained_folder(model)
    if not zipfile.is_zipfile(model):
        raise FileNotFoundError(f"{model}: not a model folder or an nnU-Net model zip")
    cache = Path(cache_dir or os.environ.get("DNQSM_CACHE", Path.home() / ".cache" / "dnqsm")) / "models"
    target = cache / sha256(model)
    if not target.exists():
        cache.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=cache, prefix=".unpack-"))
        try:
            with zipfile.ZipFile(model) as zf:
                zf.extractall(tmp)
            try:
                tmp.rename(target)
            except OSError:  # another process unpacked the same zip first
                pass
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return _find_trained_folder(target)


def _find_trained_folder(root: Path) -> Path:
    hits = sorted(p.parent for p in root.rglob("plans.json") if any(p.parent.glob("fold_*")))
    if not hits:
        raise FileNotFoundError(f"{root}: no nnU-Net trained model (plans.json with fold_* folders) inside")
    return hits[0]


def model_files(models_dir: str | Path | None = None) -> list[Path]:
    """The files a model folder's predictions depend on (zips or folders, and provenance.json): what a
    workflow rule lists as input so that new models rerun the segmentations."""
    base = Path(models_dir) if models_dir else BUNDLED_MODELS
    files = [
        next((p for p in (base / f"{role}.zip", base / role) if p.exists()), base / f"{role}.zip")
        for role in ("localization", "segmentation")
    ]
    return files + ([base / "provenance.json"] if (base / "provenance.json").exists() else [])
