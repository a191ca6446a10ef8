"""User templates render only in the jinja sandbox, which refuses escapes and caps what a template may build."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from sdstudio.templates import MAX_OUTPUT, TemplateError, environment, render

PACKAGE = Path(__file__).resolve().parents[2] / "sdstudio"


def test_templates_render_only_in_the_sandbox():
    """One jinja environment in the package, sandboxed; other modules may only inspect templates (jinja2.nodes,
    jinja2.meta) and render through sdstudio.templates.render."""
    from jinja2.sandbox import SandboxedEnvironment

    assert isinstance(environment(), SandboxedEnvironment)
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "templates.py" or path.name.startswith("template_"):  # the sandbox's own modules
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            where = f"{path.relative_to(PACKAGE)}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.Import) and any(a.name.startswith("jinja2") for a in node.names):
                offenders.append(f"{where} import jinja2")
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("jinja2") and (
                    node.module != "jinja2" or {a.name for a in node.names} - {"nodes", "meta"}):
                offenders.append(f"{where} from {node.module} import {', '.join(a.name for a in node.names)}")
            if isinstance(node, ast.Attribute) and node.attr in ("from_string", "get_template"):
                offenders.append(f"{where} .{node.attr}")
    assert offenders == []


@pytest.mark.parametrize("source, refusal", [
    ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "sandbox"),
    ("{{ lipsum.__globals__['os'].popen('id').read() }}", "sandbox"),
    ("{{ cycler.__init__.__globals__.os }}", "sandbox"),
    ("{{ '{0.__class__.__init__.__globals__}'.format(topic) }}", "sandbox"),
    ("{{ topic|attr('__class__') }}", "sandbox"),
    ("{{ 'x' * 10**10 }}", "repeating a value"),
    ("{{ [0] * 10**9 }}", "repeating a list"),
    ("{{ 10 ** 100000 }}", "over the limit of 65,536 bits"),
    ("{% set ns = namespace(s='ab') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}", "joining with ~"),
    ("{% set ns = namespace(s='ab') %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}{% endfor %}", "joining with +"),
    ("{{ topic|center(10**10) }}", "center"),
    ("{{ topic|indent(10**10) }}", "indent"),
    ("{{ 'ab'|replace('a', 'a' * 100000)|replace('a', 'a' * 100000) }}", "replace"),
    ("{% for i in range(100000) %}{% for j in range(100000) %}{{ topic }}{% endfor %}{% endfor %}", "renders more than"),
    ("{% macro m(n) %}{{ m(n + 1) }}{% endmacro %}{{ m(1) }}", "RecursionError"),
    ("{% for i in range(10**9) %}{% endfor %}", "Range too big"),
    ("{% include 'other.jinja' %}", "{% include %} is not allowed"),
])
def test_escapes_and_oversized_values_are_one_line_refusals(source, refusal):
    with pytest.raises(TemplateError) as caught:
        render(source, {"topic": "Heaps"}, "user.jinja")
    message = str(caught.value)
    assert refusal in message and message.startswith("user.jinja: ") and "\n" not in message


def test_ordinary_templates_still_render():
    source = ("{{ 'a' ~ topic ~ 'b' }}|{{ topic|replace('e', 'E') }}|{{ 'ab' * 3 }}|{{ 2 ** 10 }}|{{ [1] + [2] }}|"
              "{{ topic|center(9) }}|{{ 'x\ny'|indent(2) }}|{{ items|tojson }}")
    assert render(source, {"topic": "Heaps", "items": [1]}, "ok.jinja") == (
        "aHeapsb|HEaps|ababab|1024|[1, 2]|  Heaps  |x\n  y|[\n   1\n]")
    big = "x" * (MAX_OUTPUT // 2)  # a long document chunk is fine
    assert len(render("{{ chunk }}{{ chunk }}", {"chunk": big}, "big.jinja")) == MAX_OUTPUT
