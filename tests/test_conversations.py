"""Multi-turn conversations against the loopback fake server: TRL's multi-turn export, resume mid-conversation
without repaying a turn, a failed turn, the judge over whole conversations, the dry run."""
from __future__ import annotations

import json
import threading

import pytest

from sdstudio.cli import main
from sdstudio.configs.conversations import ConversationJob
from sdstudio.store import Store
from sdstudio.workflows.conversations import ConversationRun
from tests.fakes.openai_server import FakeOpenAIServer


def config(server: FakeOpenAIServer, **overrides) -> ConversationJob:
    data = {"topics": ["brewing green tea"], "turns": 3, "system_prompt": "You are a tea expert.",
            "model": {"provider": "openai_compatible", "base_url": server.url, "model": "fake-model"},
            "run": {"concurrency": 1, "max_attempts": 1}}
    data.update(overrides)
    return ConversationJob.model_validate(data)


def alternates(messages: list[dict]) -> bool:
    roles = [m["role"] for m in messages if m["role"] != "system"]
    return roles[0] == "user" and all(a != b for a, b in zip(roles, roles[1:]))


def test_sft_messages_export_loads_with_datasets_and_alternates_roles(home, openai_server, tmp_path):
    base = ["--home", str(home), "--provider", "openai_compatible", "--base-url", openai_server.url,
            "--model", "fake-model"]
    assert main(["conversations", *base[:2], *base[2:], "--topics", "tea", "coffee", "--turns", "2",
                 "--per-topic", "2", "--system-prompt", "Be brief.", "--json"]) == 0
    out = tmp_path / "out"
    assert main(["export", "--home", str(home), "--job", "1", "--style", "sft-messages", "--out", str(out)]) == 0
    import datasets

    data = datasets.load_dataset("json", data_files=str(out / "train.jsonl"), split="train")
    assert data.column_names == ["messages"] and len(data) == 4
    for row in data:
        messages = row["messages"]
        assert messages[0] == {"role": "system", "content": "Be brief."}
        assert [m["role"] for m in messages[1:]] == ["user", "assistant", "user", "assistant"]
        assert all(m["content"] for m in messages)
    chat = tmp_path / "chat"
    assert main(["export", "--home", str(home), "--job", "1", "--style", "openai-chat", "--out", str(chat)]) == 0
    first = json.loads((chat / "train.jsonl").read_text().splitlines()[0])
    assert list(first) == ["messages"] and alternates(first["messages"])


def test_each_assistant_turn_sees_the_whole_conversation_and_the_simulator_a_transcript(home, openai_server):
    ConversationRun(config(openai_server, turns=2), home=home).run()
    bodies = openai_server.requests
    assert len(bodies) == 4
    assistant = [b for b in bodies if b["messages"][0]["content"] == "You are a tea expert."]
    assert [len(b["messages"]) for b in assistant] == [2, 4]  # system + the chat so far, ending with the user
    assert all(b["messages"][-1]["role"] == "user" for b in assistant)
    simulator = [b for b in bodies if b not in assistant]
    assert all(len(b["messages"]) == 2 for b in simulator)
    assert "The conversation so far" in simulator[1]["messages"][1]["content"]


def test_a_failed_turn_keeps_the_conversation_failed_with_its_turns_and_a_rerun_repays_none(home, openai_server):
    openai_server.script.extend(["ok", "ok", "ok", "invalid_request"])  # the 4th message (the 2nd answer) is refused
    first = ConversationRun(config(openai_server), home=home).run()
    assert (first.ok, first.failed) == (0, 1)
    rec = next(Store.open(home).records("generation", first.job_id))
    assert rec["status"] == "failed"
    assert "turn 2 (assistant) failed" in rec["error"] and "keeps its 3 of 6 messages" in rec["error"]
    assert [m["role"] for m in rec["output"]["messages"]] == ["system", "user", "assistant", "user"]
    assert len(rec["provenance"]["turns"]) == 3
    answered = [json.dumps(b, sort_keys=True) for b in openai_server.answered]
    assert len(answered) == 3

    openai_server.requests.clear()
    again = ConversationRun(config(openai_server), home=home).run()
    assert again.job_id == first.job_id and (again.ok, again.failed) == (1, 0)
    assert again.requests_sent == 3 and len(openai_server.requests) == 3  # messages 4-6 only
    assert not {json.dumps(b, sort_keys=True) for b in openai_server.requests} & set(answered)
    rec = next(Store.open(home).records("generation", first.job_id))
    assert rec["status"] == "ok" and alternates(rec["output"]["messages"]) and len(rec["output"]["messages"]) == 7


def test_a_killed_run_resumes_mid_conversation_without_repaying_a_turn(home):
    cancel = threading.Event()
    seen: list[str] = []

    def reply(body: dict) -> str:
        seen.append(json.dumps(body["messages"], sort_keys=True))
        if len(seen) == 2:
            cancel.set()  # stop while the conversation is half done
        return f"message {len(seen)}"

    with FakeOpenAIServer(reply=reply) as server:
        first = ConversationRun(config(server, turns=2), home=home).run(cancel_event=cancel)
        assert first.status == "cancelled"
        rec = next(Store.open(home).records("generation", first.job_id))
        kept = len(rec["provenance"]["turns"])
        assert rec["status"] == "failed" and rec["error"].startswith("unfinished") and 1 <= kept < 4
        before = len(server.requests)
        again = ConversationRun(config(server, turns=2), home=home).run(resume=first.job_id)
        assert again.ok == 1 and len(server.requests) - before == 4 - kept
        assert len(set(seen)) == len(seen)  # no request asked twice
    messages = next(Store.open(home).records("generation", first.job_id))["output"]["messages"]
    assert len(messages) == 5 and alternates(messages)


def test_the_judge_scores_whole_conversations(home, openai_server):
    result = ConversationRun(config(openai_server, turns=2), home=home).run()
    assert main(["evaluate", "--home", str(home), "--job", str(result.job_id), "--provider", "openai_compatible",
                 "--base-url", openai_server.url, "--model", "fake-judge", "--json"]) == 0
    judged = [b for b in openai_server.requests if b["model"] == "fake-judge"]
    assert len(judged) == 1
    prompt = judged[0]["messages"][-1]["content"]
    first_user = next(Store.open(home).records("generation", result.job_id))["output"]["messages"][1]["content"]
    assert first_user in prompt and "Assistant:" in prompt and "User:" in prompt  # every turn is in front of it


def test_dry_run_shows_the_first_prompts_and_sends_nothing(home, openai_server, capsys):
    code = main(["conversations", "--home", str(home), "--provider", "openai_compatible", "--base-url",
                 openai_server.url, "--model", "fake-model", "--topics", "tea", "--turns", "4", "--per-topic", "3",
                 "--dry-run", "--json"])
    shown = json.loads(capsys.readouterr().out)
    assert code == 0 and shown["requests"] == 24 and shown["conversations"] == 3 and "tea" in shown["prompt"]
    assert openai_server.requests == []


def test_the_user_simulator_may_be_another_model(home, openai_server):
    ConversationRun(config(openai_server, turns=1, user_model={"model": "fake-judge"}), home=home).run()
    assert [b["model"] for b in openai_server.requests] == ["fake-judge", "fake-model"]


@pytest.mark.parametrize("bad", [{"turns": 0}, {"topics": [" "]}, {"run": {"executor": "spark"}}])
def test_bad_configs_are_refused_in_one_line(home, openai_server, bad):
    with pytest.raises(Exception) as error:
        config(openai_server, **bad)
    assert "\n" not in str(error.value).strip().splitlines()[-1]
