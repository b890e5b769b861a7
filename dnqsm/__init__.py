"""dnqsm: dentate nucleus segmentation and cohort analysis on QSM MRI."""

__version__ = "0.1.0"
