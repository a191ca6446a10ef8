"""Reply errors give the advice that fits: "raise max_tokens" only when the provider says the reply stopped at the
token limit (OpenAI-compatible ``finish_reason: length``, Bedrock ``stopReason: max_tokens``), never for a reply
the model ended itself in the middle of its JSON (``stop`` / ``end_turn``), where more tokens buy the same
broken reply."""
from __future__ import annotations

import json

import pytest

from sdstudio.config import EvaluationJob, GenerationJob, ModelParameters, ModelSpec, RunSettings
from sdstudio.store import Record
from sdstudio.workflows.evaluate import EvaluationRun
from sdstudio.workflows.sft import GenerationRun
from tests.conftest import AWS_ACCESS_KEY
from tests.fakes.bedrock_server import FakeBedrockServer

FAST = RunSettings(backoff_base_s=0.01, backoff_max_s=0.05)
HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"
UNCLOSED = '{"score": 4, "justification": "the answer names the right structure but'


def planted(store) -> int:
    job_id = store.create_job("generation", use_case="code_generation", status="done",
                              config={"use_case": "code_generation"})
    store.add_records([Record(job_kind="generation", job_id=job_id, item_key="k0", status="ok", topic="Heaps",
                              output={"question": "What is a heap?", "solution": "import heapq",
                                      "explanation": "a tree"})])
    return job_id


def judged_error(server, store, max_tokens: int) -> str:
    spec = ModelSpec(provider="openai_compatible", model="fake-model", base_url=server.url,
                     parameters=ModelParameters(max_tokens=max_tokens))
    result = EvaluationRun(EvaluationJob(source_job=planted(store), model=spec, run=FAST), store=store).run()
    assert (result.ok, result.failed) == (0, 1)
    return next(store.records("evaluation", result.job_id, "failed"))["error"]


def test_a_judge_reply_the_model_ended_mid_json_never_says_raise_max_tokens(openai_server, store):
    openai_server.reply = lambda body: UNCLOSED  # short: the fake answers finish_reason "stop"
    error = judged_error(openai_server, store, max_tokens=256)
    assert "ends before its JSON closes" in error and "finish reason 'stop'" in error
    assert "raise max_tokens" not in error


def test_a_judge_reply_cut_off_at_max_tokens_says_raise_max_tokens(openai_server, store):
    openai_server.reply = lambda body: UNCLOSED + " also" * 40  # longer than max_tokens: finish_reason "length"
    error = judged_error(openai_server, store, max_tokens=16)
    assert "ends before its JSON closes" in error and "cut off at max_tokens" in error and "raise max_tokens" in error


ITEM = {"question": "What is a heap?", "solution": "import heapq", "explanation": "a tree kept in a list"}


@pytest.fixture
def bedrock(aws_env):
    with FakeBedrockServer(access_key=AWS_ACCESS_KEY) as server:
        yield server


def generate_on_bedrock(server, store, max_tokens: int, structured_output: str = "prompt"):
    """Claude on the fake Bedrock; the schema in the prompt (the reply's text is parsed) unless told otherwise."""
    config = GenerationJob(topics=["Heaps"], num_per_topic=2, batch_size=2, max_rounds=0, run=FAST,
                           model=ModelSpec(provider="bedrock", model=HAIKU, base_url=server.url, region="us-east-1",
                                           parameters=ModelParameters(max_tokens=max_tokens),
                                           structured_output=structured_output))
    result = GenerationRun(config, store=store).run()
    return result, [r["error"] for r in store.records("generation", result.job_id, "failed")]


def test_a_bedrock_reply_that_ended_its_turn_mid_json_never_says_raise_max_tokens(bedrock, store):
    bedrock.reply = lambda body: '{"items": [' + json.dumps(ITEM)[:-1]  # stopReason end_turn
    result, errors = generate_on_bedrock(bedrock, store, max_tokens=500)
    assert (result.ok, result.failed) == (0, 2)
    assert all("ends before its JSON closes" in e and "'end_turn'" in e for e in errors), errors
    assert not any("raise max_tokens" in e for e in errors), errors


def test_a_bedrock_reply_stopped_at_max_tokens_says_raise_max_tokens(bedrock, store):
    long = {**ITEM, "explanation": "a complete binary tree " * 30}
    reply = json.dumps({"items": [ITEM, long]})
    words_before_second = len(json.dumps({"items": [ITEM]}).split(" "))
    bedrock.reply = lambda body: reply  # the fake cuts it after max_tokens words: stopReason max_tokens
    result, errors = generate_on_bedrock(bedrock, store, max_tokens=words_before_second + 5)
    assert (result.ok, result.failed) == (1, 1)
    assert errors == [f"the reply held 1 of the 2 items asked; the reply was cut off at max_tokens "
                      f"({words_before_second + 5}): raise max_tokens"]


def test_a_forced_tool_call_cut_off_at_max_tokens_says_raise_max_tokens(bedrock, store):
    long = {**ITEM, "explanation": "a complete binary tree " * 30}
    bedrock.reply = lambda body: json.dumps({"items": [ITEM, long]})  # the fake's tool input is {} when cut off
    result, errors = generate_on_bedrock(bedrock, store, max_tokens=20, structured_output="auto")
    assert (result.ok, result.failed) == (0, 2)
    assert all("no items" in e and "raise max_tokens" in e for e in errors), errors
