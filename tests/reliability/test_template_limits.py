"""No template expression can allocate more than the render cap, whatever operator, filter, method or global it
uses, on every path a user template renders through: a use case's generate.jinja, a workflow step, a judge
template. Each attack runs as `sdstudio <command> --dry-run` in its own process (forked from one warm
interpreter: see forked.py) and must end with exit 2 and one line naming the limit, within a memory budget.

Before the fix, `'%5000000000s' % topic` peaked at 4.8 GB and 14 s, `'{:>1500000000}'.format(topic)` at
1.5 GB, `([topic]*3999999)|join('x'*500)` at 2.0 GB, `lipsum(100000)` took 13 s, a `{% set %}` block of 700
copies of a 4 MB string rendered at 2.7 GB, and nested loops scanning a big string never ended.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.reliability.forked import Outcome, Zygote

MEMORY_BUDGET_MB = 300
TIME_GUARD_S = 10  # generous: the point is "refused before it is built", which the memory figure shows
MODEL = ["--provider", "openai_compatible", "--model", "m", "--base-url", "http://127.0.0.1:9/v1"]
BIG = "{% set big = 'x' * 3999999 %}"

# name -> (template with X for the path's variable, a fragment the error line must contain)
ATTACKS = {
    "printf_width": ("{{ '%5000000000s' % X }}", "a % width of 5000000000"),
    "printf_star_width": ("{{ '%*s' % (1500000000, X) }}", "a % format would build"),
    "printf_precision": ("{{ '%.1500000000f' % 1.5 }}{{ X }}", "a % precision of 1500000000"),
    "format_filter": ("{{ '%1500000000s'|format(X) }}", "a % width of 1500000000"),
    "str_format_width": ("{{ '{:>1500000000}'.format(X) }}", "a format width of 1500000000"),
    "str_format_nested_width": ("{{ '{:{}}'.format(X, 1500000000) }}", "a format width of 1500000000"),
    "str_format_many_fields": ("{{ ('{0}' * 1000000).format(X * 1000) }}", "str.format() would build"),
    "format_map_width": ("{{ '{t:>1500000000}'.format_map({'t': X}) }}", "a format width of 1500000000"),
    "join_filter": ("{{ ([X]*3999999)|join('x'*500) }}", "over the limit of 1,000,000 items"),
    "join_filter_under_item_cap": ("{{ ([X]*999999)|join('x'*500) }}", "joining 999,999 items would build"),
    "join_method": ("{{ ('x'*500).join([X]*999999) }}", "join() would build"),
    "repeat": ("{{ X * 10**10 }}", "over the limit of 4,000,000"),
    "center_method": ("{{ X.center(1500000000) }}", "center(1,500,000,000) would build"),
    "ljust_method": ("{{ X.ljust(1500000000) }}", "ljust(1,500,000,000) would build"),
    "zfill_method": ("{{ X.zfill(1500000000) }}", "zfill(1,500,000,000) would build"),
    "expandtabs_method": ("{{ ('\\t' * 1000).expandtabs(10**7) }}{{ X }}", "expandtabs(10,000,000) would build"),
    "replace_method": ("{{ (X * 1000).replace('', 'y' * 100000) }}", "replace() would build"),
    "center_filter": ("{{ X|center(1500000000) }}", "center(1,500,000,000) would build"),
    "indent_filter": ("{{ ((X ~ '\\n') * 1000)|indent(10**7) }}", "indent(10000000) would build"),
    "wordwrap_filter": ("{{ ((X ~ ' ') * 1000)|wordwrap(1, wrapstring='y' * 100000) }}", "wordwrap(1) would build"),
    "batch_fill": ("{{ (X|list)|batch(10**9, 'x')|list }}", "over the limit of 1,000,000 items"),
    "lipsum": ("{{ lipsum(100000) }}{{ X }}", "over the limit of 100 paragraphs"),
    "range": ("{% for i in range(10**9) %}{% endfor %}{{ X }}", "Range too big"),
    "block_text": (BIG + "{% set t %}{% for i in range(700) %}{{ big }}{% endfor %}{% endset %}{{ t|length }}{{ X }}",
                   "block is over the limit of 4,000,000 characters"),
    "value_shown": (BIG + "{{ [big] * 999999 }}{{ X }}", "showing a value would build"),
    "nested_loops": ("{% for i in range(100000) %}{% for j in range(100000) %}{% if 'y' in X %}{% endif %}"
                     "{% endfor %}{% endfor %}", "more than 1,000,000 loop iterations"),
    "kept_slices": ("{% set big = [X] * 999999 %}{% set keep = [] %}{% for i in range(100000) %}"
                    "{% if keep.append(big[1:]) %}{% endif %}{% endfor %}", "built or scanned more than"),
    "squared_int": ("{% set ns = namespace(x=7) %}{% for i in range(40) %}{% set ns.x = ns.x * ns.x %}{% endfor %}"
                    "{{ X }}", "over the limit of 65,536 bits"),
    "include": ("{% include 'other.jinja' %}{{ X }}", "{% include %} is not allowed"),
}


def generate_path(folder: Path, template: str) -> tuple[list[str], str]:
    case = folder / "home" / "templates" / "bomb"
    case.mkdir(parents=True)
    (case / "use_case.yaml").write_text("description: a user's own use case\noutput_schema:\n  type: object\n"
                                        "  properties:\n    question: {type: string}\n")
    (case / "generate.jinja").write_text(template.replace("X", "topic"))
    (case / "evaluate.jinja").write_text("Score {{ prompt }}")
    return ["generate", "--use-case", "bomb", "--topics", "Heaps", "--per-topic", "1"], "bomb/generate.jinja"


def workflow_path(folder: Path, template: str) -> tuple[list[str], str]:
    rows = folder / "rows.csv"
    rows.write_text("q,a\nHeaps,A tree\n")
    steps = json.dumps([{"name": "s", "template": template.replace("X", "q")}])
    (folder / "wf.yaml").write_text(f"kind: workflow\ninput_file: {rows}\nsteps: {steps}\n")
    return ["workflow", "--config", str(folder / "wf.yaml")], "step s template"


def judge_path(folder: Path, template: str) -> tuple[list[str], str]:
    rows = folder / "pairs.csv"
    rows.write_text("q,a\nHeaps,A tree\n")
    (folder / "ev.yaml").write_text(f"kind: evaluation\ninput_file: {rows}\nprompt_column: q\ncompletion_column: a\n"
                                    f"template: {json.dumps(template.replace('X', 'prompt'))}\n")
    return ["evaluate", "--config", str(folder / "ev.yaml")], "judge template"


PATHS = {"generate": generate_path, "workflow": workflow_path, "judge": judge_path}
# what the three paths import on their way to the template (so each case pays for its own work only)
PRELOAD = ["pandas", "jsonschema", "sdstudio.config", "sdstudio.usecases", "sdstudio.validation", "sdstudio.engine",
           "sdstudio.store", "sdstudio.runner", "sdstudio.tokens", "sdstudio.pricing", "sdstudio.templates",
           "sdstudio.workflows.plan", "sdstudio.workflows.sft", "sdstudio.workflows.custom_plan",
           "sdstudio.workflows.evaluate"]


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[tuple[str, str], tuple[Outcome, str]]:
    root = tmp_path_factory.mktemp("template-limits")
    results = {}
    with Zygote(PRELOAD) as zygote:
        for path, build in PATHS.items():
            for name, (template, _) in ATTACKS.items():
                folder = root / path / name
                folder.mkdir(parents=True)
                argv, label = build(folder, template)
                outcome = zygote.run([*argv, *MODEL, "--dry-run", "--json", "--home", str(folder / "home")], folder,
                                     timeout=60)
                results[(path, name)] = (outcome, label)
    return results


@pytest.mark.slow
def test_template_limit_figures(outcomes):
    runs = [o for o, _ in outcomes.values()]
    worst = max(outcomes.items(), key=lambda kv: kv[1][0].peak_mb)
    print(f"\nFIGURES template limits: {len(runs)} attacks x paths, peak RSS max {max(o.peak_mb for o in runs):.0f} MB "
          f"({worst[0]}), time max {max(o.seconds for o in runs):.2f} s, median "
          f"{sorted(o.seconds for o in runs)[len(runs) // 2]:.2f} s")
    for (path, name), (o, _) in sorted(outcomes.items()):
        print(f"  {path:9} {name:26} {o.peak_mb:6.0f} MB {o.seconds:6.2f} s  exit {o.code}")


@pytest.mark.slow
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("attack", ATTACKS)
def test_a_template_cannot_build_more_than_the_cap(outcomes, path, attack):
    outcome, label = outcomes[(path, attack)]
    assert outcome.code is not None, f"still running after 60 s ({outcome.seconds:.1f} s)"
    assert outcome.peak_mb < MEMORY_BUDGET_MB, f"peak RSS {outcome.peak_mb:.0f} MB"
    assert outcome.code == 2, outcome.stderr[-2000:]
    assert len(outcome.lines) == 1 and "Traceback" not in outcome.stderr, outcome.stderr[-2000:]
    line = outcome.lines[0]
    assert line.startswith(f"sdstudio: error: {label}: ") and ATTACKS[attack][1] in line, line
    assert outcome.seconds < TIME_GUARD_S, f"{outcome.seconds:.1f} s"
