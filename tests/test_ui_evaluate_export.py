"""Evaluate (05) and Export (06) driven without a browser: pickers list the user's own jobs (no alignment stage
job), the newest first and chosen, with labels that are read whole; Export's style follows the job and its files
download from the page; Evaluate's failed judgements show with their reasons, each judged row shows while the
judge runs, and the old review mode leads to the review desk only."""
from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import ipywidgets as w

from sdstudio.config import GenerationJob, ModelSpec
from sdstudio.store import Record
from sdstudio.ui.evaluate import EvaluateApp
from sdstudio.ui.export import ExportApp
from sdstudio.workflows.sft import GenerationRun


def fake_spec(server) -> ModelSpec:
    return ModelSpec(provider="openai_compatible", model="fake-model", base_url=server.url)


def judge_app(server, home, **kw) -> EvaluateApp:
    return EvaluateApp(home=home, provider="openai_compatible", model="fake-judge", base_url=server.url, **kw)


def seed_jobs(store) -> dict[str, int]:
    """A generation job, then an alignment job (KTO) with a newer candidates stage job, each with ok rows."""
    def with_rows(job_id: int, item: dict, n: int = 2) -> int:
        store.add_records([Record(job_kind="generation", job_id=job_id, item_key=f"{job_id}-{i}", status="ok",
                                  topic="Stacks", output=item) for i in range(n)])
        store.refresh_counts(None, job_id)
        return job_id

    sft = with_rows(store.create_job("generation", technique="sft", use_case="code_generation", status="done",
                                     model_id="gen-model"), {"question": "q", "solution": "s"})
    kto = with_rows(store.create_job("generation", kind="alignment", technique="kto", use_case="alignment",
                                     status="done", model_id="aligner-model"),
                    {"prompt": "p", "completion": "c", "label": True})
    stage = with_rows(store.create_job("generation", kind="candidates", technique="candidates", use_case="alignment",
                                       parent_id=kto, status="done", model_id="stage-model"),
                      {"prompt": "p", "completion": "c"}, n=3)
    return {"sft": sft, "kto": kto, "stage": stage}


def walk(widget):
    yield widget
    for child in getattr(widget, "children", ()):
        yield from walk(child)


# -- pickers ---------------------------------------------------------------------------------------------
def test_the_evaluate_picker_lists_user_jobs_only_and_chooses_the_newest(openai_server, store, home):
    jobs = seed_jobs(store)
    app = judge_app(openai_server, home)
    values = [value for _, value in app.source.options]
    assert values == [None, jobs["kto"], jobs["sft"]]  # the stage job is not offered; newest first
    assert app.source.value == jobs["kto"]
    labels = dict((v, label) for label, v in app.source.options)
    assert labels[jobs["kto"]].startswith(f"#{jobs['kto']} · alignment (kto) · alignment · 2 ok · aligner-model")
    assert app.source.style.description_width == "initial" and app.source.layout.width == "95%"


def test_the_url_job_chooses_the_job_on_evaluate_and_export(openai_server, store, home, monkeypatch):
    jobs = seed_jobs(store)
    monkeypatch.setenv("QUERY_STRING", f"job={jobs['sft']}")
    assert judge_app(openai_server, home).source.value == jobs["sft"]
    export = ExportApp(home=home)
    assert export.jobs.value == (jobs["sft"],) and export.style.value == "sft-messages"


def test_the_export_picker_leaves_out_stage_jobs_and_its_style_follows_the_job(store, home):
    jobs = seed_jobs(store)
    app = ExportApp(home=home)
    assert [value for _, value in app.jobs.options] == [jobs["kto"], jobs["sft"]]
    assert app.jobs.value == (jobs["kto"],) and app.style.value == "kto"  # not sft-messages on a KTO job
    app.jobs.value = (jobs["sft"],)
    assert app.style.value == "sft-messages"
    dpo = store.create_job("generation", kind="alignment", technique="dpo", use_case="alignment", status="done")
    store.add_records([Record(job_kind="generation", job_id=dpo, item_key="d", status="ok",
                              output={"prompt": "p", "chosen": "a", "rejected": "b"})])
    store.refresh_counts(None, dpo)
    app.refresh()
    app.jobs.value = (dpo,)
    assert app.style.value == "dpo"


def test_a_style_the_user_picked_stays_when_the_job_changes(store, home):
    jobs = seed_jobs(store)
    app = ExportApp(home=home)
    app.style.value = "raw"
    app.jobs.value = (jobs["sft"],)
    assert app.style.value == "raw"


def test_an_evaluation_in_the_url_exports_the_job_it_judged(store, home, monkeypatch):
    jobs = seed_jobs(store)
    evaluation = store.create_job("evaluation", source_generation_id=jobs["sft"], model_id="judge", status="done")
    monkeypatch.setenv("QUERY_STRING", f"job={evaluation}")
    assert ExportApp(home=home).jobs.value == (jobs["sft"],)


# -- export downloads ------------------------------------------------------------------------------------
def test_an_export_shows_a_download_link_with_the_file_itself(openai_server, home):
    GenerationRun(GenerationJob(topics=["Stacks"], num_per_topic=2, batch_size=2, model=fake_spec(openai_server)),
                  home=home).run()
    app = ExportApp(home=home)
    app.format.value = "jsonl"
    app.export_button.click()
    data_file = Path(app.last.paths[0])
    html = app.downloads.value
    assert f'download="{data_file.name}"' in html and "README.md" in html  # the data file and its card
    data = html.split("data:application/x-ndjson;base64,")[1].split('"')[0]
    assert base64.b64decode(data) == data_file.read_bytes()
    assert [set(json.loads(line)) for line in data_file.read_text().splitlines()] == [{"messages"}] * 2


def test_a_file_too_large_for_the_page_shows_its_path_and_the_cli_command(openai_server, home, monkeypatch):
    import sdstudio.ui.export as export_page

    GenerationRun(GenerationJob(topics=["Stacks"], num_per_topic=2, batch_size=2, model=fake_spec(openai_server)),
                  home=home).run()
    monkeypatch.setattr(export_page, "DOWNLOAD_LIMIT", 10)
    app = ExportApp(home=home)
    app.min_score.value = 0
    app.export_button.click()
    html = app.downloads.value
    assert "data:" not in html and app.last.paths[0] in html
    assert f"sdstudio export --job {app.jobs.value[0]} --style sft-messages --format jsonl --out DIR" in html


# -- evaluate ------------------------------------------------------------------------------------------
def judged_job(server, home) -> int:
    return GenerationRun(GenerationJob(topics=["Stacks", "Queues"], num_per_topic=2, batch_size=2,
                                       model=fake_spec(server)), home=home).run().job_id


def test_a_judge_that_kept_nothing_says_why_and_lists_each_failed_row(openai_server, home):
    judged_job(openai_server, home)
    app = judge_app(openai_server, home)
    openai_server.reply = lambda body: "I would rather not score this."
    app.controls.run_button.click()
    app.controls.wait(60)
    assert app.outcomes.failed.total == 4 and app.outcomes.tabs.titles[1] == "Failed (4)"
    assert "Nothing was kept" in app.outcomes.why.value and app.outcomes.tabs.selected_index == 1
    assert "I would rather not score this." in app.outcomes.failed.table.value
    assert app.scores_table.total == 0 and app.histogram.value == ""


def test_each_judged_row_shows_while_the_judge_runs(openai_server, home):
    from tests.fakes.openai_server import default_reply

    judged_job(openai_server, home)

    def one_at_a_time(body):  # blocks the fake server's loop: judgements arrive one by one, like a local model's
        time.sleep(0.3)
        return default_reply(body)

    openai_server.reply = one_at_a_time
    app = judge_app(openai_server, home)
    seen: list[str] = []
    handle = app.run()
    handle.add_listener(lambda progress: seen.append(app.live.value))  # after the page's own listeners
    app.controls.wait(60)
    assert any("judged 1 of 4" in text for text in seen), seen  # the first row counted before the others came
    assert any("latest saved: " in text and " scored " in text for text in seen), seen
    assert app.live.value == "" and app.scores_table.total == 4  # the finished run's tables replace the line


def test_the_judge_page_links_its_evaluation_to_the_review_desk(openai_server, home):
    judged_job(openai_server, home)
    app = judge_app(openai_server, home)
    app.controls.run_button.click()
    app.controls.wait(60)
    assert f'href="07_review.ipynb?job={app.evaluation}"' in app.desk.value
    assert not any(type(x).__name__ == "ReviewPanel" for x in walk(app))


def test_review_mode_shows_only_the_way_to_the_desk(home, monkeypatch):
    monkeypatch.setenv("QUERY_STRING", "mode=review&job=7")
    app = EvaluateApp(home=home, mode="review")
    assert 'href="07_review.ipynb?job=7"' in app.desk.value
    assert not any(isinstance(x, (w.Button, w.Dropdown, w.Text, w.Textarea)) for x in walk(app))
    assert not any(type(x).__name__ in ("ModelPicker", "RunControls") for x in walk(app))
