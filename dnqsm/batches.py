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

from pathlib import Path

import pandas as pd

from dnqsm.bids import Session
from dnqsm.io import write_tsv

COLUMNS = ["session_key", "batch", "batch_size", "subject", "session", "image", "entities"]


def session_key(session: Session) -> str:
    """The entry's key (:attr:`dnqsm.bids.Session.key`: subject, session and the image's kept entities)."""
    return session.key


def _entities_text(session: Session) -> str:
    return "_".join(f"{k}-{v}" for k, v in session.entities)


def _entities(text: str) -> tuple[tuple[str, str], ...]:
    return tuple(tuple(item.split("-", 1)) for item in text.split("_") if item)  # type: ignore[misc]


def plan_batches(sessions: list[Session], manifest: str | Path, batch_size: int, write: bool = True
                 ) -> dict[str, list[Session]]:
    """``{batch id: sessions}``: listed sessions keep their batch, new ones fill new batches of
    ``batch_size`` in subject/session order. Writes the manifest when the plan changed and ``write``."""
    manifest = Path(manifest)
    by_key = {session_key(s): s for s in sessions}
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
    table = pd.DataFrame({"session_key": list(assigned), "batch": list(assigned.values()), "batch_size": str(batch_size),
                          "subject": [by_key[k].subject for k in assigned],
                          "session": [by_key[k].session or "" for k in assigned],
                          "image": [str(by_key[k].image) for k in assigned],
                          "entities": [_entities_text(by_key[k]) for k in assigned]},
                         columns=COLUMNS).sort_values(["batch", "session_key"])
    if write and (not manifest.exists() or not _read(manifest).reset_index(drop=True).equals(table.reset_index(drop=True))):
        manifest.parent.mkdir(parents=True, exist_ok=True)
        write_tsv(manifest, table)
    return dict(sorted(batches.items()))


def read_plan(manifest: str | Path) -> dict[str, list[Session]]:
    """The batches (and so the sessions) the main process planned, without looking at the dataset:
    what a cluster job uses instead of discovering the cohort again. Empty for a missing manifest or
    one written before it listed the sessions."""
    manifest = Path(manifest)
    table = _read(manifest) if manifest.exists() else pd.DataFrame(columns=COLUMNS)
    if (table["subject"] == "").any():
        return {}
    batches: dict[str, list[Session]] = {}
    for row in table.itertuples(index=False):
        batches.setdefault(row.batch, []).append(Session(row.subject, row.session or None, Path(row.image), _entities(row.entities)))
    order = lambda s: (s.subject, s.session or "", s.image.name)  # noqa: E731 -- the discovery's order
    return {batch: sorted(members, key=order) for batch, members in sorted(batches.items())}


def _read(manifest: Path) -> pd.DataFrame:
    """The manifest as text (batch ids keep their leading zeros); one from before the session columns
    reads with them empty, so the main process rewrites it."""
    table = pd.read_csv(manifest, sep="\t", dtype=str, keep_default_na=False)
    return table.reindex(columns=COLUMNS, fill_value="")
