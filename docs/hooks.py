"""MkDocs hooks: the configuration reference written from the schema, and stale benchmark pages marked.

Used by ``mkdocs build`` (``mkdocs.yml``: ``hooks``); the functions they call live in the package.
"""

from __future__ import annotations

from pathlib import Path

from dnqsm.analysis.cohort import column_reference_markdown
from dnqsm.benchmark_page import is_stale, models_hash
from dnqsm.workflow.config import reference_markdown

REPO = Path(__file__).resolve().parents[1]
CONFIG_MARK = "<!-- configuration reference -->"
COLUMNS_MARK = "<!-- cohort table columns -->"
MODEL_CARD_MARK = "<!-- models/demo/MODEL_CARD.md -->"


def on_page_markdown(markdown: str, page, config, files) -> str:
    if CONFIG_MARK in markdown:
        markdown = markdown.replace(CONFIG_MARK, reference_markdown(REPO / "config" / "config.schema.yaml"))
    if MODEL_CARD_MARK in markdown:  # the card lives beside the models; its links point into docs/
        card = (REPO / "models" / "demo" / "MODEL_CARD.md").read_text()
        markdown = markdown.replace(MODEL_CARD_MARK, card.replace("](../../docs/", "]("))
    if COLUMNS_MARK in markdown:
        markdown = markdown.replace(COLUMNS_MARK, column_reference_markdown())
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
