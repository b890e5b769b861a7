"""Training data and provenance for the two nnU-Net models."""
