"""The jinja environment user templates render in: jinja's sandbox (no attribute escapes) plus size limits on
every way a template can build something big.

jinja's ``SandboxedEnvironment`` guards attributes, not sizes. This subclass routes every growing operation
through a check made BEFORE the value exists (the limits and bounds are in ``template_limits``):

- operators: ``*``, ``**``, ``+`` and ``%`` through ``call_binop`` (intercepted operators are also never
  constant-folded at compile time, which is where ``'%5000000000s' % x`` used to build 5 GB); ``~`` and the
  text of macros, ``{% set %}`` blocks, filter blocks and ``self.block()`` through ``concat``;
- method calls through ``call``: ``center``/``ljust``/``rjust``/``zfill`` widths, ``expandtabs``, ``join``,
  ``replace``, ``translate``, list and dict growth; ``str.format``/``format_map`` through a formatter that
  bounds every field (widths, precisions, nested fields, ``!r``) before formatting it;
- every value shown (``{{ x }}`` goes through ``finalize``), every slice (``getitem``; slices no longer
  bypass it), every loop iteration and every comparison operand (``in``, ``==``: they scan) are counted
  against the render's budget;
- filters and tests are wrapped in ``template_filters``; ``lipsum`` is capped, ``range`` keeps jinja's cap.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Sized
from itertools import islice
from typing import Any

from jinja2 import nodes
from jinja2.compiler import CodeGenerator, operators, optimizeconst
from jinja2.exceptions import SecurityError
from jinja2.runtime import LoopContext
from jinja2.sandbox import SandboxedEnvironment, SandboxedFormatter
from jinja2.utils import generate_lorem_ipsum
from markupsafe import EscapeFormatter, Markup

from .template_limits import (
    ITEM_WEIGHT,
    MAX_CHARS,
    MAX_INT_BITS,
    MAX_ITEMS,
    charge,
    check_chars,
    check_items,
    count_loop,
    printf_size,
    size_of,
    spec_size,
    text_size,
    too_big,
    weight,
)

TEXT = (str, bytes, bytearray)
MAX_LIPSUM = 100  # paragraphs, and words per paragraph (jinja's own default maximum)


class BoundedCodeGenerator(CodeGenerator):
    """jinja's code generator with the few constructs that have no runtime hook routed through one."""

    @optimizeconst
    def visit_Concat(self, node: nodes.Concat, frame: Any) -> None:
        """``a ~ b`` joins with jinja's own ``str_join`` (no hook, unlike ``+``): use the checked one."""
        self.write("environment.bounded_join((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")

    @optimizeconst
    def visit_Getitem(self, node: nodes.Getitem, frame: Any) -> None:
        """jinja compiles ``x[a:b]`` to a plain Python slice; a copy per loop turn is work to count."""
        if not isinstance(node.arg, nodes.Slice):
            return super().visit_Getitem(node, frame)
        self.write("environment.getitem(")
        self.visit(node.node, frame)
        self.write(", slice(")
        for i, part in enumerate((node.arg.start, node.arg.stop, node.arg.step)):
            self.write(", " if i else "")
            if part is None:
                self.write("None")
            else:
                self.visit(part, frame)
        self.write("))")

    def visit_For(self, node: nodes.For, frame: Any) -> None:
        """Every loop iterates through ``environment.bounded_iter``, which counts the render's iterations."""
        if not getattr(node, "_counted", False):
            node.iter = nodes.Call(nodes.EnvironmentAttribute("bounded_iter"), [node.iter], [], None, None,
                                   lineno=node.lineno)
            node._counted = True  # type: ignore[attr-defined]
        super().visit_For(node, frame)

    def visit_Operand(self, node: nodes.Operand, frame: Any) -> None:
        """``x in big`` and ``big == other`` scan: the right-hand side is counted as work."""
        self.write(f" {operators[node.op]} environment.scanned(")
        self.visit(node.expr, frame)
        self.write(")")


class BoundedFormatter(SandboxedFormatter):
    """``str.format`` that bounds each field before formatting it, and the whole result as it goes."""

    def vformat(self, format_string: str, args: Any, kwargs: Any) -> str:
        self.size = len(format_string)
        return super().vformat(format_string, args, kwargs)

    def convert_field(self, value: Any, conversion: str | None) -> Any:
        if conversion is not None:
            check_chars(text_size(value, quoted=conversion != "s"), "showing a format field")
        return super().convert_field(value, conversion)

    def format_field(self, value: Any, format_spec: str) -> Any:
        field = spec_size(value, format_spec)
        self.size += field
        check_chars(self.size, "str.format()")
        charge(field)
        return super().format_field(value, format_spec)


class BoundedEscapeFormatter(BoundedFormatter, EscapeFormatter):
    """The same for ``Markup.format`` (which escapes its arguments)."""


def bounded_lipsum(n: int = 5, html: bool = False, min: int = 20, max: int = 100) -> str:
    """jinja's lorem ipsum, capped: ``lipsum(100000)`` took 14 s before the render cap could answer."""
    if not (isinstance(n, int) and isinstance(max, int) and n <= MAX_LIPSUM and max <= MAX_LIPSUM):
        raise SecurityError(f"lipsum(n={n}, max={max}) is over the limit of {MAX_LIPSUM} paragraphs of at most "
                            f"{MAX_LIPSUM} words")
    return generate_lorem_ipsum(n=n, html=html, min=min, max=max)


def capped_list(values: Iterable[Any], room: int, what: str) -> list[Any]:
    """``values`` as a list, refusing once it passes ``room`` items (a generator is never fully built)."""
    if isinstance(values, Sized):
        check_items(len(values), what)
    items = list(islice(values, room + 1))
    if len(items) > room:
        raise too_big(f"{what} of more than {room:,} items", room, "items")
    return items


class BoundedSandbox(SandboxedEnvironment):
    """The sandbox plus size limits on everything that can build a big value (see the module docstring)."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})
    code_generator_class = BoundedCodeGenerator

    def __init__(self, **options: Any) -> None:
        super().__init__(finalize=self.shown, **options)
        self.globals["lipsum"] = bounded_lipsum

    # -- text building -----------------------------------------------------------------------------
    @staticmethod
    def bounded_join(values: tuple[Any, ...]) -> str:
        size = sum(text_size(value) for value in values)
        check_chars(size, "joining with ~")
        charge(size)
        return "".join(str(value) for value in values)

    @staticmethod
    def concat(parts: Iterable[str]) -> str:  # type: ignore[override]
        """The text of a macro, a ``{% set %}`` block, a filter block or ``self.block()``: jinja joins their
        output in one call, past the render cap's reach, so the parts are counted as they come."""
        kept, size = [], 0
        for part in parts:
            size += len(part)
            if size > MAX_CHARS:
                raise too_big("the text of a macro or a {% set %}/{% filter %} block")
            kept.append(part)
        charge(size)
        return "".join(kept)

    @staticmethod
    def shown(value: Any) -> Any:
        """Every ``{{ value }}``: a list of a million references to one big text is small in memory and
        terabytes as text, so the text's size is bounded before ``str()`` builds it."""
        if not isinstance(value, str):
            check_chars(text_size(value), "showing a value")
        return value

    # -- loops, slices, comparisons -----------------------------------------------------------------
    @staticmethod
    def bounded_iter(iterable: Iterable[Any]) -> Iterator[Any]:
        for item in iterable:
            count_loop()
            yield item

    @staticmethod
    def scanned(value: Any) -> Any:
        charge(size_of(value))
        return value

    def getitem(self, obj: Any, argument: Any) -> Any:
        value = super().getitem(obj, argument)
        if isinstance(argument, slice):
            charge(weight(value))
        return value

    # -- operators ---------------------------------------------------------------------------------
    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, (*TEXT, list, tuple)) and isinstance(times, int) and times > 0:
                    size = len(seq) * times
                    if isinstance(seq, TEXT):
                        check_chars(size, f"repeating a value of length {len(seq):,} {times:,} times")
                        charge(size)
                    else:
                        check_items(size, f"repeating a list of {len(seq):,} items {times:,} times")
                        charge(size * ITEM_WEIGHT)
            if isinstance(left, int) and isinstance(right, int) and left.bit_length() + right.bit_length() > MAX_INT_BITS:
                raise too_big(f"{left.bit_length():,}-bit times {right.bit_length():,}-bit", MAX_INT_BITS, "bits")
        elif operator == "**":
            if isinstance(left, int) and isinstance(right, int) and abs(left) > 1 and right > 0 and (
                    right > MAX_INT_BITS or left.bit_length() * right > MAX_INT_BITS):
                raise too_big(f"a {left.bit_length():,}-bit number ** {right:,}", MAX_INT_BITS, "bits")
        elif operator == "+" and isinstance(left, (*TEXT, list, tuple)) and isinstance(right, type(left)):
            if isinstance(left, TEXT):
                check_chars(len(left) + len(right), "joining with +")
            else:
                check_items(len(left) + len(right), "joining lists with +")
            charge(weight(left) + weight(right))
        elif operator == "%" and isinstance(left, TEXT):
            size = printf_size(left, right)
            check_chars(size, "a % format")
            charge(size)
        return super().call_binop(context, operator, left, right)

    # -- methods -----------------------------------------------------------------------------------
    def wrap_str_format(self, value: Any) -> Any:
        """``'...'.format`` and ``format_map`` as jinja wraps them, with the bounded formatter."""
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        owner, is_map = value.__self__, value.__name__ == "format_map"
        formatter = BoundedEscapeFormatter(self, escape=owner.escape) if isinstance(owner, Markup) \
            else BoundedFormatter(self)

        def bounded(*args: Any, **kwargs: Any) -> str:
            if is_map:
                if kwargs or len(args) != 1:
                    raise TypeError("format_map() takes exactly one argument")
                args, kwargs = (), args[0]
            return type(owner)(formatter.vformat(owner, args, kwargs))
        return bounded

    def call(self, context: Any, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        """Every call a template makes: growth is checked from the arguments before the call runs."""
        if not self.is_safe_callable(obj):
            raise SecurityError(f"{obj!r} is not safely callable")
        owner, name = getattr(obj, "__self__", None), getattr(obj, "__name__", "")
        if isinstance(owner, TEXT):
            args = _text_method(owner, name, args, kwargs)
        elif isinstance(owner, (list, dict, set)):
            args = _container_method(owner, name, args)
        elif isinstance(obj, LoopContext) and args:  # a recursive loop's loop(children)
            args = (self.bounded_iter(args[0]), *args[1:])
        return context.call(obj, *args, **kwargs)


def _text_method(owner: str | bytes, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """Checks a string method's result size before it runs; every string method scans its string."""
    length = len(owner)
    charge(length + sum(len(a) for a in args if isinstance(a, TEXT)))
    if name in ("center", "ljust", "rjust", "zfill") and args and isinstance(args[0], int):
        check_chars(args[0], f"{name}({args[0]:,})")
    elif name == "expandtabs":
        tab = args[0] if args else kwargs.get("tabsize", 8)
        if isinstance(tab, int):
            tabs = owner.count("\t" if isinstance(owner, str) else b"\t")
            check_chars(length + tabs * max(tab, 0), f"expandtabs({tab:,})")
    elif name == "join" and args:
        items = capped_list(args[0], MAX_ITEMS, "join()")
        size = sum(len(item) for item in items if isinstance(item, TEXT)) + length * max(len(items) - 1, 0)
        check_chars(size, "join()")
        charge(size)
        return (items, *args[1:])
    elif name == "replace" and len(args) >= 2 and isinstance(args[0], TEXT) and isinstance(args[1], TEXT):
        check_chars(replaced_size(owner, args[0], args[1], args[2] if len(args) > 2 else -1), "replace()")
    elif name == "translate" and args and isinstance(owner, str):
        table = args[0]
        values = table.values() if isinstance(table, dict) else table if isinstance(table, (list, tuple)) else None
        if values is None:
            raise SecurityError("translate() takes a dict (from str.maketrans) in templates")
        longest = max((len(v) if isinstance(v, str) else 1 for v in values), default=1)
        check_chars(length * max(longest, 1), "translate()")
    return args


def replaced_size(text: str | bytes, old: str | bytes, new: str | bytes, count: int | None = -1) -> int:
    """Upper bound on len(text.replace(old, new, count)): an empty ``old`` matches between every character."""
    hits = text.count(old) if old else len(text) + 1
    if count is not None and count >= 0:
        hits = min(hits, count)
    return len(text) + hits * max(len(new) - len(old), 0)


ITEM_GROWTH = {list: ITEM_WEIGHT, set: 4 * ITEM_WEIGHT, dict: 4 * ITEM_WEIGHT}  # a hash entry is ~4 list slots


def _container_method(owner: list | dict | set, name: str, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """List, dict and set growth is checked; methods that walk the container are charged its length."""
    if name in ("append", "insert", "add", "setdefault"):
        check_items(len(owner) + 1, f"{type(owner).__name__}.{name}()")
        charge(ITEM_GROWTH[type(owner)] + (len(owner) if name == "insert" else 0))
        return args
    if name in ("extend", "update", "union", "symmetric_difference", "difference_update") and args:
        what = f"{type(owner).__name__}.{name}()"
        if isinstance(args[0], Sized):  # a dict stays a dict (update takes its pairs)
            check_items(len(owner) + len(args[0]), what)
            charge(ITEM_GROWTH[type(owner)] * len(args[0]))
            return args
        items = capped_list(args[0], max(MAX_ITEMS - len(owner), 0), what)
        charge(ITEM_GROWTH[type(owner)] * len(items))
        return (items, *args[1:])
    if name not in ("get", "pop", "keys", "values", "items", "popitem"):
        charge(len(owner))  # copy, count, index, sort, remove, reverse...
    return args
