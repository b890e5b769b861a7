"""Finding images in BIDS datasets (pybids) and their derivative labels (dnqsm.io.bids_path)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from dnqsm.io import bids_path


@dataclass(frozen=True)
class Session:
    subject: str
    session: str | None
    image: Path


def chimap_sessions(bids_dir: str | Path) -> list[Session]:
    """Every ``_Chimap`` image of a BIDS dataset, sorted by subject and session.

    A plain walk of ``sub-*/[ses-*/]anat/`` with pybids' own filename parser (``parse_file_entities``)
    instead of a ``BIDSLayout``: the layout's database indexed every sidecar and cost seconds per
    thousand sessions; the walk costs milliseconds, and the entities are read the way pybids reads them."""
    from bids.layout import parse_file_entities
    from bids.layout.models import Config

    entities_spec = list(Config.load("bids").entities.values())  # loaded once, not once per file
    root = Path(bids_dir)
    sessions = []
    for pattern in ("sub-*/anat/*_Chimap.nii*", "sub-*/ses-*/anat/*_Chimap.nii*"):
        for path in root.glob(pattern):
            if not path.name.endswith((".nii", ".nii.gz")):
                continue
            entities = parse_file_entities(str(path), entities=entities_spec)
            if "subject" not in entities:
                continue
            sessions.append(Session(str(entities["subject"]), str(entities["session"]) if "session" in entities else None,
                                    path))
    return sorted(sessions, key=lambda s: (s.subject, s.session or "", s.image.name))


def dentate_labels(labels_dir: str | Path, session: Session) -> Path:
    """Path of a session's DN labels in a derivative dataset (``desc-dentate_dseg``, left 1, right 2)."""
    return bids_path(labels_dir, session.subject, session.session, "dseg", desc="dentate")


def _label(value: str, entity: str) -> str:
    return value.removeprefix(f"{entity}-")


def select_sessions(bids_dir: str | Path, participant_label: list[str] | None = None,
                    exclude_participant_label: list[str] | None = None,
                    exclude_sessions: list[str] | None = None) -> list[Session]:
    """The ``_Chimap`` images to process: only ``participant_label`` (all when empty), minus the
    excluded participants and ``sub-<label>[_ses-<label>]`` sessions. Raises ValueError for a label
    that matches nothing (a typo would otherwise silently shrink the cohort) and for a dataset that
    mixes images with and without a session level."""
    found = chimap_sessions(bids_dir)
    subjects = {s.subject for s in found}
    wanted = {_label(p, "sub") for p in participant_label or []}
    dropped = {_label(p, "sub") for p in exclude_participant_label or []}
    for label in sorted((wanted | dropped) - subjects):
        raise ValueError(f"participant {label!r} named in the config has no _Chimap image in {bids_dir}")
    known = {f"sub-{s.subject}" + (f"_ses-{s.session}" if s.session else "") for s in found}
    for name in sorted(set(exclude_sessions or []) - known):
        raise ValueError(f"excluded session {name!r} has no _Chimap image in {bids_dir}")
    selected = [s for s in found if (not wanted or s.subject in wanted) and s.subject not in dropped
                and f"sub-{s.subject}" + (f"_ses-{s.session}" if s.session else "") not in set(exclude_sessions or [])]
    if len({s.session is None for s in selected}) > 1:
        raise ValueError(f"{bids_dir}: some images have a session level (ses-*) and others do not; "
                         "dnqsm needs one layout per dataset")
    counts = Counter((s.subject, s.session) for s in selected)
    duplicates = [key for key, n in counts.items() if n > 1]
    if duplicates:
        raise ValueError(f"{bids_dir}: several _Chimap images for {sorted(duplicates)}; use acq-/run- entities "
                         "in separate datasets or exclude the extras")
    return selected
