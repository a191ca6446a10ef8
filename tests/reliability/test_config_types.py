"""Job configs are lax where forms and flags need it (a text box's "5" is 5) but not where a value would be
wrong: a judge scale is two whole numbers within range. An end too big for metadata.db's integer columns used
to surface as "unexpected OverflowError" after the job row was half made, and `true` was read as 1."""
from __future__ import annotations

import pytest

from sdstudio.cli import main

MODEL = ["--provider", "openai_compatible", "--model", "m", "--base-url", "http://127.0.0.1:9/v1"]


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


@pytest.mark.parametrize("command", [["evaluate", "--input", "{rows}", "--prompt-col", "q", "--completion-col", "a"],
                                     ["align", "--topics", "Heaps"]])
def test_a_judge_scale_too_big_for_the_database_is_one_line(home, tmp_path, capsys, command):
    rows = tmp_path / "pairs.csv"
    rows.write_text("q,a\nhi,there\n")
    argv = [part.replace("{rows}", str(rows)) for part in command]
    assert main([*argv, "--scale", "1-100000000000000000000", *MODEL, "--json"]) == 2
    line = one_line(capsys)
    assert "scale 1-100000000000000000000 is out of range" in line and "unexpected" not in line, line


@pytest.mark.parametrize("scale, where", [("[true, 5]", "scale.0"), ("[1, 5.5]", "scale.1"), ("['1', 5]", "scale.0")])
def test_a_judge_scale_end_that_is_not_a_whole_number_is_refused(home, tmp_path, capsys, scale, where):
    rows = tmp_path / "pairs.csv"
    rows.write_text("q,a\nhi,there\n")
    config = tmp_path / "ev.yaml"
    config.write_text(f"kind: evaluation\ninput_file: {rows}\nprompt_column: q\ncompletion_column: a\nscale: {scale}\n")
    assert main(["evaluate", "--config", str(config), *MODEL, "--dry-run"]) == 2
    assert f"ev.yaml: {where}: Input should be a valid integer" in one_line(capsys)


BIG = "100000000000000000000"  # beyond SQLite's 64-bit integers


@pytest.mark.parametrize("argv", [["jobs", "show", BIG], ["evaluate", "--job", BIG, *MODEL], ["export", "--job", BIG],
                                  ["generate", "--resume", BIG, *MODEL], ["align", "--resume", BIG, *MODEL],
                                  ["workflow", "--resume", BIG, *MODEL], ["documents", "--resume", BIG, *MODEL]],
                         ids=["jobs_show", "evaluate_job", "export_job", "generate_resume", "align_resume",
                              "workflow_resume", "documents_resume"])
def test_a_job_id_too_big_for_the_database_is_no_such_job(home, capsys, argv):
    assert main(argv) == 2
    line = one_line(capsys)
    assert f"job with id {BIG}; `sdstudio jobs` lists them" in line and "unexpected" not in line, line
