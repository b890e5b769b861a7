"""Looking at results: QC snapshots, the QC review page, and world-aligned views of images."""
