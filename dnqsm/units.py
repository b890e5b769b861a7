"""The one place that knows susceptibility units.

All dnqsm outputs report susceptibility in ppb; inputs may be in ppm or ppb.
"""

from __future__ import annotations

import numpy as np

#: Multiply a value in the given unit by this factor to get ppb.
PPB_PER_UNIT: dict[str, float] = {"ppm": 1000.0, "ppb": 1.0}
OUTPUT_UNIT = "ppb"


def check_unit(unit: str) -> str:
    """Return ``unit`` if it is known, else raise ValueError naming the accepted units."""
    if unit not in PPB_PER_UNIT:
        raise ValueError(f"unknown susceptibility unit {unit!r}; expected one of {sorted(PPB_PER_UNIT)}")
    return unit


def to_ppb(values, unit: str):
    """Convert values given in ``unit`` to ppb."""
    return np.asarray(values) * PPB_PER_UNIT[check_unit(unit)]


def from_ppb(values, unit: str):
    """Convert values given in ppb to ``unit``."""
    return np.asarray(values) / PPB_PER_UNIT[check_unit(unit)]
