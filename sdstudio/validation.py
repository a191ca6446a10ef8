"""JSON schema validation of model replies' items, with one-line reasons a user can act on.

Split out of parsing.py: finding JSON in a reply and judging it against the use case's schema are two
jobs, and custom workflow steps and the grounding check validate values that parsing never saw.
"""
from __future__ import annotations

import json
from typing import Any

from .errors import ConfigError

__all__ = ["MAX_REASON", "compiled", "jsonschema_module", "one_line", "reason", "validate_item"]

MAX_REASON = 200

_VALIDATORS: dict[str, Any] = {}


def jsonschema_module() -> Any:
    """jsonschema, imported on first use. At import it loads its optional IRI format checker
    (``rfc3987_syntax``), which compiles a grammar for ~0.9 s of CPU; sdstudio never checks formats, so
    that module is kept out of this one import (and stays importable by anything that wants it)."""
    import sys

    if "jsonschema" not in sys.modules and "rfc3987_syntax" not in sys.modules:
        sys.modules["rfc3987_syntax"] = None  # type: ignore[assignment]  # ImportError inside jsonschema
        try:
            import jsonschema
        finally:
            del sys.modules["rfc3987_syntax"]
    import jsonschema
    import jsonschema.exceptions

    return jsonschema


def compiled(schema: dict) -> Any:
    """Compiled validators are cached because every item of a 10k-reply job uses the same schema."""
    key = json.dumps(schema, sort_keys=True, default=str)
    found = _VALIDATORS.get(key)
    if found is None:
        jsonschema = jsonschema_module()
        validators, SchemaError = jsonschema.validators, jsonschema.exceptions.SchemaError
        # Draft 2020-12 unless the schema names its own draft with "$schema".
        cls = validators.validator_for(schema, default=validators.Draft202012Validator)
        try:
            cls.check_schema(schema)
        except SchemaError as exc:
            raise ConfigError(one_line(f"output JSON schema is invalid: {exc.message}; fix the use "
                                        "case's output_schema")) from None
        if len(_VALIDATORS) >= 128:
            _VALIDATORS.clear()
        found = _VALIDATORS[key] = cls(schema)
    return found


def validate_item(value: Any, schema: dict | None) -> str | None:
    """None when ``value`` satisfies ``schema`` (or there is none), else a one-line reason."""
    if schema is None:
        return None
    return reason(value, schema, compiled(schema))


def reason(value: Any, schema: dict, validator: Any) -> str | None:
    wanted = schema.get("type") if isinstance(schema, dict) else None
    if wanted in ("object", ["object"]) and not isinstance(value, dict):
        return f"expected a JSON object, got {kind_of(value)}"
    if validator.is_valid(value):  # most items are: best_match (which ranks every error) only for the others
        return None
    error = jsonschema_module().exceptions.best_match(validator.iter_errors(value))
    if error is None:
        return None
    message = error.message
    if error.absolute_path:
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
        where = where.lstrip(".")
        prefix = repr(error.instance)
        # jsonschema starts most messages with the bad value; the field name says more (and is short).
        message = f"{where!r}{message[len(prefix):]}" if message.startswith(prefix) \
            else f"{where!r}: {message}"
    return one_line(message)


KINDS = {type(None): "null", bool: "a boolean", int: "a number", float: "a number", list: "an array",
          str: "a string"}


def kind_of(value: Any) -> str:
    return KINDS.get(type(value), type(value).__name__)


def one_line(text: str, limit: int = MAX_REASON) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
