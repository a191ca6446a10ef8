"""Custom workflows: user datasets in, prompt chains through the real fake server, rows out."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from sdstudio.config import (
    ModelSpec,
    RunSettings,
    StepModel,
    WorkflowJob,
    WorkflowStep,
    load_config,
)
from sdstudio.datasets import (
    DatasetError,
    column_types,
    preview_dataset,
    read_dataset,
    save_upload,
    select_rows,
)
from sdstudio.errors import ConfigError
from sdstudio.workflows.custom import (
    WorkflowRun,
    load_workflow,
    preview,
    results_frame,
    save_workflow,
    workflow_yaml,
)
from sdstudio.workflows.presets import apply_preset, list_presets
from tests.fakes.openai_server import requested_schema

ROOT = Path(__file__).resolve().parent.parent
FAST = RunSettings(concurrency=4, backoff_base_s=0.01, backoff_max_s=0.05)
GRADE_SCHEMA = {"type": "object", "required": ["difficulty"], "additionalProperties": False,
                "properties": {"difficulty": {"type": "string", "enum": ["easy", "hard"]}}}


def questions(n: int) -> pd.DataFrame:
    return pd.DataFrame({"id": list(range(n)), "question": [f"What is {i} + {i}?" for i in range(n)],
                         "answer": [str(2 * i) for i in range(n)]})


def write_csv(folder: Path, n: int, name: str = "q.csv") -> Path:
    path = folder / name
    questions(n).to_csv(path, index=False)
    return path


def chain(server, input_file: Path, *, run: RunSettings = FAST, judge: str = "fake-judge", **fields) -> WorkflowJob:
    """Three steps: text on fake-model, JSON on ``judge``, text on fake-model again."""
    return WorkflowJob(
        input_file=str(input_file), run=run,
        model=ModelSpec(provider="openai_compatible", model="fake-model", base_url=server.url),
        steps=[WorkflowStep(name="s1", template="S1 {{ id }}: rewrite {{ question }}"),
               WorkflowStep(name="s2", template="S2 {{ id }}: grade {{ s1 }}", output_type="json",
                            json_schema=GRADE_SCHEMA, model=StepModel(model=judge)),
               WorkflowStep(name="s3", template="S3 {{ id }}: answer {{ s2.difficulty }} {{ row['answer'] }}")],
        **fields)


def prompt(body: dict) -> str:
    return body["messages"][-1]["content"]


def step_of(body: dict) -> str:
    return prompt(body).split(" ", 1)[0]


def db_rows(home: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(home / "metadata.db") as conn:
        return conn.execute(sql).fetchall()


# -- input files ----------------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".json", ".parquet", ".xlsx"])
def test_each_input_format_reads_to_the_same_rows(tmp_path, suffix):
    frame = questions(3)
    path = tmp_path / f"data{suffix}"
    {".csv": lambda: frame.to_csv(path, index=False), ".tsv": lambda: frame.to_csv(path, sep="\t", index=False),
     ".jsonl": lambda: frame.to_json(path, orient="records", lines=True),
     ".json": lambda: frame.to_json(path, orient="records"), ".parquet": lambda: frame.to_parquet(path),
     ".xlsx": lambda: frame.to_excel(path, index=False)}[suffix]()
    read = read_dataset(path)
    assert list(read.columns) == ["id", "question", "answer"]
    assert [str(v) for v in read["question"]] == list(frame["question"])
    assert [str(v) for v in read["id"]] == ["0", "1", "2"]


def test_a_preview_shows_the_first_rows_and_the_column_types(tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_text('{"q": "a", "n": 1, "tags": ["x"], "score": 0.5}\n{"q": "b", "n": 2, "tags": [], "score": 1}\n')
    head, types = preview_dataset(path, rows=1)
    assert len(head) == 1
    assert dict(zip(types["column"], types["type"])) == {"q": "text", "n": "integer", "tags": "list",
                                                         "score": "number"}
    csv_types = column_types(read_dataset(write_csv(tmp_path, 2)))
    assert list(csv_types["type"]) == ["integer", "text", "integer"]  # CSV cells are text, typed by content


@pytest.mark.parametrize("name, content, message", [
    ("empty.csv", b"", "is empty"),
    ("blank.jsonl", b"\n\n  \n", "is empty"),
    ("header.csv", b"question,answer\n", "has no rows"),
    ("latin.csv", "question\ncaf\u00e9\n".encode("cp1252"), "is not UTF-8 text (byte 0xe9"),
    ("notes.pdf", b"%PDF-1.4", "unknown format '.pdf'"),
    ("broken.parquet", b"PAR1 this is not parquet", "cannot read input file"),
    ("broken.xlsx", b"not a zip", "as Excel"),
    ("bad.jsonl", b'{"q": 1}\n{"q": \n', "line 2 is not valid JSON"),
    ("scalar.json", b"[1, 2]", "row 1 is not a JSON object"),
])
def test_bad_input_files_raise_one_line_naming_the_file(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DatasetError, match=None) as caught:
        read_dataset(path)
    text = str(caught.value)
    assert message in text and name in text and "\n" not in text


def test_a_missing_file_is_named_and_a_declared_encoding_is_honoured(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        read_dataset(tmp_path / "nope.csv")
    path = tmp_path / "latin.csv"
    path.write_bytes("question\ncaf\u00e9\n".encode("cp1252"))
    assert read_dataset(path, encoding="cp1252")["question"].tolist() == ["caf\u00e9"]


def test_an_upload_is_saved_under_home_and_found_by_its_bare_name(home):
    saved = save_upload(b"question\nhi\n", "../../evil/data.csv", home)
    assert saved == home / "uploads" / "data.csv"
    assert read_dataset("data.csv", home=home)["question"].tolist() == ["hi"]


def test_limit_takes_the_first_rows_or_a_seeded_sample(tmp_path):
    frame = read_dataset(write_csv(tmp_path, 50))
    assert select_rows(frame, limit=3).index.tolist() == [0, 1, 2]
    sampled = select_rows(frame, limit=5, sample=True, seed=7).index.tolist()
    assert sampled == select_rows(frame, limit=5, sample=True, seed=7).index.tolist() == sorted(sampled)
    assert sampled != [0, 1, 2, 3, 4]
    assert list(select_rows(frame, columns=["question"]).columns) == ["question"]


# -- bad workflows fail before any call --------------------------------------------------------------

@pytest.mark.parametrize("template, message", [
    ("{{ questoin }}", "uses column 'questoin', which input file"),
    ("{{ row['Question text'] }}", "uses column 'Question text'"),
    ("{{ s3 }}", "'s3', the output of step s3, which runs later"),
])
def test_a_template_naming_a_missing_column_fails_before_any_call(openai_server, store, tmp_path, template, message):
    job = chain(openai_server, write_csv(tmp_path, 3))
    job.steps[0] = WorkflowStep(name="s1", template=template)
    with pytest.raises(ConfigError) as caught:
        WorkflowRun(job, store=store).run()
    assert message in str(caught.value)
    assert "runs later" in message or "available: answer, id, question" in str(caught.value)
    assert openai_server.requests == []


def test_a_column_left_out_of_the_selection_is_named(openai_server, tmp_path):
    job = chain(openai_server, write_csv(tmp_path, 3), columns=["id", "question"])
    with pytest.raises(ConfigError, match="column 'answer', which is not among the selected columns"):
        preview(job)


def test_an_output_column_may_not_overwrite_an_input_column(openai_server, tmp_path):
    job = chain(openai_server, write_csv(tmp_path, 3))
    job.steps[0] = WorkflowStep(name="s1", template="{{ question }}", output_column="answer")
    with pytest.raises(ConfigError, match="output column 'answer' is already an input column"):
        preview(job)


def test_duplicate_step_names_and_a_schema_on_a_text_step_are_config_errors():
    with pytest.raises(ConfigError, match="two steps share the step name 'a'"):
        load_config({"kind": "workflow", "steps": [{"name": "a", "template": "x"}, {"name": "a", "template": "y"}]})
    with pytest.raises(ConfigError, match="json_schema needs output_type: json"):
        load_config({"kind": "workflow", "steps": [{"name": "a", "template": "x", "json_schema": {}}]})


# -- running -------------------------------------------------------------------------------------

def test_a_three_step_chain_runs_with_each_steps_own_model(openai_server, store, tmp_path):
    result = WorkflowRun(chain(openai_server, write_csv(tmp_path, 4)), store=store).run()
    assert (result.status, result.ok, result.failed, result.requests_sent) == ("done", 4, 0, 12)
    models = {step_of(b): b["model"] for b in openai_server.requests}
    assert models == {"S1": "fake-model", "S2": "fake-judge", "S3": "fake-model"}
    s2 = next(b for b in openai_server.requests if prompt(b).startswith("S2 0:"))
    assert requested_schema(s2) == GRADE_SCHEMA
    frame = results_frame(result.job_id, store=store)
    assert list(frame.columns) == ["id", "question", "answer", "s1", "s2", "s3", "row", "status", "error"]
    assert frame["row"].tolist() == [0, 1, 2, 3] and set(frame["status"]) == {"ok"}
    first = frame.iloc[0]
    assert first["s1"].endswith("S1 0: rewrite What is 0 + 0?") and first["s2"]["difficulty"] in ("easy", "hard")
    assert f"S3 0: answer {first['s2']['difficulty']} 0" in first["s3"]  # JSON output used by a later step
    job = store.get_job("generation", result.job_id)
    assert job["technique"] == "workflow" and job["model_id"] == "fake-model, fake-judge"
    record = next(r for r in store.records("generation", result.job_id) if r["provenance"]["row"] == 0)
    assert record["input"] == {"id": "0", "question": "What is 0 + 0?", "answer": "0"}
    assert set(record["output"]) == {"id", "question", "answer", "s1", "s2", "s3"}
    assert list(record["provenance"]["steps"]) == ["s1", "s2", "s3"]


def test_rows_are_pipelined_a_rows_next_step_does_not_wait_for_the_other_rows(openai_server, store, tmp_path):
    openai_server.latency = 0.1
    job = chain(openai_server, write_csv(tmp_path, 8), run=RunSettings(concurrency=2))
    WorkflowRun(job, store=store).run()
    order = [step_of(b) for b in openai_server.requests]
    assert order.index("S2") < len(order) - 1 - order[::-1].index("S1")  # a step 2 before the last step 1
    assert order.index("S3") < len(order) - 1 - order[::-1].index("S1")


def test_steps_on_one_model_share_its_concurrency_limit(openai_server, store, tmp_path):
    openai_server.latency = 0.05
    job = chain(openai_server, write_csv(tmp_path, 6), run=RunSettings(concurrency=2), judge="fake-model")
    assert WorkflowRun(job, store=store).run().ok == 6
    assert openai_server.peak_in_flight <= 2
    order = [step_of(b) for b in openai_server.requests]
    assert order.index("S3") < len(order) - 1 - order[::-1].index("S1")  # later steps go first


def test_re_running_a_finished_workflow_makes_no_call(openai_server, store, tmp_path):
    job = chain(openai_server, write_csv(tmp_path, 3))
    first = WorkflowRun(job, store=store).run()
    sent = len(openai_server.requests)
    again = WorkflowRun(job, store=store).run()
    assert (again.job_id, again.resumed, again.ok, again.requests_sent) == (first.job_id, True, 3, 0)
    assert len(openai_server.requests) == sent


def test_a_step_failing_its_schema_fails_only_that_row_and_skips_its_later_steps(openai_server, store, tmp_path):
    from tests.fakes.openai_server import default_reply

    openai_server.reply = lambda body: "no JSON here" if prompt(body).startswith("S2 1:") else default_reply(body)
    result = WorkflowRun(chain(openai_server, write_csv(tmp_path, 3)), store=store).run()
    assert (result.ok, result.failed) == (2, 1)
    failed = next(store.records("generation", result.job_id, "failed"))
    assert failed["error"].startswith("step s2 failed: ") and failed["error"].endswith("; skipped s3")
    assert failed["raw_text"] == "no JSON here" and failed["output"]["s1"]  # step 1's output is kept
    prompts = [prompt(b) for b in openai_server.requests]
    assert sum(p.startswith("S2 1:") for p in prompts) == 2  # asked once more, then given up
    assert not any(p.startswith("S3 1:") for p in prompts)
    assert any("1 row(s) failed at step s2" in note for note in result.notes)


def test_a_json_reply_that_breaks_the_schema_is_rejected_with_the_reason(openai_server, store, tmp_path):
    openai_server.reply = lambda body: ('{"difficulty": "medium"}' if step_of(body) == "S2"
                                        else f"ok {prompt(body)}")
    result = WorkflowRun(chain(openai_server, write_csv(tmp_path, 1)), store=store).run()
    failed = next(store.records("generation", result.job_id, "failed"))
    assert "does not match the step's JSON schema: 'difficulty' is not one of ['easy', 'hard']" in failed["error"]
    assert failed["raw_text"] == '{"difficulty": "medium"}'


def test_a_row_whose_values_do_not_render_fails_alone_at_that_step(openai_server, store, tmp_path):
    openai_server.reply = lambda body: (json.dumps({"n": 0 if prompt(body).startswith("S2 1:") else 5})
                                        if step_of(body) == "S2" else f"ok {prompt(body)}")
    job = chain(openai_server, write_csv(tmp_path, 3))
    job.steps[1] = WorkflowStep(name="s2", template="S2 {{ id }}: count {{ s1 }}", output_type="json",
                                json_schema={"type": "object", "properties": {"n": {"type": "integer"}}})
    job.steps[2] = WorkflowStep(name="s3", template="S3 {{ id }}: {{ 100 // s2.n }}")  # no check can run this early
    result = WorkflowRun(job, store=store).run()
    assert (result.ok, result.failed) == (2, 1)
    failed = next(store.records("generation", result.job_id, "failed"))
    assert failed["provenance"]["row"] == 1 and "step s3 failed: " in failed["error"] and "ZeroDivisionError" in failed["error"]
    assert {prompt(b) for b in openai_server.requests if step_of(b) == "S3"} == {"S3 0: 20", "S3 2: 20"}


def test_a_rerun_after_a_failed_step_resumes_mid_chain_without_repeating_finished_steps(openai_server, store,
                                                                                          tmp_path):
    from tests.fakes.openai_server import default_reply

    job = chain(openai_server, write_csv(tmp_path, 3))
    openai_server.reply = lambda body: ("x" if step_of(body) == "S2" else default_reply(body))  # step 2 fails
    first = WorkflowRun(job, store=store).run()
    assert (first.ok, first.failed) == (0, 3)
    before = len(openai_server.requests)
    openai_server.reply = default_reply
    second = WorkflowRun(job, store=store).run()
    assert (second.job_id, second.ok, second.failed) == (first.job_id, 3, 0)
    resent = [step_of(b) for b in openai_server.requests[before:]]
    assert sorted(resent) == ["S2"] * 3 + ["S3"] * 3  # step 1 of every row was kept


def test_a_cancelled_run_keeps_finished_steps_and_a_rerun_finishes_it(openai_server, store, tmp_path):
    openai_server.latency = 0.05
    job = chain(openai_server, write_csv(tmp_path, 20), run=RunSettings(concurrency=2))
    cancel = threading.Event()
    seen = []

    def on_progress(progress):
        seen.append(progress)
        if progress.done >= 6:
            cancel.set()

    first = WorkflowRun(job, store=store).run(on_progress=on_progress, cancel_event=cancel)
    assert first.status == "cancelled" and first.ok < 20 and seen[-1].total == 60
    saved = {(r["provenance"]["row"], step) for r in store.records("generation", first.job_id)
             for step in r["provenance"]["steps"]}
    unfinished = [r for r in store.records("generation", first.job_id, "failed")]
    assert all(r["error"].startswith("unfinished: stopped before step") for r in unfinished)
    before = len(openai_server.requests)
    second = WorkflowRun(job, store=store).run()
    assert (second.status, second.ok) == ("done", 20)
    resent = {(int(prompt(b).split(" ")[1].rstrip(":")), step_of(b).lower()) for b in openai_server.requests[before:]}
    assert not resent & saved and len(resent) == 60 - len(saved)


def test_variations_make_one_output_row_per_copy(openai_server, store, tmp_path):
    job = apply_preset(chain(openai_server, write_csv(tmp_path, 2)), "variations", column="question", n=3)
    result = WorkflowRun(job, store=store).run()
    assert result.ok == 6
    frame = results_frame(result.job_id, store=store)
    assert frame[["row", "variation"]].values.tolist() == [[0, 1], [0, 2], [0, 3], [1, 1], [1, 2], [1, 3]]
    variants = [prompt(b) for b in openai_server.requests if "Write variation" in prompt(b)]
    assert len(set(variants)) == 6 and any("variation 3 of 3" in v for v in variants)


def test_a_changed_input_row_is_run_again_and_its_old_record_marked_stale(openai_server, store, tmp_path):
    path = write_csv(tmp_path, 3)
    job = chain(openai_server, path)
    WorkflowRun(job, store=store).run()
    frame = questions(3)
    frame.loc[1, "question"] = "What is 10 + 10?"
    frame.to_csv(path, index=False)
    before = len(openai_server.requests)
    result = WorkflowRun(job, store=store).run()
    assert (result.ok, result.filtered, result.requests_sent) == (3, 1, 3)
    assert {prompt(b).split(":")[0] for b in openai_server.requests[before:]} == {"S1 1", "S2 1", "S3 1"}
    assert results_frame(result.job_id, store=store)["question"].tolist()[1] == "What is 10 + 10?"


# -- presets and YAML ------------------------------------------------------------------------------

PRESET_OPTIONS = {"paraphrase": {"column": "Question text"}, "change_difficulty": {"column": "Question text"},
                  "translate": {"column": "Question text", "language": "German"},
                  "add_reasoning": {"question": "Question text", "answer": "answer"},
                  "variations": {"column": "Question text", "n": "4"}}


@pytest.mark.parametrize("name", sorted(PRESET_OPTIONS))
def test_every_preset_renders_on_a_row(name):
    assert name in list_presets()
    frame = pd.DataFrame({"Question text": ["Why is the sky blue?"], "answer": ["Rayleigh scattering."]})
    job = apply_preset(None, name, **PRESET_OPTIONS[name])
    shown = preview(job, frame=frame)
    assert "Why is the sky blue?" in shown.prompt and "${" not in shown.prompt
    if name == "add_reasoning":
        assert "Rayleigh scattering." in shown.prompt
    if name == "translate":
        assert "into German" in shown.prompt and job.steps[0].column == "question_text_german"
    if name == "variations":
        assert job.variations == 4 and shown.rows == 4


def test_preset_errors_name_the_problem():
    with pytest.raises(ConfigError, match="unknown workflow preset 'nope'; presets: add_reasoning"):
        apply_preset(None, "nope")
    with pytest.raises(ConfigError, match="needs option 'column'"):
        apply_preset(None, "paraphrase")
    with pytest.raises(ConfigError, match="must be one of harder, easier"):
        apply_preset(None, "change_difficulty", column="q", direction="sideways")


def test_a_workflow_round_trips_through_yaml_with_step_models_still_inheriting(openai_server, tmp_path):
    job = chain(openai_server, tmp_path / "q.csv")
    text = workflow_yaml(job)
    assert "template: S1 {{ id }}: rewrite {{ question }}" in text or "S1 {{ id }}" in text
    loaded = load_workflow(text)
    assert loaded == job
    assert loaded.steps[1].model.model_dump(exclude_none=True) == {"model": "fake-judge"}
    assert loaded.steps[1].model.resolve(loaded.model).base_url == openai_server.url
    multi = apply_preset(job, "paraphrase", column="question")
    path = save_workflow(multi, tmp_path / "wf.yaml")
    assert "template: |-" in path.read_text() and load_workflow(path) == multi


def test_a_step_naming_another_provider_does_not_inherit_the_endpoint():
    default = ModelSpec(provider="openai_compatible", model="m", base_url="http://x", api_key_env="K")
    spec = StepModel(provider="bedrock", model="claude", parameters={"temperature": 0}).resolve(default)
    assert (spec.provider, spec.model, spec.base_url, spec.api_key_env) == ("bedrock", "claude", None, None)
    assert spec.parameters.temperature == 0 and spec.parameters.max_tokens == default.parameters.max_tokens


# -- the CLI ---------------------------------------------------------------------------------------

def sdstudio(*args: str, home: Path, check_exit: int | None = 0) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "sdstudio.cli", "workflow", *args, "--home", str(home)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env={**os.environ, "SDSTUDIO_DEBUG": ""})
    if check_exit is not None:
        assert proc.returncode == check_exit, proc.stderr
    return proc


def fake(server) -> list[str]:
    return ["--provider", "openai_compatible", "--model", "fake-model", "--base-url", server.url]


def test_cli_runs_the_shipped_example_and_prints_one_json_summary(openai_server, tmp_path):
    out = sdstudio("--config", "examples/workflow.yaml", *fake(openai_server), "--json", home=tmp_path)
    summary = json.loads(out.stdout)
    assert (summary["status"], summary["ok"], summary["failed"]) == ("done", 5, 0)
    assert len(openai_server.requests) == 15
    assert db_rows(tmp_path, "SELECT technique FROM generation_metadata") == [("workflow",)]


def test_cli_dry_run_shows_every_steps_prompt_and_makes_no_call(openai_server, tmp_path):
    home = tmp_path / "fresh"
    out = sdstudio("--config", "examples/workflow.yaml", *fake(openai_server), "--dry-run", home=home)
    assert "### step 1/3 harder_question" in out.stdout and "Question: <harder_question>" in out.stdout
    assert "15 requests" in out.stderr and openai_server.requests == [] and not home.exists()
    shown = json.loads(sdstudio("--config", "examples/workflow.yaml", *fake(openai_server), "--dry-run", "--json",
                                "--limit", "2", home=home).stdout)
    assert (shown["rows"], shown["requests"]) == (2, 6)


def test_cli_runs_presets_given_as_flags(openai_server, tmp_path):
    data = write_csv(tmp_path, 2)
    out = sdstudio("--input", str(data), "--preset", "translate", "--set", "column=question", "--set",
                   "language=German", *fake(openai_server), "--json", home=tmp_path)
    assert json.loads(out.stdout)["ok"] == 2 and "into German" in prompt(openai_server.requests[0])


@pytest.mark.parametrize("args, message", [
    (["--preset", "paraphrase", "--set", "column=questoin"], "uses column 'questoin'"),
    (["--preset", "paraphrase"], "needs option 'column'"),
    (["--preset", "paraphrase", "--set", "colour=red"], "no chosen preset has that option"),
    (["--input", "none.csv", "--preset", "paraphrase", "--set", "column=q"], "does not exist"),
    ([], "has no steps"),
])
def test_cli_bad_input_exits_2_with_one_line_before_any_call(openai_server, home, tmp_path, capsys, args, message):
    from sdstudio.cli import main

    data = ["--input", str(write_csv(tmp_path, 2))] if "--input" not in args else []
    code = main(["workflow", *data, *args, *fake(openai_server), "--home", str(home)])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert openai_server.requests == []


def test_cli_lists_the_presets(home, capsys):
    from sdstudio.cli import main

    assert main(["workflow", "--list-presets", "--home", str(home)]) == 0
    assert "paraphrase: Rewrite a text column" in capsys.readouterr().out


def saved_ok(home: Path) -> int:
    try:
        return db_rows(home, "SELECT COUNT(*) FROM records WHERE status = 'ok'")[0][0]
    except sqlite3.OperationalError:  # not there yet, or not migrated yet
        return 0


def test_cli_resume_continues_a_killed_run_without_resending_saved_steps(openai_server, tmp_path):
    openai_server.latency = 0.05
    data = write_csv(tmp_path, 20)
    config = tmp_path / "wf.yaml"
    job = chain(openai_server, data, run=RunSettings(concurrency=2))
    config.write_text(workflow_yaml(job))
    args = [sys.executable, "-m", "sdstudio.cli", "workflow", "--config", str(config), "--home", str(tmp_path),
            "--json"]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while saved_ok(tmp_path) < 1:
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = {(json.loads(p)["row"], step) for (p,) in db_rows(tmp_path, "SELECT provenance FROM records")
             for step in json.loads(p)["steps"]}
    before = len(openai_server.requests)
    out = sdstudio("--resume", "1", "--json", home=tmp_path)
    assert json.loads(out.stdout)["ok"] == 20
    resent = [(int(prompt(b).split(" ")[1].rstrip(":")), step_of(b).lower()) for b in openai_server.requests[before:]]
    assert not set(resent) & saved and len(resent) == len(set(resent)) == 60 - len(saved)
