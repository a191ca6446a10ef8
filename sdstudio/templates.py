"""Prompt templates: jinja2 in a sandbox, with undefined variables as errors.

Users edit templates in notebooks and drop their own use cases into ``SDSTUDIO_HOME/templates``, so
templates are untrusted input: ``SandboxedEnvironment`` refuses attribute tricks such as
``{{ ''.__class__.__mro__ }}``, and ``StrictUndefined`` turns a misspelt variable into an error that
names it instead of silently rendering an empty string into a paid prompt.

The sandbox guards attributes, not sizes, so ``template_sandbox`` and ``template_filters`` check every
operator, method, filter and global that can build a value before it is built (``template_limits`` holds
the limits: 4 M characters or 1 M items per expression; per render, 1 M loop iterations and a work budget),
and a prompt may render at most ``MAX_OUTPUT`` characters. A template is one self-contained text: there is
no loader, and ``{% include %}``, ``{% import %}`` and ``{% extends %}`` are refused when it is read. Each
refusal is a one-line TemplateError like any other.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, UndefinedError, meta, nodes
from jinja2.exceptions import SecurityError
from jinja2.exceptions import TemplateError as JinjaTemplateError
from jinja2.sandbox import SandboxedEnvironment

from .errors import SdstudioError
from .template_filters import bounded_filters, bounded_tests
from .template_limits import MAX_CHARS, metered
from .template_sandbox import BoundedSandbox

MAX_OUTPUT = MAX_CHARS  # characters one render may produce (~1M tokens: more than any context window)
MAX_SIZE = MAX_CHARS  # characters one expression may build
INCLUDES = {nodes.Include: "include", nodes.Import: "import", nodes.FromImport: "from ... import",
            nodes.Extends: "extends"}


class TemplateError(SdstudioError):
    """A template failed to parse or render; the message names the template and the problem."""


@lru_cache(maxsize=1)
def environment() -> SandboxedEnvironment:
    env = BoundedSandbox(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False,
                         trim_blocks=True, lstrip_blocks=True)
    env.filters = bounded_filters()
    env.tests = bounded_tests()
    return env


def _parse(source: str, name: str) -> nodes.Template:
    """The template's syntax tree; a template that would read another file is refused here, with a line
    saying so (jinja itself only fails at render time, with "TypeError: no loader")."""
    try:
        tree = environment().parse(source)
    except TemplateSyntaxError as exc:
        raise TemplateError(f"{name}: syntax error at line {exc.lineno}: {exc.message}") from None
    for node in tree.find_all(tuple(INCLUDES)):
        raise TemplateError(f"{name}: line {node.lineno}: {{% {INCLUDES[type(node)]} %}} is not allowed: a template "
                            "cannot read other templates; paste the text it needs into this one")
    return tree


@lru_cache(maxsize=256)
def _compile(source: str, name: str):
    tree = _parse(source, name)
    try:
        return environment().from_string(tree)
    except TemplateSyntaxError as exc:
        raise TemplateError(f"{name}: syntax error at line {exc.lineno}: {exc.message}") from None


def render(source: str, context: dict[str, Any], name: str = "template") -> str:
    """Render ``source`` with ``context``; every failure is a one-line TemplateError."""
    template = _compile(source, name)
    try:
        with metered():
            return _generate(template, context, name)
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


def _generate(template: Any, context: dict[str, Any], name: str) -> str:
    parts, size = [], 0
    for part in template.generate(**context):
        size += len(part)
        if size > MAX_OUTPUT:
            raise TemplateError(f"{name}: renders more than {MAX_OUTPUT:,} characters; refused (a loop "
                                "that never ends, or a value far too big for a prompt?)")
        parts.append(part)
    return "".join(parts)


def variables(source: str, name: str = "template") -> set[str]:
    """The variables a template reads (to check them against the data before any call)."""
    return meta.find_undeclared_variables(_parse(source, name))
