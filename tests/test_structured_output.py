"""Structured output negotiated per endpoint against fake servers that answer as real ones do
(tests/fakes/openai_server.py flavors): the dialect each server takes, one refusal per run, memory in
metadata.db, pinned dialects, and runs that stop when every request is refused."""
from __future__ import annotations

import json
import sqlite3

import pytest

from sdstudio.cli import main
from sdstudio.config import GenerationJob, ModelParameters, ModelSpec, RunSettings
from sdstudio.errors import ConfigError
from sdstudio.providers import ChatRequest, ProviderError, get_provider
from sdstudio.workflows.sft import GenerationRun
from tests.fakes.openai_server import FakeOpenAIServer

SCHEMA = {"type": "object", "properties": {"question": {"type": "string"}, "answer": {"type": "string"}},
          "required": ["question", "answer"]}
FAST = RunSettings(backoff_base_s=0.01, backoff_max_s=0.05, concurrency=8)


def spec(server, provider="openai_compatible", **kw) -> ModelSpec:
    return ModelSpec(provider=provider, model="fake-model", base_url=server.url,
                     parameters=ModelParameters(max_tokens=800), **kw)


def generate(server, store, topics=("Tries", "Heaps", "Graphs"), per_topic=1, **kw):
    job = GenerationJob(model=spec(server, **kw), run=FAST, topics=list(topics), num_per_topic=per_topic,
                        batch_size=1)
    return GenerationRun(job, store=store).run()


def dialect_of(body: dict) -> str:
    if "response_format" in body:
        return body["response_format"]["type"]
    for name, dialect in (("guided_json", "guided_json"), ("nvext", "nvext"), ("tools", "tool")):
        if name in body:
            return dialect
    return "prompt"


@pytest.mark.parametrize("flavor, provider, sent", [
    ("openai", "openai_compatible", ["json_schema"]),
    ("llama_cpp", "openai_compatible", ["json_schema", "json_object"]),
    ("text_only", "openai_compatible", ["json_schema", "json_object", "guided_json", "prompt"]),
    ("nim", "caii", ["json_schema", "nvext"]),
])
def test_each_server_gets_the_strongest_dialect_it_takes_after_one_refusal_per_weaker_one(
        flavor, provider, sent, store, monkeypatch):
    monkeypatch.setenv("CDP_TOKEN", "caii-token-for-tests")
    with FakeOpenAIServer(flavor=flavor) as server:
        result = generate(server, store, topics=[f"topic {i}" for i in range(12)], provider=provider)
    assert (result.ok, result.failed) == (12, 0)
    dialects = [dialect_of(body) for body in server.received]
    assert dialects[:len(sent)] == sent  # one refusal per dialect, then the one that works
    assert set(dialects[len(sent):]) == {sent[-1]}
    assert len(server.rejected) == len(sent) - 1 and result.attempts == len(server.received)
    note = next(n for n in result.notes if n.startswith("structured output:"))
    assert note.startswith(f"structured output: {sent[-1]}")
    assert all(d in note.split("refused", 1)[-1] for d in sent[:-1])


def test_a_vendor_field_the_server_ignores_still_gets_replies_parsed_from_the_schema_in_the_prompt(store):
    with FakeOpenAIServer(flavor="llama_cpp") as server:
        result = generate(server, store, structured_output="guided_json")  # llama.cpp ignores guided_json
    assert result.ok == 3
    body = server.requests[0]
    assert body["guided_json"] == SCHEMA or "guided_json" in body
    assert "validates against this JSON schema" in body["messages"][0]["content"]


def test_the_dialect_that_worked_is_remembered_so_the_next_job_asks_in_it_at_once(store):
    with FakeOpenAIServer(flavor="llama_cpp") as server:
        generate(server, store, topics=["Tries"])
        server.received.clear()
        server.rejected.clear()
        second = generate(server, store, topics=["Heaps", "Graphs"])
    assert second.ok == 2 and not server.rejected
    assert {dialect_of(body) for body in server.received} == {"json_object"}
    assert any("remembered" in n for n in second.notes)
    rows = store.connection().execute("SELECT provider, endpoint, model, structured_output FROM endpoints").fetchall()
    assert [tuple(r) for r in rows] == [("openai_compatible", server.url.rstrip("/"), "fake-model", "json_object")]


def test_the_job_notes_naming_the_dialect_are_kept_on_the_job_row(store):
    with FakeOpenAIServer(flavor="llama_cpp") as server:
        result = generate(server, store, topics=["Tries"])
    job = store.get_job(None, result.job_id)
    assert job["notes"] == result.notes and any(n.startswith("structured output: json_object") for n in job["notes"])


def test_jobs_show_prints_the_notes_naming_the_dialect(home, store, capsys):
    with FakeOpenAIServer(flavor="llama_cpp") as server:
        result = generate(server, store, topics=["Tries"])
    assert main(["jobs", "show", str(result.job_id), "--json", "--home", str(home)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["notes"] == result.notes


def test_a_pinned_dialect_the_server_refuses_is_not_swapped_for_another(store):
    with FakeOpenAIServer(flavor="llama_cpp") as server:
        provider = get_provider(spec(server, structured_output="json_schema"))

        async def ask():
            try:
                return await provider.complete(ChatRequest.of("hi", json_schema=SCHEMA))
            finally:
                await provider.aclose()

        import asyncio
        with pytest.raises(ProviderError) as caught:
            asyncio.run(ask())
    assert caught.value.kind == "bad_request" and len(server.received) == 1  # a validation error: not retried


def test_a_dialect_a_provider_cannot_speak_is_a_config_error():
    with pytest.raises(ConfigError, match="bedrock cannot ask for structured output as 'guided_json'"):
        get_provider(ModelSpec(provider="bedrock", model="anthropic.claude-3-haiku-20240307-v1:0",
                               region="us-east-1", structured_output="guided_json"))


def test_auto_is_left_out_of_the_stored_config_so_earlier_jobs_keep_their_identity():
    assert "structured_output" not in ModelSpec().model_dump()
    assert ModelSpec(structured_output="prompt").model_dump()["structured_output"] == "prompt"


def test_a_validation_error_in_a_500_body_is_a_bad_request_not_retried(store):
    with FakeOpenAIServer(flavor="llama_cpp") as server:
        provider = get_provider(spec(server))
        error = provider.classify(500, "1 validation error: {'type': 'literal_error', 'loc': ('body', 'x')}")
        plain = provider.classify(500, "The server had an error")
    assert error.kind == "bad_request" and plain.kind == "transient"


def test_a_server_that_refuses_every_request_alike_stops_the_job_after_eight_requests(home, capsys):
    with FakeOpenAIServer(flavor="openai", fault_rates={"invalid_request": 1.0}) as server:
        code = main(["generate", "--provider", "openai_compatible", "--model", "fake-model", "--base-url", server.url,
                     "--topics", *[f"topic {i}" for i in range(40)], "--per-topic", "1", "--batch-size", "1",
                     "--concurrency", "64", "--home", str(home)])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("sdstudio:")]  # not the bar
    assert code == 2 and len(server.received) <= 8
    assert len(err) == 1 and "Extra inputs are not permitted" in err[0] and "stopped the job" in err[0]
    with sqlite3.connect(home / "metadata.db") as conn:
        status, error = conn.execute("SELECT status, error FROM jobs").fetchone()
    assert status == "failed" and "Extra inputs are not permitted" in error


class RefusingServer(FakeOpenAIServer):
    """Refuses, as invalid, every request whose prompt names ``refused``; answers the others."""

    refused = "forbidden topic"

    async def _chat(self, request):
        from aiohttp import web

        body = await request.json()
        if self.refused in json.dumps(body):
            self.received.append(body)
            return web.json_response({"error": {"message": "Invalid 'messages[0].content': string too long.",
                                                "type": "invalid_request_error", "param": None, "code": None}},
                                     status=400)
        return await super()._chat(request)


def test_follow_up_rounds_do_not_ask_again_for_topics_the_server_refused(store):
    with RefusingServer(flavor="openai") as server:
        job = GenerationJob(model=spec(server), run=FAST, topics=["Tries", RefusingServer.refused], num_per_topic=1,
                            batch_size=1, max_rounds=2)
        result = GenerationRun(job, store=store).run()
    refused = [b for b in server.received if RefusingServer.refused in json.dumps(b)]
    assert result.ok == 1 and result.failed == 1 and len(refused) == 1


def test_a_job_records_the_model_the_server_says_answered(store):
    with FakeOpenAIServer(flavor="openai") as server:
        server.served_model = "fake-model-2026-11-30"
        result = generate(server, store, topics=["Tries"])
    assert store.get_job("generation", result.job_id)["model_id"] == "fake-model-2026-11-30"
    assert "asked for model fake-model; the server answered as fake-model-2026-11-30" in result.notes
