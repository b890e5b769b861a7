# Configuration validation and the one place that builds workflow paths.
from pathlib import Path

from snakemake.utils import validate

validate(config, schema="../config/config.schema.yaml")


def synth_dataset_description():
    """dataset_description.json of the synthetic cohort named in config['synth']."""
    return str(Path(config["synth"]["out"]) / "dataset_description.json")
