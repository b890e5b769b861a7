"""Benchmark pages: each benchmark script writes its table as a Markdown page of the documentation.

A page names what produced its numbers (the command, the date, the commit, the hash of the models it
measured and the machine), so the documentation shows measured tables, never hand-copied numbers; the
documentation build (``docs/hooks.py``) and README's headline table mark a page stale when its models'
hash is not that of the bundled models (:func:`is_stale`; pages of benchmarks that measure no model,
:data:`MEASURES_NO_MODEL`, never are).
"""

from __future__ import annotations

import hashlib
import os
import platform
import shlex
import sys
from datetime import UTC, datetime
from pathlib import Path

import yaml

from dnqsm.io import atomic_path

REPO = Path(__file__).resolve().parents[1]
PAGES = REPO / "docs" / "benchmarks"
README = REPO / "README.md"
BUNDLED_MODELS = REPO / "models" / "demo"
MODEL_FILES = ("localization.zip", "segmentation.zip")
#: Benchmarks whose numbers do not depend on the bundled models (generation speed, planning cost, and a
#: comparison that trains its own localization models): their pages record no models and are never stale.
MEASURES_NO_MODEL = ("localization_target", "scale", "synth_speed")


def models_hash(models_dir: str | Path | None = None) -> str:
    """First 12 hex digits of the sha256 over both model zips (the bundled ones by default); ``none``
    where the folder holds no models."""
    folder = Path(models_dir) if models_dir else BUNDLED_MODELS
    digest = hashlib.sha256()
    found = False
    for name in MODEL_FILES:
        path = folder / name
        if path.exists():
            digest.update(path.read_bytes())
            found = True
    return digest.hexdigest()[:12] if found else "none"


def is_stale(name: str, facts: dict) -> bool:
    """Whether page ``name`` (its front matter ``facts``) measured other models than the bundled ones."""
    return name not in MEASURES_NO_MODEL and facts.get("models_hash") != models_hash()


def commit() -> str:
    """The checked-out commit, with ``-dirty`` when tracked files differ from it (as the workflow's
    dataset description records it: :func:`dnqsm.analysis.cohort.git_commit`), except the pages and
    README's headlines: the benchmarks' own output, which no benchmark reads."""
    from dnqsm.analysis.cohort import git_commit

    return git_commit(REPO, ignore=(str(PAGES.relative_to(REPO)), README.name))


def machine() -> str:
    """CPU model and core count, and the GPU where torch sees one."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    text = f"{cpu}, {os.cpu_count()} cores"
    try:
        import torch

        if torch.cuda.is_available():
            text += f", GPU {torch.cuda.get_device_name(0)}"
        else:
            text += ", no GPU"
    except ImportError:
        pass
    return text


def write_page(
    name: str,
    title: str,
    body: str,
    models_dir: str | Path | None = None,
    argv: list[str] | None = None,
    pages: Path = PAGES,
    code: str | None = None,
) -> Path:
    """Write ``pages/<name>.md``: front matter and a header naming the command, date, commit (``code``:
    the one the benchmark started on; else the one checked out now), models' hash and machine, then
    ``body`` (the benchmark's Markdown). Replaces an earlier page of that name."""
    argv = sys.argv if argv is None else argv
    script = Path(argv[0])
    try:
        script = script.resolve().relative_to(REPO)
    except ValueError:
        pass
    measures_models = name not in MEASURES_NO_MODEL
    facts = {
        "title": title,
        "command": shlex.join(["python", str(script), *argv[1:]]),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": code or commit(),
        "models_hash": models_hash(models_dir) if measures_models else "none",
        "models": str(models_dir or "models/demo (bundled)") if measures_models else "none measured",
        "machine": machine(),
    }
    header = "\n".join(
        [
            f"# {title}",
            "",
            "| measured | |",
            "| --- | --- |",
            f"| command | `{facts['command']}` |",
            f"| date | {facts['date']} |",
            f"| commit | `{facts['commit']}` |",
            f"| models | {facts['models']}, hash `{facts['models_hash']}` |"
            if measures_models
            else "| models | none: these numbers do not depend on the models |",
            f"| machine | {facts['machine']} |",
            "",
            "Written by the benchmark script; rerun the command to replace this page.",
            "",
        ]
    )
    path = pages / f"{name}.md"
    with atomic_path(path) as tmp:
        tmp.write_text(
            "---\n"
            + yaml.safe_dump(facts, sort_keys=False, allow_unicode=True)
            + "---\n\n"
            + header
            + "\n"
            + body.rstrip()
            + "\n"
        )
    return path


def read_facts(text: str) -> dict:
    """The front matter of a benchmark page (empty when it has none)."""
    if not text.startswith("---\n"):
        return {}
    end = text.find("\n---", 4)
    return yaml.safe_load(text[4:end]) or {} if end > 0 else {}


class _Tee:
    """Standard output that is also kept."""

    def __init__(self, stream):
        self.stream, self.kept = stream, []

    def write(self, text: str) -> int:
        self.kept.append(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()


def publish(name: str, title: str, main, doc: str | None = None, argv: list[str] | None = None) -> None:
    """Run a benchmark's ``main()`` and, when it succeeds, write what it printed to standard output
    (its Markdown tables) as the page ``docs/benchmarks/<name>.md``, after the script's description
    (``doc``, its module docstring). The models are the folder after ``--models`` when given."""
    argv = sys.argv if argv is None else argv
    models_dir = argv[argv.index("--models") + 1] if "--models" in argv[:-1] else None
    code = commit()  # the code that runs is the code checked out when it starts
    tee = _Tee(sys.stdout)
    sys.stdout = tee
    try:
        main()
    finally:
        sys.stdout = tee.stream
    about = (doc or "").strip()
    body = (f"## What it measures\n\n```text\n{about}\n```\n\n" if about else "") + "## Results\n\n" + "".join(tee.kept)
    path = write_page(name, title, body, models_dir, argv, code=code)
    update_readme()
    print(f"page: {path.relative_to(REPO) if path.is_relative_to(REPO) else path}", file=sys.stderr)


def result_rows(text: str) -> list[dict[str, str]]:
    """The rows of every Markdown table under a page's ``## Results``, as {header: cell}."""
    rows: list[dict[str, str]] = []
    header: list[str] | None = None
    for line in text.split("## Results", 1)[-1].splitlines():
        if not line.startswith("|"):
            header = None
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if header is None:
            header = cells
        elif not all(set(cell) <= set("-: ") for cell in cells):
            rows.append(dict(zip(header, cells)))
    return rows


def _row(rows: list[dict[str, str]], first: str) -> dict[str, str] | None:
    return next((row for row in rows if next(iter(row.values()), None) == first), None)


def _dice(rows, cohort: str) -> str | None:
    row = _row(rows, cohort)
    if row is None:
        return None
    left, right = (row.get(f"Dice {side} (mean ± SD)", "").split(" ±")[0] for side in ("left", "right"))
    return f"Dice {left} / {right} (left / right)"


def _accuracy(rows, cohort: str) -> str | None:
    """Dice of a cohort on the accuracy page, one pass and mirrored (dnqsm's default) where both were run."""
    parts = []
    for mirroring, label in (("off", "one pass"), ("on", "mirrored (the default)")):
        row = next((r for r in rows if r.get("cohort") == cohort and r.get("mirroring") == mirroring), None)
        if row is not None:
            left, right = (row.get(f"Dice {side} (mean ± SD)", "").split(" ±")[0] for side in ("left", "right"))
            parts.append(f"{left} / {right} {label}")
    return f"Dice {', '.join(parts)} (left / right)" if parts else None


def _real(rows) -> str | None:
    if not rows:
        return None
    found = sum(
        1
        for row in rows
        if row.get("status") == "ok"
        and row.get("left mm³", "0") not in ("", "0")
        and row.get("right mm³", "0") not in ("", "0")
    )
    return f"both nuclei found, status ok: {found} of {len(rows)} map{'s' if len(rows) != 1 else ''}"


def _reconstructions(rows) -> str | None:
    others = [row for row in rows if row.get("reconstruction") not in (None, "the map as given")]
    if not others:
        return None

    def agrees(row: dict[str, str]) -> bool:
        try:
            dice = [float(v) for v in row.get("Dice left / right vs as given", "").split(" / ")]
        except ValueError:
            return False
        return row.get("status") == "ok" and min(dice) >= 0.75

    found = sum(agrees(row) for row in others)
    return f"status ok and Dice >= 0.75 against the map as given: {found} of {len(others)} reconstructions"


def _flags(rows) -> str | None:
    row = _row(rows, "**all**")
    return (
        None
        if row is None
        else (f"sensitivity {row.get('sensitivity')}, false-review rate {row.get('false-review rate')}")
    )


def _phantom(rows) -> str | None:
    row = _row(rows, "all")
    return (
        None if row is None else f"Dice {row.get('Dice, visible sides')} on visible nuclei ({row.get('visible sides')})"
    )


def _speed(rows) -> str | None:
    one = _row(rows, "batch of 4 in one process, mirroring off")
    mirrored = _row(rows, "batch, mirroring on")
    if one is None or mirrored is None:
        return None
    key = "wall s per image (incl. start-up)"
    return f"{one.get(key)} s per image in one pass, {mirrored.get(key)} s mirrored"


#: README's headline numbers: (page, what, how the number is read from the page's tables).
HEADLINES = (
    ("real", "real QSM maps", _real),
    ("real_variants", "one real brain, reconstructed other ways", _reconstructions),
    ("phantom", "physics phantoms of a real head", _phantom),
    ("robustness", "synthetic stress cohort (every look varied), one pass", lambda rows: _dice(rows, "stress cohort")),
    ("segment_accuracy", "synthetic `test` cohort", lambda rows: _accuracy(rows, "test")),
    ("segment_accuracy", "synthetic `external` sites", lambda rows: _accuracy(rows, "external")),
    ("flags", "poor results flagged / good results doubted", _flags),
    ("segment_speed", "engine on a 1 mm image, 2 CPU cores", _speed),
)


def headlines_markdown(pages: Path = PAGES, link_prefix: str = "docs/benchmarks/") -> str:
    """README's headline table, read from the benchmark pages (a page whose models are not the bundled
    ones is marked stale)."""
    lines = ["| what | measured | page |", "| --- | --- | --- |"]
    for name, what, read in HEADLINES:
        path = pages / f"{name}.md"
        if not path.exists():
            continue
        text = path.read_text()
        value = read(result_rows(text))
        if value is None:
            continue
        facts = read_facts(text)
        stale = " **(stale: other models)**" if is_stale(name, facts) else ""
        lines.append(f"| {what} | {value}{stale} | [{facts.get('title', name)}]({link_prefix}{name}.md) |")
    return "\n".join(lines)


def update_readme(readme: Path = README, pages: Path = PAGES) -> bool:
    """Rewrite the headline block of README (between its headlines markers); True if it changed."""
    start, end = "<!-- headlines:start -->", "<!-- headlines:end -->"
    text = readme.read_text()
    if start not in text or end not in text:
        return False
    before, rest = text.split(start, 1)
    after = rest.split(end, 1)[1]
    updated = f"{before}{start}\n{headlines_markdown(pages)}\n{end}{after}"
    if updated != text:
        readme.write_text(updated)
    return updated != text
