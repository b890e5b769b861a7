"""The QC review loop: automatic flags per session, one static HTML page to look at and rate every
segmentation, and the ratings file the statistics read back.

The page is a single file under the output dataset: it needs no server, network or CDN (opened from
``file://``), links each session's snapshot by a relative path, keeps ratings in the browser's
localStorage and exports them as ``qc_ratings.tsv``. Session data travels as JSON inside a
``<script type="application/json">`` block with ``<``, ``>`` and ``&`` escaped, and the page's script
only ever writes text (``textContent``), so labels and metadata taken from file names cannot inject
markup.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dnqsm.analysis.cohort import ENTITIES_COLUMN, entry_key
from dnqsm.io import atomic_path, read_tsv

RATINGS = ("pass", "fail", "uncertain")
RATING_COLUMNS = ["participant_id", "session_id", "rating", "comment"]
#: Robust z-score (median/MAD within group) beyond which a measure is flagged.
OUTLIER_Z = 3.5
#: |2 (L - R) / (L + R)| of volume beyond which a session is flagged.
ASYMMETRY_LIMIT = 0.4
OUTLIER_MEASURES = {
    "left_volume_mm3": "left volume",
    "right_volume_mm3": "right volume",
    "left_chi_mean_ppb": "left χ",
    "right_chi_mean_ppb": "right χ",
}
#: Groups smaller than this get no outlier flags (a median/MAD of a handful of values means little).
MIN_SESSIONS_FOR_OUTLIERS = 5


def robust_z(values: pd.Series) -> pd.Series:
    """0.6745 (x - median) / MAD; NaN where the MAD is zero."""
    median = values.median()
    mad = (values - median).abs().median()
    if not np.isfinite(mad) or mad == 0:
        return pd.Series(np.nan, index=values.index)
    return 0.6745 * (values - median) / mad


def session_flags(table: pd.DataFrame) -> pd.Series:
    """A list of flag texts per row of the cohort table."""
    flags: dict[int, list[str]] = {i: [] for i in table.index}
    ok = table["status"].isin(["ok", "review"])  # review: labels and measures exist, a check doubts them
    for i in table.index[~ok]:
        flags[i].append("failed")
    for i in table.index[table["status"] == "review"]:
        flags[i].append("needs review")
    groups = table["group"].fillna("(no group)") if "group" in table else pd.Series("all", index=table.index)
    for _, rows in table[ok].groupby(groups[ok]):
        if len(rows) < MIN_SESSIONS_FOR_OUTLIERS:
            continue
        for column, name in OUTLIER_MEASURES.items():
            z = robust_z(rows[column])
            for i, value in z.items():
                if np.isfinite(value) and abs(value) > OUTLIER_Z:
                    flags[i].append(f"outlier {name} (z {value:+.1f})")
    for i, row in table[ok].iterrows():
        if isinstance(row.get("missing_sides"), str) and row["missing_sides"]:
            flags[i].append(f"missing side: {row['missing_sides']}")
        asym = row.get("asymmetry_volume")
        if asym is not None and np.isfinite(asym) and abs(asym) > ASYMMETRY_LIMIT:
            flags[i].append(f"L/R asymmetry {asym:+.2f}")
        if max(row.get("left_components") or 0, row.get("right_components") or 0) > 1:
            flags[i].append("several components")
        if str(row.get("box_touches_image_edge")).lower() == "true":
            flags[i].append("box at image edge")
    return pd.Series(flags)


def read_ratings(path: str | Path) -> pd.DataFrame:
    """Read a ``qc_ratings.tsv`` (as the page exports it); raise ValueError naming the file and problem."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: QC ratings file not found (config qc.ratings)")
    table = read_tsv(path)
    missing = [c for c in RATING_COLUMNS[:3] if c not in table]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; expected {RATING_COLUMNS}")
    bad = table.loc[~table["rating"].isin(RATINGS), "rating"]
    if len(bad):
        raise ValueError(f"{path}: unknown rating(s) {sorted(set(map(str, bad)))}; expected one of {list(RATINGS)}")
    if "comment" not in table:
        table["comment"] = ""
    extra = [ENTITIES_COLUMN] if ENTITIES_COLUMN in table else []  # cohorts with several images per session
    return table[RATING_COLUMNS + extra].fillna({"comment": "", **{c: "" for c in extra}})


def _number(value: Any) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return round(value, 3) if np.isfinite(value) else None


def page_records(table: pd.DataFrame, snapshots: dict[str, str], ratings: pd.DataFrame | None) -> list[dict]:
    """What the page shows for each session; ``snapshots`` maps session key to a relative PNG path."""
    flags = session_flags(table)
    given = {}
    if ratings is not None:
        for r in ratings.itertuples():
            given[entry_key(r)] = {"rating": r.rating, "comment": r.comment}
    records = []
    for i, row in table.iterrows():
        key = entry_key(row)
        records.append(
            {
                "key": key,
                "participant_id": row["participant_id"],
                "session_id": row["session_id"] if isinstance(row.get("session_id"), str) else "",
                "image_entities": row[ENTITIES_COLUMN] if isinstance(row.get(ENTITIES_COLUMN), str) else "",
                "group": str(row.get("group", "")) if pd.notna(row.get("group")) else "",
                "site": str(row.get("site", "")) if pd.notna(row.get("site")) else "",
                "status": row["status"],
                "error": row.get("error") if isinstance(row.get("error"), str) else "",
                "review_reasons": [r for r in str(row.get("review_reasons") or "").split("; ") if r and r != "nan"],
                "measures": {
                    name: _number(row.get(name))
                    for name in (
                        "left_volume_mm3",
                        "right_volume_mm3",
                        "left_chi_mean_ppb",
                        "right_chi_mean_ppb",
                        "asymmetry_volume",
                    )
                },
                "flags": flags[i],
                "snapshot": snapshots.get(key, ""),
                "given": given.get(key),
            }
        )
    return records


def _script_json(data: Any) -> str:
    """JSON safe inside a <script> element."""
    return (
        json.dumps(data, sort_keys=True, ensure_ascii=False)
        .replace("&", "\\u0026")
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
    )


#: The page itself (HTML, CSS and script in one file; ``__TITLE__`` and ``__DATA__`` are filled in).
PAGE_TEMPLATE = Path(__file__).with_name("page.html")


def write_page(path: str | Path, records: list[dict], title: str, storage_key: str) -> Path:
    """Write the self-contained review page (atomically), from :data:`PAGE_TEMPLATE`."""
    html = (
        PAGE_TEMPLATE.read_text(encoding="utf-8")
        .replace("__TITLE__", _escape_text(title))
        .replace("__DATA__", _script_json({"sessions": records, "storageKey": storage_key, "title": title}))
    )
    with atomic_path(path) as tmp:
        tmp.write_text(html, encoding="utf-8")
    return Path(path)


def _escape_text(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
