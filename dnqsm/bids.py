"""Finding images in BIDS datasets (pybids) and their derivative labels (dnqsm.io.bids_path)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dnqsm.io import bids_path


@dataclass(frozen=True)
class Session:
    subject: str
    session: str | None
    image: Path


def chimap_sessions(bids_dir: str | Path) -> list[Session]:
    """Every ``_Chimap`` image of a BIDS dataset, sorted by subject and session."""
    from bids import BIDSLayout

    layout = BIDSLayout(str(bids_dir), validate=False, derivatives=False)
    files = layout.get(suffix="Chimap", extension=[".nii", ".nii.gz"])
    sessions = [Session(f.entities["subject"], f.entities.get("session"), Path(f.path)) for f in files]
    return sorted(sessions, key=lambda s: (s.subject, s.session or ""))


def dentate_labels(labels_dir: str | Path, session: Session) -> Path:
    """Path of a session's DN labels in a derivative dataset (``desc-dentate_dseg``, left 1, right 2)."""
    return bids_path(labels_dir, session.subject, session.session, "dseg", desc="dentate")
