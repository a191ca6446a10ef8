"""The job page, the navigation bar and each run's next steps, driven without a browser."""
from __future__ import annotations

import base64
import json
from pathlib import Path

from sdstudio.store import Record
from sdstudio.ui.home import HomeApp
from sdstudio.ui.job import JobApp
from sdstudio.ui.nav import nav_html, next_steps, preselect, query_job
from tests.test_browser import page, voila  # noqa: F401 (fixtures)


def seed(store) -> int:
    job = store.create_job("generation", use_case="code_generation", model_id="gen-model", status="done",
                           config={"model": {"provider": "openai_compatible", "base_url": "http://u:s3cret@h/v1"}},
                           notes=["structured output: json_object"])
    store.add_records([
        Record(job_kind="generation", job_id=job, item_key="a", status="ok", topic="Stacks",
               output={"question": "How do you push?"}),
        Record(job_kind="generation", job_id=job, item_key="b", status="failed", raw_text="Sorry, no.",
               error="reply contains no JSON"),
        Record(job_kind="generation", job_id=job, item_key="c", status="filtered", topic="Heaps",
               output={"question": "How do you push?"}, error="duplicate of another row")])
    store.refresh_counts(None, job)
    return job


def test_the_header_shows_kind_status_model_counts_and_notes(store):
    job = seed(store)
    app = JobApp(store, job)
    assert "generation" in app.header.value and "sds-status-done" in app.header.value
    assert "gen-model" in app.header.value and "1 ok · 1 failed · 1 filtered" in app.header.value
    assert "structured output: json_object" in app.header.value


def test_the_config_is_shown_as_yaml_with_credentials_masked(store):
    app = JobApp(store, seed(store))
    assert "base_url:" in app.config_view.value and "s3cret" not in app.config_view.value


def test_failed_rows_show_their_reason_and_raw_reply(store):
    app = JobApp(store, seed(store))
    app.status_filter.value = "failed"
    assert app.rows.total == 1
    assert "reply contains no JSON" in app.rows.table.value and "Sorry, no." in app.rows.table.value
    app.status_filter.value = "filtered"
    assert "duplicate of another row" in app.rows.table.value


def test_search_and_sort_narrow_and_order_the_rows(store):
    app = JobApp(store, seed(store))
    app.search.value = "heaps"
    assert app.rows.total == 1 and "Heaps" in app.rows.table.value
    app.search.value = ""
    app.sort.value = "newest first"
    assert list(app.rows.frame["status"]) == ["filtered", "failed", "ok"]


def test_no_table_shows_raw_none_nan_or_na(store):
    job = seed(store)
    store.create_job("evaluation", source_generation_id=job, model_id="judge", status="done")
    app = JobApp(store, job)
    for html in (app.rows.table.value, app.related.value, HomeApp(home=store.path.parent).jobs.value):
        assert ">None<" not in html and ">nan<" not in html and "&lt;NA&gt;" not in html and ">NaN<" not in html


def test_evaluations_and_exports_of_the_job_are_listed_with_links(store):
    job = seed(store)
    ev = store.create_job("evaluation", source_generation_id=job, model_id="judge", status="done")
    ex = store.create_job("export", source_job_ids=[job], destination="files", style="raw", status="done")
    app = JobApp(store, job)
    assert f'href="08_job.ipynb?job={ev}"' in app.related.value
    assert f'href="08_job.ipynb?job={ex}"' in app.related.value


def test_actions_link_to_evaluate_export_review_and_download_the_rows(store):
    job = seed(store)
    app = JobApp(store, job)
    assert f"05_evaluate.ipynb?job={job}" in app.actions.value and f"06_export.ipynb?job={job}" in app.actions.value
    assert "Review" in app.actions.value
    data = app.actions.value.split("data:application/x-ndjson;base64,")[1].split('"')[0]
    rows = [json.loads(line) for line in base64.b64decode(data).decode().splitlines()]
    assert [r["status"] for r in rows] == ["ok", "failed", "filtered"]


def test_stage_jobs_show_under_their_parent_not_on_home(store, home):
    parent = store.create_job("generation", kind="alignment", status="done", model_id="aligner")
    stage = store.create_job("generation", kind="candidates", parent_id=parent, status="done", model_id="stage-model")
    assert f"08_job.ipynb?job={stage}" in JobApp(store, parent).related.value
    listed = HomeApp(home=home).jobs.value
    assert f"08_job.ipynb?job={parent}" in listed and f"08_job.ipynb?job={stage}" not in listed


def test_an_unknown_job_says_so_in_one_line(store):
    app = JobApp(store, 999)
    assert "no job with id 999" in app.error.value


def test_without_an_id_the_page_lists_jobs_to_open(store):
    job = seed(store)
    assert f"08_job.ipynb?job={job}" in JobApp(store).related.value


def test_every_page_has_the_same_navigation_bar():
    html = nav_html()
    for label, href in [("Home", "00_home.ipynb"), ("Generate", "01_generate.ipynb"),
                        ("Documents", "02_documents.ipynb"), ("Workflow", "03_custom_workflow.ipynb"),
                        ("Alignment", "04_alignment.ipynb"), ("Evaluate", "05_evaluate.ipynb"),
                        ("Review", ""), ("Export", "06_export.ipynb"), ("Jobs", "08_job.ipynb")]:
        assert f">{label}</a>" in html and f'href="{href}' in html
    assert html.index(">Evaluate<") < html.index(">Review<") < html.index(">Export<")


def test_a_finished_run_offers_its_next_steps():
    assert [label for label, _ in next_steps(4, "generation")] == ["Open job page", "Evaluate this job", "Export"]
    assert dict(next_steps(4, "alignment"))["Evaluate this job"] == "05_evaluate.ipynb?job=4"
    steps = dict(next_steps(7, "evaluation"))
    assert set(steps) == {"Open job page", "Review", "Export"} and "job=7" in steps["Review"]


def test_the_url_job_preselects_a_picker(monkeypatch):
    monkeypatch.setenv("QUERY_STRING", "job=5&mode=judge")
    assert query_job() == 5
    assert preselect([("a", None), ("#5", 5), ("#6", 6)], 6) == 5
    assert preselect([("#6", 6)], 6) == 6
    monkeypatch.setenv("QUERY_STRING", "job=oops")
    assert query_job() is None


def test_the_generate_run_shows_next_step_links(openai_server, home):
    from sdstudio.ui import GenerateApp

    app = GenerateApp(home=home, provider="openai_compatible", model="fake-model", base_url=openai_server.url)
    app.topics.value = "Heaps"
    app.per_topic.value, app.batch_size.value = 1, 1
    app.controls.run_button.click()
    result = app.controls.wait(60)
    assert f"08_job.ipynb?job={result.job_id}" in app.controls.next_steps.value
    assert f"05_evaluate.ipynb?job={result.job_id}" in app.controls.next_steps.value


# -- resume and timeline -------------------------------------------------------------------------------------
def killed_generation(server, home) -> int:
    """A generation job whose process was killed (SIGKILL) after some rows were saved: it reads interrupted."""
    import sqlite3
    import subprocess
    import sys
    import time
    from pathlib import Path

    server.latency = 0.05
    args = [sys.executable, "-m", "sdstudio.cli", "generate", "--provider", "openai_compatible", "--model",
            "fake-model", "--base-url", server.url, "--topics", *[f"Topic {i}" for i in range(40)], "--per-topic", "1",
            "--concurrency", "4", "--home", str(home), "--json"]
    proc = subprocess.Popen(args, cwd=Path(__file__).resolve().parent.parent, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)

    def saved() -> int:
        try:
            with sqlite3.connect(home / "metadata.db") as conn:
                return conn.execute("SELECT COUNT(*) FROM records WHERE status = 'ok'").fetchone()[0]
        except sqlite3.OperationalError:  # not created / migrated yet
            return 0

    deadline = time.monotonic() + 60
    while saved() < 5:
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    server.latency = 0.0
    return 1


def test_resume_finishes_an_interrupted_job_from_its_stored_config(openai_server, home):
    from sdstudio.store import Store

    job = killed_generation(openai_server, home)
    store = Store.open(home)
    app = JobApp(store, job)
    assert "sds-status-interrupted" in app.header.value and app.resume_box.layout.display is None
    saved = app.job["ok"]
    before = len(openai_server.requests)
    app.resume_controls.run_button.click()
    result = app.resume_controls.wait(120)
    assert result.job_id == job and result.resumed and result.ok == 40
    assert len(openai_server.requests) - before <= 40 - saved  # saved rows were not asked for again
    assert "sds-status-done" in app.header.value and app.job["ok"] == 40
    assert "40 ok" in app.resume_controls.progress.label.value  # the run's own progress, as on every page
    assert app.resume_controls.run_button.disabled  # done: nothing left to resume


def test_a_finished_job_offers_no_resume_and_a_stage_job_points_at_its_parent(store):
    done = JobApp(store, seed(store))
    assert done.resume_box.layout.display == "none"
    parent = store.create_job("generation", kind="alignment", status="cancelled")
    stage = store.create_job("generation", kind="candidates", parent_id=parent, status="cancelled")
    app = JobApp(store, stage)
    assert app.resume_controls.run_button.disabled and f"08_job.ipynb?job={parent}" in app.resume_note.value


def test_the_timeline_lists_what_happened_to_the_job_in_time_order(store):
    job = store.create_job("generation", use_case="code_generation", status="done", created_at="2024-05-01T10:00:00+00:00",
                           started_at="2024-05-01T10:00:01+00:00", finished_at="2024-05-01T10:05:00+00:00")
    store.add_records([Record(job_kind="generation", job_id=job, item_key="a", status="ok", output={"q": 1})])
    store.refresh_counts(None, job)
    store.create_job("generation", kind="candidates", parent_id=job, status="done",
                     created_at="2024-05-01T10:02:00+00:00", finished_at="2024-05-01T10:03:00+00:00")
    store.create_job("export", source_job_ids=[job], destination="files", style="raw", format="jsonl", status="done",
                     created_at="2024-05-03T09:00:00+00:00", row_count=1)
    store.create_job("evaluation", source_generation_id=job, status="done", model_id="judge",
                     created_at="2024-05-02T08:00:00+00:00", finished_at="2024-05-02T08:01:00+00:00")
    (record,) = store.records("generation", job)
    store.add_review(record["id"], "alice", "accept")  # now: after everything above
    html = JobApp(store, job).timeline.value
    order = ["job created", "job started", "(candidates) created", "(candidates) done", "job done: 1 ok",
             "evaluation", "export", "review by alice: 1 accept"]
    positions = [html.index(text) for text in order]
    assert positions == sorted(positions), html


# -- every page in Chromium --------------------------------------------------------------------------------
CUT_LABELS_JS = """() => [...document.querySelectorAll('.widget-label, .widget-label-basic, .jupyter-button')]
    .filter(e => e.scrollWidth > e.clientWidth).map(e => e.textContent.trim())"""


def test_no_widget_label_is_cut_at_1280_and_an_export_downloads_in_chromium(voila, page, home):  # noqa: F811
    from sdstudio.store import Store
    from tests.test_browser import ARTIFACTS

    base, first_id = voila
    store = Store.open(home)
    gen = store.record(first_id)["job_id"]
    store.refresh_counts(None, gen)  # the seeded job has rows: the pickers offer it
    store.close()
    page.set_viewport_size({"width": 1280, "height": 800})
    ARTIFACTS.mkdir(exist_ok=True)
    cut: dict[str, list[str]] = {}
    for notebook in ("00_home.ipynb", "01_generate.ipynb", "02_documents.ipynb", "03_custom_workflow.ipynb", "04_alignment.ipynb",
                     "05_evaluate.ipynb", "06_export.ipynb", f"08_job.ipynb?job={gen}"):
        page.goto(f"{base}/voila/render/{notebook}", timeout=120_000)
        page.locator("nav.sds-nav").first.wait_for(timeout=120_000)
        page.locator(".widget-label:visible").first.wait_for(timeout=60_000)
        page.wait_for_timeout(500)  # the app's last child views attach just after the first
        name = notebook.split(".")[0]
        page.screenshot(path=str(ARTIFACTS / f"labels-{name}.png"))
        if page.evaluate(CUT_LABELS_JS):
            cut[name] = page.evaluate(CUT_LABELS_JS)
    assert cut == {}
    page.goto(f"{base}/voila/render/06_export.ipynb", timeout=120_000)
    page.get_by_role("button", name="Export").click(timeout=120_000)
    link = page.locator("a.sds-download").first
    link.wait_for(timeout=60_000)
    with page.expect_download(timeout=30_000) as download:
        link.click()
    rows = [json.loads(line) for line in Path(download.value.path()).read_text().splitlines()]
    assert download.value.suggested_filename.endswith(".jsonl") and len(rows) == 2 and set(rows[0]) == {"messages"}


def test_an_evolutions_stage_job_points_at_its_evolve_parent_and_does_not_resume_alone(store):
    import pytest

    from sdstudio.errors import ConfigError
    from sdstudio.resume import stage_parent, stored_run

    parent = store.create_job("generation", kind="evolve", status="interrupted")
    stage = store.create_job("generation", kind="evolutions", parent_id=parent, status="interrupted")
    assert stage_parent(store, store.get_job(None, stage)) == parent
    app = JobApp(store, stage)
    assert app.resume_controls.run_button.disabled and f"08_job.ipynb?job={parent}" in app.resume_note.value
    assert "stage of evolve job" in app.resume_note.value
    with pytest.raises(ConfigError, match=f"stage of evolve job {parent}: resume job {parent}"):
        stored_run(stage, store=store)
