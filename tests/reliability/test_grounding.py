"""The documents grounding check is part of its item: an item is ok only with a supported verdict whose evidence is in
its chunk, a check that fails leaves the item failed (one row, never an extra one) and retryable without paying for
its generation again, a verdict is read strictly (no prose read for a "true"), and nothing unchecked is exported."""
from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from sdstudio.cli import main
from sdstudio.config import DocumentJob, ModelParameters, ModelSpec, RunSettings
from sdstudio.workflows.documents import DocumentRun
from sdstudio.workflows.grounding import NOT_CHECKED
from tests.fakes.openai_server import requested_schema

CHUNK = "The X200 pump runs at 3000 rpm. Its seal lasts five years. The housing is cast iron."
FAST = RunSettings(backoff_base_s=0.01, backoff_max_s=0.05, concurrency=8, max_attempts=2)


def is_check(body: dict) -> bool:
    return "supported" in requested_schema(body)["properties"]


def generator(body: dict) -> str:
    """Two grounded items per call, then one per call; answers name their own number so rows tell apart."""
    schema = requested_schema(body)
    count = schema["properties"]["items"]["minItems"] if "items" in schema["properties"] else 1
    key = abs(hash(json.dumps(body["messages"]))) % 10_000
    items = [{"question": f"How fast does the X200 pump run ({key}-{i})?", "answer": f"3000 rpm (item {key}-{i})",
              "evidence": "runs at 3000 rpm"} for i in range(count)]
    return json.dumps({"items": items} if count > 1 else items[0])


def verdicts(judge):
    """The fake's reply function: ``judge(answer) -> reply text`` for checks, the generator for the rest."""
    def reply(body: dict) -> str:
        if is_check(body):
            return judge(body["messages"][-1]["content"].split("<answer>")[1].split("</answer>")[0])
        return generator(body)
    return reply


SUPPORTED = json.dumps({"supported": True, "reason": "the passage says so", "evidence": "Runs at 3000   RPM"})


@pytest.fixture
def notes(tmp_path) -> Path:
    path = tmp_path / "notes.md"
    path.write_text(CHUNK)
    return path


def config(server, notes: Path, run: RunSettings = FAST, **fields) -> DocumentJob:
    spec = ModelSpec(provider="openai_compatible", model="fake-model", base_url=server.url,
                     parameters=ModelParameters(max_tokens=800))
    fields = {"per_chunk": 2, "grounding": True, "dedup_threshold": None, "max_rounds": 0, **fields}
    return DocumentJob(files=[str(notes)], model=spec, run=run, **fields)


def rows(store, job_id: int) -> list[dict]:
    return list(store.records("generation", job_id))


def test_a_check_that_fails_leaves_its_item_failed_in_its_one_row_with_the_reason(openai_server, store, notes):
    openai_server.reply = verdicts(lambda answer: SUPPORTED)
    openai_server.script.extend(["ok"] + ["server_error"] * 20)  # the generation call answers, every check fails
    result = DocumentRun(config(openai_server, notes), store=store).run()
    stored = rows(store, result.job_id)
    assert (result.ok, result.failed, result.filtered, len(stored)) == (0, 2, 0, 2)  # two items, two rows
    for row in stored:
        assert row["status"] == "failed" and row["output"]["evidence"] == "runs at 3000 rpm"  # the generation kept
        assert row["error"].startswith("grounding check failed: ") and "answered 500" in row["error"]
        assert row["provenance"]["grounding"]["pending"] is True
    assert store.get_job("generation", result.job_id)["failed"] == 2


def test_the_next_run_checks_a_failed_check_again_without_generating_again(openai_server, store, notes):
    openai_server.reply = verdicts(lambda answer: SUPPORTED)
    openai_server.script.extend(["ok"] + ["server_error"] * 20)
    first = DocumentRun(config(openai_server, notes), store=store).run()
    openai_server.script.clear()
    before = len(openai_server.requests)
    again = DocumentRun(config(openai_server, notes), store=store).run()
    sent = openai_server.requests[before:]
    assert again.job_id == first.job_id and [is_check(b) for b in sent] == [True, True]  # no generation paid twice
    assert (again.ok, again.failed, again.filtered, len(rows(store, again.job_id))) == (2, 0, 0, 2)
    grounding = [r["provenance"]["grounding"] for r in rows(store, again.job_id)]
    assert grounding == [{"supported": True, "reason": "the passage says so", "evidence": "Runs at 3000 RPM",
                          "judge": "fake-model"}] * 2
    # every attempt's tokens are on the item's row: the generation's, the failed checks', the passing one's
    assert sum(r["tokens_in"] for r in rows(store, again.job_id)) == store.get_job("generation", again.job_id)["tokens_in"]


def test_prose_around_a_true_is_not_a_supported_verdict(openai_server, store, notes):
    """A judge that echoes the prompt's example before its real verdict: the first JSON value says true."""
    echo = ('I will answer in the format {"supported": true, "reason": "<one sentence>"}.\n'
            'Verdict: {"supported": false, "reason": "false: the passage never says this"}')
    openai_server.reply = verdicts(lambda answer: echo)
    result = DocumentRun(config(openai_server, notes), store=store).run()
    assert (result.ok, result.failed) == (0, 2)
    assert all("did not reply with the verdict JSON alone" in r["error"] for r in rows(store, result.job_id))


def test_a_verdict_must_carry_a_boolean_supported(openai_server, store, notes):
    openai_server.reply = verdicts(lambda answer: json.dumps({"supported": "true", "reason": "yes", "evidence": "x"}))
    result = DocumentRun(config(openai_server, notes), store=store).run()
    assert (result.ok, result.failed) == (0, 2)
    assert all("'supported'" in r["error"] and "boolean" in r["error"] for r in rows(store, result.job_id))


@pytest.mark.parametrize("evidence, why", [
    ("runs at 5000 rpm", "the judge's evidence 'runs at 5000 rpm' is not in it"),
    ("", "the judge quoted no evidence"),
])
def test_supported_with_evidence_that_is_not_in_the_chunk_is_filtered(openai_server, store, notes, evidence, why):
    openai_server.reply = verdicts(lambda answer: json.dumps({"supported": True, "reason": "false", "evidence": evidence}))
    result = DocumentRun(config(openai_server, notes), store=store).run()
    assert (result.ok, result.filtered, result.failed) == (0, 2, 0)
    for row in rows(store, result.job_id):
        assert row["error"] == f"not supported by its chunk: {why}"
        assert row["provenance"]["grounding"]["supported"] is False


def test_an_unsupported_verdict_filters_the_item_with_its_reason(openai_server, store, notes):
    openai_server.reply = verdicts(lambda answer: json.dumps(
        {"supported": "-0" not in answer, "reason": "the passage never says so", "evidence": "runs at 3000 rpm"}))
    result = DocumentRun(config(openai_server, notes), store=store).run()
    assert (result.ok, result.filtered, result.failed) == (1, 1, 0)
    filtered = next(store.records("generation", result.job_id, "filtered"))
    assert filtered["error"] == "not supported by its chunk: the passage never says so"


def exported_answers(home: Path) -> list[str]:
    answers = []
    for path in sorted((home / "exports").rglob("*.jsonl")):
        answers += [json.loads(line)["answer"] for line in path.read_text().splitlines() if line.strip()]
    return answers


def export_answers(home: Path, job_id: int) -> list[str]:
    assert main(["export", "--job", str(job_id), "--style", "raw", "--format", "jsonl", "--json", "--home",
                 str(home)]) == 0
    return sorted(exported_answers(home))


def test_only_items_whose_check_passed_are_exported(openai_server, home, store, notes, capsys):
    openai_server.reply = verdicts(lambda answer: SUPPORTED if answer.endswith(("-0)", "-1)")) else "no idea")
    result = DocumentRun(config(openai_server, notes, per_chunk=4, batch_size=4), store=store).run()
    assert (result.ok, result.failed) == (2, 2)  # two supported, two whose check got no usable reply
    kept = sorted(r["output"]["answer"] for r in store.records("generation", result.job_id, "ok"))
    assert len(kept) == 2 and export_answers(home, result.job_id) == kept


def test_a_run_stopped_before_its_checks_leaves_its_items_unchecked_and_the_next_run_checks_only(openai_server, home,
                                                                                                  store, notes):
    openai_server.reply = verdicts(lambda answer: SUPPORTED)
    cancel = threading.Event()

    def on_progress(progress):
        if progress.note.startswith("grounding check"):
            cancel.set()

    run = RunSettings(backoff_base_s=0.01, backoff_max_s=0.05, concurrency=1)
    first = DocumentRun(config(openai_server, notes, run=run, per_chunk=3), store=store).run(
        on_progress=on_progress, cancel_event=cancel)
    assert first.status == "cancelled" and first.ok < 3
    unchecked = [r for r in rows(store, first.job_id) if r["status"] != "ok"]
    assert unchecked and all(r["error"] == NOT_CHECKED for r in unchecked)
    if first.ok:  # the one check in flight when the run stopped may have finished: only it is exported
        assert export_answers(home, first.job_id) == sorted(
            r["output"]["answer"] for r in store.records("generation", first.job_id, "ok"))
    before = len(openai_server.requests)
    done = DocumentRun(config(openai_server, notes, run=run, per_chunk=3), store=store).run()
    sent = openai_server.requests[before:]
    assert done.status == "done" and (done.ok, done.failed) == (3, 0)
    assert len(sent) == len(unchecked) and all(is_check(b) for b in sent)
