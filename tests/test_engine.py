"""The engine against the real fake OpenAI-compatible server: faults, limits, resume, cancel, progress."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter

import pytest

from sdstudio.config import ModelParameters, ModelSpec, RunSettings
from sdstudio.engine import Engine, InvalidOutput, WorkItem, request_key
from sdstudio.pricing import Price
from sdstudio.providers import ChatRequest, get_provider
from sdstudio.runner import submit

FAST = dict(backoff_base_s=0.01, backoff_max_s=0.05)


def provider_for(server):
    return get_provider(ModelSpec(provider="openai_compatible", model="fake-model", base_url=server.url))


def items(n: int, prefix: str = "item") -> list[WorkItem]:
    out = []
    for i in range(n):
        request = ChatRequest.of(f"{prefix} {i}", ModelParameters(max_tokens=50))
        out.append(WorkItem(key=request_key("openai_compatible", "fake-model", request), request=request,
                            topic=f"topic {i % 3}", input={"i": i}))
    return out


def run_engine(server, store, job, work, **settings):
    engine = Engine(provider_for(server), store, "generation", job, RunSettings(**{**FAST, **settings}))
    return engine, engine.run(work)


def sent_prompts(server) -> Counter:
    return Counter(body["messages"][-1]["content"] for body in server.requests)


def test_every_item_ends_ok_or_failed_with_a_reason_under_mixed_faults(openai_server, store):
    openai_server.fault_rates = {"rate_limit": 0.15, "server_error": 0.1, "slow": 0.05,
                                 "malformed_body": 0.05, "truncated": 0.05}
    openai_server.slow_seconds = 1.0
    job = store.create_job("generation")
    work = items(200)
    _, result = run_engine(openai_server, store, job, work, concurrency=16, timeout_s=0.3, max_attempts=4)
    rows = list(store.records("generation", job))
    keys = [r["item_key"] for r in rows]
    assert len(keys) == len(set(keys)) == 200
    assert {r["request_key"] for r in rows} == {w.key for w in work}
    failed = [r for r in rows if r["status"] == "failed"]
    assert all(r["error"] for r in failed)
    assert result.progress.ok + result.progress.failed == 200 == result.progress.done
    assert len(openai_server.requests) <= 200 * 4  # retries are bounded by max_attempts


def test_peak_in_flight_never_exceeds_the_concurrency_limit(openai_server, store):
    openai_server.latency = 0.05
    job = store.create_job("generation")
    run_engine(openai_server, store, job, items(60), concurrency=7)
    assert openai_server.peak_in_flight == 7


def test_rate_limits_cut_concurrency_and_the_run_still_completes(openai_server, store):
    openai_server.latency = 0.02
    openai_server.script.extend(["rate_limit"] * 10)
    job = store.create_job("generation")
    engine, result = run_engine(openai_server, store, job, items(40), concurrency=8)
    assert result.progress.ok == 40
    assert engine.limit.lowest <= 4  # halved on the burst of 429s
    assert engine.limit.limit > engine.limit.lowest  # and regrown additively by the successes since


def test_rpm_limit_spaces_requests(openai_server, store):
    job = store.create_job("generation")
    run_engine(openai_server, store, job, items(30), concurrency=8, rpm=1200)  # one per 50 ms
    arrivals = sorted(openai_server.arrivals)
    assert arrivals[-1] - arrivals[0] >= 29 * 0.05 - 0.15
    for start in arrivals:  # any half second holds ~10 requests, never a burst
        assert sum(start <= t < start + 0.5 for t in arrivals) <= 12


def test_non_retryable_errors_fail_at_once_with_the_message(openai_server, store):
    openai_server.script.append("context_length")
    job = store.create_job("generation")
    run_engine(openai_server, store, job, items(1), concurrency=1)
    (row,) = store.records("generation", job)
    assert row["status"] == "failed" and "maximum context length" in row["error"]
    assert len(openai_server.requests) == 1


def test_rerunning_a_finished_job_sends_no_request(openai_server, store):
    job = store.create_job("generation")
    work = items(30)
    run_engine(openai_server, store, job, work)
    sent = len(openai_server.requests)
    _, result = run_engine(openai_server, store, job, work)
    assert len(openai_server.requests) == sent
    assert result.progress.cached == 30 and store.count_records("generation", job)["ok"] == 30


def test_failed_items_are_retried_on_resume_and_leave_only_their_new_outcome(openai_server, store):
    job = store.create_job("generation")
    work = items(5)
    openai_server.script.extend(["context_length"])
    run_engine(openai_server, store, job, work, concurrency=1)
    assert store.count_records("generation", job) == {"ok": 4, "failed": 1, "filtered": 0}
    run_engine(openai_server, store, job, work, concurrency=1)
    assert store.count_records("generation", job) == {"ok": 5, "failed": 0, "filtered": 0}
    assert len(openai_server.requests) == 6


def test_invalid_output_is_asked_again_then_failed_with_the_raw_text(openai_server, store):
    def strict(item, completion):
        raise InvalidOutput("score 9 is outside the scale 1-5")

    job = store.create_job("generation")
    engine = Engine(provider_for(openai_server), store, "generation", job, RunSettings(**FAST), output_retries=1)
    engine.run(items(1), strict)
    (row,) = store.records("generation", job)
    assert row["status"] == "failed" and "outside the scale" in row["error"] and row["raw_text"]
    assert len(openai_server.requests) == 2


def test_progress_reports_counts_tokens_and_cost(openai_server, store):
    seen = []
    job = store.create_job("generation")
    engine = Engine(provider_for(openai_server), store, "generation", job, RunSettings(**FAST),
                    price=Price(1.0, 2.0), on_progress=seen.append)
    result = engine.run(items(20))
    final = seen[-1]
    assert (final.total, final.done, final.ok, final.in_flight) == (20, 20, 20, 0)
    assert final.tokens_in > 0 and final.tokens_out > 0
    assert final.cost_usd == pytest.approx((final.tokens_in * 1.0 + final.tokens_out * 2.0) / 1e6)
    assert result.progress.tokens_out == sum(r["tokens_out"] for r in store.records("generation", job))


def test_cancel_keeps_saved_rows_and_resume_finishes_the_rest(openai_server, store):
    openai_server.latency = 0.05
    job = store.create_job("generation")
    work = items(100)

    def job_fn(handle):
        engine = Engine(provider_for(openai_server), store, "generation", job, RunSettings(concurrency=4, **FAST),
                        on_progress=handle.report, cancel_event=handle.cancel_event, grace_s=5)
        return engine.run(work)

    handle = submit(job_fn)
    while handle.progress is None or handle.progress.done < 10:
        time.sleep(0.01)
    handle.cancel()
    result = handle.result(timeout=30)
    assert result.cancelled and 10 <= result.progress.done < 100
    saved = store.count_records("generation", job)["ok"]
    assert saved == result.progress.ok
    run_engine(openai_server, store, job, work)
    rows = list(store.records("generation", job))
    assert len(rows) == 100 and {r["status"] for r in rows} == {"ok"}


KILLABLE = textwrap.dedent("""
    import sys
    from sdstudio.config import ModelSpec, RunSettings
    from sdstudio.engine import Engine
    from sdstudio.providers import get_provider
    from sdstudio.store import Store
    from tests.test_engine import items
    url, db, job = sys.argv[1], sys.argv[2], int(sys.argv[3])
    provider = get_provider(ModelSpec(provider="openai_compatible", model="fake-model", base_url=url))
    Engine(provider, Store(db), "generation", job, RunSettings(concurrency=8)).run(items(300))
""")


def test_a_run_killed_with_sigkill_resumes_to_exactly_the_uninterrupted_set(openai_server, store):
    openai_server.latency = 0.02
    job = store.create_job("generation")
    cmd = [sys.executable, "-c", KILLABLE, openai_server.url, str(store.path), str(job)]
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    proc = subprocess.Popen(cmd, env=env)
    while store.count_records("generation", job)["ok"] < 60:
        assert proc.poll() is None, "the run ended before it could be killed"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = {r["input"]["i"] for r in store.records("generation", job)}
    sent_before = len(openai_server.requests)
    assert subprocess.run(cmd, env=env).returncode == 0
    rows = list(store.records("generation", job))
    assert sorted(r["input"]["i"] for r in rows) == list(range(300))  # each exactly once
    resent = {int(b["messages"][-1]["content"].split()[1]) for b in openai_server.requests[sent_before:]}
    assert not resent & saved  # nothing already saved was asked for again


def test_attempts_count_every_call_the_provider_got_retries_and_re_asks_included(openai_server, store):
    openai_server.script.extend(["server_error", "rate_limit", "ok", "bad_json", "ok", "ok"])
    job = store.create_job("generation")

    def handler(item, completion):
        if completion.text.startswith("{'not'"):
            raise InvalidOutput("not JSON")
        return []

    engine = Engine(provider_for(openai_server), store, "generation", job, RunSettings(**FAST, concurrency=1),
                    output_retries=1)
    result = engine.run(items(3), handler)
    assert result.progress.attempts == len(openai_server.requests) == 6
    assert result.progress.done - result.progress.cached == 3 and result.progress.retries == 3


def test_a_stamp_completes_a_failed_row_and_never_touches_an_ok_or_filtered_one(store):
    from sdstudio.store import Record

    job = store.create_job("generation")
    store.add_records([Record(job_kind="generation", job_id=job, item_key=key, status=status, output={"a": key},
                              provenance={"file": "a.md", "step": {"pending": True, "error": "x"}}, tokens_in=10)
                       for key, status in (("waiting", "failed"), ("done", "ok"), ("dropped", "filtered"))])
    stamps = [Record(job_kind="generation", job_id=job, item_key=key, status="ok", stamp=True, tokens_in=5,
                     cost_usd=0.5, provenance={"step": {"passed": True}}) for key in ("waiting", "done", "dropped")]
    assert store.apply_stamps(stamps) == 1
    rows = {r["item_key"]: r for r in store.records("generation", job)}
    waiting = rows.pop("waiting")
    assert (waiting["status"], waiting["error"], waiting["tokens_in"], waiting["cost_usd"]) == ("ok", None, 15, 0.5)
    assert waiting["provenance"] == {"file": "a.md", "step": {"passed": True}}  # the step's key replaced, not merged
    assert waiting["output"] == {"a": "waiting"}  # the item itself is untouched
    assert all(r["tokens_in"] == 10 and r["provenance"]["step"]["pending"] for r in rows.values())


def test_failure_records_let_a_later_step_fail_its_item_row_instead_of_adding_one(openai_server, store):
    from sdstudio.store import Record

    openai_server.fault_rates = {"context_length": 1.0}
    job = store.create_job("generation")
    store.add_records([Record(job_kind="generation", job_id=job, item_key="item-1", status="failed", output={"q": 1},
                              error="waiting for its check")])

    def failed(item, reason, raw):
        return [Record(job_kind="", job_id=0, item_key="item-1", status="failed", stamp=True,
                       error=f"check failed: {reason}")]

    engine = Engine(provider_for(openai_server), store, "generation", job, RunSettings(**FAST), failure_records=failed)
    engine.run(items(1, prefix="check"))
    rows = list(store.records("generation", job))
    assert len(rows) == 1 and rows[0]["error"].startswith("check failed: openai_compatible: prompt too long")
    assert rows[0]["output"] == {"q": 1}


def test_the_warm_up_runs_once_on_the_writer_thread_while_the_first_wave_awaits_its_replies(openai_server, store):
    import threading

    openai_server.latency = 0.3
    seen = []
    provider = provider_for(openai_server)
    provider.proven = True  # a known endpoint: the first wave goes out at full width
    job = store.create_job("generation")
    engine = Engine(provider, store, "generation", job, RunSettings(**FAST, concurrency=4),
                    warm_up=lambda: seen.append((threading.current_thread().name, len(openai_server.answered))))
    result = engine.run(items(12))
    assert result.progress.ok == 12
    assert len(seen) == 1 and seen[0][0].startswith("sdstudio-writer") and seen[0][1] == 0  # before any reply


def test_a_warm_up_that_fails_costs_the_run_nothing(openai_server, store):
    def broken() -> None:
        raise ImportError("no such module")

    job = store.create_job("generation")
    engine = Engine(provider_for(openai_server), store, "generation", job, RunSettings(**FAST, concurrency=2),
                    warm_up=broken)
    assert engine.run(items(6)).progress.ok == 6
