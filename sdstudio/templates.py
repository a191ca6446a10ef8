"""Prompt templates: jinja2 in a sandbox, with undefined variables as errors.

Users edit templates in notebooks and drop their own use cases into ``SDSTUDIO_HOME/templates``, so
templates are untrusted input: ``SandboxedEnvironment`` refuses attribute tricks such as
``{{ ''.__class__.__mro__ }}``, and ``StrictUndefined`` turns a misspelt variable into an error that
names it instead of silently rendering an empty string into a paid prompt.
"""
from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, UndefinedError, meta
from jinja2.exceptions import SecurityError, TemplateError as JinjaTemplateError
from jinja2.sandbox import SandboxedEnvironment

from .errors import SdstudioError


class TemplateError(SdstudioError):
    """A template failed to parse or render; the message names the template and the problem."""


def _to_json(value: Any, indent: int | None = 3) -> str:
    return json.dumps(value, ensure_ascii=False, indent=indent)


@lru_cache(maxsize=1)
def environment() -> SandboxedEnvironment:
    env = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False,
                               trim_blocks=True, lstrip_blocks=True)
    env.filters["tojson"] = _to_json  # readable JSON in prompts (jinja's own tojson HTML-escapes)
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
        return template.render(**context)
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


def variables(source: str, name: str = "template") -> set[str]:
    """The variables a template reads (to check them against the data before any call)."""
    try:
        return meta.find_undeclared_variables(environment().parse(source))
    except TemplateSyntaxError as exc:
        raise TemplateError(f"{name}: syntax error at line {exc.lineno}: {exc.message}") from None
