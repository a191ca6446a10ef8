"""The custom workflow (03) and alignment (04) pages without a browser, against the loopback fake server: they open
clean, their pickers say what they hold, a run that keeps nothing says why with the dropped rows one tab away,
and a changed form never sits over the last run's results."""
from __future__ import annotations

import itertools
import json
from pathlib import Path

from tests.fakes.openai_server import default_reply, requested_schema

SAMPLE = Path(__file__).resolve().parent.parent / "examples" / "data" / "questions.csv"
RAW_WORDS = (">None<", ">nan<", ">NaN<", "&lt;NA&gt;")  # what an empty cell must never read as


def workflow_app(server, home, input_file):
    from sdstudio.ui import WorkflowApp

    return WorkflowApp(home=home, provider="openai_compatible", model="fake-model", base_url=server.url,
                       input_file=str(input_file))


def alignment_app(server, home):
    from sdstudio.ui import AlignmentApp

    return AlignmentApp(home=home, provider="openai_compatible", model="fake-model", base_url=server.url)


def judge(score_of):
    """A fake-server reply: judgements from ``score_of(body)`` (a score, or text that is no judgement),
    candidates that differ from each other, and the schema's own sample for the prompts stage."""
    counter = itertools.count()

    def reply(body):
        schema = requested_schema(body) or {}
        if "score" in schema.get("properties", {}):
            score = score_of(body)
            return score if isinstance(score, str) else json.dumps({"score": score, "justification": "planted"})
        if schema:
            return default_reply(body)
        return f"candidate answer number {next(counter)} " + "with more words " * (next(counter) % 4)
    return reply


def run(app, timeout=120):
    app.controls.run_button.click()
    return app.controls.wait(timeout)


# -- 03 custom workflow -----------------------------------------------------------------------------

def test_a_fresh_workflow_page_on_the_sample_data_opens_without_an_error(openai_server, home):
    app = workflow_app(openai_server, home, SAMPLE)
    shown = app.preview.value + app.estimate.value + app.dataset.value + app.controls.status.value
    assert "sds-error" not in shown
    assert "answer" in app.columns.options and "- name: model_answer" in app.steps.value  # not the data's column
    assert "What does the `yield` keyword do" in app.preview.value and "6 rows" in app.estimate.value
    assert app.preset_column.value == "question" and app.preset.value  # pickers show a value, not a blank
    assert app.steps.style.description_width == "initial"  # "Steps (YAML)", not "Steps (YA…"
    assert openai_server.requests == []


def test_the_starter_step_follows_new_data_until_the_user_edits_it(openai_server, home, tmp_path):
    other = tmp_path / "other.csv"
    other.write_text("id,question\n1,What is a list?\n")
    app = workflow_app(openai_server, home, SAMPLE)
    app.input_file.value = str(other)  # no answer column here: the step may take that name
    assert "- name: answer" in app.steps.value and "sds-error" not in app.preview.value
    app.steps.value = "- name: mine\n  template: 'Q: {{ question }}'\n"
    app.input_file.value = str(SAMPLE)
    assert app.steps.value.startswith("- name: mine")  # the user's steps are theirs


def test_workflow_failed_rows_have_their_own_tab_and_results_show_no_empty_words(openai_server, home, tmp_path):
    data = tmp_path / "q.csv"
    data.write_text("id,question,note\n1,What is a list?,\n2,What is a dict?,keep\n3,What is a set?,\n")
    openai_server.script.append("context_length")  # the first request is refused: one row fails, for good
    app = workflow_app(openai_server, home, data)
    result = run(app)
    assert result.failed == 1 and result.ok == 2
    assert app.results_table.total == 2 and list(app.results_table.frame.columns[:2]) == ["id", "question"]
    assert not any(word in app.results_table.table.value for word in RAW_WORDS)
    assert app.outcomes.tabs.titles[1] == "Failed (1)" and app.outcomes.failed.total == 1
    assert "maximum context length" in app.outcomes.failed.table.value

    app.steps.value = "- name: answer\n  template: 'Briefly: {{ question }}'\n"  # a new form
    assert app.results_table.total == 0 and app.outcomes.failed.total == 0
    assert app.outcomes.tabs.titles == ("Results", "Failed (0)", "Filtered (0)") and app.results.empty


# -- 04 alignment ---------------------------------------------------------------------------------

def test_prompts_from_shows_its_default_and_only_what_exists(openai_server, home):
    app = alignment_app(openai_server, home)
    assert app.source.value == "topics" and app.source.index == 0 and "topics" in app.source.label
    assert not any("file" in label for label, _ in app.source.options)
    assert app.source.style.description_width == "initial" and app.source.layout.width == "auto"
    assert all(box.style.description_width == "initial" for box in (app.candidates, app.limit, app.judge_model))
    assert app.topic_fields.layout.display is None and "sds-error" not in app.estimate.value


def test_prompts_from_lists_user_jobs_never_alignment_stage_jobs(openai_server, home, monkeypatch):
    from sdstudio.config import GenerationJob, ModelSpec
    from sdstudio.workflows.sft import GenerationRun

    spec = ModelSpec(provider="openai_compatible", model="fake-model", base_url=openai_server.url)
    mine = GenerationRun(GenerationJob(topics=["Stacks"], num_per_topic=2, batch_size=2, model=spec),
                         home=home).run().job_id
    openai_server.reply = judge(lambda body: 3)
    aligned = alignment_app(openai_server, home)
    aligned.prompts_per_topic.value, aligned.candidates.value = 1, 2
    result = run(aligned)
    assert result.stage_jobs["prompts"]  # a generation job with ok rows, but the alignment's own

    app = alignment_app(openai_server, home)
    jobs = [value for _, value in app.source.options if value != "topics"]
    assert jobs == [mine] and app.source.value == "topics"
    monkeypatch.setenv("QUERY_STRING", f"job={mine}")
    app = alignment_app(openai_server, home)
    assert app.source.value == mine and f"job #{mine}" in app.source.label
    assert "fake-model" in app.source.label and "None" not in app.source.label
    assert app.topic_fields.layout.display == "none"  # topics say nothing about a job's prompts
    assert app.config().source_job == mine


def test_useless_judgements_end_with_the_reasons_and_the_failed_tab_open(openai_server, home):
    openai_server.reply = judge(lambda body: "I cannot judge this.")
    app = alignment_app(openai_server, home)
    app.topics.value = "Recursion"
    app.prompts_per_topic.value, app.candidates.value = 1, 2
    result = run(app)
    assert result.ok == 0
    assert "Nothing was kept" in app.outcomes.why.value and "reply contains no JSON" in app.outcomes.why.value
    assert app.outcomes.tabs.selected_index == 1 and app.outcomes.failed.total >= 2  # the judge stage's failures
    assert "I cannot judge this." in app.outcomes.failed.table.value
    assert app.controls.progress.bar.bar_style == "warning"  # not a full green bar
    assert "nothing yet" not in app.outcomes.why.value


def test_a_judge_that_scores_everything_1_says_so_in_the_filtered_tab(openai_server, home):
    openai_server.reply = judge(lambda body: 1)
    app = alignment_app(openai_server, home)
    app.topics.value = "Recursion"
    app.prompts_per_topic.value, app.candidates.value = 1, 2
    result = run(app)
    assert result.ok == 0 and result.filtered == 1
    assert app.outcomes.tabs.selected_index == 2 and app.outcomes.filtered.total == 1
    assert "every judged candidate scored 1" in app.outcomes.why.value
    assert "every judged candidate scored 1" in app.outcomes.filtered.table.value
    assert app.controls.progress.bar.bar_style == "warning"


def test_changing_the_method_clears_the_last_runs_pairs(openai_server, home):
    openai_server.reply = judge(lambda body: 1 + len(body["messages"][-1]["content"]) % 5)
    app = alignment_app(openai_server, home)
    app.topics.value = "Recursion"
    app.prompts_per_topic.value, app.candidates.value = 2, 3
    result = run(app)
    assert result.ok > 0 and app.table.total == result.ok and len(app.results) == result.ok
    assert list(app.table.frame.columns[:2]) == ["prompt", "chosen"]
    assert not any(word in app.table.table.value for word in RAW_WORDS)
    app.method.value = "kto"
    assert app.table.total == 0 and "nothing yet" in app.table.table.value and app.results.empty
    assert app.outcomes.tabs.titles == ("Results", "Failed (0)", "Filtered (0)") and app.outcomes.why.value == ""
