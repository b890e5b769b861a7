"""Segmentation batches that do not move when sessions are added.

A batch's members are written to a manifest (``work_dir/batches.tsv``) the first time they are
planned; later runs keep every listed session in its batch and put sessions not seen before into new
batches after the last one. So a study that adds visits every month re-segments only the new ones:
existing batch folders, and every output made from them, stay byte-identical. A session that leaves
the cohort (excluded, image removed) changes its batch's membership, and that batch reruns; changing
``inference.batch_size`` plans the whole cohort afresh.

The manifest also lists each session's subject, session and image, so it is the session list of the
run: cluster jobs parse the workflow again and read it (:func:`read_plan`) instead of discovering the
cohort anew, and see exactly the sessions and batches the main process planned; only the main
process, with a changed plan, rewrites it (atomically).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from pathlib import Path

import pandas as pd

from dnqsm.io import write_tsv
from dnqsm.workflow.bids import Session

COLUMNS = ["session_key", "batch", "batch_size", "subject", "session", "image", "entities"]


def _order(session: Session) -> tuple[str, str, str]:
    """The discovery's order: subject, session, image name."""
    return session.subject, session.session or "", session.image.name


class Plan(Mapping[str, list[Session]]):
    """``{batch id: its sessions}`` in batch order, and what the workflow asks of a plan: the batch of
    an entry key, every session, a subject's sessions.

    The main process builds it from the sessions it discovered; a cluster job reads it from the
    manifest (:func:`read_plan`), where a batch's rows become :class:`Session` objects only when a rule
    asks for that batch: a job works on one batch, and turning 50,000 rows into sessions cost it 2.5 s
    of every parse."""

    def __init__(self, members: dict[str, list], batch_of: dict[str, str], has_sessions: bool):
        self._members = members  # batch -> sessions, or manifest rows not yet turned into sessions
        self.batch_of = batch_of  #: entry key (:attr:`Session.key`) -> batch id
        self.has_sessions = has_sessions  #: whether the dataset has session labels

    def __getitem__(self, batch: str) -> list[Session]:
        members = self._members[batch]
        if members and not isinstance(members[0], Session):
            members = self._members[batch] = sorted((_from_row(row) for row in members), key=_order)
        return members

    def __iter__(self) -> Iterator[str]:
        return iter(self._members)

    def __len__(self) -> int:
        return len(self._members)

    @functools.cached_property
    def sessions(self) -> list[Session]:
        """Every planned entry in the discovery's order."""
        return sorted((s for batch in self for s in self[batch]), key=_order)

    @functools.cached_property
    def by_subject(self) -> dict[str, list[Session]]:
        """``{subject: its entries}`` in the discovery's order."""
        out: dict[str, list[Session]] = {}
        for s in self.sessions:
            out.setdefault(s.subject, []).append(s)
        return out


EMPTY = Plan({}, {}, False)


def _from_row(row: dict[str, str]) -> Session:
    return Session(row["subject"], row["session"] or None, Path(row["image"]), _entities(row["entities"]))


def _entities_text(session: Session) -> str:
    return "_".join(f"{k}-{v}" for k, v in session.entities)


def _entities(text: str) -> tuple[tuple[str, str], ...]:
    return tuple(tuple(item.split("-", 1)) for item in text.split("_") if item)  # type: ignore[misc]


def plan_batches(sessions: list[Session], manifest: str | Path, batch_size: int, write: bool = True) -> Plan:
    """``{batch id: sessions}``: listed sessions keep their batch, new ones fill new batches of
    ``batch_size`` in subject/session order. Writes the manifest when the plan changed and ``write``."""
    manifest = Path(manifest)
    by_key = {s.key: s for s in sessions}  # subject, session and the image's kept entities
    assigned: dict[str, str] = {}
    if manifest.exists():
        old = _read(manifest)
        if len(old) and (old["batch_size"].astype(int) == batch_size).all():
            assigned = {k: b for k, b in zip(old["session_key"], old["batch"]) if k in by_key}
    new = [k for k in by_key if k not in assigned]
    start = max((int(b) for b in assigned.values()), default=0)
    for i, key in enumerate(new):
        assigned[key] = f"{start + i // batch_size + 1:03d}"
    batches: dict[str, list[Session]] = {}
    for key in by_key:  # keeps the subject/session order inside each batch
        batches.setdefault(assigned[key], []).append(by_key[key])
    table = pd.DataFrame(
        {
            "session_key": list(assigned),
            "batch": list(assigned.values()),
            "batch_size": str(batch_size),
            "subject": [by_key[k].subject for k in assigned],
            "session": [by_key[k].session or "" for k in assigned],
            "image": [str(by_key[k].image) for k in assigned],
            "entities": [_entities_text(by_key[k]) for k in assigned],
        },
        columns=COLUMNS,
    ).sort_values(["batch", "session_key"])
    if write and (
        not manifest.exists() or not _read(manifest).reset_index(drop=True).equals(table.reset_index(drop=True))
    ):
        manifest.parent.mkdir(parents=True, exist_ok=True)
        write_tsv(manifest, table)
    return Plan(dict(sorted(batches.items())), dict(assigned), any(s.session for s in sessions))


def read_plan(manifest: str | Path) -> Plan:
    """The batches (and so the sessions) the main process planned, without looking at the dataset:
    what a cluster job uses instead of discovering the cohort again. Empty for a missing manifest or
    one written before it listed the sessions. Rows become sessions batch by batch, when asked."""
    manifest = Path(manifest)
    if not manifest.exists():
        return EMPTY
    text = manifest.read_text()
    if '"' in text:  # a quoted field (a path with a tab or a quote): pandas reads what pandas wrote
        table = _read(manifest)
        rows = table.to_dict("records")
    else:  # the common case, split as text: pandas cost a cluster job 1.4 s of its parse at 50,000 sessions
        lines = text.splitlines()
        header = lines[0].split("\t") if lines else []
        if header != COLUMNS:
            return EMPTY  # written before it listed the sessions: the main process rewrites it
        rows = [dict(zip(COLUMNS, line.split("\t"))) for line in lines[1:] if line]
    if not rows or any(row["subject"] == "" for row in rows):
        return EMPTY
    members: dict[str, list] = {}
    for row in rows:
        members.setdefault(row["batch"], []).append(row)
    return Plan(
        dict(sorted(members.items())),
        {row["session_key"]: row["batch"] for row in rows},
        any(row["session"] != "" for row in rows),
    )


def _read(manifest: Path) -> pd.DataFrame:
    """The manifest as text (batch ids keep their leading zeros); one from before the session columns
    reads with them empty, so the main process rewrites it."""
    table = pd.read_csv(manifest, sep="\t", dtype=str, keep_default_na=False)
    return table.reindex(columns=COLUMNS, fill_value="")
