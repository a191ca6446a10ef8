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


ORDINARY = [  # what prompt templates do: each must render exactly as in jinja's own sandbox
    "{{ rows[1:] }}|{{ rows[::-1]|join(', ') }}|{{ topic[:3] }}|{{ topic[-2:] }}",
    "{% for r in rows %}{{ loop.index }}/{{ loop.length }}:{{ r.name }}{% if not loop.last %}, {% endif %}{% endfor %}",
    "{% for r in rows if r.n > 1 %}{{ r.name }}{% else %}none{% endfor %}",
    "{% for k, v in meta|dictsort %}{{ k }}={{ v }};{% endfor %}{{ meta.items()|list|length }}",
    "{% for t in tree recursive %}{{ t.name }}{% if t.kids %}({{ loop(t.kids) }}){% endif %}{% endfor %}",
    "{{ 'ea' in topic }}|{{ 1 < 2 < 3 }}|{{ topic == 'Heaps' }}|{{ 'x' not in topic }}|{{ rows|length > 2 }}",
    "{{ '%s has %d rows (%.2f)' % (topic, 3, 1.5) }}|{{ '%(a)s-%(b)05d' % {'a': 1, 'b': 42} }}|{{ '%%' % () }}",
    "{{ '{} / {:>8} / {:.3f} / {!r}'.format(topic, 'x', 3.14159, 'q') }}|{{ '{0}-{0:^9}'.format(topic) }}"
    "{{ '{a}{b}'.format_map(meta) }}|{{ '{:,}'.format(1234567) }}|{{ '{:08.2f}'.format(-3.5) }}",
    "{{ '%-10s|' % topic }}{{ topic|format }}{{ '%s-%s'|format(1, 2) }}",
    "{{ rows|map(attribute='name')|join(' | ') }}|{{ rows|join(',', attribute='n') }}|{{ rows|sum(attribute='n') }}",
    "{{ rows|selectattr('n', 'gt', 1)|map(attribute='name')|list }}|{{ rows|sort(attribute='n', reverse=true)|first }}",
    "{{ rows|batch(2)|list|length }}|{{ rows|slice(2)|list|length }}|{{ rows|groupby('n')|list|length }}",
    "{{ [[1], [2]]|sum(start=[]) }}|{{ [3, 1, 2]|unique|sort|list }}|{{ [1, 2]|reverse|list }}|{{ 'abc'|reverse }}",
    "{{ long|wordwrap(20) }}|{{ long|truncate(20) }}|{{ long|wordcount }}|{{ long|title }}|{{ long|capitalize }}",
    "{{ 'a\nb'|indent(4, first=true) }}|{{ topic|center(11) }}|{{ ' x '|trim }}|{{ '<b>x</b>'|striptags }}",
    "{{ meta|tojson }}|{{ meta|tojson(indent=None) }}|{{ rows|string }}|{{ 3.7|int }}|{{ '4'|float }}|{{ -3|abs }}",
    "{{ topic.upper() }}{{ topic.lower() }}{{ topic.ljust(7, '.') }}{{ topic.zfill(7) }}{{ 'a\tb'.expandtabs(4) }}",
    "{{ ', '.join(['a', 'b']) }}{{ topic.replace('ea', 'EA') }}{{ topic.split('a') }}{{ topic.startswith('H') }}",
    "{% set xs = [] %}{% for r in rows %}{% if xs.append(r.n * 2) %}{% endif %}{% endfor %}{{ xs }}"
    "{% set d = {} %}{% if d.update({'k': 1}) %}{% endif %}{{ d }}{{ d.get('k') }}",
    "{% macro item(r) %}- {{ r.name }} ({{ caller() if caller else '' }}){% endmacro %}"
    "{% for r in rows %}{% call item(r) %}{{ r.n }}{% endcall %}\n{% endfor %}",
    "{% set block %}{% for r in rows %}{{ r.name }}{% endfor %}{% endset %}{{ block|upper }}"
    "{% filter upper %}{{ topic }}{% endfilter %}",
    "{% set ns = namespace(total=0) %}{% for r in rows %}{% set ns.total = ns.total + r.n %}{% endfor %}{{ ns.total }}",
    "{{ 2 ** 10 }}|{{ 7 // 2 }}|{{ 7 % 3 }}|{{ 'ab' * 3 }}|{{ [1] * 3 }}|{{ [1] + [2] }}|{{ 'a' ~ 1 ~ none }}",
    "{{ range(3)|list }}|{% for i in range(2) %}{% for j in range(2) %}{{ i }}{{ j }}{% endfor %}{% endfor %}",
    "{{ cycler('a', 'b').next() }}|{% set j = joiner('+') %}{% for r in rows %}{{ j() }}{{ r.n }}{% endfor %}|{{ dict(a=1) }}",
    "{{ rows|length }}{{ rows|count }}{{ rows|first }}{{ rows|last }}{{ missing|default('d') }}{{ rows|min(attribute='n') }}",
    "{{ 'x' is lower }}{{ 3 is odd }}{{ 'ea' is in topic }}{{ rows is sequence }}{{ 4 is divisibleby 2 }}",
    "{{ 'a b&c'|urlencode }}|{{ 'a<b'|e }}|{{ 1234567|filesizeformat }}|{{ 2.567|round(1) }}",
]
CONTEXT = {"topic": "Heaps", "rows": [{"name": "a", "n": 1}, {"name": "b", "n": 2}, {"name": "c", "n": 3}],
           "meta": {"a": 1, "b": "two"}, "long": "the quick brown fox jumps over the lazy dog " * 3,
           "tree": [{"name": "r", "kids": [{"name": "k1", "kids": []}, {"name": "k2", "kids": []}]}]}


@pytest.mark.parametrize("source", ORDINARY)
def test_ordinary_templates_render_exactly_as_in_jinjas_own_sandbox(source):
    """The limits change nothing below them: a prompt renders byte for byte as it did before."""
    import json

    from jinja2 import StrictUndefined, Undefined
    from jinja2.sandbox import SandboxedEnvironment

    plain = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, trim_blocks=True, lstrip_blocks=True)
    plain.filters["tojson"] = lambda value, indent=3: json.dumps(value, ensure_ascii=False, indent=indent)
    context = {**CONTEXT, "missing": Undefined()} if "missing" in source else CONTEXT
    expected = plain.from_string(source).render(**context)
    assert render(source, context, "ok.jinja") == expected


@pytest.mark.parametrize("source", ["{% include 'other.jinja' %}", "{% import 'macros.jinja' as m %}",
                                    "{% from 'macros.jinja' import item %}", "{% extends 'base.jinja' %}"])
def test_a_template_that_reads_another_file_is_refused_when_read(source):
    """One line at check time (variables() runs before any call), not "TypeError: no loader" at render time."""
    from sdstudio.templates import variables

    for attempt in (lambda: variables(source, "user.jinja"), lambda: render(source, {}, "user.jinja")):
        with pytest.raises(TemplateError) as caught:
            attempt()
        assert "is not allowed" in str(caught.value) and "\n" not in str(caught.value)
        assert str(caught.value).startswith("user.jinja: line 1: {% ")
