"""The size model of the template sandbox: what one expression may build, what one render may do, and upper
bounds on the size of a value before it is built.

A template is untrusted input and ``str.format``, ``%``, ``join`` and friends build their result in one C call:
a check after the fact is a check after the gigabytes. So every operation that can grow is first given an upper
bound on what it would build (``text_size`` for ``str(value)``, ``printf_size`` for ``%``, ``spec_size`` for a
``format`` field), and refused with one line when that bound is over the limit:

- one expression builds at most ``MAX_CHARS`` characters or ``MAX_ITEMS`` items (a list of a million
  references is 8 MB; a million small lists already ~60 MB, hence the lower item cap), and no integer over
  ``MAX_INT_BITS`` bits (``x * x`` in a loop would otherwise double its size every turn);
- one render runs at most ``MAX_LOOPS`` loop iterations and ``MAX_WORK`` units of work (characters or items
  built, copied or scanned). Each expression being bounded is not enough: a loop that keeps what each turn
  built (``list.append``) or scans a big value every turn (``'y' in big``) would still take the machine.

Bounds are upper bounds, cheap (no allocation, early exit once over the limit) and never below the truth;
they may overshoot, which only matters for values near the limit, far beyond any prompt.
"""
from __future__ import annotations

import contextvars
from collections.abc import ItemsView, Iterator, KeysView, Mapping, ValuesView
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from jinja2.exceptions import SecurityError

MAX_CHARS = 4_000_000  # characters one expression may build (= the render cap: ~1M tokens)
MAX_ITEMS = 1_000_000  # items one list/dict/set an expression builds may hold
MAX_INT_BITS = 65_536  # ~20,000 digits; Python will not print ints over 4,300 digits anyway
MAX_LOOPS = 1_000_000  # loop iterations per render (~0.5 s of jinja)
MAX_WORK = 32_000_000  # characters or items built, copied or scanned per render (8x the render cap)
MAX_DEPTH = 100  # nesting a value shown in a prompt may have
FLOAT_TEXT = 330  # '%f' / '{:f}' of 1e308 writes 309 digits


def too_big(what: str, limit: int = MAX_CHARS, unit: str = "characters") -> SecurityError:
    """The one refusal every check raises: it says what was asked for and the limit it broke."""
    return SecurityError(f"{what} is over the limit of {limit:,} {unit}")


# -- the per-render meter --------------------------------------------------------------------------

@dataclass
class Meter:
    """What one render has done so far; set by ``metered`` around each render."""

    work: int = 0
    loops: int = 0


_METER: contextvars.ContextVar[Meter | None] = contextvars.ContextVar("sdstudio_template_meter", default=None)


@contextmanager
def metered() -> Iterator[Meter]:
    """A fresh meter for one render (outside a render, e.g. jinja's compile-time constant folding, nothing
    is metered: the per-expression checks still apply)."""
    meter = Meter()
    token = _METER.set(meter)
    try:
        yield meter
    finally:
        _METER.reset(token)


def charge(units: int) -> None:
    """Count ``units`` of work against the render's budget."""
    meter = _METER.get()
    if meter is not None and units > 0:
        meter.work += units
        if meter.work > MAX_WORK:
            raise SecurityError(f"the template built or scanned more than {MAX_WORK:,} characters or items in "
                                "one render (a loop around a big value?)")


def count_loop() -> None:
    """Count one loop iteration against the render's budget."""
    meter = _METER.get()
    if meter is not None:
        meter.loops += 1
        if meter.loops > MAX_LOOPS:
            raise SecurityError(f"the template ran more than {MAX_LOOPS:,} loop iterations in one render "
                                "(nested loops over big ranges?)")


ITEM_WEIGHT = 4  # a list slot is 8 bytes, a character 1 to 4: what an item built costs, in characters


def size_of(value: Any) -> int:
    """len(value) for the built-in sized types (O(1)); 1 for anything else. What an operation is charged."""
    if isinstance(value, (str, bytes, bytearray, list, tuple, dict, set, frozenset)):
        return len(value)
    return 1


def weight(value: Any) -> int:
    """What building ``value`` cost, in characters: a text's length; a container's items at ITEM_WEIGHT each,
    or more when they are containers themselves (a million empty lists weigh more than a million references;
    the first item stands for the rest, so this stays O(1))."""
    if isinstance(value, (list, tuple, set, frozenset, dict)):
        first = next(iter(value), None) if not isinstance(value, (list, tuple)) else value[0] if value else None
        nested = isinstance(first, (list, tuple, dict, set))
        return len(value) * (ITEM_WEIGHT + (16 if nested else 0))
    return size_of(value)


def check_items(count: int, doing: str) -> None:
    """Refuse ``doing`` (e.g. "repeating a list 10 times") when it would hold more than MAX_ITEMS items."""
    if count > MAX_ITEMS:
        raise SecurityError(f"{doing} would hold {count:,} items, over the limit of {MAX_ITEMS:,} items")


def check_chars(count: int, doing: str) -> None:
    """Refuse ``doing`` (e.g. "center(10**9)") when it would build more than MAX_CHARS characters."""
    if count > MAX_CHARS:
        raise SecurityError(f"{doing} would build {count:,} characters, over the limit of {MAX_CHARS:,} characters")


# -- upper bounds on str(value), repr(value), json.dumps(value) -----------------------------------------

def int_digits(value: int) -> int:
    return value.bit_length() * 30103 // 100000 + 2  # log10(2) = 0.30103; sign and rounding


def quoted_size(text: str | bytes) -> int:
    """Upper bound on len(repr(text)) and len(json.dumps(text)): printable text escapes only quotes and
    backslashes; anything else may become \\U0001xxxx (10 characters for one)."""
    if isinstance(text, (bytes, bytearray)):
        return 4 * len(text) + 3
    if text.isprintable():
        return len(text) + 2 + text.count("\\") + text.count("'") + text.count('"')
    return 10 * len(text) + 2


def text_size(value: Any, limit: int = MAX_CHARS, *, quoted: bool = False, indent: int = 0) -> int:
    """An upper bound on len(str(value)) (``quoted``: repr(value); ``indent``: json.dumps(value, indent=)),
    returned as soon as it passes ``limit``. A list of a million references to one 4 MB string is 8 MB in
    memory and 4 TB as text: this is what every place that turns a value into text checks first."""
    return _size(value, limit, quoted, indent, 0, set())


def _size(value: Any, limit: int, quoted: bool, indent: int, depth: int, active: set[int]) -> int:
    if isinstance(value, str):
        return quoted_size(value) if quoted else len(value)
    if value is None or isinstance(value, bool):
        return 5
    if isinstance(value, int):
        return int_digits(value)
    if isinstance(value, float):
        return 24  # repr: -1.2345678901234567e-308
    if isinstance(value, (bytes, bytearray)):
        return quoted_size(value)
    from jinja2.runtime import Undefined
    from jinja2.utils import Namespace

    if isinstance(value, Undefined):
        return 0  # StrictUndefined refuses to become text anyway
    if isinstance(value, Namespace):
        return 13 + _size(object.__getattribute__(value, "_Namespace__attrs"), limit, True, indent, depth, active)
    if isinstance(value, (Mapping, list, tuple, set, frozenset, KeysView, ItemsView, ValuesView)):
        if id(value) in active:
            return 5  # repr writes [...] for a list that holds itself
        if depth >= MAX_DEPTH:
            raise SecurityError(f"a value nested more than {MAX_DEPTH} levels deep cannot be shown")
        active.add(id(value))
        try:
            per_item = 2 + (indent * (depth + 1) + 1 if indent else 0)
            total = 12 + (indent * depth + 1 if indent else 0)  # brackets, a view's or frozenset's name
            pairs = value.items() if isinstance(value, Mapping) else ((None, item) for item in value)
            for key, item in pairs:
                total += per_item + _size(item, limit, True, indent, depth + 1, active)
                if key is not None or isinstance(value, Mapping):
                    total += 2 + _size(key, limit, True, indent, depth + 1, active)
                if total > limit:
                    return total
            return total
        finally:
            active.discard(id(value))
    return len(str(value))  # jinja's own small objects (a cycler, a macro, a range, a generator)


def number_size(value: Any) -> int:
    """Upper bound on a number's text under any format type (floats in 'f' notation are the long ones)."""
    if isinstance(value, float):
        return FLOAT_TEXT
    if isinstance(value, int):
        return int_digits(value)
    return text_size(value)


# -- format strings ----------------------------------------------------------------------------------

def _number(text: str, what: str) -> int:
    if len(text) > 9:  # more digits than any allowed width, and int() of a huge one costs time
        raise too_big(f"{what} {text if len(text) <= 15 else text[:12] + '...'}")
    return int(text)


def spec_size(value: Any, spec: str) -> int:
    """Upper bound on len(format(value, spec)), checked before ``str.format`` formats the field."""
    width = precision = 0
    i, n = 0, len(spec)
    if n >= 2 and spec[1] in "<>=^":
        i = 2
    elif n >= 1 and spec[0] in "<>=^":
        i = 1
    while i < n and spec[i] in "+- z#0":
        i += 1
    start = i
    while i < n and spec[i].isdigit():
        i += 1
    if i > start:
        width = _number(spec[start:i], "a format width of")
    while i < n and spec[i] in ",_":
        i += 1
    if i < n and spec[i] == ".":
        start = i = i + 1
        while i < n and spec[i].isdigit():
            i += 1
        precision = _number(spec[start:i], "a format precision of") if i > start else 0
    if i < n - 1:  # not the standard mini-language (a date's strftime codes...): each code writes a few words
        return text_size(value) + 32 * n
    base = len(value) if isinstance(value, str) else number_size(value)
    return max(width, base + precision + base // 3 + 8)


def printf_size(template: str | bytes, args: Any) -> int:
    """Upper bound on len(template % args), following CPython's parser (mapping keys with nested brackets,
    ``*`` widths taken from the arguments). Stops where Python itself would raise."""
    text = template.decode("latin-1") if isinstance(template, (bytes, bytearray)) else template
    positional = list(args) if isinstance(args, tuple) else [args]
    mapping = args if isinstance(args, Mapping) else None
    total, i, n, used = len(text), 0, len(text), 0
    while True:
        i = text.find("%", i)
        if i < 0 or i + 1 >= n:
            return total
        i += 1
        key = None
        if text[i] == "(":
            depth, start = 1, i + 1
            while depth and i + 1 < n:
                i += 1
                depth += {"(": 1, ")": -1}.get(text[i], 0)
            key, i = text[start:i], i + 1
        while i < n and text[i] in "-+ #0":
            i += 1
        width, i, used = _printf_number(text, i, positional, used, "a % width of")
        precision = 0
        if i < n and text[i] == ".":
            precision, i, used = _printf_number(text, i + 1, positional, used, "a % precision of")
        while i < n and text[i] in "hlL":
            i += 1
        if i >= n:
            return total
        kind = text[i]
        i += 1
        if kind == "%":
            continue
        try:
            arg = mapping[key] if key is not None and mapping is not None else positional[used]
        except (LookupError, TypeError):
            return total  # Python raises here, before formatting anything more
        if key is None:
            used += 1
        base = (text_size(arg) if kind == "s" else text_size(arg, quoted=True) if kind in "ra"
                else 1 if kind == "c" else number_size(arg))
        total += width + precision + base
        if total > MAX_CHARS:
            return total


def _printf_number(text: str, i: int, positional: list[Any], used: int, what: str) -> tuple[int, int, int]:
    if i < len(text) and text[i] == "*":
        value = positional[used] if used < len(positional) else 0
        return (abs(value) if isinstance(value, int) else 0), i + 1, used + 1
    start = i
    while i < len(text) and text[i].isdigit():
        i += 1
    return (_number(text[start:i], what) if i > start else 0), i, used
