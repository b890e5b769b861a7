"""MkDocs hooks: the configuration reference written from the schema, stale benchmark pages marked, and
the real-map montages shown where this machine has drawn them.

Used by ``mkdocs build`` (``mkdocs.yml``: ``hooks``); the functions they call live in the package.
"""

from __future__ import annotations

from pathlib import Path

from mkdocs.structure.files import File

from dnqsm.analysis.cohort import column_reference_markdown
from dnqsm.benchmark_page import is_stale, models_hash
from dnqsm.names import REAL_MAP_PAGE, REAL_MONTAGE_FOLDER
from dnqsm.workflow.config import reference_markdown

REPO = Path(__file__).resolve().parents[1]
#: Where `benchmarks/real.py` draws its montages by default. They stay out of the repository (the
#: development map may not be redistributed); the site shows them where they have been drawn.
REAL_MONTAGES = REPO / "results" / "real"
CONFIG_MARK = "<!-- configuration reference -->"
COLUMNS_MARK = "<!-- cohort table columns -->"
MODEL_CARD_MARK = "<!-- models/demo/MODEL_CARD.md -->"


def real_montages() -> list[Path]:
    """The real-map montages drawn on this machine (none in a fresh clone)."""
    return sorted(REAL_MONTAGES.glob("*.png"))


def on_files(files, config):
    for png in real_montages():  # served beside the real-map page, never copied into docs/
        files.append(File.generated(config, f"{REAL_MONTAGE_FOLDER}/{png.name}", abs_src_path=str(png)))
    return files


def montage_section() -> str:
    """The real-map page's montages, or where to draw them."""
    pngs = real_montages()
    if not pngs:
        return (
            "\n\n## Montages\n\nNot in the repository (the development map may not be redistributed): the "
            "command above draws them into `results/real/`, and a documentation build on that machine "
            "shows them here.\n"
        )
    shown = "\n\n".join(f"![{png.stem}]({REAL_MONTAGE_FOLDER.split('/', 1)[1]}/{png.name})" for png in pngs)
    return f"\n\n## Montages\n\nAs drawn on the machine that built this documentation (`results/real/`).\n\n{shown}\n"


def on_page_markdown(markdown: str, page, config, files) -> str:
    if CONFIG_MARK in markdown:
        markdown = markdown.replace(CONFIG_MARK, reference_markdown(REPO / "config" / "config.schema.yaml"))
    if MODEL_CARD_MARK in markdown:  # the card lives beside the models; its links point into docs/
        card = (REPO / "models" / "demo" / "MODEL_CARD.md").read_text()
        markdown = markdown.replace(MODEL_CARD_MARK, card.replace("](../../docs/", "]("))
    if COLUMNS_MARK in markdown:
        markdown = markdown.replace(COLUMNS_MARK, column_reference_markdown())
    if page.file.src_uri == REAL_MAP_PAGE:
        markdown = markdown.rstrip() + montage_section()
    measured = page.meta.get("models_hash")
    if page.file.src_uri.startswith("benchmarks/") and measured is not None:
        name = page.file.src_uri.removeprefix("benchmarks/").removesuffix(".md")
        if is_stale(name, page.meta):
            bundled = models_hash()
            note = (
                '!!! warning "Stale"\n    These numbers were measured with other models (hash '
                f"`{measured}`) than the bundled ones (`{bundled}`). Rerun the command below to "
                "measure the bundled models.\n\n"
            )
            lines = markdown.split("\n", 1)
            markdown = lines[0] + "\n\n" + note + (lines[1] if len(lines) > 1 else "")
    return markdown
