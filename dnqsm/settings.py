"""The configuration schema and its defaults: every key's type, meaning and default live in
config/config.schema.yaml; here they are read, command-line values typed and a configuration
validated with one clear line.

Snakemake's ``--config inference="{batch_size: 2}"`` hands nested values over as text ('2'), which a
JSON schema then refuses; and a failed validation prints the whole schema and config. Here a text
value is read as YAML wherever the schema does not allow text at that place (so '2' becomes 2 for an
integer key, while a participant label '001' stays text), and a problem is reported as one line
naming the key (jsonschema's best match). Every layer (engine, workflow, training) takes its defaults
here, so that they live in the schema only.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import jsonschema
import yaml

#: The configuration schema: every key's type, meaning and default (the one place defaults live).
SCHEMA = Path(__file__).resolve().parents[1] / "config" / "config.schema.yaml"


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
