"""A run you can watch and stop: Cancel stops at once and leaves unanswered items unsent (not failed) for Resume;
the bar's colour and the status line say the same outcome; tables show blanks, not None/NaN; while a request is
in flight a line ticks with its item, and the embedded model's text shows as it is written."""
from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from sdstudio import live
from sdstudio.config import ModelParameters, ModelSpec, RunSettings
from sdstudio.engine import Engine, WorkItem, request_key
from sdstudio.providers import ChatRequest, get_provider
from sdstudio.runner import RunHandle, submit
from sdstudio.ui import GenerateApp
from sdstudio.ui.components import PagedTable, frame_html, outcome_kind
from sdstudio.workflows.jobs import JobResult
from tests.fakes.openai_server import FakeOpenAIServer

TOPICS = "Heaps\nQueues\nTries\nGraphs"


@pytest.fixture
def slow_server():
    """Replies take 5 s: longer than Cancel's grace, so a request in flight at Cancel is abandoned. It speaks every
    structured-output dialect, so the first request is the job's own (one at a time until it has answered)."""
    with FakeOpenAIServer(latency=5.0, flavor="lenient") as server:
        yield server


def app_for(server, home) -> GenerateApp:
    app = GenerateApp(home=home, provider="openai_compatible", model="fake-model", base_url=server.url)
    app.topics.value = TOPICS
    app.per_topic.value, app.batch_size.value = 1, 1
    return app


def wait_until(condition, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.02)


# -- Cancel ------------------------------------------------------------------------------------------------------

def test_cancel_mid_run_ends_cancelled_records_no_failure_and_resume_sends_the_unsent_items(slow_server, home, store):
    app = app_for(slow_server, home)
    app.controls.run_button.click()
    wait_until(lambda: slow_server.in_flight == 1, "the first request to reach the server")
    app.controls.cancel_button.click()
    result = app.controls.wait(30)  # well before the 5 s reply would have come for each of the 4 items in turn

    assert result.status == "cancelled" and result.ok == 0 and result.failed == 0
    assert len(slow_server.received) == 1  # the items waiting for a slot were never sent
    assert store.count_records("generation", result.job_id).get("failed", 0) == 0
    assert store.get_job(None, result.job_id)["status"] == "cancelled"
    assert "sds-warning" in app.controls.status.value and app.controls.progress.bar.bar_style == "warning"

    slow_server.latency = 0.0
    app.controls.run_button.click()
    resumed = app.controls.wait(60)
    assert resumed.job_id == result.job_id and resumed.status == "done"
    assert resumed.ok == 4 and resumed.failed == 0
    assert len(slow_server.received) == 1 + 4  # the abandoned item and the three never sent, each once
    assert app.controls.progress.bar.bar_style == "success"


def test_the_in_flight_line_ticks_with_the_item_being_answered(slow_server, home):
    app = app_for(slow_server, home)
    app.controls.run_button.click()
    wait_until(lambda: "Heaps" in app.controls.progress.live.value, "the in-flight line naming the topic")
    first = app.controls.progress.live.value
    assert "⏳" in first
    wait_until(lambda: app.controls.progress.live.value != first, "the line to tick")  # its seconds go up
    app.controls.cancel_button.click()
    app.controls.wait(30)
    assert app.controls.progress.live.value == ""  # nothing in flight once the run has ended


def test_a_run_nobody_watches_does_no_live_work(openai_server, store):
    provider = get_provider(ModelSpec(provider="openai_compatible", model="fake-model", base_url=openai_server.url))
    job = store.create_job("generation")
    assert Engine(provider, store, "generation", job).live is None  # the CLI: no activity, no work per request
    handle = submit(lambda handle: Engine(provider, store, "generation", job).live)
    assert handle.result(30) is handle.live


# -- the outcome, in colour and in words -----------------------------------------------------------------------

def test_a_clean_run_is_green_and_says_done(openai_server, home):
    app = app_for(openai_server, home)
    app.topics.value = "Heaps"
    app.controls.run_button.click()
    result = app.controls.wait(60)
    assert result.ok and not result.failed
    assert app.controls.progress.bar.bar_style == "success" and "sds-ok" in app.controls.status.value


def test_a_run_that_kept_nothing_is_amber_in_the_bar_and_the_status_line_never_green(openai_server, home):
    openai_server.reply = lambda body: "no json here at all"
    app = app_for(openai_server, home)
    app.topics.value = "Heaps"
    app.controls.run_button.click()
    result = app.controls.wait(60)
    assert result.status == "done" and result.ok == 0 and result.failed
    assert app.controls.progress.bar.bar_style == "warning"
    assert "sds-warning" in app.controls.status.value and "sds-warning" in app.controls.progress.label.value


def test_a_run_that_cannot_start_is_red(home):
    app = GenerateApp(home=home, provider="openai_compatible", model="fake-model", base_url="http://127.0.0.1:9/v1")
    app.topics.value = "Heaps"
    app.controls.run_button.click()
    with pytest.raises(Exception, match="127.0.0.1:9"):
        app.controls.wait(60)
    app.controls.handle.thread.join(60)
    assert app.controls.progress.bar.bar_style == "danger" and "sds-error" in app.controls.status.value


@pytest.mark.parametrize("status, ok, failed, filtered, kind", [
    ("done", 3, 0, 0, "ok"),
    ("done", 3, 1, 0, "warning"),     # some rows kept, some lost: not a clean green
    ("done", 0, 0, 2, "warning"),     # nothing kept, nothing failed (all filtered)
    ("done", 0, 1, 1, "warning"),     # nothing kept, items failed: the "green bar next to 1 failed"
    ("cancelled", 2, 0, 0, "warning"),
    ("failed", 2, 0, 0, "error"),
])
def test_the_outcome_kind_is_green_only_for_a_done_run_that_kept_rows(status, ok, failed, filtered, kind):
    assert outcome_kind(JobResult(kind="sft", job_id=1, status=status, ok=ok, failed=failed,
                                  filtered=filtered)) == kind


# -- tables ----------------------------------------------------------------------------------------------------

def test_tables_show_blanks_for_none_nan_na_and_nat():
    frame = pd.DataFrame({"question": ["What?", None], "score": [np.nan, 4.0],
                          "count": pd.array([pd.NA, 2], dtype="Int64"), "when": [pd.NaT, pd.Timestamp("2024-01-02")],
                          "label": pd.array([None, "x"], dtype="string"), "mixed": [pd.NA, float("nan")]})
    shown = frame_html(frame)
    for raw in ("None", "nan", "NaN", "&lt;NA&gt;", "<NA>", "NaT"):
        assert raw not in shown
    assert "What?" in shown and "2024-01-02" in shown and "4.0" in shown


def test_a_table_of_one_row_says_1_row():
    table = PagedTable(lambda offset, limit: (pd.DataFrame({"a": [1]}), 1))
    table.show()
    assert "(1 row)" in table.info.value and "rows" not in table.info.value


# -- the embedded model --------------------------------------------------------------------------------------

def local_item(prompt: str, max_tokens: int, schema: dict | None = None) -> WorkItem:
    request = ChatRequest.of(prompt, ModelParameters(max_tokens=max_tokens, temperature=0, seed=1), schema)
    return WorkItem(key=request_key("local", None, request), request=request, topic=prompt[:20])


class Recording(live.LiveActivity):
    """A LiveActivity that also keeps every partial text it was given, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.texts: list[str] = []
        self.labels: list[str] = []

    def start(self, label: str) -> int:
        self.labels.append(label)
        return super().start(label)

    def write(self, token: int, text: str) -> None:
        self.texts.append(text)
        super().write(token, text)


def run_local(store, work: list[WorkItem], activity: live.LiveActivity):
    """The embedded model run in the background, as a notebook runs it, reporting to ``activity``."""
    job = store.create_job("generation")
    watched = RunHandle()
    watched.live = activity
    handle = submit(lambda handle: Engine(get_provider(ModelSpec()), store, "generation", job, RunSettings(),
                                          cancel_event=handle.cancel_event).run(work), handle=watched)
    return job, handle


@pytest.mark.slow
def test_the_embedded_models_text_reaches_the_listener_while_it_is_written(store):
    activity = Recording()
    job, handle = run_local(store, [local_item("Write two sentences about the sea.", 48)], activity)
    result = handle.result(300)
    (row,) = store.records("generation", job)
    final = row["output"]["text"]
    assert result.progress.ok == 1 and final
    partial = [t for t in activity.texts if t and len(t) < len(final)]
    assert partial and all(final.startswith(t) for t in partial)  # the reply as it grew, before it ended
    assert row["tokens_in"] > 5 and 0 < row["tokens_out"] <= 48


@pytest.mark.slow
def test_cancel_stops_the_embedded_model_between_tokens_and_fails_nothing(store):
    from sdstudio.providers.local import model_thread

    # a grammar that cannot end before 400 numbers: only Cancel can stop it early
    schema = {"type": "object", "required": ["numbers"], "properties": {
        "numbers": {"type": "array", "items": {"type": "integer"}, "minItems": 400}}}
    activity = Recording()
    work = [local_item("List numbers as JSON.", 4000, schema), local_item("List more numbers as JSON.", 4000, schema)]
    job, handle = run_local(store, work, activity)
    wait_until(lambda: activity.texts, "the model to start writing", timeout=300)
    handle.cancel()
    result = handle.result(300)
    model_thread().submit(lambda: None).result(300)  # the model is free again: its request has stopped
    assert result.cancelled and result.progress.failed == 0 and result.progress.ok == 0
    assert list(store.records("generation", job)) == []  # not failed: unsent, so Resume sends it
    written = activity.texts[-1]
    assert written.count(",") < 399  # stopped long before the grammar would let the reply end
    assert activity.labels == [work[0].topic]  # the second item never started
