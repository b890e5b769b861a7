"""Finding images in BIDS datasets (pybids) and their derivative labels (dnqsm.io.bids_path)."""

from __future__ import annotations

import functools
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dnqsm import names
from dnqsm.io import bids_name

# entities a filename may carry besides sub- and ses- (BIDS keys, as in file names)
FILTER_ENTITIES = ("acq", "ce", "rec", "run", "echo", "flip", "inv", "mt", "part", "chunk", "desc", "space")
#: entities that tell a session's images apart and are kept in the derivative names (desc and space
#: belong to the derivative: dnqsm's files say desc-dentate, and every label is on the image's grid)
KEPT_ENTITIES = FILTER_ENTITIES[:10]


@dataclass(frozen=True)
class Session:
    subject: str
    session: str | None
    image: Path
    entities: tuple[tuple[str, str], ...] = ()  # other BIDS entities of the image, e.g. (("rec", "tkd"),)

    @property
    def kept(self) -> dict[str, str]:
        """The image's entities that its derivative file names keep (e.g. ``{"rec": "tkd"}``)."""
        return {key: value for key, value in self.entities if key in KEPT_ENTITIES}

    @property
    def key(self) -> str:
        """The entry's name: ``sub-<label>[_ses-<label>][_acq-..._rec-..._run-...]``, the stem of its
        derivative files; unique in a selection (several images of one session are several entries)."""
        return bids_name("", "", sub=self.subject, ses=self.session, **self.kept).rstrip("_")

    @property
    def visit(self) -> str:
        """The participant and visit: ``sub-<label>[_ses-<label>]`` (what exclude_sessions names)."""
        return bids_name("", "", sub=self.subject, ses=self.session).rstrip("_")

    @property
    def image_entities(self) -> str:
        """The kept entities as in a file name (``rec-tkd_run-2``); empty for an image without any."""
        return "_".join(f"{k}-{v}" for k, v in self.kept.items())


@functools.cache
def bids_entity_keys() -> frozenset[str]:
    """Every entity key pybids knows (raw BIDS and derivatives, e.g. QSMxT's desc-), as in file names."""
    from bids.layout.models import Config

    keys = set()
    for config in ("bids", "derivatives"):
        for spec in Config.load(config).entities.values():
            found = re.search(r"(\w+)-\(", spec.pattern or "")
            if found:
                keys.add(found.group(1))
    return frozenset(keys)


_LABEL = re.compile(r"[a-zA-Z0-9]+")


def file_entities(path: Path) -> dict[str, str]:
    """The key-value entities of a BIDS file name (``sub-01_ses-2_rec-tkd_Chimap.nii.gz`` ->
    ``{"sub": "01", "ses": "2", "rec": "tkd"}``): keys pybids knows with alphanumeric labels; other
    parts (the suffix, unknown keys) are left out, as pybids' parser leaves them out."""
    known = bids_entity_keys()
    stem = path.name.split(".", 1)[0]
    entities = {}
    for part in stem.split("_")[:-1]:
        key, dash, value = part.partition("-")
        if dash and key in known and _LABEL.fullmatch(value):
            entities.setdefault(key, value)
    return entities


def _subfolders(folder: str, prefix: str) -> list[str]:
    with os.scandir(folder) as entries:
        return [entry.name for entry in entries if entry.name.startswith(prefix) and entry.is_dir()]


def _chimap_files(root: Path) -> list[tuple[tuple[str, ...], Path]]:
    """``((sub-<label>[, ses-<label>]), path)`` of every ``sub-*/[ses-*/]anat/*_Chimap.nii[.gz]``: one
    ``os.scandir`` per folder (file types from the directory entries, no stat per file)."""
    found = []
    for subject in _subfolders(str(root), "sub-"):
        levels = [(subject,)] + [(subject, ses) for ses in _subfolders(os.path.join(root, subject), "ses-")]
        for folders in levels:
            anat = os.path.join(root, *folders, "anat")
            if not os.path.isdir(anat):
                continue
            with os.scandir(anat) as entries:
                found += [
                    (folders, Path(entry.path))
                    for entry in entries
                    if entry.name.endswith(("_Chimap.nii", "_Chimap.nii.gz")) and not entry.is_dir()
                ]
    return found


def chimap_sessions(bids_dir: str | Path) -> list[Session]:
    """Every ``_Chimap`` image of a BIDS dataset, sorted by subject and session.

    A plain walk of ``sub-*/[ses-*/]anat/`` that splits each file name into its entities
    (:func:`file_entities`, keys checked against pybids' entity list) instead of a ``BIDSLayout``,
    whose database indexed every sidecar (seconds per thousand sessions), or pybids' regex parser per
    file (17 s at 50,000 sessions); the split costs milliseconds per thousand. Raises ValueError for a
    file whose name names another subject or session than its folders."""
    sessions = []
    for folders, path in _chimap_files(Path(bids_dir)):
        subject = folders[0].removeprefix("sub-")
        session = folders[1].removeprefix("ses-") if len(folders) > 1 else None
        entities = file_entities(path)
        if entities.get("sub", subject) != subject or entities.get("ses", session) != session:
            raise ValueError(
                f"{path}: the file name says sub-{entities.get('sub', subject)}"
                f"{'_ses-' + entities['ses'] if 'ses' in entities else ''} but it lies in "
                f"{'/'.join(folders)}; rename or move it"
            )
        others = tuple((key, entities[key]) for key in FILTER_ENTITIES if key in entities)
        sessions.append(Session(subject, session, path, others))
    return sorted(sessions, key=lambda s: (s.subject, s.session or "", s.image.name))


def matches(session: Session, bids_filters: dict[str, Any]) -> bool:
    """Whether an image passes config ``bids_filters``: {entity: value, [values], true (present) or
    null/false (absent)}; runs compare as numbers (run-1 equals run-01)."""
    entities = dict(session.entities)
    for key, wanted in bids_filters.items():
        value = entities.get(key)
        if wanted is None or wanted is False:
            ok = value is None
        elif wanted is True:
            ok = value is not None
        else:
            allowed = wanted if isinstance(wanted, list) else [wanted]
            same = (
                (lambda a, b: int(a) == int(b))
                if key in ("run", "echo", "flip", "inv", "chunk")
                else (lambda a, b: str(a) == str(b))
            )
            ok = value is not None and any(same(value, w) for w in allowed)
        if not ok:
            return False
    return True


def dentate_labels(labels_dir: str | Path, session: Session) -> Path:
    """Path of a session's DN labels (left 1, right 2) in a labelled derivative dataset."""
    return names.dentate_labels(labels_dir, session.subject, session.session)


def _label(value: str, entity: str) -> str:
    return value.removeprefix(f"{entity}-")


def select_sessions(
    bids_dir: str | Path,
    participant_label: list[str] | None = None,
    exclude_participant_label: list[str] | None = None,
    exclude_sessions: list[str] | None = None,
    bids_filters: dict[str, Any] | None = None,
) -> list[Session]:
    """The ``_Chimap`` images to process: those passing ``bids_filters`` (see :func:`matches`), only
    ``participant_label`` (all when empty), minus the excluded participants and
    ``sub-<label>[_ses-<label>]`` sessions. Raises ValueError for a label that matches nothing (a typo
    would otherwise silently shrink the cohort), for filters that leave nothing, for a dataset that
    mixes images with and without a session level, and for images of one session that only desc- or
    space- tell apart (several images that acq-, rec-, run- etc. tell apart are several entries, each
    with those entities in its derivative names)."""
    every = chimap_sessions(bids_dir)
    found = [s for s in every if matches(s, bids_filters or {})]
    if every and not found:
        seen = sorted({"_".join(f"{k}-{v}" for k, v in s.entities) or "(no other entities)" for s in every})
        raise ValueError(
            f"bids_filters {bids_filters} match none of the {len(every)} _Chimap images in {bids_dir}; "
            f"their entities: {', '.join(seen[:10])}"
        )
    subjects = {s.subject for s in found}
    wanted = {_label(p, "sub") for p in participant_label or []}
    dropped = {_label(p, "sub") for p in exclude_participant_label or []}
    for label in sorted((wanted | dropped) - subjects):
        raise ValueError(f"participant {label!r} named in the config has no _Chimap image in {bids_dir}")
    known = {s.visit for s in found}
    for name in sorted(set(exclude_sessions or []) - known):
        raise ValueError(f"excluded session {name!r} has no _Chimap image in {bids_dir}")
    selected = [
        s
        for s in found
        if (not wanted or s.subject in wanted)
        and s.subject not in dropped
        and s.visit not in set(exclude_sessions or [])
    ]
    if len({s.session is None for s in selected}) > 1:
        raise ValueError(
            f"{bids_dir}: some images have a session level (ses-*) and others do not; "
            "dnqsm needs one layout per dataset"
        )
    counts = Counter(s.key for s in selected)
    duplicates = sorted(key for key, n in counts.items() if n > 1)
    if duplicates:
        names = [s.image.name for s in selected if s.key == duplicates[0]]
        differ = sorted({k for s in selected if s.key == duplicates[0] for k, _ in s.entities} - set(KEPT_ENTITIES))
        raise ValueError(
            f"{bids_dir}: {len(duplicates)} session(s) have several _Chimap images that only "
            f"{', '.join(differ) or 'their file type'} tell apart, e.g. {duplicates[0]}: {', '.join(names)}; "
            f"pick one per session with bids_filters in the config (e.g. bids_filters: "
            f"{{{(differ or ['desc'])[0]}: <label>}})"
        )
    return selected
