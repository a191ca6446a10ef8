"""Generation requests keyed by the job's recipe: planned without rendering, rendered when sent, found finished
without rendering; jobs begun under prompt keys keep them; a settled dedup is not redone (issue 24)."""
from __future__ import annotations

import dataclasses

from sdstudio.dedup import JobDedup
from sdstudio.store import Record
from sdstudio.work import DeferredWorkItem, WorkItem
from sdstudio.workflows.plan import GenerationPlan
from sdstudio.workflows.sft import GenerationRun
from tests.test_generate import job_for


class Renders:
    """Counts the prompts a plan renders (the real rendering still runs)."""

    def __init__(self, monkeypatch):
        self.count = 0
        original = GenerationPlan.prompt

        def counted(plan, *args, **kwargs):
            self.count += 1
            return original(plan, *args, **kwargs)

        monkeypatch.setattr(GenerationPlan, "prompt", counted)


def test_a_round_is_planned_without_rendering_a_prompt_and_each_is_rendered_once_when_asked(
        openai_server, store, monkeypatch):
    run = GenerationRun(job_for(openai_server, topics=[f"T{i}" for i in range(50)], num_per_topic=2, batch_size=1),
                        store=store)
    renders = Renders(monkeypatch)
    items = run.round_items(0, 1)
    keys = [item.key for item in items]
    assert len(items) == 100 and len(set(keys)) == 100 and renders.count == 0
    item = items[3]
    assert isinstance(item, DeferredWorkItem) and item.key == keys[3] and renders.count == 0
    assert "<topic>T1</topic>" in item.request.messages[-1]["content"] and renders.count == 1
    assert item.request is item.request and renders.count == 1  # built once
    assert [i.key for i in run.round_items(0, 1)] == keys  # the same plan gives the same keys


def test_a_deferred_item_round_trips_like_any_work_item(openai_server, store):
    run = GenerationRun(job_for(openai_server, topics=["Tries"], num_per_topic=1, batch_size=1), store=store)
    (item,) = run.round_items(0, 1)
    shipped = WorkItem.from_json(item.to_json())
    assert (shipped.key, shipped.request, shipped.input) == (item.key, item.request, item.input)
    moved = dataclasses.replace(item, provenance={"file": "a.md"})
    assert (moved.key, moved.request, moved.provenance) == (item.key, item.request, {"file": "a.md"})


def test_keys_change_with_what_the_prompt_is_made_of(openai_server, store):
    def first_key(**fields):
        spec = {"topics": ["Tries"], "num_per_topic": 1, "batch_size": 1, **fields}
        return GenerationRun(job_for(openai_server, **spec), store=store).round_items(0, 1)[0].key

    base = first_key()
    assert first_key() == base
    assert first_key(requirements=["Use Rust"]) != base
    assert first_key(instruction="Write a quiz question.") != base
    assert first_key(topics=["Heaps"]) != base


def test_rerunning_a_finished_job_renders_no_prompt_and_sends_nothing(openai_server, store, monkeypatch):
    fields = {"topics": [f"Topic {i}" for i in range(12)], "num_per_topic": 2, "batch_size": 1}
    first = GenerationRun(job_for(openai_server, **fields), store=store).run()
    sent = len(openai_server.requests)
    rerun = GenerationRun(job_for(openai_server, **fields), store=store)
    renders = Renders(monkeypatch)
    again = rerun.run()
    assert again.resumed and again.requests_sent == 0 and len(openai_server.requests) == sent
    assert renders.count == 0 and (again.ok, again.filtered) == (first.ok, first.filtered)


def test_a_job_begun_under_prompt_keys_resumes_without_sending_its_finished_requests(openai_server, store):
    fields = {"topics": ["Graphs", "Sorting", "Tries"], "num_per_topic": 2, "batch_size": 1}
    older = GenerationRun(job_for(openai_server, **fields), store=store)
    older.keys_from_prompts = True  # how sdstudio keyed requests before recipe keys
    first = older.run()
    sent = len(openai_server.requests)
    again = GenerationRun(job_for(openai_server, **fields), store=store).run()
    assert again.job_id == first.job_id and again.requests_sent == 0 and len(openai_server.requests) == sent
    assert (again.ok, again.failed) == (first.ok, 0) == (6, 0)


def _job_with_rows(store, questions: list[str]) -> int:
    job = store.create_job("generation", config={}, config_hash="x")
    store.add_records([Record(job_kind="generation", job_id=job, item_key=f"k{i}", status="ok", topic="t",
                              output={"question": q}) for i, q in enumerate(questions)])
    return job


def test_a_dedup_pass_is_settled_until_the_jobs_ok_rows_change(store):
    job = _job_with_rows(store, ["How do heaps work?", "What is a trie?", "how do heaps work"])
    assert not JobDedup(store, "generation", job, ["question"]).settled()  # never checked
    report = JobDedup(store, "generation", job, ["question"]).run()
    assert report.exact == 1
    assert JobDedup(store, "generation", job, ["question"]).settled()  # a new process: nothing to check
    assert not JobDedup(store, "generation", job, ["question"], threshold=0.5).settled()  # another threshold
    store.add_records([Record(job_kind="generation", job_id=job, item_key="k9", status="ok", topic="t",
                              output={"question": "What is a trie?"})])
    fresh = JobDedup(store, "generation", job, ["question"])
    assert not fresh.settled() and fresh.run().exact == 1  # the new row is checked against the old ones
    assert JobDedup(store, "generation", job, ["question"]).settled()


def test_round_planning_reads_outputs_only_for_topics_short_of_items(store):
    job = store.create_job("generation", config={}, config_hash="y")
    rows = [("full", 0), ("full", 1), ("short", 0)]
    store.add_records([Record(job_kind="generation", job_id=job, item_key=f"{topic}{i}", status="ok", topic=topic,
                              input={"round": 0}, output={"question": f"{topic} {i}"}) for topic, i in rows])
    counts, outputs = store.kept_by_topic("generation", job, 1, short_of=2)
    assert counts == {"full": 2, "short": 1} and outputs == {"short": [{"question": "short 0"}]}
    assert store.kept_by_topic("generation", job, 1, short_of=1) == ({"full": 2, "short": 1}, {})


def test_round_zero_calls_are_every_topic_with_the_same_counts_in_order():
    from sdstudio.workflows.sft import Call, EveryTopic

    calls = EveryTopic(["a", "b", "c"], [5, 5, 2])
    listed = [Call(topic, part, count) for topic in "abc" for part, count in enumerate([5, 5, 2])]
    assert len(calls) == 9 and list(calls) == listed
    assert [calls[i] for i in range(9)] == listed and calls[-1] == listed[-1] and calls[2:5] == listed[2:5]


def test_topics_with_items_counts_only_topics_holding_enough_ok_rows(store):
    job = store.create_job("generation", config={}, config_hash="z")
    rows = [("a", "ok"), ("a", "ok"), ("b", "ok"), ("b", "failed"), ("c", "filtered")]
    store.add_records([Record(job_kind="generation", job_id=job, item_key=f"k{i}", status=status, topic=topic,
                              input={"round": 0}, output={"q": i}) for i, (topic, status) in enumerate(rows)])
    assert store.topics_with_items("generation", job, 1) == 2
    assert store.topics_with_items("generation", job, 2) == 1
