"""A hand-written ``use_case.yaml`` with a wrong type or range is one line naming the file and the key, on the
CLI and in the notebook, never a Python error from deep inside a plan (or, worse, silently accepted)."""
from __future__ import annotations

from pathlib import Path

import pytest

from sdstudio.cli import main
from sdstudio.errors import ConfigError
from sdstudio.usecases import SHIPPED_TEMPLATES, list_use_cases, load_use_case

SCHEMA = "output_schema: {type: object, properties: {question: {type: string}, solution: {type: string}}}\n"


def body(yaml_text: str) -> str:
    """A use case good but for ``yaml_text`` (a top-level list stays the whole file)."""
    if yaml_text.startswith("-"):
        return yaml_text + "\n"
    return "description: mine\n" + ("" if "output_schema" in yaml_text else SCHEMA) + yaml_text + "\n"


def write_use_case(folder: Path, yaml_text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "use_case.yaml").write_text(yaml_text)
    (folder / "generate.jinja").write_text("Write {{ count }} items about {{ topic }}")
    (folder / "evaluate.jinja").write_text("Score {{ prompt }} / {{ completion }}")
    return folder


# (yaml, the key the error line must name): the cases first, then every other key's wrong type or range
BAD = [
    ("judge: 5", "judge: expected a mapping"),
    ("judge: {scale: [1, .inf]}", "judge.scale: expected two whole numbers, e.g. [1, 5]; the high end"),
    ("judge: {scale: ab}", "judge.scale: expected a list of two whole numbers"),
    ("topics: 5", "topics: expected a list"),
    ("output_schema: 12", "output_schema: expected a mapping"),
    ("examples: abc", "examples: expected a list"),
    ("judge: {scale: [5, 1]}", "judge.scale: scale 5-1 is empty"),
    ("judge: {scale: [3, 3]}", "judge.scale: scale 3-3 is empty"),
    ("judge: {scale: [1.5, 5]}", "judge.scale: expected two whole numbers, e.g. [1, 5]; the low end"),
    ("judge: {scale: [1, .nan]}", "the high end is not a whole number"),
    ("judge: {scale: [true, 5]}", "the low end is not a whole number"),
    ("judge: {scale: ['1', '5']}", "the low end is not a whole number"),
    ("judge: {scale: [1]}", "the high end is missing"),
    ("judge: {scale: [1, 5, 9]}", "judge.scale: expected a list of two whole numbers"),
    ("judge: {scale: [1, 100000000000000000000]}", "judge.scale: scale 1-100000000000000000000 is out of range"),
    ("judge: {criteria: [be nice]}", "judge.criteria: expected text"),
    ("judge: {critera: x}", "unknown key 'critera' at judge.critera (known: criteria, scale)"),
    ("name: [a]", "name: expected text"),
    ("name: '  '", "name: is blank"),
    ("description: 5", "description: expected text"),
    ("technique: dpo", "technique: expected 'sft' or 'freeform'"),
    ("instruction: {a: b}", "instruction: expected text"),
    ("topics: Heaps", "topics: expected a list"),
    ("topics: [Heaps, 42]", "topics.1: expected text"),
    ("topics: [Heaps, '']", "topics: entry 1 is blank"),
    ("examples: [abc]", "examples.0: expected a mapping"),
    ("examples: [{}]", "examples: example 0 is empty"),
    ("examples: [{1: a}]", "examples.0.1: a key must be text"),
    ("requirements: be correct", "requirements: expected a list"),
    ("output_schema: {type: string}", "output_schema: must describe one item: type: object"),
    ("output_schema: {type: object, properties: {a: {type: strng}}}",
     "output_schema: not a valid JSON schema at properties.a.type"),
    ("output_schema: {type: object, additionalProperties: false, properties: {a: {}}, required: [b]}",
     "output_schema: required names 'b'"),
    ("prompt_field: 5", "prompt_field: expected text"),
    ("completion_field: [a]", "completion_field: expected text"),
    ("inputs: db_schema", "inputs: expected a mapping"),
    ("inputs: {db_schema: [a, b]}", "inputs.db_schema: expected text or a number"),
    ("inputs: {db schema: x}", "inputs: 'db schema' is not a template variable name"),
    ("validators: sql", "validators: expected a list"),
    ("validators: [sqll]", "validators.0: expected 'sql'"),
    ("- description: a list, not a mapping", "expected a mapping of keys"),
]


@pytest.mark.parametrize("yaml_text, expected", BAD, ids=[b[0][:40] for b in BAD])
def test_a_bad_use_case_yaml_is_one_line_naming_the_file_and_the_key(home, yaml_text, expected):
    write_use_case(home / "templates" / "mine", body(yaml_text))
    with pytest.raises(ConfigError) as caught:
        load_use_case("mine", home)
    line = str(caught.value)
    assert "\n" not in line and line.startswith(str(home / "templates" / "mine" / "use_case.yaml") + ": ")
    assert expected in line, line


@pytest.mark.parametrize("yaml_text, key", [(text, expected.split(":")[0]) for text, expected in BAD[:6]])
def test_generate_with_a_bad_use_case_exits_2_with_one_line(home, capsys, yaml_text, key):
    write_use_case(home / "templates" / "mine", body(yaml_text))
    code = main(["generate", "--use-case", "mine", "--topics", "Heaps", "--provider", "openai_compatible", "--model",
                 "m", "--base-url", "http://127.0.0.1:9/v1", "--dry-run"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("sdstudio: error: ") and f"use_case.yaml: {key}:" in err[0], err[0]
    assert "unexpected" not in err[0]


def test_generate_with_a_use_case_folder_path_reads_that_folder(tmp_path, home, capsys, monkeypatch):
    write_use_case(tmp_path / "cases" / "tickets", "description: mine\n" + SCHEMA + "judge: {scale: [1, .inf]}\n")
    monkeypatch.chdir(tmp_path)
    for given in (str(tmp_path / "cases" / "tickets"), "./cases/tickets"):
        code = main(["generate", "--use-case", given, "--topics", "Heaps", "--provider", "openai_compatible",
                     "--model", "m", "--base-url", "http://127.0.0.1:9/v1", "--dry-run"])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and "cases/tickets/use_case.yaml: judge.scale:" in err[0], err


def test_examples_given_as_text_are_refused_not_split_into_letters(home):
    write_use_case(home / "templates" / "mine", "description: mine\n" + SCHEMA + "examples: abc\n")
    with pytest.raises(ConfigError, match=r"use_case.yaml: examples: expected a list"):
        load_use_case("mine", home)


def test_an_empty_key_means_unset_as_before(home):
    write_use_case(home / "templates" / "mine", "description: mine\n" + SCHEMA + "topics:\njudge:\nexamples:\n")
    case = load_use_case("mine", home)
    assert (case.topics, case.examples, case.judge_scale) == ([], [], (1, 5))


def test_every_shipped_use_case_validates():
    shipped = sorted(p.parent.name for p in SHIPPED_TEMPLATES.glob("*/use_case.yaml"))
    assert len(shipped) >= 7
    for name in shipped:
        case = load_use_case(name)
        low, high = case.judge_scale
        assert low < high and case.judge_criteria, name
        assert case.technique == "freeform" or case.output_schema["type"] == "object", name


def test_a_broken_user_use_case_does_not_hide_the_others(home):
    write_use_case(home / "templates" / "mine", "judge: 5\n")
    assert "mine" in list_use_cases(home) and "code_generation" in list_use_cases(home)
    assert load_use_case("code_generation", home).name == "code_generation"


# -- the notebook: the use case picker shows the same line -------------------------------------------------

def test_the_generate_notebook_shows_a_broken_use_case_as_one_line(home):
    from sdstudio.ui.generate import GenerateApp

    write_use_case(home / "templates" / "mine", "description: mine\n" + SCHEMA + "judge: {scale: [1, .inf]}\n")
    app = GenerateApp(home=home, provider="openai_compatible", model="m", base_url="http://127.0.0.1:9/v1")
    app.use_case.value = "mine"  # picking it in the dropdown: no exception escapes the observer
    assert "use_case.yaml: judge.scale: expected two whole numbers" in app.estimate.value
    assert 'class="sds-error"' in app.estimate.value and "Traceback" not in app.estimate.value
    app.use_case.value = "code_generation"  # and a good one still loads after it
    assert "sds-error" not in app.estimate.value and app.instruction.value


def test_the_generate_notebook_opened_on_a_broken_use_case_still_builds(home):
    from sdstudio.ui.generate import GenerateApp

    write_use_case(home / "templates" / "mine", "description: mine\n" + SCHEMA + "topics: 5\n")
    app = GenerateApp(home=home, provider="openai_compatible", model="m", base_url="http://127.0.0.1:9/v1",
                      use_case="mine")
    assert "use_case.yaml: topics: expected a list" in app.estimate.value


def test_the_evaluate_notebook_shows_a_broken_use_case_as_one_line(home):
    from sdstudio.ui.evaluate import EvaluateApp

    write_use_case(home / "templates" / "custom", "description: mine\n" + SCHEMA + "judge: {scale: ab}\n")
    app = EvaluateApp(home=home, provider="openai_compatible", model="m", base_url="http://127.0.0.1:9/v1")
    assert "use_case.yaml: judge.scale: expected a list of two whole numbers" in app.preview.value
