"""The batch executor against the loopback OpenAI files/batches fake (tests/fakes/openai_batches.py): the same
records as the local executor at the batch price, one submission however often the job is started, failed lines
asked again, expired batches resubmitting only what they left unanswered, cancel, malformed result lines."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from sdstudio.cli import main
from sdstudio.store import Store
from tests.conftest import BATCH_PRICES as PRICES  # the priced_home fixture's prices
from tests.fakes.openai_batches import FakeOpenAIBatchServer

TOPICS = ["Heaps", "Tries", "Graphs"]


def generate(server, *extra: str, executor: str = "batch", topics=TOPICS, pinned: bool = True) -> list[str]:
    args = ["generate", "--provider", "openai_compatible", "--model", "fake-model", "--base-url", server.url,
            "--topics", *topics, "--executor", executor, "--batch-poll-s", "0.01", *extra]
    return args + (["--structured-output", "json_object"] if pinned else [])


def records(home, job_id: int = 1) -> list[dict]:
    store = Store.open(home)
    try:
        return sorted(store.records("generation", job_id), key=lambda r: r["item_key"])
    finally:
        store.close()


def comparable(rows: list[dict]) -> list[tuple]:
    return [(r["item_key"], r["status"], json.dumps(r["output"], sort_keys=True), r["tokens_in"], r["tokens_out"])
            for r in rows]


def job_show(home, job_id: int, capsys) -> dict:
    capsys.readouterr()
    assert main(["jobs", "show", str(job_id), "--json", "--home", str(home)]) == 0
    return json.loads(capsys.readouterr().out)


def test_a_batch_run_gives_the_local_records_at_the_batch_price_and_jobs_show_lists_its_batch(
        batch_server, tmp_path, monkeypatch, capsys):
    rows = {}
    for executor in ("local", "batch"):
        home = tmp_path / executor
        home.mkdir()
        (home / "prices.yaml").write_text(PRICES)
        monkeypatch.setenv("SDSTUDIO_HOME", str(home))
        assert main(generate(batch_server, "--json", executor=executor)) == 0
        rows[executor] = records(home)
    assert comparable(rows["batch"]) == comparable(rows["local"]) and len(rows["batch"]) == 15
    assert batch_server.creates == 1 and len(batch_server.requests) == len(TOPICS)  # the local run's chat calls
    for local, batch in zip(rows["local"], rows["batch"]):
        assert batch["cost_usd"] == pytest.approx(local["cost_usd"] / 2)
    shown = job_show(tmp_path / "batch", 1, capsys)
    assert shown["cost_usd"] == pytest.approx(sum(r["cost_usd"] for r in rows["local"]) / 2)
    [batch] = shown["batches"]
    assert batch["state"] == "completed" and batch["requests"] == len(TOPICS) and batch["completed"] == len(TOPICS)
    assert batch["remote_id"] == "batch_0001" and batch["collected_at"]


def test_without_a_remembered_dialect_one_request_goes_on_demand_first_and_the_next_job_sends_none(
        batch_server, priced_home):
    assert main(generate(batch_server, pinned=False)) == 0
    assert len(batch_server.requests) == 1 and len(batch_server.batch_lines) == len(TOPICS) - 1
    assert all(line["body"]["response_format"]["type"] == "json_object" for line in batch_server.batch_lines)
    assert main(generate(batch_server, topics=["Queues", "Stacks"], pinned=False)) == 0  # the dialect is remembered
    assert len(batch_server.requests) == 1 and len(batch_server.batch_lines) == len(TOPICS) - 1 + 2


def test_a_process_killed_after_submitting_resumes_its_batch_without_submitting_again(batch_server, priced_home):
    batch_server.outcomes.append("hold")
    env = {**os.environ, "SDSTUDIO_HOME": str(priced_home)}
    proc = subprocess.Popen([sys.executable, "-m", "sdstudio.cli", *generate(batch_server)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        def stored() -> bool:  # submitted, and its remote id saved (the provider's create alone is not enough:
            if not (priced_home / "metadata.db").exists():  # the moment between the two is documented as a gap)
                return False
            return any(row["remote_id"] for row in Store.open(priced_home).job_batches(1))

        deadline = time.monotonic() + 60
        while not stored() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert batch_server.creates == 1 and stored(), "the run never submitted its batch"
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(30)
    assert records(priced_home) == []  # nothing answered yet
    from sdstudio.executors.batch import awaiting_results

    store = Store.open(priced_home)
    assert awaiting_results(store, 1)  # what the job page asks when it opens: resume, and the run polls
    batch_server.held = False
    assert main(generate(batch_server)) == 0  # the same command again
    assert not awaiting_results(store, 1)
    assert batch_server.creates == 1 and len(batch_server.requests) == 0
    assert len(records(priced_home)) == 15 and all(r["status"] == "ok" for r in records(priced_home))


def test_failed_lines_are_asked_again_on_demand(batch_server, priced_home):
    batch_server.line_faults.extend(["server_error", "ok", "ok"])
    assert main(generate(batch_server)) == 0
    assert batch_server.creates == 1 and len(batch_server.requests) == 1  # the one failed line, on demand
    rows = records(priced_home)
    assert len(rows) == 15 and all(r["status"] == "ok" for r in rows)
    paid = {}  # request key -> (tokens in, tokens out, cost) of its rows
    for r in rows:
        tokens_in, tokens_out, cost = paid.get(r["request_key"], (0, 0, 0.0))
        paid[r["request_key"]] = (tokens_in + r["tokens_in"], tokens_out + r["tokens_out"], cost + r["cost_usd"])
    at = sorted("on demand" if cost == pytest.approx((t_in + 2 * t_out) / 1e6) else "batch"
                for t_in, t_out, cost in paid.values())
    assert at == ["batch", "batch", "on demand"]  # the retried request at the on-demand price


def test_failed_lines_go_in_a_follow_up_batch_when_batch_retry_says_so(batch_server, priced_home):
    (priced_home / "run.yaml").write_text("kind: generation\nrun:\n  batch_retry: batch\n")
    batch_server.line_faults.extend(["server_error"])
    assert main([*generate(batch_server), "--config", str(priced_home / "run.yaml")]) == 0
    assert batch_server.creates == 2 and len(batch_server.requests) == 0
    assert len(batch_server.batch_lines) == len(TOPICS) + 1
    assert all(r["status"] == "ok" for r in records(priced_home)) and len(records(priced_home)) == 15


def test_an_expired_batch_resubmits_only_its_unanswered_requests(batch_server, priced_home, capsys):
    batch_server.outcomes.append("expired")
    batch_server.expired_answers = 1
    assert main(generate(batch_server)) == 0
    assert batch_server.creates == 2
    first, second = batch_server.batch_lines[:3], batch_server.batch_lines[3:]
    assert [line["custom_id"] for line in second] == [line["custom_id"] for line in first[1:]]
    assert len(records(priced_home)) == 15 and all(r["status"] == "ok" for r in records(priced_home))
    states = [b["state"] for b in job_show(priced_home, 1, capsys)["batches"]]
    assert states == ["expired", "completed"]


def test_a_malformed_result_line_fails_just_its_item_with_the_reason(batch_server, priced_home):
    batch_server.line_faults.extend(["ok", "malformed", "ok"])
    assert main(generate(batch_server, "--max-failed-ratio", "1")) == 0
    rows = records(priced_home)
    failed = [r for r in rows if r["status"] == "failed"]  # the request's 5 items
    assert len({r["request_key"] for r in failed}) == 1 and len(failed) == 5
    assert "malformed result: line 2 of batch batch_0001's output file" in failed[0]["error"]
    assert len([r for r in rows if r["status"] == "ok"]) == 10 and len(batch_server.requests) == 0


def test_cancel_during_a_run_cancels_the_submitted_batch_and_a_resume_submits_it_again(batch_server, priced_home):
    from sdstudio.config import GenerationJob
    from sdstudio.workflows.sft import GenerationRun

    batch_server.outcomes.append("hold")
    config = GenerationJob.model_validate({
        "kind": "generation", "topics": TOPICS, "run": {"executor": "batch", "batch_poll_s": 0.01},
        "model": {"provider": "openai_compatible", "model": "fake-model", "base_url": batch_server.url,
                  "structured_output": "json_object"}})
    cancel, outcome = threading.Event(), {}
    worker = threading.Thread(target=lambda: outcome.update(result=GenerationRun(config).run(cancel_event=cancel)))
    worker.start()
    deadline = time.monotonic() + 30
    while batch_server.creates == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    cancel.set()
    worker.join(30)
    assert outcome["result"].status == "cancelled" and batch_server.cancels == 1
    store = Store.open(priced_home)
    [row] = store.job_batches(1)
    assert row["state"] in ("cancelling", "cancelled") and row["collected_at"] is None
    from sdstudio.resume import resume_job

    result = resume_job(1)  # the job page's Resume: the cancelled batch read, its requests submitted again
    assert result.status == "done" and result.resumed
    assert batch_server.creates == 2 and len(records(priced_home)) == 15


def test_jobs_cancel_cancels_a_running_jobs_batches_from_another_caller(batch_server, priced_home, capsys):
    from sdstudio.config import GenerationJob
    from sdstudio.workflows.sft import GenerationRun

    batch_server.outcomes.append("hold")
    config = GenerationJob.model_validate({
        "kind": "generation", "topics": TOPICS, "run": {"executor": "batch", "batch_poll_s": 0.01},
        "model": {"provider": "openai_compatible", "model": "fake-model", "base_url": batch_server.url,
                  "structured_output": "json_object"}})
    outcome = {}
    worker = threading.Thread(target=lambda: outcome.update(result=GenerationRun(config).run()))
    worker.start()
    deadline = time.monotonic() + 30
    while batch_server.creates == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    store = Store.open(priced_home)
    while not any(row["remote_id"] for row in store.job_batches(1)) and time.monotonic() < deadline:
        time.sleep(0.02)  # the row gets its remote id right after the create
    assert main(["jobs", "cancel", "1"]) == 0
    worker.join(30)
    assert "batches cancelled: batch_0001" in capsys.readouterr().err
    assert outcome["result"].status == "cancelled" and batch_server.cancels == 1


def test_a_provider_without_a_batch_api_is_refused_in_one_line(priced_home, capsys):
    code = main(["generate", "--provider", "local", "--topics", "Heaps", "--executor", "batch"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "provider local has no batch API" in err[0]


def test_the_preview_shows_the_batch_figure_next_to_the_on_demand_one(batch_server, priced_home, capsys):
    assert main([*generate(batch_server), "--dry-run", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["est_batch_cost_usd"] == pytest.approx(shown["est_cost_usd"] / 2)
    assert main([*generate(batch_server), "--dry-run"]) == 0
    assert "through the batch API" in capsys.readouterr().err


def test_two_thousand_items_through_the_batch_executor_are_one_submission_with_the_local_records(
        batch_server, tmp_path, monkeypatch):
    topics = [f"topic {n}" for n in range(400)]  # 5 items each
    (tmp_path / "topics.txt").write_text("\n".join(topics) + "\n")
    rows = {}
    for executor in ("local", "batch"):
        home = tmp_path / executor
        home.mkdir()
        (home / "prices.yaml").write_text(PRICES)
        monkeypatch.setenv("SDSTUDIO_HOME", str(home))
        args = generate(batch_server, executor=executor, topics=[])
        args[args.index("--topics"):args.index("--topics") + 1] = ["--topics-file", str(tmp_path / "topics.txt")]
        assert main([*args, "--concurrency", "64"]) == 0
        rows[executor] = records(home)
    assert len(rows["batch"]) == 2000 and all(r["status"] == "ok" for r in rows["batch"])
    assert comparable(rows["batch"]) == comparable(rows["local"])
    assert batch_server.creates == 1 and len(batch_server.batch_lines) == 400
    assert sum(r["cost_usd"] for r in rows["batch"]) == pytest.approx(sum(r["cost_usd"] for r in rows["local"]) / 2)


def test_provider_openai_runs_its_batches_through_the_official_client_at_half_price(priced_home, monkeypatch):
    (priced_home / "prices.yaml").write_text("fake-model: [1.0, 2.0]\n")  # no batch prices: openai's discount
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-batch-key-123456")
    with FakeOpenAIBatchServer(flavor="openai", api_key="sk-test-batch-key-123456") as server:
        args = ["generate", "--provider", "openai", "--model", "fake-model", "--base-url", server.url, "--topics",
                *TOPICS, "--executor", "batch", "--batch-poll-s", "0.01"]
        assert main(args) == 0
        assert server.creates == 1 and len(server.requests) == 1  # the dialect probe, then one batch
        assert all(line["body"]["response_format"]["type"] == "json_schema" for line in server.batch_lines)
        assert all(line["body"]["max_completion_tokens"] for line in server.batch_lines)
    rows = records(priced_home)
    assert len(rows) == 15 and all(r["status"] == "ok" for r in rows)
    batch_rows = [r for r in rows if r["tokens_in"] and r["request_key"] in {line["custom_id"] for line in server.batch_lines}]
    assert batch_rows and all(r["cost_usd"] == pytest.approx((r["tokens_in"] + 2 * r["tokens_out"]) / 2e6)
                              for r in batch_rows)


def test_a_batch_refused_whole_has_its_requests_asked_on_demand(batch_server, priced_home, capsys):
    batch_server.outcomes.append("failed")
    assert main(generate(batch_server)) == 0
    assert batch_server.creates == 1 and len(batch_server.requests) == len(TOPICS)
    assert len(records(priced_home)) == 15 and all(r["status"] == "ok" for r in records(priced_home))
    [batch] = job_show(priced_home, 1, capsys)["batches"]
    assert batch["state"] == "failed" and "failed validation" in batch["error"]


def test_requests_are_split_into_parts_the_provider_takes(batch_server, priced_home, monkeypatch):
    from sdstudio.executors.batch_openai import OpenAIBatch

    monkeypatch.setattr(OpenAIBatch, "max_requests", 2)
    assert main(generate(batch_server, topics=[*TOPICS, "Queues", "Stacks"])) == 0
    sizes = [batch["request_counts"]["total"] for batch in batch_server.batches.values()]
    assert sizes == [2, 2, 1] and len(records(priced_home)) == 25
    monkeypatch.setattr(OpenAIBatch, "max_requests", 50_000)
    longest = max(len(json.dumps(line).encode()) for line in batch_server.batch_lines) + 100
    monkeypatch.setattr(OpenAIBatch, "max_bytes", longest * 2)  # two lines a file
    assert main(generate(batch_server, topics=[f"{t} again" for t in (*TOPICS, "Queues", "Stacks")])) == 0
    files = [batch_server.files[b["input_file_id"]] for b in list(batch_server.batches.values())[3:]]
    assert [data.count(b"\n") for data in files] == [2, 2, 1]
    assert all(len(data) <= longest * 2 for data in files)
