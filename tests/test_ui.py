"""The notebook apps without a browser: set widget values, click buttons, read what the page would show."""
from __future__ import annotations

import json
from datetime import datetime, timezone

import yaml

from sdstudio.config import load_config
from sdstudio.ui import GenerateApp, HomeApp
from tests.fakes.openai_server import requested_schema


def fake_app(server, home) -> GenerateApp:
    app = GenerateApp(home=home, provider="openai_compatible", model="fake-model", base_url=server.url)
    app.controls.run_button  # noqa: B018 - the public controls exist
    return app


def test_the_preview_shows_the_exact_first_prompt_and_the_job_estimate(openai_server, home):
    app = fake_app(openai_server, home)
    app.topics.value = "Tries\nHeaps"
    app.per_topic.value = 10
    assert "&lt;topic&gt;Tries&lt;/topic&gt;" in app.preview.value  # escaped, shown verbatim
    assert "20 items in 4 requests" in app.estimate.value
    app.examples.value = "[{broken"
    assert "examples are not valid JSON" in app.estimate.value
    assert openai_server.requests == []


def test_switching_use_case_loads_its_examples_requirements_and_topics(openai_server, home):
    app = fake_app(openai_server, home)
    app.use_case.value = "text2sql"
    assert "sql" in json.loads(app.examples.value)[0]
    assert "Aggregations with GROUP BY" in app.topics.value
    assert "CREATE TABLE customers" in app.preview.value


def test_run_shows_progress_results_and_failures(openai_server, home):
    calls = []

    def reply(body):
        calls.append(1)
        if len(calls) == 1:
            return "Sorry, I cannot do that."
        topic = body["messages"][-1]["content"].split("<topic>")[1].split("</topic>")[0]
        return json.dumps({"question": f"How do {topic} work inside?", "solution": "use heapq.heappush(...)",
                           "explanation": "<script>alert(1)</script>"})

    openai_server.reply = reply
    app = fake_app(openai_server, home)
    app.topics.value = "Heaps\nQueues"
    app.per_topic.value, app.batch_size.value = 1, 1
    app.controls.run_button.click()
    result = app.controls.wait(60)
    assert result.ok == 2 and app.controls.progress.bar.value == app.controls.progress.bar.max
    assert "2 ok" in app.controls.progress.label.value
    assert len(app.results_table.frame) == 2 and "How do Queues work inside?" in app.results_table.table.value
    assert "<script>" not in app.results_table.table.value and "&lt;script&gt;" in app.results_table.table.value
    assert app.controls.run_button.disabled is False and app.controls.cancel_button.disabled is True


def test_a_failed_reply_is_listed_with_its_raw_text_and_reason(openai_server, home):
    openai_server.reply = lambda body: "no json here at all"
    app = fake_app(openai_server, home)
    app.topics.value = "Heaps"
    app.per_topic.value, app.batch_size.value = 1, 1
    app.controls.run_button.click()
    app.controls.wait(60)
    assert len(app.failures.frame) >= 1
    assert "no json here at all" in app.failures.table.value and "contains no JSON" in app.failures.table.value


def test_the_results_table_pages_through_a_large_job(openai_server, home):
    app = fake_app(openai_server, home)
    from sdstudio.store import Record

    job = app.store.create_job("generation")
    app.store.add_records([Record(job_kind="generation", job_id=job, item_key=str(i), status="ok", topic="t",
                                  output={"question": f"q{i}"}) for i in range(1000)])
    app.job_id = job
    app.results_table.show(0)
    assert app.results_table.pages == 50 and len(app.results_table.frame) == 20
    app.results_table.next.click()
    assert app.results_table.frame["question"].iloc[0] == "q20"
    app.results_table.show(999)
    assert app.results_table.page == 49 and app.results_table.next.disabled


def test_save_config_writes_yaml_the_cli_loads(openai_server, home):
    app = fake_app(openai_server, home)
    app.topics.value = "Graphs"
    app.config_path.value = str(home / "mine.yaml")
    app.save_button.click()
    config = load_config(home / "mine.yaml")
    assert config.topics == ["Graphs"] and config.model.base_url == openai_server.url
    assert yaml.safe_load((home / "mine.yaml").read_text())["kind"] == "generation"


def test_topics_can_be_uploaded_as_a_json_list(openai_server, home):
    app = fake_app(openai_server, home)
    app.topics_upload.value = ({"name": "t.json", "type": "application/json", "size": 20,
                                "content": memoryview(b'["Bloom filters", "Skip lists"]'),
                                "last_modified": datetime.now(timezone.utc)},)
    assert app.topics.value == "Bloom filters\nSkip lists"


def test_home_lists_jobs_and_providers(store, home):
    store.create_job("generation", use_case="code_generation", model_id="planted-model-xyz", status="done")
    app = HomeApp(home=home)
    assert "planted-model-xyz" in app.jobs.value and "local" in app.providers.value
    app.kind.value = "export"
    assert "planted-model-xyz" not in app.jobs.value


def judged_app(server, home):
    from sdstudio.config import GenerationJob, ModelSpec
    from sdstudio.ui import EvaluateApp
    from sdstudio.workflows.sft import GenerationRun

    spec = ModelSpec(provider="openai_compatible", model="fake-model", base_url=server.url)
    GenerationRun(GenerationJob(topics=["Stacks", "Queues"], num_per_topic=2, batch_size=2, model=spec), home=home).run()
    app = EvaluateApp(home=home, provider="openai_compatible", model="fake-judge", base_url=server.url)
    app.controls.run_button.click()
    app.controls.wait(60)
    return app


def test_evaluate_judges_a_job_and_shows_scores_histogram_topics_and_filter(openai_server, home):
    app = judged_app(openai_server, home)
    assert "&lt;question&gt;" in app.preview.value or "question" in app.preview.value
    assert len(app.scores_table.frame) == 4 and app.scores_table.frame["score"].between(1, 5).all()
    assert app.histogram.value.startswith('<img class="sds-histogram"') and "Stacks" in app.topics.value
    app.threshold.value = 5
    kept = int(app.selection.value.split(" rows kept")[0].split(">")[-1])
    assert kept == int((app.scores_table.frame["score"] >= 5).sum())


def test_review_panel_stores_verdicts_and_edits_beside_the_original(openai_server, home):
    from sdstudio.ui.review import ReviewPanel

    app = judged_app(openai_server, home)
    panel = ReviewPanel(store=app.store, job_id=app.evaluation)  # the desk (07_review) on the judged rows
    panel.show(0)
    first = panel.rows.children[0]
    first.accept.click()
    assert "enter your name" in panel.status.value  # no anonymous verdicts
    panel.reviewer.value = "bob"
    first.accept.click()
    first.edit.value = "a better solution"
    first.save_edit.click()
    source = app.store.connection().execute("SELECT json_extract(provenance, '$.source_record_id') FROM records "
                                            "WHERE id = ?", (first.record_id,)).fetchone()[0]
    (latest,) = app.store.latest_reviews("generation", app.source.value).values()
    assert (latest["record_id"], latest["reviewer"], latest["verdict"]) == (source, "bob", "accept")
    assert latest["edited_output"]["solution"] == "a better solution"
    original = app.store.connection().execute("SELECT output FROM records WHERE id = ?", (source,)).fetchone()[0]
    assert "a better solution" not in original


def test_export_app_writes_files_and_shows_the_history(openai_server, home):
    from sdstudio.config import GenerationJob, ModelSpec
    from sdstudio.ui import ExportApp
    from sdstudio.workflows.sft import GenerationRun

    spec = ModelSpec(provider="openai_compatible", model="fake-model", base_url=openai_server.url)
    GenerationRun(GenerationJob(topics=["Stacks"], num_per_topic=2, batch_size=2, model=spec), home=home).run()
    app = ExportApp(home=home)
    app.style.value, app.format.value = "sft-prompt-completion", "jsonl"
    app.export_button.click()
    assert app.last.rows == 2 and "2 rows written" in app.status.value
    lines = [json.loads(line) for line in open(app.last.paths[0])]
    assert set(lines[0]) == {"prompt", "completion"}
    assert "sft-prompt-completion" in app.history.value
    app.style.value = "dpo"
    app.export_button.click()
    assert "dpo" in app.status.value and "sds-error" in app.status.value


def test_workflow_app_previews_runs_and_pages_results(openai_server, home, tmp_path):
    from sdstudio.ui import WorkflowApp

    data = tmp_path / "q.csv"
    data.write_text("id,question\n1,What is a list?\n2,What is a dict?\n3,What is a set?\n")
    app = WorkflowApp(home=home, provider="openai_compatible", model="fake-model", base_url=openai_server.url,
                      input_file=str(data))
    assert app.columns.options == ("id", "question") and "What is a dict?" in app.dataset.value
    assert "What is a list?" in app.preview.value and "3 rows" in app.preview.value
    app.steps.value = "- name: answer\n  template: '{{ questoin }}'\n"
    assert "questoin" in app.preview.value and "sds-error" in app.preview.value
    app.steps.value = "- name: answer\n  template: 'Answer: {{ question }}'\n"
    app.preset.value, app.preset_column.value = "paraphrase", "question"
    app.add_preset.click()
    assert "paraphrase" in app.steps.value.lower()
    frame = app.autorun(limit=2)
    assert len(frame) == 2 and "answer" in frame.columns and (frame["status"] == "ok").all()


def test_alignment_app_previews_runs_and_shows_pairs_and_the_kto_balance(openai_server, home):
    from sdstudio.ui import AlignmentApp

    def reply(body):
        schema = requested_schema(body) or {}
        content = body["messages"][-1]["content"]
        if "score" in schema.get("properties", {}):  # the judge: longer answers score higher
            return json.dumps({"score": min(5, 1 + len(content) % 5), "justification": "planted"})
        from tests.fakes.openai_server import default_reply
        return default_reply(body)

    openai_server.reply = reply
    app = AlignmentApp(home=home, provider="openai_compatible", model="fake-model", base_url=openai_server.url)
    assert "candidates" in app.preview.value and "requests" in app.preview.value
    app.method.value = "kto"
    app.candidates.value = 3
    app.controls.run_button.click()
    result = app.controls.wait(120)
    assert result.status == "done" and result.ok > 0 and app.table.total == result.ok
    assert set(app.table.frame.columns) >= {"prompt", "completion", "label"}
    assert app.balance_chart.value.startswith('<img class="sds-balance"')


def test_the_model_picker_lists_the_providers_models_or_says_what_is_wrong(openai_server, home):
    app = fake_app(openai_server, home)
    app.model.model.value = ""
    app.model.refresh.click()
    assert app.model.model.options == ("fake-judge", "fake-model") and "2 model(s)" in app.model.status.value
    app.model.base_url.value = "http://127.0.0.1:9/v1"
    app.model.refresh.click()
    assert "sds-error" in app.model.status.value and "127.0.0.1:9" in app.model.status.value


def test_a_model_id_stays_with_its_provider_when_the_picker_switches():
    from sdstudio.ui.components import ModelPicker

    picker = ModelPicker()  # local: blank model = the embedded GGUF
    picker.provider.value = "openai_compatible"
    picker.model.value = "server-model"
    picker.provider.value = "local"
    assert picker.model.value == "" and picker.spec().model is None  # not the server's model id
    picker.provider.value = "openai_compatible"
    assert picker.model.value == "server-model"


def test_running_a_finished_job_again_says_it_was_already_done(openai_server, home):
    app = fake_app(openai_server, home)
    app.controls.run_button.click()
    first = app.controls.wait(120)
    app.controls.run_button.click()
    again = app.controls.wait(120)
    assert again.job_id == first.job_id and again.requests_sent == 0
    assert "was already done" in app.controls.status.value and f"{first.ok} rows saved" in app.controls.status.value


def test_a_run_that_saved_nothing_says_why_to_look_and_what_helps():
    from sdstudio.ui.components import outcome_message
    from sdstudio.workflows.jobs import JobResult

    text = outcome_message(JobResult(kind="alignment", job_id=7, status="done", ok=0, failed=1, filtered=1))
    assert "saved no rows (1 failed, 1 filtered)" in text and "job page" in text and "sds-warning" in text
