"""Checking a hand-written YAML file (a use case, a workflow preset) against a pydantic model, and saying
what is wrong in one line that names the key.

Why not ``config.describe_validation_error``: job configs come from flags and forms as much as from files,
and their models are lax (``"5"`` from a text box is 5). Files a user writes by hand are checked strictly —
YAML's ``5`` is not the text ``"5"``, ``true`` is not 1, ``abc`` is not a list — and the words are a YAML
writer's (``expected a list``), not pydantic's (``Input should be a valid list``).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator


def _unset_nulls(data: Any) -> Any:
    """``key:`` with nothing after it is YAML's null: it means "not set", as leaving the key out does."""
    return {k: v for k, v in data.items() if v is not None} if isinstance(data, dict) else data


class StrictFile(BaseModel):
    """Base of a hand-written file's model: unknown keys refused, no type coercion, null means unset."""

    # hide_input: an error line names the key, never a value that may be a page of text
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, hide_input_in_errors=True)

    _nulls = model_validator(mode="before")(_unset_nulls)


# pydantic's words for a wrong type, said as a YAML writer would (keyed by the error's type)
TYPE_WORDS = {
    "model_type": "expected a mapping (key: value lines)", "model_attributes_type": "expected a mapping",
    "dict_type": "expected a mapping (key: value lines)", "list_type": "expected a list (- item lines or [a, b])",
    "tuple_type": "expected a list", "string_type": "expected text", "int_type": "expected a whole number",
    "int_from_float": "expected a whole number", "finite_number": "expected a whole number",
    "bool_type": "expected true or false", "float_type": "expected a number",
}
_SCALAR_TAGS = {"str", "int", "float", "bool", "none"}


def describe(exc: ValidationError, top: type[BaseModel], nested: Mapping[str, type[BaseModel]] = {}) -> str:
    """The first problem as ``key.path: what is wrong`` (pydantic's own text spans several lines). ``nested``
    names the model under a top-level key (``judge``: JudgeSpec), for the list of known keys of a typo."""
    # A value that may be one of several types (a union) gets one error per member, each under the member's
    # name: that is one problem, at the key. The member that is a mapping says the most, so it is chosen.
    tags = _SCALAR_TAGS | {model.__name__ for model in (top, *nested.values())}

    def is_tag(part: Any) -> bool:
        return isinstance(part, str) and (part in tags or part.startswith(("list[", "dict[", "function-")))

    def key_of(loc: tuple[Any, ...]) -> tuple[Any, ...]:  # the key a problem is at: up to its first tag
        return next((loc[:i] for i, part in enumerate(loc) if is_tag(part)), loc)

    errors = exc.errors()
    err = next((e for e in errors if any(is_tag(p) and p not in _SCALAR_TAGS for p in e["loc"])), errors[0])
    loc = [str(p) for p in err["loc"] if not is_tag(p)]
    union = any(is_tag(p) and p in _SCALAR_TAGS for p in err["loc"])
    more = len({key_of(e["loc"]) for e in errors}) - 1
    tail = f" (and {more} more problem(s))" if more > 0 else ""
    kind = err["type"]
    if loc and loc[-1] == "[key]":
        return f"{'.'.join(loc[:-1])}: a key must be text{tail}"
    where = ".".join(loc) or "the file"
    if kind == "extra_forbidden":
        model = nested.get(loc[0], top) if len(loc) > 1 else top
        at = f" at {where}" if len(loc) > 1 else ""
        return f"unknown key '{loc[-1]}'{at} (known: {', '.join(sorted(model.model_fields))}){tail}"
    if kind == "literal_error":
        return f"{where}: expected {err['msg'].removeprefix('Input should be ')}{tail}"
    if union:
        return f"{where}: expected text or a number{tail}"
    words = TYPE_WORDS.get(kind) or err["msg"].removeprefix("Value error, ")
    return f"{where}: {words}{tail}"
