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

from dnqsm.cohort import ENTITIES_COLUMN, entry_key
from dnqsm.io import atomic_path, read_tsv

RATINGS = ("pass", "fail", "uncertain")
RATING_COLUMNS = ["participant_id", "session_id", "rating", "comment"]
#: Robust z-score (median/MAD within group) beyond which a measure is flagged.
OUTLIER_Z = 3.5
#: |2 (L - R) / (L + R)| of volume beyond which a session is flagged.
ASYMMETRY_LIMIT = 0.4
OUTLIER_MEASURES = {"left_volume_mm3": "left volume", "right_volume_mm3": "right volume",
                    "left_chi_mean_ppb": "left χ", "right_chi_mean_ppb": "right χ"}
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
        records.append({
            "key": key, "participant_id": row["participant_id"],
            "session_id": row["session_id"] if isinstance(row.get("session_id"), str) else "",
            "image_entities": row[ENTITIES_COLUMN] if isinstance(row.get(ENTITIES_COLUMN), str) else "",
            "group": str(row.get("group", "")) if pd.notna(row.get("group")) else "",
            "site": str(row.get("site", "")) if pd.notna(row.get("site")) else "",
            "status": row["status"], "error": row.get("error") if isinstance(row.get("error"), str) else "",
            "review_reasons": [r for r in str(row.get("review_reasons") or "").split("; ") if r and r != "nan"],
            "measures": {name: _number(row.get(name)) for name in (
                "left_volume_mm3", "right_volume_mm3", "left_chi_mean_ppb", "right_chi_mean_ppb", "asymmetry_volume")},
            "flags": flags[i], "snapshot": snapshots.get(key, ""), "given": given.get(key),
        })
    return records


def _script_json(data: Any) -> str:
    """JSON safe inside a <script> element."""
    return (json.dumps(data, sort_keys=True, ensure_ascii=False)
            .replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e"))


def write_page(path: str | Path, records: list[dict], title: str, storage_key: str) -> Path:
    """Write the self-contained review page (atomically)."""
    html = (PAGE.replace("__TITLE__", _escape_text(title))
            .replace("__DATA__", _script_json({"sessions": records, "storageKey": storage_key, "title": title})))
    with atomic_path(path) as tmp:
        tmp.write_text(html, encoding="utf-8")
    return Path(path)


def _escape_text(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


PAGE = r"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src 'self' file: data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<title>__TITLE__</title>
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 0; background: #111; color: #eee; }
  header { position: sticky; top: 0; background: #1d1d1d; padding: 8px 14px; border-bottom: 1px solid #333; z-index: 2; }
  header h1 { font-size: 16px; margin: 0 0 6px 0; display: inline-block; margin-right: 16px; }
  header label { margin-right: 10px; font-size: 13px; }
  select, button, input { background: #2a2a2a; color: #eee; border: 1px solid #555; border-radius: 4px; padding: 2px 6px; }
  #progress { font-weight: 600; margin-right: 16px; }
  #help { font-size: 12px; color: #aaa; margin-top: 4px; }
  main { padding: 10px 14px; }
  .card { border: 2px solid #333; border-radius: 6px; margin: 0 0 14px 0; padding: 8px; background: #181818;
          display: grid; grid-template-columns: 330px 1fr; gap: 12px; scroll-margin-top: 110px; }
  .info { position: sticky; top: 110px; align-self: start; }
  .info button { margin: 6px 4px 0 0; }
  .card.current { border-color: #ffd60a; }
  .card h2 { font-size: 15px; margin: 0 8px 4px 0; display: inline-block; }
  .meta { color: #bbb; font-size: 13px; }
  .flag { display: inline-block; background: #6b3d00; color: #ffd9a0; border-radius: 3px; padding: 0 5px; margin: 2px 4px 2px 0; font-size: 12px; }
  .rating { font-weight: 700; padding: 0 6px; border-radius: 3px; }
  .rating.pass { background: #145a24; } .rating.fail { background: #7a1010; } .rating.uncertain { background: #5c4b00; }
  .card img { max-width: 100%; width: 640px; display: block; background: #000; }
  .error { color: #ff9f0a; }
  .comment { width: 95%; margin-top: 6px; }
</style>
</head>
<body>
<header>
  <h1 id="title"></h1><span id="progress"></span>
  <label>flags <select id="filter-flag"><option value="">all</option><option value="review">needs review</option><option value="flagged">flagged</option><option value="clean">no flags</option></select></label>
  <label>group <select id="filter-group"><option value="">all</option></select></label>
  <label>site <select id="filter-site"><option value="">all</option></select></label>
  <label>rating <select id="filter-rating"><option value="">all</option><option value="unrated">unrated</option><option value="pass">pass</option><option value="fail">fail</option><option value="uncertain">uncertain</option></select></label>
  <label>sort <select id="sort"><option value="status">needs review first</option><option value="key">subject, session</option><option value="flags">most flags first</option><option value="left_volume_mm3">left volume</option><option value="right_volume_mm3">right volume</option><option value="left_chi_mean_ppb">left χ</option><option value="asymmetry_volume">asymmetry</option></select></label>
  <button id="export">export qc_ratings.tsv (e)</button>
  <div id="help">keys: j / ↓ next · k / ↑ previous · p pass · f fail · u uncertain · x clear · c comment (Enter to save, Esc to leave) · e export</div>
</header>
<main id="list"></main>
<script type="application/json" id="data">__DATA__</script>
<script>
"use strict";
const DATA = JSON.parse(document.getElementById("data").textContent);
const SESSIONS = DATA.sessions;
const STORE = "dnqsm-qc:" + DATA.storageKey;
let ratings = {};
try { ratings = JSON.parse(localStorage.getItem(STORE) || "{}"); } catch (e) { ratings = {}; }
for (const s of SESSIONS) { if (s.given && !(s.key in ratings)) ratings[s.key] = {rating: s.given.rating, comment: s.given.comment || ""}; }
let visible = [];
let current = 0;

function el(tag, cls, text) { const e = document.createElement(tag); if (cls) e.className = cls; if (text !== undefined) e.textContent = text; return e; }
function save() { localStorage.setItem(STORE, JSON.stringify(ratings)); }
function fmt(v, digits) { return v === null || v === undefined ? "n/a" : Number(v).toFixed(digits); }

function fillSelect(id, values) {
  const select = document.getElementById(id);
  for (const v of [...new Set(values)].filter(v => v !== "").sort()) { const o = el("option", "", v); o.value = v; select.appendChild(o); }
}

function render() {
  const flag = document.getElementById("filter-flag").value, group = document.getElementById("filter-group").value;
  const site = document.getElementById("filter-site").value, rating = document.getElementById("filter-rating").value;
  const sort = document.getElementById("sort").value;
  visible = SESSIONS.filter(s => (!flag || (flag === "review" ? s.status === "review" : flag === "flagged" ? s.flags.length > 0 : s.flags.length === 0))
    && (!group || s.group === group) && (!site || s.site === site)
    && (!rating || (rating === "unrated" ? !(ratings[s.key] && ratings[s.key].rating) : ratings[s.key] && ratings[s.key].rating === rating)));
  const rank = {review: 0, ok: 1, failed: 2};  // failed sessions have no labels to rate: last
  if (sort === "status") visible.sort((a, b) => (rank[a.status] ?? 2) - (rank[b.status] ?? 2) || a.key.localeCompare(b.key));
  else if (sort === "flags") visible.sort((a, b) => b.flags.length - a.flags.length || a.key.localeCompare(b.key));
  else if (sort === "key") visible.sort((a, b) => a.key.localeCompare(b.key));
  else visible.sort((a, b) => (a.measures[sort] ?? Infinity) - (b.measures[sort] ?? Infinity));
  const list = document.getElementById("list");
  list.replaceChildren();
  visible.forEach((s, i) => list.appendChild(card(s, i)));
  current = Math.min(current, Math.max(visible.length - 1, 0));
  highlight(false);
  progress();
}

function card(s, i) {
  const outer = el("section", "card"); outer.id = "card-" + i; outer.dataset.key = s.key;
  const c = el("div", "info"); outer.appendChild(c);
  c.appendChild(el("h2", "", s.key));
  const r = ratings[s.key];
  const badge = el("span", "rating" + (r && r.rating ? " " + r.rating : ""), r && r.rating ? r.rating : "unrated");
  badge.dataset.role = "rating"; c.appendChild(badge);
  c.appendChild(el("div", "meta", "group " + (s.group || "n/a") + " · site " + (s.site || "n/a") + " · status " + s.status));
  const m = s.measures;
  c.appendChild(el("div", "meta", "left: " + fmt(m.left_volume_mm3, 0) + " mm³, " + fmt(m.left_chi_mean_ppb, 1) + " ppb"));
  c.appendChild(el("div", "meta", "right: " + fmt(m.right_volume_mm3, 0) + " mm³, " + fmt(m.right_chi_mean_ppb, 1) + " ppb"));
  c.appendChild(el("div", "meta", "volume asymmetry 2(L−R)/(L+R): " + fmt(m.asymmetry_volume, 2)));
  if (s.error) c.appendChild(el("div", "error", s.error));
  for (const reason of s.review_reasons || []) c.appendChild(el("div", "error", "needs review: " + reason));
  const flags = el("div"); for (const f of s.flags) flags.appendChild(el("span", "flag", f)); c.appendChild(flags);
  const comment = el("input", "comment"); comment.type = "text"; comment.placeholder = "comment (c)";
  comment.value = r && r.comment ? r.comment : ""; comment.dataset.role = "comment";
  comment.addEventListener("keydown", ev => {
    if (ev.key === "Enter" || ev.key === "Escape") { setComment(s.key, comment.value); comment.blur(); ev.preventDefault(); }
    ev.stopPropagation();
  });
  comment.addEventListener("change", () => setComment(s.key, comment.value));
  c.appendChild(comment);
  for (const value of ["pass", "fail", "uncertain"]) {
    const b = el("button", "", value); b.addEventListener("click", () => { current = i; rate(value, false); }); c.appendChild(b);
  }
  if (s.snapshot) { const img = el("img"); img.loading = "lazy"; img.alt = "QC snapshot " + s.key; img.src = s.snapshot; outer.appendChild(img); }
  outer.addEventListener("click", () => { current = i; highlight(false); });
  return outer;
}

function progress() {
  const rated = SESSIONS.filter(s => ratings[s.key] && ratings[s.key].rating).length;
  document.getElementById("progress").textContent = rated + " / " + SESSIONS.length + " rated";
}

function highlight(scroll) {
  document.querySelectorAll(".card.current").forEach(c => c.classList.remove("current"));
  const c = document.getElementById("card-" + current);
  if (c) { c.classList.add("current"); if (scroll) c.scrollIntoView({block: "start"}); }
}

function setComment(key, text) {
  ratings[key] = Object.assign({rating: ""}, ratings[key] || {}, {comment: text});
  save();
}

function rate(value, advance) {
  const s = visible[current]; if (!s) return;
  ratings[s.key] = Object.assign({comment: ""}, ratings[s.key] || {}, {rating: value});
  save();
  const badge = document.querySelector("#card-" + current + " [data-role=rating]");
  badge.textContent = value || "unrated"; badge.className = "rating" + (value ? " " + value : "");
  progress();
  if (advance && current < visible.length - 1) { current += 1; highlight(true); }
}

function clean(text) { return String(text || "").replace(/[\t\r\n]+/g, " "); }

function exportTsv() {
  const entities = SESSIONS.some(s => s.image_entities);  // several images per session: say which one
  const lines = ["participant_id\tsession_id\trating\tcomment" + (entities ? "\timage_entities" : "")];
  for (const s of SESSIONS) {
    const r = ratings[s.key];
    if (r && r.rating) lines.push([s.participant_id, s.session_id || "n/a", r.rating, clean(r.comment),
                                   ...(entities ? [s.image_entities || "n/a"] : [])].join("\t"));
  }
  const blob = new Blob([lines.join("\n") + "\n"], {type: "text/tab-separated-values"});
  const a = el("a"); a.href = URL.createObjectURL(blob); a.download = "qc_ratings.tsv";
  document.body.appendChild(a); a.click(); a.remove();
}

document.addEventListener("keydown", ev => {
  if (ev.target.tagName === "INPUT" || ev.target.tagName === "SELECT" || ev.ctrlKey || ev.metaKey || ev.altKey) return;
  const keys = {j: () => move(1), ArrowDown: () => move(1), k: () => move(-1), ArrowUp: () => move(-1),
    p: () => rate("pass", true), f: () => rate("fail", true), u: () => rate("uncertain", true), x: () => rate("", false),
    c: () => { const i = document.querySelector("#card-" + current + " [data-role=comment]"); if (i) i.focus(); },
    e: exportTsv};
  if (keys[ev.key]) { keys[ev.key](); ev.preventDefault(); }
});
function move(step) { current = Math.max(0, Math.min(visible.length - 1, current + step)); highlight(true); }

document.getElementById("title").textContent = DATA.title;
fillSelect("filter-group", SESSIONS.map(s => s.group));
fillSelect("filter-site", SESSIONS.map(s => s.site));
for (const id of ["filter-flag", "filter-group", "filter-site", "filter-rating", "sort"]) document.getElementById(id).addEventListener("change", () => { current = 0; render(); });
document.getElementById("export").addEventListener("click", exportTsv);
render();
</script>
</body>
</html>
"""
