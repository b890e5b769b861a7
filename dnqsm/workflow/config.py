"""The workflow configuration's helpers: training cohorts as (BIDS, labels) pairs and the configuration
reference generated from the schema (docs/configuration.md). Reading and validating a configuration is
`dnqsm.settings`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from dnqsm.settings import SCHEMA, ConfigError, check


def training_cohorts(bids_dir: str | Path | list, labels_dir: str | Path | list) -> list[tuple[Path, Path]]:
    """config ``train.bids_dir`` and ``train.labels_dir`` (one cohort, or lists of cohorts pooled into
    one training set) as (BIDS folder, labels folder) pairs; ValueError when the lists do not pair up."""
    bids = [bids_dir] if isinstance(bids_dir, (str, Path)) else list(bids_dir)
    labels = [labels_dir] if isinstance(labels_dir, (str, Path)) else list(labels_dir)
    if len(bids) != len(labels):
        raise ValueError(
            f"train.bids_dir lists {len(bids)} cohorts but train.labels_dir {len(labels)} label "
            "folders: give one labels folder per cohort, in the same order"
        )
    return [(Path(b), Path(lab)) for b, lab in zip(bids, labels)]


def _type_text(schema: dict) -> str:
    """A short human reading of what a schema node accepts."""
    if "enum" in schema:
        return ", ".join(f"`{v}`" for v in schema["enum"])
    if "const" in schema:
        return f"`{schema['const']}`"
    options = schema.get("anyOf") or schema.get("oneOf") or schema.get("allOf")
    if options and "type" not in schema:
        return " or ".join(dict.fromkeys(_type_text(o) for o in options if _type_text(o)))
    kinds = schema.get("type", [])
    kinds = [kinds] if isinstance(kinds, str) else kinds
    words = []
    for kind in kinds:
        if kind == "array":
            item = _type_text(schema.get("items", {}))
            count = schema.get("minItems") if schema.get("minItems") == schema.get("maxItems") else None
            words.append(f"list of {count or ''}{' ' if count else ''}{item or 'values'}".replace("  ", " "))
        elif kind == "null":
            words.append("`null`")
        elif kind == "object":
            words.append("mapping")
        else:
            words.append(kind)
    return " or ".join(words)


def schema_keys(schema: dict) -> list[tuple[str, dict]]:
    """Every key of the workflow configuration schema as (dotted path, its schema), depth first, with the
    per-model training keys under ``train.<model>`` (the schema's ``$defs/model``)."""
    found: list[tuple[str, dict]] = []

    def walk(node: dict, prefix: str) -> None:
        for name, child in node.get("properties", {}).items():
            if set(child) == {"default"}:  # a model's own default of a key described in $defs/model
                continue
            path = f"{prefix}{name}"
            found.append((path, child))
            walk(child, f"{path}.")
            if path == "train.segmentation":  # both models share $defs/model: list it once, here
                walk(schema.get("$defs", {}).get("model", {}), "train.<model>.")

    walk(schema, "")
    return found


def reference_markdown(schema_path: str | Path = SCHEMA) -> str:
    """The configuration reference as Markdown tables, one per top-level section, written from the
    schema's descriptions and defaults so it cannot drift from them. Raises ConfigError naming every
    key that has no description."""
    schema = yaml.safe_load(Path(schema_path).read_text())
    filled = check({}, schema_path)
    keys = schema_keys(schema)
    undocumented = [path for path, node in keys if not node.get("description")]
    if undocumented:
        raise ConfigError(f"{schema_path}: no description for {', '.join(undocumented)}")

    def value(path: str) -> Any:
        node: Any = filled
        for part in path.split("."):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return node

    def shown(node: Any) -> str:
        return f"`{yaml.safe_dump(node, default_flow_style=True, width=10_000).strip().removesuffix('...').strip()}`"

    def default(path: str) -> str:
        if path.startswith("train.<model>."):  # each model has its own defaults
            rest = path.removeprefix("train.<model>.")
            per_model = {model: value(f"train.{model}.{rest}") for model in ("localization", "segmentation")}
            if len({shown(v) for v in per_model.values()}) > 1:
                return ", ".join(f"{shown(v)} ({model})" for model, v in per_model.items())
            path = f"train.localization.{rest}"
        found = value(path)
        return "" if isinstance(found, dict) else shown(found)

    def row(path: str, node: dict) -> str:
        meaning = node["description"].replace("|", "\\|").replace("\n", " ")
        return f"| `{path}` | {_type_text(node).replace('|', '/')} | {default(path)} | {meaning} |"

    header = ["| key | accepts | default | meaning |", "| --- | --- | --- | --- |"]
    top = [row(path, node) for path, node in keys if "." not in path and not node.get("properties")]
    lines = ["## Input, output and selection", "", *header, *top]
    for path, node in keys:
        if "." not in path and node.get("properties"):
            about = node["description"][0].upper() + node["description"][1:]
            lines += ["", f"## `{path}`", "", f"{about}.", "", *header]
        elif "." in path:
            lines.append(row(path, node))
    return "\n".join(lines) + "\n"
