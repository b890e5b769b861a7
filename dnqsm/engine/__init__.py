"""The two-step method and its checks: localization, segmentation (nnU-Net or the atlas baseline),
confidence, the longitudinal mode and the registrations they share."""
