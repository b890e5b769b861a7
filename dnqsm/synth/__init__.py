"""Synthetic QSM cohorts with known dentate-nucleus labels and planted cohort effects."""

from dnqsm.synth.cohort import PRESETS, Preset
from dnqsm.synth.dataset import SynthError, write_dataset

__all__ = ["PRESETS", "Preset", "SynthError", "write_dataset"]
