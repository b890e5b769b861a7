"""The one place that knows the DN label convention (DOMAIN.md): left DN = 1, right DN = 2, and how a
nucleus's voxels connect."""

from __future__ import annotations

import numpy as np

LEFT, RIGHT = 1, 2
#: Side -> label value, in the order sides are listed everywhere (left first).
SIDES: dict[str, int] = {"left": LEFT, "right": RIGHT}
#: Label value -> side.
SIDE_OF: dict[int, str] = {label: side for side, label in SIDES.items()}
#: A nucleus's voxels belong together when they touch by a face, an edge or a corner (26-connectivity):
#: wherever dnqsm counts, keeps or pairs the connected parts of a DN mask.
NUCLEUS_CONNECTIVITY = np.ones((3, 3, 3), bool)
