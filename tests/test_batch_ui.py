"""The notebooks' side of the batch executor, against the loopback OpenAI files/batches fake: the run settings offer
batch where the provider has a batch API, a Generate page run in batches gives the batch's records, the job page
lists a job's batches, resumes polling a job whose process died after submitting (no second submission), only
shows a job a live process runs, and cancels batches as `sdstudio jobs cancel` does."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from sdstudio.cli import main
from sdstudio.store import Store
from sdstudio.ui import GenerateApp
from sdstudio.ui.job import JobApp
from tests.test_batch_executor import TOPICS, generate, records

WAIT_S = 60  # a ceiling for things that happen at once on a free machine; never asserted


def until(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.02)


def generate_page(server, home) -> GenerateApp:
    app = GenerateApp(home=home, provider="openai_compatible", model="fake-model", base_url=server.url)
    app.topics.value = "\n".join(TOPICS)
    return app


def killed_after_submitting(server, home) -> None:
    """`sdstudio generate --executor batch` in its own process, SIGKILLed once its batch exists and is stored."""
    server.outcomes.append("hold")
    env = {**os.environ, "SDSTUDIO_HOME": str(home)}
    proc = subprocess.Popen([sys.executable, "-m", "sdstudio.cli", *generate(server)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        until(lambda: server.creates == 1 or proc.poll() is not None, "the run submitted its batch")
        store = Store.open(home)
        until(lambda: any(row["remote_id"] for row in store.job_batches(1)) or proc.poll() is not None,
              "the batch's remote id stored")
        assert proc.poll() is None, "the run ended before it was killed"
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(30)
    assert records(home) == []


def running_in_another_thread(server, home) -> tuple[threading.Thread, dict]:
    """A batch run of the job held at the provider, in a thread of this process: a live lease owner."""
    from sdstudio.config import GenerationJob
    from sdstudio.workflows.sft import GenerationRun

    server.outcomes.append("hold")
    config = GenerationJob.model_validate({
        "kind": "generation", "topics": TOPICS, "run": {"executor": "batch", "batch_poll_s": 0.01},
        "model": {"provider": "openai_compatible", "model": "fake-model", "base_url": server.url,
                  "structured_output": "json_object"}})
    outcome: dict = {}
    worker = threading.Thread(target=lambda: outcome.update(result=GenerationRun(config, home=home).run()))
    worker.start()
    store = Store.open(home)
    until(lambda: any(row["remote_id"] for row in store.job_batches(1)), "the batch's remote id stored")
    return worker, outcome


def test_the_run_settings_offer_batch_for_openai_compatible_and_not_for_local(batch_server, priced_home):
    app = generate_page(batch_server, priced_home)
    box = app.run_settings
    assert box.batch_offered() and box.batch_fields.layout.display == "none"
    assert "through the batch API" not in app.estimate.value
    box.executor.value = "batch"
    assert box.batch_fields.layout.display is None and box.bucket.layout.display == "none"
    assert "on demand, $" in app.estimate.value and "through the batch API" in app.estimate.value  # redrawn
    assert app.config().run.executor == "batch"
    app.model.provider.value = "bedrock"  # a batch API with its own settings: the S3 bucket, prefix and role
    assert box.executor.value == "batch" and box.bucket.layout.display is None
    box.bucket.value, box.role_arn.value = "my-bucket", "arn:aws:iam::123456789012:role/batch"
    assert box.values()["batch_bucket"] == "my-bucket" and box.values()["batch_prefix"] is None
    app.model.provider.value = "local"  # no batch API: not offered, and the choice falls back to this process
    assert not box.batch_offered() and box.executor.value == "local" and "no batch API" in box.note.value
    assert "batch" not in [value for _, value in box.executor.options]
    app.model.provider.value = "openai_compatible"
    assert box.batch_offered() and box.executor.value == "local"


def test_a_generate_page_run_with_batch_chosen_finishes_with_the_batchs_records(batch_server, priced_home):
    app = generate_page(batch_server, priced_home)
    app.run_settings.executor.value, app.run_settings.poll_s.value = "batch", 0.01
    app.run()
    result = app.controls.wait(WAIT_S)
    assert result.status == "done" and result.ok == 15
    assert batch_server.creates == 1  # the page pins no dialect: one request on demand first, the rest batched
    assert len(batch_server.batch_lines) + len(batch_server.requests) == len(TOPICS)
    rows = records(priced_home, result.job_id)
    assert len(rows) == 15 and all(r["status"] == "ok" for r in rows)
    assert len(app.results) == 15


def test_the_job_page_resumes_polling_a_job_whose_process_died_after_submitting(batch_server, priced_home):
    killed_after_submitting(batch_server, priced_home)
    app = JobApp(Store.open(priced_home), 1)
    assert app.polling and "polls them in the background" in app.resume_note.value
    until(lambda: any(r["state"] == "in_progress" for r in app.batches.rows), "the section redrawn after a poll")
    assert "in_progress" in app.batches.table.value and not app.batches.cancel_button.disabled
    batch_server.held = False
    result = app.resume_controls.wait(WAIT_S)
    assert result.status == "done" and result.resumed and result.job_id == 1
    assert batch_server.creates == 1 and len(batch_server.requests) == 0  # no second submission, nothing on demand
    assert len(records(priced_home)) == 15 and all(r["status"] == "ok" for r in records(priced_home))
    [batch] = app.batches.rows
    assert batch["state"] == "completed" and "sds-status-done" in app.header.value
    assert app.batches.cancel_button.disabled  # nothing left running to cancel
    assert not JobApp(Store.open(priced_home), 1).polling  # a finished job is only shown


def test_a_job_a_live_process_runs_is_only_shown_and_cancel_batches_cancels_it(batch_server, priced_home):
    worker, outcome = running_in_another_thread(batch_server, priced_home)
    app = JobApp(Store.open(priced_home), 1)
    assert not app.polling and app.resume_controls.handle is None  # never taken over
    assert app.batches.layout.display is None and "batch_0001" in app.batches.table.value
    assert app.batches.cancel() == ["batch_0001"]  # what `sdstudio jobs cancel 1` does
    worker.join(WAIT_S)
    assert outcome["result"].status == "cancelled" and batch_server.cancels == 1
    app.batches.show()
    assert "batches cancelled: batch_0001" in app.batches.status.value and "cancelled" in app.batches.table.value
    assert not JobApp(Store.open(priced_home), 1).polling  # a cancelled job stays cancelled until Resume


def test_cancel_batches_on_the_page_that_resumed_the_job_stops_its_run(batch_server, priced_home):
    killed_after_submitting(batch_server, priced_home)
    app = JobApp(Store.open(priced_home), 1)
    assert app.polling
    app.batches.cancel_button.click()
    result = app.resume_controls.wait(WAIT_S)
    assert result.status == "cancelled" and batch_server.cancels == 1 and batch_server.creates == 1
    [batch] = app.batches.show()
    assert batch["state"] in ("cancelling", "cancelled") and records(priced_home) == []


def test_the_batches_section_and_timeline_list_each_batch_and_its_state(batch_server, priced_home):
    batch_server.outcomes.append("expired")  # one line answered, the other two submitted again
    assert main(generate(batch_server)) == 0
    app = JobApp(Store.open(priced_home), 1)
    assert not app.polling
    assert [row["state"] for row in app.batches.rows] == ["expired", "completed"]
    table = app.batches.table.value
    for text in ("batch_0001", "batch_0002", "sds-batch-expired", "sds-batch-completed", "remote id"):
        assert text in table
    assert "batch batch_0001 (part 1) submitted: 3 requests" in app.timeline.value
    assert "batch batch_0001 (part 1) expired: 1 completed" in app.timeline.value


def test_in_voila_the_job_page_of_a_job_whose_kernel_is_gone_polls_its_batch_to_the_end(batch_server, priced_home,
                                                                                          page):
    """The whole story in a browser: the process that submitted is gone; the job page, opened in Voilà (a new
    kernel), shows the batch waiting, polls it, and shows it completed with the job done."""
    from tests.conftest import ARTIFACTS, voila_server

    killed_after_submitting(batch_server, priced_home)
    ARTIFACTS.mkdir(exist_ok=True)
    with voila_server(priced_home, log=ARTIFACTS / "voila-batch-ui.log") as base:
        try:
            page.goto(f"{base}/voila/render/08_job.ipynb?job=1", timeout=120_000)
            page.locator(".sds-batch-in_progress").first.wait_for(timeout=120_000)
            assert page.get_by_text("polls them in the background").first.is_visible()
            batch_server.held = False
            page.locator(".sds-batch-completed").first.wait_for(timeout=120_000)
            page.locator(".sds-status-done").first.wait_for(timeout=120_000)
        finally:
            page.screenshot(path=str(ARTIFACTS / "batch-ui-job-page.png"), full_page=True)
    assert batch_server.creates == 1 and len(records(priced_home)) == 15


def test_a_job_without_batches_has_no_batches_section(store):
    job = store.create_job("generation", use_case="code_generation", model_id="m", status="done", config={})
    app = JobApp(store, job)
    assert app.batches.layout.display == "none" and not app.polling


@pytest.fixture(autouse=True)
def _no_leftover_runs():
    yield
    for thread in threading.enumerate():
        if thread.name.startswith("sdstudio-run"):
            thread.join(WAIT_S)
