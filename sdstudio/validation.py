"""JSON schema validation of model replies' items, with one-line reasons a user can act on.

Split out of parsing.py: finding JSON in a reply and judging it against the use case's schema are two
jobs, and custom workflow steps and the grounding check validate values that parsing never saw.

Every item of a job is checked against the same schema, and most items are valid, so the common case does not
go through jsonschema (~50 µs an item, and ~50 ms to import): the schemas use cases write (``type``,
``properties``, ``required``, ``additionalProperties``, ``enum`` of strings, lengths, ``items``, annotations)
compile to a plain predicate (``fast_predicate``) that answers "valid" only for values jsonschema accepts.
Everything else goes to jsonschema, which alone gives verdicts of "invalid" and writes every reason: items the
predicate does not pass, and schemas outside that subset. jsonschema is imported only when it is needed.
"""
from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

from .errors import ConfigError

__all__ = ["MAX_REASON", "Compiled", "check_schema", "compiled", "fast_predicate", "jsonschema_module",
           "one_line", "reason", "validate_item"]

MAX_REASON = 200
# jsonschema's optional format checkers that no metaschema uses (they check "date-time", "color", "duration"...
# in data, only for a FormatChecker, which sdstudio never passes): kept out of its import, ~15 ms with arrow.
# rfc3986_validator stays: the metaschemas' "uri" formats use it when a schema is checked.
_UNUSED_FORMAT_MODULES = ("rfc3987_syntax", "isoduration", "webcolors", "uri_template", "rfc3339_validator",
                          "jsonpointer", "fqdn", "idna")

_VALIDATORS: dict[str, Compiled] = {}
_BY_ID: dict[int, tuple[Any, Any, Compiled]] = {}  # id(schema) -> (that schema, a copy as it was, its checks)


def jsonschema_module() -> Any:
    """jsonschema, imported on first use. At import it loads its optional format checkers; the IRI one
    (``rfc3987_syntax``) compiles a grammar for ~0.9 s of CPU. sdstudio never checks formats in data, so the ones
    no metaschema needs are kept out of this one import (and stay importable by anything that wants them)."""
    import sys

    if "jsonschema" not in sys.modules:
        blocked = [name for name in _UNUSED_FORMAT_MODULES if name not in sys.modules]
        for name in blocked:
            sys.modules[name] = None  # type: ignore[assignment]  # ImportError inside jsonschema
        try:
            import jsonschema
        finally:
            for name in blocked:
                del sys.modules[name]
    import jsonschema
    import jsonschema.exceptions

    return jsonschema


def check_schema(schema: Any) -> None:
    """None when ``schema`` is a valid JSON schema, else jsonschema's ``SchemaError``. A schema the fast predicate
    compiles is valid by construction (each keyword it takes is checked to be well formed), so jsonschema is not
    imported for it."""
    if fast_predicate(schema) is not None:
        return
    validators = jsonschema_module().validators
    validators.validator_for(schema, default=validators.Draft202012Validator).check_schema(schema)


class Compiled:
    """One schema's checks: the fast predicate (None outside its subset), then jsonschema's validator, built
    the first time an item does not pass the predicate."""

    __slots__ = ("schema", "fast", "_validator")

    def __init__(self, schema: Any, fast: Callable[[Any], bool] | None, validator: Any = None):
        self.schema, self.fast, self._validator = schema, fast, validator

    @property
    def validator(self) -> Any:
        if self._validator is None:
            self._validator = _jsonschema_validator(self.schema)
        return self._validator

    def is_valid(self, value: Any) -> bool:
        return (self.fast is not None and self.fast(value)) or self.validator.is_valid(value)

    def iter_errors(self, value: Any) -> Any:
        return self.validator.iter_errors(value)


def _jsonschema_validator(schema: Any) -> Any:
    jsonschema = jsonschema_module()
    validators, SchemaError = jsonschema.validators, jsonschema.exceptions.SchemaError
    # Draft 2020-12 unless the schema names its own draft with "$schema".
    cls = validators.validator_for(schema, default=validators.Draft202012Validator)
    try:
        cls.check_schema(schema)
    except SchemaError as exc:
        raise ConfigError(one_line(f"output JSON schema is invalid: {exc.message}; fix the use "
                                    "case's output_schema")) from None
    return cls(schema)


def compiled(schema: dict) -> Compiled:
    """Compiled checks are cached because every item of a 10k-reply job uses the same schema: by the schema
    object while it is unchanged (a job passes the same dict for every reply), else by its content."""
    hit = _BY_ID.get(id(schema))
    if hit is not None and hit[0] is schema and hit[1] == schema:
        return hit[2]
    key = json.dumps(schema, sort_keys=True, default=str)
    found = _VALIDATORS.get(key)
    if found is None:
        fast = fast_predicate(schema)
        # a schema outside the predicate's subset is checked now, so a bad one fails before any item
        found = Compiled(schema, fast, None if fast is not None else _jsonschema_validator(schema))
        if len(_VALIDATORS) >= 128:
            _VALIDATORS.clear()
        _VALIDATORS[key] = found
    if len(_BY_ID) >= 128:
        _BY_ID.clear()
    _BY_ID[id(schema)] = (schema, copy.deepcopy(schema), found)
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


# --------------------------------------------------------------------------- the fast predicate

# JSON's types by the Python type json.loads gives them; exact types only: a subclass (or any other type) is
# never passed by the predicate, so jsonschema judges it
_JSON_TYPES = {"object": (dict,), "array": (list,), "string": (str,), "integer": (int,), "number": (int, float),
               "boolean": (bool,), "null": (type(None),)}
_PLAIN = frozenset({dict, list, str, int, float, bool, type(None)})
_TEXT_ANNOTATIONS = ("title", "description", "$comment", "format")  # formats: asserted only with a FormatChecker
_FLAG_ANNOTATIONS = ("deprecated", "readOnly", "writeOnly")
_MAX_DEPTH = 32


def fast_predicate(schema: Any) -> Callable[[Any], bool] | None:
    """A predicate true only for values jsonschema's Draft 2020-12 validator (no format checker) accepts; None
    when ``schema`` uses anything outside the subset below, or is not a well-formed schema.

    The subset: ``type`` (a name or a list of names), ``properties``, ``required``, ``additionalProperties``,
    ``items`` (a schema), ``enum`` of strings, ``minLength``/``maxLength``/``minItems``/``maxItems``, and the
    annotations (title, description, $comment, format, default, examples, deprecated, readOnly, writeOnly).
    The predicate may answer False for a valid value (a float that is an integer, a str subclass): jsonschema
    has the last word then."""
    try:
        return _node(schema, 0)
    except RecursionError:
        return None


def _is_count(value: Any) -> bool:
    return type(value) is int and value >= 0


def _node(schema: Any, depth: int) -> Callable[[Any], bool] | None:
    if schema is True or schema == {} and type(schema) is dict:
        return _anything
    if type(schema) is not dict or depth > _MAX_DEPTH:
        return None
    types: frozenset | None = None
    integral_floats = False  # "integer" without "number": a float passes only when it is whole
    lengths, counts = [0, None], [0, None]
    enum: frozenset | None = None
    required: tuple = ()
    properties: list[tuple[str, Callable[[Any], bool]]] = []
    named: frozenset = frozenset()
    extra: Callable[[Any], bool] | None = None  # additionalProperties as a predicate; None: any extra key passes
    no_extra = False
    items: Callable[[Any], bool] | None = None
    for key, arg in schema.items():
        if key == "type":
            names = [arg] if type(arg) is str else arg if type(arg) is list and arg else None
            if names is None or any(type(n) is not str or n not in _JSON_TYPES for n in names) \
                    or len(set(names)) != len(names):
                return None
            types = frozenset(t for n in names for t in _JSON_TYPES[n])
            integral_floats = "integer" in names and "number" not in names
        elif key in ("minLength", "maxLength", "minItems", "maxItems"):
            if not _is_count(arg):
                return None
            (lengths if key.endswith("Length") else counts)[0 if key.startswith("min") else 1] = arg
        elif key == "enum":
            if type(arg) is not list or any(type(v) is not str for v in arg):
                return None
            enum = frozenset(arg)
        elif key == "required":
            if type(arg) is not list or any(type(v) is not str for v in arg) or len(set(arg)) != len(arg):
                return None
            required = tuple(arg)
        elif key == "properties":
            if type(arg) is not dict:
                return None
            for name, sub in arg.items():
                check = _node(sub, depth + 1)
                if type(name) is not str or check is None:
                    return None
                if check is not _anything:
                    properties.append((name, check))
            named = frozenset(arg)
        elif key == "additionalProperties":
            if arg is False:
                no_extra = True
            else:
                extra = _node(arg, depth + 1)
                if extra is None:
                    return None
                if extra is _anything:
                    extra = None
        elif key == "items":
            items = _node(arg, depth + 1)
            if items is None:
                return None
            if items is _anything:
                items = None
        elif key in _TEXT_ANNOTATIONS:
            if type(arg) is not str:
                return None
        elif key in _FLAG_ANNOTATIONS:
            if type(arg) is not bool:
                return None
        elif key == "examples":
            if type(arg) is not list:
                return None
        elif key != "default":
            return None  # a keyword outside the subset ($ref, pattern, minimum, anyOf, $schema...): jsonschema
    min_length, max_length = lengths
    min_items, max_items = counts
    properties_t = tuple(properties)

    def check(value: Any) -> bool:
        kind = type(value)
        if kind not in _PLAIN:
            return False
        if types is not None and kind not in types:
            if not (integral_floats and kind is float and value.is_integer()):
                return False
        if kind is str:
            if len(value) < min_length or (max_length is not None and len(value) > max_length):
                return False
        if enum is not None and (kind is not str or value not in enum):
            return False
        if kind is dict:
            for name in required:
                if name not in value:
                    return False
            if no_extra or extra is not None:
                for name in value:
                    if name not in named and (no_extra or not extra(value[name])):
                        return False
            for name, sub in properties_t:
                if name in value and not sub(value[name]):
                    return False
        elif kind is list:
            if len(value) < min_items or (max_items is not None and len(value) > max_items):
                return False
            if items is not None:
                for each in value:
                    if not items(each):
                        return False
        return True

    return check


def _anything(value: Any) -> bool:
    return True
