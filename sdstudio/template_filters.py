"""jinja's filters and tests, each wrapped so that nothing it builds can pass the sandbox's limits.

Filters are called straight from compiled code (no ``call`` hook), and jinja folds filters with constant
arguments at compile time, so the checks live in the filters themselves. Every filter and test:

- counts the work it does (its input's length, its result's) against the render's budget, except the few
  that only look (``length``, ``first``, ``default``...);
- counts, and caps at ``MAX_ITEMS``, the items it pulls from a generator (``map``/``select`` output), so
  ``|list`` or ``|sort`` can never materialize an endless stream;
- when it turns its input into text, first bounds the size of that text (``text_size``);
- when an argument decides the size (a width, a separator, a fill), checks the bound before calling jinja.

``pprint``, ``urlize`` and ``xmlattr`` are refused: HTML and debugging helpers with no use in a prompt, whose
output grows with their arguments in ways not worth modelling (``tojson`` shows structured values).
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sized
from functools import wraps
from typing import Any

from jinja2.defaults import DEFAULT_FILTERS, DEFAULT_TESTS
from jinja2.exceptions import SecurityError
from jinja2.filters import make_attrgetter

from .template_limits import (
    MAX_CHARS,
    MAX_ITEMS,
    charge,
    check_chars,
    check_items,
    printf_size,
    size_of,
    text_size,
    too_big,
    weight,
)
from .template_sandbox import capped_list, replaced_size

# filters that only look at their input (or return it): no work to count
LOOKING = {"length", "count", "first", "last", "default", "d", "attr", "safe", "random", "abs", "int", "float",
           "round", "filesizeformat", "items", "map", "select", "reject", "selectattr", "rejectattr", "unique",
           "batch", "slice"}
# filters that turn their input into text before anything else
TEXTUAL = {"capitalize", "center", "escape", "e", "forceescape", "format", "lower", "upper", "title", "trim",
           "striptags", "string", "urlencode", "wordcount", "replace"}
REFUSED = {"pprint": "tojson", "urlize": None, "xmlattr": None}
ESCAPED = "&<>\"'"


def _to_json(value: Any, indent: int | None = 3) -> str:
    """Readable JSON in prompts (jinja's own ``tojson`` HTML-escapes)."""
    return json.dumps(value, ensure_ascii=False, indent=indent)


def counted(values: Iterator[Any], what: str) -> Iterator[Any]:
    """A generator's items, counted as work and capped: a filter downstream may try to hold them all."""
    for number, item in enumerate(values, 1):
        if number > MAX_ITEMS:
            raise too_big(f"{what} reading more than {MAX_ITEMS:,} items", MAX_ITEMS, "items")
        charge(1)
        yield item


def _text(value: Any, name: str) -> str | None:
    """The input as text (bounded first); None when it is not text and the filter takes it as it is."""
    if isinstance(value, str):
        return value
    check_chars(text_size(value), f"showing the {name} filter's input")
    return None


# -- checks for filters whose arguments decide the size of their result ---------------------------------------
# Each takes (value, args, kwargs) and may return new (value, args, kwargs) (a materialized generator).

Check = Callable[[Any, tuple, dict], "tuple[Any, tuple, dict] | None"]


def _center(value: Any, args: tuple, kwargs: dict) -> None:
    width = args[0] if args else kwargs.get("width", 80)
    if isinstance(width, int):
        check_chars(max(width, text_size(value)), f"center({width:,})")


def _indent(value: Any, args: tuple, kwargs: dict) -> None:
    width = args[0] if args else kwargs.get("width", 4)
    step = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
    if isinstance(value, str):
        shown = width if isinstance(width, int) else f"a text of {step:,} characters"
        check_chars(len(value) + (value.count("\n") + 2) * max(step, 0), f"indent({shown})")


def _format(value: Any, args: tuple, kwargs: dict) -> None:
    check_chars(printf_size(str(value), kwargs or args), "the format filter")


def _replace(value: Any, args: tuple, kwargs: dict) -> None:
    old = args[0] if args else kwargs.get("old")
    new = args[1] if len(args) > 1 else kwargs.get("new")
    count = args[2] if len(args) > 2 else kwargs.get("count")
    if old is not None and new is not None:
        for part in (old, new):
            check_chars(text_size(part), "showing a replace() argument")
        check_chars(replaced_size(str(value), str(old), str(new), count), "replace()")


def _join(env: Any, value: Any, args: tuple, kwargs: dict) -> tuple[Any, tuple, dict]:
    separator = args[0] if args else kwargs.get("d", "")
    attribute = args[1] if len(args) > 1 else kwargs.get("attribute")
    items = capped_list(value, MAX_ITEMS, "join()")
    if attribute is not None:
        getter = make_attrgetter(env, attribute)
        items = [getter(item) for item in items]
    size = text_size(separator) * max(len(items) - 1, 0)
    for item in items:
        if size > MAX_CHARS:
            break
        size += text_size(item)
    check_chars(size, f"joining {len(items):,} items")
    charge(size)
    return items, (separator,), {}


def _wordwrap(value: Any, args: tuple, kwargs: dict, env: Any) -> None:
    width = args[0] if args else kwargs.get("width", 79)
    breaks = args[1] if len(args) > 1 else kwargs.get("break_long_words", True)
    wrap = args[2] if len(args) > 2 else kwargs.get("wrapstring")
    if not isinstance(value, str) or not isinstance(width, int) or width < 1:
        return  # jinja raises its own error
    words = value.split()
    lines = len(value) // width + len(words) + value.count("\n") + 1
    check_chars(len(value) + lines * len(wrap if isinstance(wrap, str) else env.newline_sequence), f"wordwrap({width:,})")
    longest = max(map(len, words), default=0)
    charge(len(words) + (longest * longest // width if breaks else 0))  # textwrap re-slices a long word per line


def _fill(what: str) -> Check:
    def check(value: Any, args: tuple, kwargs: dict) -> None:
        count = args[0] if args else kwargs.get("linecount", kwargs.get("slices"))
        if isinstance(count, int):
            check_items(count, what)
    return check


def _sum(value: Any, args: tuple, kwargs: dict) -> tuple[Any, tuple, dict] | None:
    start = args[1] if len(args) > 1 else kwargs.get("start", 0)
    if not isinstance(start, (str, list, tuple)):
        return None
    items = capped_list(value, MAX_ITEMS, "sum()")
    size = len(start) + sum(size_of(item) for item in items)  # sum(lists, start=[]) concatenates them
    check_items(size, "sum()")
    charge(size * 2)
    return items, args, kwargs


def _list(value: Any, args: tuple, kwargs: dict) -> None:
    if isinstance(value, Sized):
        check_items(len(value), "list()")


def _tojson(value: Any, args: tuple, kwargs: dict) -> None:
    indent = args[0] if args else kwargs.get("indent", 3)
    check_chars(text_size(value, quoted=True, indent=indent if isinstance(indent, int) else 0), "tojson()")


def _grows(name: str, factor: Callable[[str], int]) -> Check:
    """For filters whose result is a fixed multiple of their text at most (escaping, case mapping)."""
    def check(value: Any, args: tuple, kwargs: dict) -> None:
        text = value if isinstance(value, str) else str(value)
        check_chars(factor(text), f"the {name} filter")
    return check


CHECKS: dict[str, Check] = {
    "center": _center, "indent": _indent, "format": _format, "replace": _replace, "batch": _fill("a batch"),
    "slice": _fill("slice() into slices"), "sum": _sum, "list": _list, "tojson": _tojson,
    **{name: _grows(name, lambda s: len(s) + 4 * sum(s.count(c) for c in ESCAPED))
       for name in ("escape", "e", "forceescape")},
    "urlencode": _grows("urlencode", lambda s: 3 * len(s) if s.isascii() else 12 * len(s)),
    **{name: _grows(name, lambda s: len(s) if s.isascii() else 3 * len(s))
       for name in ("upper", "lower", "title", "capitalize")},
}


def guard_filter(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
    """``original`` with its input counted and capped, its text bounded and its size-deciding arguments
    checked before it runs; the wrapper keeps jinja's pass_context/pass_environment marker."""
    passes = 1 if hasattr(original, "jinja_pass_arg") else 0
    check = CHECKS.get(name)

    @wraps(original)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        head, value, rest = args[:passes], args[passes] if len(args) > passes else None, args[passes + 1:]
        if isinstance(value, Iterator):
            value = counted(value, f"the {name} filter")
        if name in TEXTUAL:
            _text(value, name)
        if name not in LOOKING:
            charge(size_of(value))
        if name == "join":
            value, rest, kwargs = _join(head[0].environment, value, rest, kwargs)
        elif name == "wordwrap":
            _wordwrap(value, rest, kwargs, head[0])
        elif check is not None:
            changed = check(value, rest, kwargs)
            if changed is not None:
                value, rest, kwargs = changed
        result = original(*head, value, *rest, **kwargs)
        if name not in LOOKING:
            charge(weight(result))
        return result
    return guarded


def _refused(name: str, instead: str | None) -> Callable[..., Any]:
    def refused(*args: Any, **kwargs: Any) -> Any:
        hint = f"; use {instead}" if instead else ""
        raise SecurityError(f"the {name} filter is not available in prompt templates{hint}")
    return refused


def guard_test(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
    """A test (``is in``, ``is lower``...) with the work it does counted, and its input bounded as text where
    it makes one (``lower``, ``upper``)."""
    @wraps(original)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        if name in ("lower", "upper") and args:
            _text(args[-1] if hasattr(original, "jinja_pass_arg") else args[0], name)
        charge(sum(size_of(a) for a in args))
        return original(*args, **kwargs)
    return guarded


def bounded_filters() -> dict[str, Callable[..., Any]]:
    """Every jinja filter, guarded, plus sdstudio's ``tojson``; the refused ones raise one line."""
    filters = {name: guard_filter(name, f) for name, f in DEFAULT_FILTERS.items() if name not in REFUSED}
    filters["tojson"] = guard_filter("tojson", _to_json)
    filters.update({name: _refused(name, instead) for name, instead in REFUSED.items()})
    return filters


def bounded_tests() -> dict[str, Callable[..., Any]]:
    return {name: guard_test(name, t) for name, t in DEFAULT_TESTS.items()}
