"""Reasoning traces: what a thinking model returns apart from its answer (``reasoning_content`` on
OpenAI-compatible servers, ``reasoningContent`` blocks on Bedrock Converse) is stored with the record and
exported only with --with-reasoning."""
from __future__ import annotations

import json

import pytest

from sdstudio.cli import main
from sdstudio.config import ModelSpec
from sdstudio.configs.conversations import ConversationJob
from sdstudio.providers import ChatRequest, get_provider, run_sync
from sdstudio.store import Store
from sdstudio.workflows.conversations import ConversationRun
from tests.conftest import AWS_ACCESS_KEY
from tests.fakes.bedrock_server import FakeBedrockServer
from tests.fakes.openai_server import FakeOpenAIServer

HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"


def thought(body: dict) -> str:
    return f"thinking about {len(body['messages'])} message(s)"


@pytest.fixture
def thinking_server():
    with FakeOpenAIServer(reasoning=thought) as server:
        yield server


def export(home, job_id, style, out, *extra) -> list[dict]:
    assert main(["export", "--home", str(home), "--job", str(job_id), "--style", style, "--out", str(out),
                 *extra]) == 0
    return [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]


def generate(home, server) -> int:
    assert main(["generate", "--home", str(home), "--provider", "openai_compatible", "--base-url", server.url,
                 "--model", "fake-model", "--use-case", "custom", "--topics", "passwords", "--per-topic", "2",
                 "--batch-size", "1", "--json"]) == 0
    return 1


def test_reasoning_content_is_stored_with_each_record(home, thinking_server):
    job = generate(home, thinking_server)
    records = list(Store.open(home).records("generation", job, "ok"))
    assert len(records) == 2 and all(r["reasoning"].startswith("thinking about") for r in records)
    assert all("thinking" not in json.dumps(r["output"]) for r in records)  # the answer stays the answer


def test_a_server_without_reasoning_stores_none(home, openai_server):
    job = generate(home, openai_server)
    assert [r["reasoning"] for r in Store.open(home).records("generation", job, "ok")] == [None, None]


def test_export_keeps_reasoning_only_when_asked(home, thinking_server, tmp_path):
    job = generate(home, thinking_server)
    kept = export(home, job, "sft-messages", tmp_path / "kept", "--with-reasoning")
    assert all(row["messages"][-1]["thinking"].startswith("thinking about") for row in kept)
    assert all("thinking" not in m for row in kept for m in row["messages"][:-1])
    dropped = export(home, job, "sft-messages", tmp_path / "dropped")
    assert all(set(m) == {"role", "content"} for row in dropped for m in row["messages"])
    pairs = export(home, job, "sft-prompt-completion", tmp_path / "pairs", "--with-reasoning")
    assert all(set(row) == {"prompt", "completion", "reasoning"} and row["reasoning"] for row in pairs)
    assert all(set(row) == {"prompt", "completion"} for row in export(home, job, "sft-prompt-completion",
                                                                      tmp_path / "plain"))
    raw = export(home, job, "raw", tmp_path / "raw")
    assert all("reasoning" not in row for row in raw)
    import datasets

    data = datasets.load_dataset("json", data_files=str(tmp_path / "kept" / "train.jsonl"), split="train")
    assert data[0]["messages"][-1]["thinking"].startswith("thinking about")


def test_styles_without_a_place_for_reasoning_refuse_it(home, thinking_server, tmp_path, capsys):
    job = generate(home, thinking_server)
    assert main(["export", "--home", str(home), "--job", str(job), "--style", "openai-chat", "--out",
                 str(tmp_path / "x"), "--with-reasoning"]) == 2
    assert "--with-reasoning" in capsys.readouterr().err


def test_a_conversations_reasoning_goes_on_its_assistant_turns(home, thinking_server, tmp_path):
    config = ConversationJob.model_validate({
        "topics": ["tea"], "turns": 2, "model": {"provider": "openai_compatible", "base_url": thinking_server.url,
                                                  "model": "fake-model"}})
    result = ConversationRun(config, home=home).run()
    rec = next(Store.open(home).records("generation", result.job_id))
    assert all(turn["reasoning"] for turn in rec["provenance"]["turns"])
    kept = export(home, result.job_id, "sft-messages", tmp_path / "kept", "--with-reasoning")[0]["messages"]
    assert [bool(m.get("thinking")) for m in kept] == [False, True, False, True]  # assistant turns only
    dropped = export(home, result.job_id, "sft-messages", tmp_path / "dropped")[0]["messages"]
    assert all(set(m) == {"role", "content"} for m in dropped)
    raw = export(home, result.job_id, "raw", tmp_path / "raw")[0]
    assert "reasoning" not in json.dumps(raw["provenance"])


@pytest.mark.usefixtures("aws_env")
def test_bedrock_reasoning_content_blocks_are_stored_and_exported(home, tmp_path):
    with FakeBedrockServer(access_key=AWS_ACCESS_KEY, reasoning=lambda body: "weighing the options") as fake:
        provider = get_provider(ModelSpec(provider="bedrock", model=HAIKU, base_url=fake.url, region="us-east-1"))
        try:
            completion = run_sync(provider.complete(ChatRequest.of("hello")))
        finally:
            run_sync(provider.aclose())
        assert completion.reasoning == "weighing the options" and completion.text == "echo: hello"
        config = ConversationJob.model_validate({
            "topics": ["tea"], "turns": 1,
            "model": {"provider": "bedrock", "model": HAIKU, "base_url": fake.url, "region": "us-east-1"}})
        result = ConversationRun(config, home=home).run()
    assert result.ok == 1
    turns = next(Store.open(home).records("generation", result.job_id))["provenance"]["turns"]
    assert [t.get("reasoning") for t in turns] == ["weighing the options"] * 2
    kept = export(home, result.job_id, "sft-messages", tmp_path / "kept", "--with-reasoning")[0]["messages"]
    assert kept[-1] == {"role": "assistant", "content": kept[-1]["content"], "thinking": "weighing the options"}
    assert "thinking" not in json.dumps(export(home, result.job_id, "sft-messages", tmp_path / "plain"))


def test_the_export_page_keeps_reasoning_when_its_box_is_ticked(home, thinking_server):
    from sdstudio.ui import ExportApp

    job = generate(home, thinking_server)
    app = ExportApp(home=home)
    app.jobs.value, app.style.value = (job,), "sft-messages"
    assert app.config().with_reasoning is False
    app.with_reasoning.value = True
    app.export()
    written = [path for path in (home / "exports").rglob("train.jsonl")]
    rows = [json.loads(line) for line in written[0].read_text().splitlines()]
    assert len(rows) == 2 and all(row["messages"][-1]["thinking"].startswith("thinking about") for row in rows)
