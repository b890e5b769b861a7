# Configuration validation and the one place that builds workflow paths.
from pathlib import Path

from snakemake.utils import validate

validate(config, schema="../config/config.schema.yaml")


def synth_dataset_description():
    """dataset_description.json of the synthetic cohort named in config['synth']."""
    return str(Path(config["synth"]["out"]) / "dataset_description.json")


# --- training paths (rules/train.smk) ---
MODELS = ("localization", "segmentation")


def train_path(*parts):
    """A file under the training work folder."""
    return str(Path(config["train"]["work_dir"]).joinpath(*parts))


def models_path(*parts):
    """A file in the folder that receives exported models."""
    return str(Path(config["train"]["out_dir"]).joinpath(*parts))


def nnunet_raw(model):
    """nnU-Net raw dataset folder of one model (DatasetNNN_DNQSM<Model>)."""
    spec = config["train"][model]
    return train_path("nnunet", "raw", f"Dataset{spec['dataset_id']:03d}_DNQSM{model.capitalize()}")
