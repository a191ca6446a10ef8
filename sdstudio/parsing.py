"""Model replies -> candidate items, each validated against the use case's JSON schema.

Models wrap JSON in prose and code fences, write Python literals, leave trailing commas, and get cut off
by ``max_tokens`` mid-array. ``json.loads`` on the stripped reply is tried first because most replies
are clean and a job parses ~10k of them; only failures pay for fences, bracket scanning and
``json_repair``.

Decisions (tests/test_parsing.py pins each one):

* Every JSON value in a reply counts, in reply order: all ```json / untagged ``` fenced blocks, or,
  without such blocks, every top-level object/array found in the text (JSON Lines, "Item 1: {...}
  Item 2: {...}"). Small models often emit one block per item; a stray value (an echoed schema, say)
  fails validation and shows up as an invalid item with its reason instead of silently vanishing.
  ``extract_json`` returns the first value only.
* Fences tagged with another language (```python ...) are code, not data: never parsed, because
  ``json_repair`` would happily turn ``return {"a": 1}`` into an item.
* Truncation is judged on the original text (brackets still open at the end, outside strings), never
  on ``json_repair``'s output, which "completes" a half-written item. The text is cut back to the last
  item that closed; a cut-off lone object is dropped whole.
* Replies whose JSON is only a scalar (``42``, ``"ok"``) contain no items; a JSON string that itself
  holds an object or array (double encoding) is decoded, as are string items holding an object.
* ``ParseResult.error`` is set only when no item at all was found; invalid items carry their own reason.
* Item numbers in reasons are 1-based, counted across the whole reply.
* Whether an unclosed reply was cut off is not this module's call: the text alone cannot tell a reply
  stopped at ``max_tokens`` from one the model ended mid-JSON. Errors say what the text shows
  (``diagnostics.UNCLOSED``); the workflow adds "raise max_tokens" only when the provider's finish
  reason says the reply hit the limit (``diagnostics.explain``). Schema checks live in validation.py.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import json_repair

from .diagnostics import UNCLOSED
from .diagnostics import no_json as _no_json
from .errors import SdstudioError
from .validation import compiled as _validator
from .validation import jsonschema_module, validate_item
from .validation import one_line as _one_line
from .validation import reason as _reason

__all__ = [
    "ParseError",
    "ParseResult",
    "ParsedItem",
    "extract_json",
    "jsonschema_module",
    "parse_items",
    "validate_item",
]

_MAX_VALUES = 1000  # values taken from one reply; bounds the work a pathological reply can cause
_JSON_FENCE_TAGS = {"", "json", "json5", "jsonc", "jsonl", "ndjson"}
_FENCE = re.compile(r"^[ \t]*```+[ \t]*([\w.+-]*)[ \t]*$", re.MULTILINE)
_THINK = re.compile(r"<(think|thinking)>.*?(?:</\1>|\Z)", re.DOTALL | re.IGNORECASE)
# Where a JSON value plausibly starts in prose: "{" before a key or "}", "[" before a value or "]".
# Keeps "{this}" and "[1]" in prose from being taken for data.
_START = re.compile(r"""\{\s*(?:["'}/]|[A-Za-z_$][\w$-]*\s*:)|\[\s*[\[{"'\]/]""")
_SPECIAL = re.compile(r"""[][{}"']""")
_DQ_END = re.compile(r'["\\]')
# A single quote closes a Python-style string only before a delimiter, so "'What's up'" survives.
_SQ_END = re.compile(r"""(?<!\\)'(?=\s*(?:[,:}\]]|\Z))""")
_OPENER = {"}": "{", "]": "["}
_CLOSER = {"{": "}", "[": "]"}


class ParseError(SdstudioError):
    """A model reply holds no usable JSON."""


@dataclass(frozen=True)
class ParsedItem:
    value: Any                # the candidate item (normally a dict)
    error: str | None = None  # None when valid, else "item N: <one-line reason>"


@dataclass(frozen=True)
class ParseResult:
    items: list[ParsedItem]   # valid and invalid items, in reply order
    error: str | None         # set only when no item at all was found
    repaired: bool            # the JSON needed repair (quotes, commas, double encoding, truncation...)
    truncated: bool           # the reply was cut off; only the complete items were kept

    @property
    def valid(self) -> list[Any]:
        return [item.value for item in self.items if item.error is None]

    @property
    def invalid(self) -> list[ParsedItem]:
        return [item for item in self.items if item.error is not None]


# --------------------------------------------------------------------------- finding JSON

@dataclass
class _Scan:
    end: int | None                   # index just past the matching close; None when the text ran out
    stack: list[tuple[str, int]]      # containers still open when the text ran out
    closes: list[tuple[int, int]]     # (index after a close, depth after it), for depths <= 2


@dataclass
class _Found:
    value: Any
    repaired: bool
    text: str = ""
    scan: _Scan | None = None         # set when the value ran to the end of the text (truncated)


def _scan(text: str, start: int) -> _Scan:
    """Match brackets from ``text[start]`` (an opener) while skipping strings, so code such as
    ``return {"a": 1}`` inside a string value cannot unbalance the count."""
    stack: list[tuple[str, int]] = []
    closes: list[tuple[int, int]] = []
    i = start
    while True:
        m = _SPECIAL.search(text, i)
        if m is None:
            return _Scan(None, stack, closes)
        ch, p = m.group(), m.start()
        i = p + 1
        if ch == '"':
            while True:
                q = _DQ_END.search(text, i)
                if q is None:
                    return _Scan(None, stack, closes)
                i = q.end() + (1 if q.group() == "\\" else 0)
                if q.group() == '"':
                    break
        elif ch == "'":
            if _previous(text, p) in "{[,:":
                q = _SQ_END.search(text, i)
                if q is None:
                    return _Scan(None, stack, closes)
                i = q.end()
        elif ch in "{[":
            stack.append((ch, p))
        else:
            k = len(stack) - 1
            while k >= 0 and stack[k][0] != _OPENER[ch]:
                k -= 1
            if k < 0:
                continue  # a stray closer; json_repair deals with the rest
            del stack[k:]
            if len(stack) <= 2:
                closes.append((p + 1, len(stack)))
            if not stack:
                return _Scan(p + 1, [], closes)


def _previous(text: str, p: int) -> str:
    k = p - 1
    while k > 0 and text[k].isspace():
        k -= 1
    return text[k]  # never before ``start``: the scan begins on an opener


def _loads(text: str) -> tuple[Any, bool] | None:
    """(value, repaired) from the stdlib, then json_repair; None when nothing came out."""
    try:
        return json.loads(text), False
    except ValueError:
        pass
    try:
        return json.loads(text, strict=False), True  # raw newlines/tabs inside strings
    except ValueError:
        pass
    try:
        value = json_repair.repair_json(text, return_objects=True, skip_json_loads=True)
    except Exception:  # noqa: BLE001 - a repair library failing on junk means "no JSON here"
        return None
    return value, True


def _decode_string(value: str) -> Any:
    """The object or array a double-encoded JSON string holds, else None."""
    stripped = value.strip()
    if stripped[:1] in ("{", "[") and stripped[-1:] in ("}", "]"):
        try:
            decoded = json.loads(stripped, strict=False)
        except ValueError:
            return None
        return decoded if isinstance(decoded, (dict, list)) else None
    return None


def _whole(text: str) -> _Found | None:
    """The fast path: ``text`` (stripped) is one JSON object or array, maybe double-encoded."""
    for strict in (True, False):  # strict=False admits raw newlines/tabs inside strings
        try:
            value = json.loads(text, strict=strict)
        except ValueError:
            continue
        if isinstance(value, (dict, list)):
            return _Found(value, not strict)
        if isinstance(value, str) and (decoded := _decode_string(value)) is not None:
            return _Found(decoded, True)
        return None
    return None


def _scan_values(text: str) -> list[_Found]:
    """Every JSON object/array in ``text``, in order; the last may run to the end (truncated)."""
    found: list[_Found] = []
    empty: _Found | None = None
    pos = 0
    while len(found) < _MAX_VALUES and (m := _START.search(text, pos)):
        start = m.start()
        scan = _scan(text, start)
        got = _loads(text[start:scan.end])
        if got is None or not isinstance(got[0], (dict, list)):
            pos = start + 1
            continue
        if scan.end is None:
            found.append(_Found(got[0], True, text, scan))
            break
        if not got[0]:  # "{}" or "[]" in prose is rarely the answer
            empty = empty or _Found(got[0], got[1])
        else:
            found.append(_Found(got[0], got[1]))
        pos = scan.end
    return found or ([empty] if empty else [])


def _find(text: str) -> list[_Found]:
    if "<think" in text[:200].lower():  # reasoning models: braces in the thoughts are not the answer
        text = _THINK.sub(" ", text)
    stripped = text.lstrip("\ufeff").strip()
    if not stripped:
        return []
    whole = _whole(stripped)
    if whole is not None:
        return [whole]
    blocks = _fences(stripped)
    found: list[_Found] = []
    for tag, a, b in blocks:
        if tag in _JSON_FENCE_TAGS and (block := stripped[a:b].strip()):
            whole = _whole(block)
            found += [whole] if whole is not None else _scan_values(block)
    if found:
        return found
    for tag, a, b in blocks:  # code in other languages must not be scanned for braces
        if tag not in _JSON_FENCE_TAGS:
            stripped = stripped[:a] + " " * (b - a) + stripped[b:]
    return _scan_values(stripped)


def _fences(text: str) -> list[tuple[str, int, int]]:
    """(tag, start, end) of each fenced block; an unclosed fence runs to the end (a cut-off reply).

    Only a line holding nothing but backticks closes a block, as in CommonMark, so a fence written
    inside a JSON string (``"```python\\n..."``) does not end the outer block early.
    """
    blocks: list[tuple[str, int, int]] = []
    opened: tuple[str, int] | None = None
    for m in _FENCE.finditer(text):
        if opened is None:
            opened = (m.group(1).lower(), m.end())
        elif not m.group(1):
            blocks.append((opened[0], opened[1], m.start()))
            opened = None
    if opened is not None:
        blocks.append((opened[0], opened[1], len(text)))
    return blocks


# --------------------------------------------------------------------------- items

_SINGLE = object()  # shape of a reply that is one item
_LIST = object()    # shape of a reply that is a bare array of items


def _shape(value: Any, schema: dict | None, list_key: str) -> Any:
    """_LIST, _SINGLE, or the key of the wrapping object whose list holds the items."""
    if isinstance(value, list):
        return _LIST
    if not isinstance(value, dict):
        return _SINGLE
    if schema is not None and _reason(value, schema, _validator(schema)) is None:
        return _SINGLE  # an item with a list-valued field is still one item
    if isinstance(value.get(list_key), (list, str)) and _as_list(value[list_key]) is not None:
        return list_key
    fields = schema.get("properties", {}) if isinstance(schema, dict) else {}
    keys = [k for k, v in value.items() if k not in fields and isinstance(v, list) and v
            and all(isinstance(x, dict) for x in v)]
    if len(keys) == 1 and (schema is not None or len(value) == 1):
        return keys[0]
    return _SINGLE


def _as_list(value: Any) -> list | None:
    if isinstance(value, str):
        value = _decode_string(value)
    return value if isinstance(value, list) else None


def _items(value: Any, shape: Any) -> list[Any]:
    if shape is _LIST:
        return value
    if shape is _SINGLE:
        return [value] if value != {} else []
    return _as_list(value.get(shape)) if isinstance(value, dict) else []


def _complete(found: _Found, schema: dict | None, list_key: str) -> tuple[Any, Any]:
    """(value, shape) keeping only what the text completed; value None when nothing was."""
    shape = _shape(found.value, schema, list_key)
    if found.scan is None:
        return found.value, shape
    if shape is _SINGLE:
        return None, shape  # a lone object cut off mid-way is not an item
    stack, depth = found.scan.stack, 1 if shape is _LIST else 2
    if shape is not _LIST:
        key = re.escape(shape)
        still_open = len(stack) >= 2 and stack[1][0] == "[" and re.search(
            rf"""["']?{key}["']?\s*:\s*$""", found.text[stack[0][1]:stack[1][1]])
        if not still_open:
            return found.value, shape  # the list closed; only what came after it was cut
    begin = stack[depth - 1][1]
    cut = max((p for p, d in found.scan.closes if d == depth and p > begin), default=begin + 1)
    closing = "".join(_CLOSER[ch] for ch, _ in reversed(stack[:depth]))
    got = _loads(found.text[stack[0][1]:cut] + closing)
    if got is None or _shape(got[0], schema, list_key) != shape:
        return None, shape
    return got[0], shape


def extract_json(text: str) -> tuple[Any, bool, bool]:
    """(value, repaired, truncated) for the first JSON object or array in a reply.

    A truncated value is cut back to its complete items (see ``parse_items``).
    Raises ParseError when the reply holds no usable JSON.
    """
    found = _find(text)
    if not found:
        raise ParseError(_no_json(text))
    value, _ = _complete(found[0], None, "items")
    if value is None:
        raise ParseError(UNCLOSED)
    return value, found[0].repaired, found[0].scan is not None


def parse_items(text: str, schema: dict | None = None, *, list_key: str = "items") -> ParseResult:
    """Candidate items of a reply, each validated against ``schema`` (see the module docstring).

    Accepts a bare object (one item), a bare array of items, or an object wrapping the array under
    ``list_key`` or under its one key holding a list of objects (``{"questions": [...]}``); an object
    that validates against the schema is one item even when it has a list-valued field.
    """
    validator = _validator(schema) if schema is not None else None
    found = _find(text)
    if not found:
        return ParseResult([], _no_json(text), False, False)
    items: list[ParsedItem] = []
    repaired = truncated = False
    for each in found:
        repaired |= each.repaired
        truncated |= each.scan is not None
        value, shape = _complete(each, schema, list_key)
        if value is None:
            continue
        repaired |= isinstance(shape, str) and isinstance(value.get(shape), str)  # double-encoded
        for item in _items(value, shape) or []:
            if isinstance(item, str) and isinstance(decoded := _decode_string(item), dict):
                item, repaired = decoded, True  # a double-encoded item
            reason = _reason(item, schema, validator) if schema is not None else None
            error = _one_line(f"item {len(items) + 1}: {reason}") if reason else None
            items.append(ParsedItem(item, error))
    if items:
        return ParseResult(items, None, repaired, truncated)
    if truncated:
        return ParseResult([], UNCLOSED, True, True)
    return ParseResult([], "reply contains no items (an empty list or object)", repaired, False)
