"""A hand-written workflow preset (``SDSTUDIO_HOME/templates/workflows/<name>.yaml``) with a wrong type is one
line naming the file and the key, never a Python error from inside the substitution, and never silently taken
(``column: yes-please`` as true, an unknown option key ignored)."""
from __future__ import annotations

from pathlib import Path

import pytest

from sdstudio.cli import main
from sdstudio.errors import ConfigError
from sdstudio.usecases import SHIPPED_TEMPLATES
from sdstudio.workflows.presets import list_presets, load_preset, preset_steps

STEPS = 'steps: [{name: "${column}_new", template: "Rewrite {{ ${column} }}"}]\n'


def write_preset(home: Path, text: str, name: str = "mine") -> Path:
    folder = home / "templates" / "workflows"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(text)
    return path


BAD = [
    ("options: 5\n" + STEPS, "options: expected a mapping"),
    ("options: [column]\n" + STEPS, "options: expected a mapping"),
    ("options: {column: {choices: 5}}\n" + STEPS, "options.column.choices: expected a list"),
    ("options: {column: {column: yes-please}}\n" + STEPS, "options.column.column: expected true or false"),
    ("options: {column: {column: true, colour: red}}\n" + STEPS,
     "unknown key 'colour' at options.column.colour (known: choices, column, default, description)"),
    ("options: {column: {column: true, description: [a]}}\n" + STEPS, "options.column.description: expected text"),
    ("options: {column: {default: [1, 2]}}\n" + STEPS, "options.column.default: expected text or a number"),
    ("options: {column: {default: c, choices: [a, b]}}\n" + STEPS, "column: its default 'c' is not one of"),
    ("options: {my column: {column: true}}\n" + STEPS, "options: 'my column' cannot be written ${my column}"),
    ("description: [a]\noptions: {column: {column: true}}\n" + STEPS, "description: expected text"),
    ("variations: [3]\noptions: {column: {column: true}}\n" + STEPS, "variations: expected text or a number"),
    ("options: {column: {column: true}}\nsteps: 5\n", "steps: expected a list"),
    ("options: {column: {column: true}}\nsteps: [5]\n", "steps.0: expected a mapping"),
    ("options: {column: {column: true}}\nsteps: []\n", "needs a list of steps"),
    ("options: {column: {column: true}}\n", "needs a list of steps"),
    ("optons: {column: {column: true}}\n" + STEPS, "unknown key 'optons'"),
    ("- a list\n", "expected a mapping with a list of steps"),
]


@pytest.mark.parametrize("text, expected", BAD, ids=[b[1][:40] for b in BAD])
def test_a_bad_preset_is_one_line_naming_the_file_and_the_key(home, text, expected):
    path = write_preset(home, text)
    with pytest.raises(ConfigError) as caught:
        load_preset("mine", home)
    line = str(caught.value)
    assert "\n" not in line and line.startswith(f"preset {path}: ") and expected in line, line


@pytest.mark.parametrize("text, expected", BAD[:3], ids=["options_5", "options_list", "choices_5"])
def test_the_workflow_command_with_a_bad_preset_exits_2_with_one_line(home, tmp_path, capsys, text, expected):
    write_preset(home, text)
    rows = tmp_path / "rows.csv"
    rows.write_text("question,answer\nWhat is a heap?,A tree\n")
    code = main(["workflow", "--input", str(rows), "--preset", "mine", "--set", "column=question", "--provider",
                 "openai_compatible", "--model", "m", "--base-url", "http://127.0.0.1:9/v1", "--dry-run"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and expected in err[0] and "unexpected" not in err[0], err


def test_a_broken_preset_is_listed_as_such_and_the_others_stay_usable(home, capsys):
    write_preset(home, "options: 5\n" + STEPS)
    listed = list_presets(home)
    assert listed["mine"].startswith("cannot be used: preset ") and "options: expected a mapping" in listed["mine"]
    assert preset_steps("paraphrase", home=home, column="question")[0][0].name == "question_paraphrase"
    assert main(["workflow", "--list-presets"]) == 0
    assert "mine: cannot be used:" in capsys.readouterr().out


def test_a_bare_value_is_an_options_default_and_an_empty_one_is_required(home):
    write_preset(home, "options: {column: {column: true}, tone: formal, extra:}\n" + STEPS)
    options = load_preset("mine", home).options
    assert (options["tone"].default, options["extra"].default, options["column"].column) == ("formal", None, True)


def test_every_shipped_preset_validates():
    shipped = sorted(p.stem for p in (SHIPPED_TEMPLATES / "workflows").glob("*.yaml"))
    assert len(shipped) >= 5
    for name in shipped:
        assert load_preset(name).steps, name
