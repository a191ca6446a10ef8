"""A 1000-item generation against a fake server that misbehaves like real ones: 10% 429 with Retry-After, 5% 500,
10% malformed JSON in the reply, 5% bodies cut off mid-transfer, 1% replies slower than the request timeout.

Every item must end ok, or failed with its reason; nothing is counted twice; retries stay within their budget.
"""
from __future__ import annotations

import re
from collections import Counter

import pytest

from sdstudio.config import GenerationJob, ModelSpec, RunSettings
from sdstudio.store import Store
from sdstudio.workflows.sft import GenerationRun

FAULTS = {"rate_limit": 0.10, "server_error": 0.05, "bad_json": 0.10, "truncated": 0.05, "slow": 0.01}
MAX_ATTEMPTS, OUTPUT_RETRIES = 5, 1  # the generation workflow asks once more for an unusable reply
# what a failed item may say: each names its cause
REASONS = re.compile(r"rate limited|answered 500|broke mid-reply|malformed|timed out|JSON|cut off|no items")


def job(server, topics: int, *, rounds: int) -> GenerationJob:
    return GenerationJob(
        topics=[f"Topic {i:04d}" for i in range(topics)], num_per_topic=1, batch_size=1, max_rounds=rounds,
        model=ModelSpec(provider="openai_compatible", model="fake-model", base_url=server.url),
        run=RunSettings(concurrency=32, timeout_s=0.5, max_attempts=MAX_ATTEMPTS, backoff_base_s=0.01,
                        backoff_max_s=0.1))


def faulty(server) -> None:
    server.fault_rates = dict(FAULTS)
    server.retry_after = 0.05
    server.slow_seconds = 2.0  # four times the request timeout


def run(server, config: GenerationJob, store: Store):
    seen = []
    result = GenerationRun(config, store=store).run(on_progress=seen.append)
    return result, seen[-1]


@pytest.mark.slow
def test_a_thousand_items_under_mixed_faults_each_end_ok_or_failed_with_a_reason(counting_server, store):
    faulty(counting_server)
    result, progress = run(counting_server, job(counting_server, 1000, rounds=0), store)

    rows = list(store.records("generation", result.job_id))
    statuses = Counter(r["status"] for r in rows)
    requested = store.get_job("generation", result.job_id)["requested"]
    assert requested == 1000
    assert statuses["ok"] + statuses["failed"] + statuses["filtered"] == requested == len(rows)
    assert (result.ok, result.failed, result.filtered) == (statuses["ok"], statuses["failed"], statuses["filtered"])
    keys = [r["item_key"] for r in rows]
    assert len(set(keys)) == len(keys)  # no item stored twice
    assert len({r["request_key"] for r in rows}) == 1000  # one row per request: nothing lost, nothing doubled
    failed = [r for r in rows if r["status"] != "ok"]
    assert all(r["error"] and REASONS.search(r["error"]) for r in failed), Counter(r["error"] for r in failed)
    # every fault kind was met, retried, and most items still made it
    assert set(FAULTS) <= set(counting_server.injected), counting_server.injected
    assert statuses["ok"] >= 950
    sent = len(counting_server.requests)
    assert 1000 < sent <= 1000 * (MAX_ATTEMPTS + OUTPUT_RETRIES)
    assert progress.retries == sent - 1000
    assert result.status == "done" and result.requests_sent == 1000
    print(f"\nFIGURES faults: items=1000 ok={statuses['ok']} failed={statuses['failed']} "
          f"filtered={statuses['filtered']} http_requests={sent} retries={progress.retries} "
          f"injected={dict(sorted(counting_server.injected.items()))} "
          f"reasons={dict(Counter(REASONS.search(r['error']).group(0) for r in failed))}")


@pytest.mark.slow
def test_follow_up_rounds_refill_failed_items_and_a_rerun_sends_only_what_ended_failed(counting_server, store):
    faulty(counting_server)
    config = job(counting_server, 300, rounds=3)
    result, _ = run(counting_server, config, store)

    rows = list(store.records("generation", result.job_id))
    statuses = Counter(r["status"] for r in rows)
    assert result.ok + result.failed == 300  # every requested item ended ok or failed, once
    assert result.ok >= 295
    per_topic = Counter(r["topic"] for r in rows if r["status"] == "ok")
    assert max(per_topic.values()) == 1  # refills never overfill a topic
    # the earlier rounds' failures stay readable, marked as asked again
    assert all(r["error"].startswith("asked again in round ") for r in rows if r["status"] == "filtered")
    assert statuses["filtered"] > 0 and result.filtered == statuses["filtered"]
    before = len(counting_server.requests)
    counting_server.fault_rates = {}
    again = GenerationRun(config, store=store).run()
    assert again.job_id == result.job_id and again.resumed
    assert len(counting_server.requests) - before == result.failed  # only the items that ended failed
    assert (again.ok, again.failed) == (300, 0)
    print(f"\nFIGURES rounds: items=300 ok={result.ok} failed={result.failed} superseded={statuses['filtered']} "
          f"rerun_requests={len(counting_server.requests) - before}")


def test_a_failed_request_for_k_items_counts_k_failed_items(openai_server, store):
    openai_server.fault_rates = {"context_length": 1.0}
    config = GenerationJob(topics=["Heaps"], num_per_topic=4, batch_size=4, max_rounds=0,
                           model=ModelSpec(provider="openai_compatible", model="fake-model", base_url=openai_server.url))
    result = GenerationRun(config, store=store).run()
    assert (result.ok, result.failed) == (0, 4)
    assert len({r["request_key"] for r in store.records("generation", result.job_id)}) == 1


def test_a_reply_with_fewer_items_than_asked_leaves_failed_rows_for_the_missing_ones(openai_server, store):
    import json

    openai_server.reply = lambda body: json.dumps({"items": [
        {"question": "What is a binary heap?", "solution": "import heapq\nheap = []\nheapq.heappush(heap, 3)",
         "explanation": "heapq keeps the smallest item first"}]})
    config = GenerationJob(topics=["Heaps"], num_per_topic=3, batch_size=3, max_rounds=0,
                           model=ModelSpec(provider="openai_compatible", model="fake-model", base_url=openai_server.url))
    result = GenerationRun(config, store=store).run()
    assert (result.ok, result.failed) == (1, 2)
    assert {r["error"] for r in store.records("generation", result.job_id, "failed")} == {
        "the reply held 1 of the 3 items asked"}
