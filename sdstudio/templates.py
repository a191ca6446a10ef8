"""Prompt templates: jinja2 in a sandbox, with undefined variables as errors.

Users edit templates in notebooks and drop their own use cases into ``SDSTUDIO_HOME/templates``, so
templates are untrusted input: ``SandboxedEnvironment`` refuses attribute tricks such as
``{{ ''.__class__.__mro__ }}``, and ``StrictUndefined`` turns a misspelt variable into an error that
names it instead of silently rendering an empty string into a paid prompt.

The sandbox guards attributes, not sizes: ``{{ 'x' * 10**10 }}`` would take 10 GB and a traceback. So
``*``, ``**``, ``+`` and ``~`` are checked before they build anything, the width-taking filters are capped,
and a prompt may render at most ``MAX_OUTPUT`` characters; each refusal is a one-line TemplateError like
any other.
"""
from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, UndefinedError, meta, pass_eval_context
from jinja2.compiler import CodeGenerator, optimizeconst
from jinja2.defaults import DEFAULT_FILTERS
from jinja2.exceptions import SecurityError, TemplateError as JinjaTemplateError
from jinja2.sandbox import SandboxedEnvironment

from .errors import SdstudioError

MAX_OUTPUT = 4_000_000  # characters one render may produce (~1M tokens: more than any context window)
MAX_SIZE = MAX_OUTPUT  # characters or items one expression may build


class TemplateError(SdstudioError):
    """A template failed to parse or render; the message names the template and the problem."""


def _to_json(value: Any, indent: int | None = 3) -> str:
    return json.dumps(value, ensure_ascii=False, indent=indent)


def _too_big(what: str) -> SecurityError:
    return SecurityError(f"{what} is over the limit of {MAX_SIZE:,}")


class _BoundedConcat(CodeGenerator):
    """Compiles ``a ~ b`` to ``environment.bounded_join`` (jinja's own join has no hook, unlike ``+``)."""

    @optimizeconst
    def visit_Concat(self, node: Any, frame: Any) -> None:
        self.write("environment.bounded_join((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class BoundedSandbox(SandboxedEnvironment):
    """The sandbox plus size limits on the operators and filters that can build huge values."""

    intercepted_binops = frozenset({"*", "**", "+"})
    code_generator_class = _BoundedConcat

    @staticmethod
    def bounded_join(values: tuple[Any, ...]) -> str:
        parts = [str(value) for value in values]
        if sum(map(len, parts)) > MAX_SIZE:
            raise _too_big(f"a concatenation of {sum(map(len, parts)):,} characters")
        return "".join(parts)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(times, int) and len(seq) * times > MAX_SIZE:
                    raise _too_big(f"repeating a value of length {len(seq):,} {times:,} times")
        elif operator == "**":
            if isinstance(left, int) and isinstance(right, int) and abs(left) > 1 and right > 1000:
                raise SecurityError(f"{left} ** {right}: exponents over 1000 are refused")
        elif operator == "+" and isinstance(left, (str, list, tuple)) and isinstance(right, type(left)):
            if len(left) + len(right) > MAX_SIZE:
                raise _too_big(f"a concatenation of {len(left) + len(right):,} characters or items")
        return super().call_binop(context, operator, left, right)


def _bounded(name: str, width_arg: int):
    """A width-taking filter (center, indent) whose width times the value's lines is capped."""
    original = DEFAULT_FILTERS[name]

    def bounded(value: Any, *args: Any, **kwargs: Any) -> Any:
        width = args[width_arg] if len(args) > width_arg else kwargs.get("width", 0)
        if isinstance(width, int) and width * max(str(value).count("\n") + 1, 1) > MAX_SIZE:
            raise _too_big(f"{name}({width:,})")
        return original(value, *args, **kwargs)
    return bounded


@pass_eval_context
def _bounded_replace(eval_ctx: Any, value: Any, old: Any, new: Any, count: Any = None) -> Any:
    text = str(value)
    grows = text.count(str(old)) * max(len(str(new)) - len(str(old)), 0) if str(old) else len(text) * len(str(new))
    if len(text) + grows > MAX_SIZE:
        raise _too_big(f"replace() building {len(text) + grows:,} characters")
    return DEFAULT_FILTERS["replace"](eval_ctx, value, old, new, count)


@lru_cache(maxsize=1)
def environment() -> SandboxedEnvironment:
    env = BoundedSandbox(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False,
                         trim_blocks=True, lstrip_blocks=True)
    env.filters["tojson"] = _to_json  # readable JSON in prompts (jinja's own tojson HTML-escapes)
    env.filters["center"] = _bounded("center", 0)
    env.filters["indent"] = _bounded("indent", 0)
    env.filters["replace"] = _bounded_replace
    return env


@lru_cache(maxsize=256)
def _compile(source: str, name: str):
    try:
        return environment().from_string(source)
    except TemplateSyntaxError as exc:
        raise TemplateError(f"{name}: syntax error at line {exc.lineno}: {exc.message}") from None


def render(source: str, context: dict[str, Any], name: str = "template") -> str:
    """Render ``source`` with ``context``; every failure is a one-line TemplateError."""
    template = _compile(source, name)
    try:
        parts, size = [], 0
        for part in template.generate(**context):
            size += len(part)
            if size > MAX_OUTPUT:
                raise TemplateError(f"{name}: renders more than {MAX_OUTPUT:,} characters; refused (a loop "
                                    "that never ends, or a value far too big for a prompt?)")
            parts.append(part)
        return "".join(parts)
    except TemplateError:
        raise
    except UndefinedError as exc:
        if "unsafe" in (exc.message or ""):  # the sandbox answers some escapes with a strict undefined
            raise TemplateError(f"{name}: refused by the template sandbox ({exc.message})") from None
        raise TemplateError(f"{name}: undefined variable: {exc.message}; available: "
                            f"{', '.join(sorted(context)) or 'none'}") from None
    except SecurityError as exc:
        raise TemplateError(f"{name}: refused by the template sandbox ({exc})") from None
    except JinjaTemplateError as exc:
        raise TemplateError(f"{name}: {exc}") from None
    except (TypeError, ValueError, KeyError, IndexError, AttributeError, ZeroDivisionError) as exc:
        raise TemplateError(f"{name}: {type(exc).__name__}: {exc}") from None
    except (MemoryError, RecursionError, OverflowError) as exc:
        raise TemplateError(f"{name}: refused: {type(exc).__name__} while rendering ({exc or 'too big'})") from None


def variables(source: str, name: str = "template") -> set[str]:
    """The variables a template reads (to check them against the data before any call)."""
    try:
        return meta.find_undeclared_variables(environment().parse(source))
    except TemplateSyntaxError as exc:
        raise TemplateError(f"{name}: syntax error at line {exc.lineno}: {exc.message}") from None
