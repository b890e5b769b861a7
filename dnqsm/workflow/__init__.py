"""The cohort workflow's own steps: BIDS discovery, batches, configuration, preprocessing and the
per-session glue the scripts call."""
