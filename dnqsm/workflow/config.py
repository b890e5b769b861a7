"""The workflow configuration: command-line values typed by the schema, then validated with one clear line.

Snakemake's ``--config inference="{batch_size: 2}"`` hands nested values over as text ('2'), which a
JSON schema then refuses; and a failed validation prints the whole schema and config. Here a text
value is read as YAML wherever the schema does not allow text at that place (so '2' becomes 2 for an
integer key, while a participant label '001' stays text), and a problem is reported as one line
naming the key (jsonschema's best match).
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import jsonschema
import yaml

#: The configuration schema: every key's type, meaning and default (the one place defaults live).
SCHEMA = Path(__file__).resolve().parents[2] / "config" / "config.schema.yaml"


class ConfigError(ValueError):
    """A configuration problem, phrased for the user in one line."""


@functools.cache
def _defaults() -> dict:
    return check({}, SCHEMA)


def defaults(section: str | None = None) -> dict:
    """The default configuration (every key, from the schema's defaults), or one section of it; a new
    dict each call. Library code that runs without the workflow (``dnqsm segment``, the atlas baseline,
    the longitudinal mode) takes its defaults here, so that they live in the schema only."""
    found = _defaults()
    return copy.deepcopy(found if section is None else found[section])


def _allows_text(schema: dict) -> bool:
    kinds = schema.get("type")
    if kinds is None:
        options = schema.get("anyOf") or schema.get("oneOf") or []
        return not options or any(_allows_text(o) for o in options)
    return "string" in ([kinds] if isinstance(kinds, str) else kinds)


def _kinds(schema: dict) -> set[str]:
    """JSON types a schema allows (through anyOf/oneOf); empty when it does not say."""
    kinds = schema.get("type")
    if kinds is not None:
        return {kinds} if isinstance(kinds, str) else set(kinds)
    return set().union(*(_kinds(o) for o in schema.get("anyOf") or schema.get("oneOf") or []))


def typed(value: Any, schema: dict) -> Any:
    """``value`` with text leaves read as YAML where ``schema`` expects no text, or where it also allows
    null, booleans or numbers and the text is one (``{rec: null}`` on the command line)."""
    if isinstance(value, dict):
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        return {k: typed(v, props.get(k, extra if isinstance(extra, dict) else {})) for k, v in value.items()}
    if isinstance(value, list):
        items = schema.get("items", {})
        return [typed(v, items) for v in value]
    if isinstance(value, str) and schema:
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            return value
        if not _allows_text(schema):
            return typed(parsed, schema) if isinstance(parsed, (dict, list)) else parsed
        kind = {type(None): "null", bool: "boolean", int: "integer", float: "number"}.get(type(parsed))
        if kind and kind in _kinds(schema):
            return parsed
    return value


def _with_defaults(validator_class: type) -> type:
    """A validator that also fills in the schema's defaults (the jsonschema FAQ recipe, which
    ``snakemake.utils.validate`` uses too): one pass validates and sets defaults."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):  # type: ignore[no-untyped-def]
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if "default" in subschema:
                    instance.setdefault(name, subschema["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


def check(config: dict, schema_path: str | Path) -> dict:
    """Type command-line values in place, fill in the schema's defaults and validate; raise
    ConfigError naming the key on a problem. Every cluster job runs this again while parsing the
    workflow, so the schema is read with libyaml where present and validated in one pass."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    schema = yaml.load(Path(schema_path).read_text(), Loader=loader)  # noqa: S506 -- a safe loader
    config.update(typed(config, schema))
    validator = _with_defaults(jsonschema.Draft202012Validator)(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(config))
    if error is not None:
        where = ".".join(str(p) for p in error.absolute_path) or "(top level)"
        raise ConfigError(f"config {where}: {error.message} (see docs/configuration.md)")
    return config


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
