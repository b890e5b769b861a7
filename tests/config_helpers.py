"""The workflow configuration the workflow tests start from."""

from __future__ import annotations

from pathlib import Path

from dnqsm.settings import defaults

REPO = Path(__file__).resolve().parents[1]


def default_config() -> dict:
    """The default configuration (the schema's defaults) as a user gets it, but with test-time mirroring
    off: its 8 passes make each segmentation about five times slower on the 2 cores `make test` has, and
    the workflow tests are about wiring, not the last thousandths of Dice (test_segment tests mirroring
    and its default)."""
    config = defaults()
    config["inference"]["mirroring"] = False
    return config
