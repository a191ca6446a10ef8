"""BedrockProvider against a real HTTP fake of Bedrock, through the real boto3 client (SigV4 and all)."""
from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import time

import pytest

from sdstudio.config import ModelParameters, ModelSpec
from sdstudio.providers import ChatRequest, ProviderError, get_provider, run_sync
from sdstudio.providers.bedrock import BedrockProvider, model_family
from tests.fakes.bedrock_server import FakeBedrockServer
from tests.helpers import free_port

HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"
LLAMA = "meta.llama3-8b-instruct-v1:0"
from tests.conftest import AWS_ACCESS_KEY as ACCESS_KEY, AWS_CANARY_SECRET as CANARY_SECRET
CANARY_TOKEN = "canary-session-token-0a1b2c3d4e5f"


pytestmark = pytest.mark.usefixtures("aws_env")


@pytest.fixture
def server():
    with FakeBedrockServer(access_key=ACCESS_KEY) as fake:
        yield fake


@pytest.fixture
def make(server):
    """make(model=..., **spec) -> a provider aimed at the fake; all are closed after the test."""
    made: list[BedrockProvider] = []

    def build(model: str = HAIKU, **spec) -> BedrockProvider:
        spec = {"base_url": server.url, "region": "us-east-1", **spec}
        provider = get_provider(ModelSpec(provider="bedrock", model=model, **spec))
        made.append(provider)
        return provider

    yield build
    for provider in made:
        run_sync(provider.aclose())


def ask(provider, text="hello bedrock", **params):
    messages = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": text}]
    return run_sync(provider.complete(ChatRequest.of(messages, ModelParameters(**params))))


def failure(provider, **params) -> ProviderError:
    with pytest.raises(ProviderError) as info:
        ask(provider, **params)
    return info.value


def test_registry_builds_bedrock_provider(make):
    assert isinstance(make(), BedrockProvider)


def test_importing_the_module_does_not_import_boto3():
    code = "import sys, sdstudio.providers.bedrock; print('boto3' in sys.modules, 'botocore' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_concurrent_calls_run_in_parallel_off_the_event_loop(make, server):
    server.latency = 0.3
    provider = make()

    async def many():
        ticks = 0

        async def ticker():  # keeps running only if the loop is never blocked by boto3
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        tick = asyncio.create_task(ticker())
        started = time.monotonic()
        replies = await asyncio.gather(*(provider.complete(ChatRequest.of(f"q{i}")) for i in range(16)))
        elapsed = time.monotonic() - started
        tick.cancel()
        return replies, elapsed, ticks

    replies, elapsed, ticks = run_sync(many())
    assert [r.text for r in replies] == [f"echo: q{i}" for i in range(16)]
    assert elapsed < 16 * 0.3 / 3 and ticks > 10 * elapsed


def test_fake_rejects_unsigned_requests(server):
    import boto3
    from botocore import UNSIGNED
    from botocore.config import Config
    from botocore.exceptions import ClientError

    client = boto3.client("bedrock-runtime", endpoint_url=server.url,
                          config=Config(signature_version=UNSIGNED, retries={"total_max_attempts": 1}))
    with pytest.raises(ClientError) as info:
        client.converse(modelId=HAIKU, messages=[{"role": "user", "content": [{"text": "hi"}]}])
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert "Authorization" not in server.requests[-1]["headers"]


def test_chat_returns_text_usage_and_finish_reason(make):
    completion = ask(make(), "hello bedrock")
    assert completion.text == "echo: hello bedrock"
    assert (completion.usage.input_tokens, completion.usage.output_tokens) == (5, 3)
    assert completion.finish_reason == "end_turn"
    assert completion.parsed is None and completion.latency_ms > 0


def test_max_tokens_cut_is_reported_as_finish_reason(make):
    completion = ask(make(), "one two three four", max_tokens=2)
    assert completion.text == "echo: one" and completion.finish_reason == "max_tokens"


def test_request_maps_system_messages_and_inference_config(make, server):
    ask(make(), "hi", temperature=0.2, top_p=0.9, top_k=40, max_tokens=77, stop=["END"])
    [request] = server.converse_requests()
    assert request["model_id"] == HAIKU
    body = request["body"]
    assert body["system"] == [{"text": "You are terse."}]
    assert body["messages"] == [{"role": "user", "content": [{"text": "hi"}]}]
    assert body["inferenceConfig"] == {"maxTokens": 77, "temperature": 0.2, "topP": 0.9,
                                       "stopSequences": ["END"]}
    assert body["additionalModelRequestFields"] == {"top_k": 40}


def test_consecutive_same_role_messages_are_merged(make, server):
    messages = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"},
                {"role": "assistant", "content": "c"}, {"role": "user", "content": "d"}]
    run_sync(make().complete(ChatRequest.of(messages)))
    body = server.converse_requests()[0]["body"]
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert body["messages"][0]["content"] == [{"text": "a"}, {"text": "b"}]
    assert "system" not in body


def test_top_k_dropped_with_warning_for_family_without_it(make, server, caplog):
    with caplog.at_level(logging.WARNING, logger="sdstudio.providers"):
        ask(make(LLAMA), top_k=40)
    assert "additionalModelRequestFields" not in server.converse_requests()[0]["body"]
    assert any("top_k" in r.getMessage() for r in caplog.records)


def test_seed_dropped_with_warning(make, server, caplog):
    with caplog.at_level(logging.WARNING, logger="sdstudio.providers"):
        ask(make(), seed=7)
    assert "seed" not in json.dumps(server.converse_requests()[0]["body"])
    assert any("seed" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(("model", "family"), [
    (HAIKU, "anthropic"), ("us.anthropic.claude-3-5-sonnet-20240620-v1:0", "anthropic"),
    ("arn:aws:bedrock:us-east-1::foundation-model/mistral.mistral-7b-instruct-v0:2", "mistral"),
    (LLAMA, "meta"), ("arn:aws:bedrock:us-east-1:1:application-inference-profile/abc123", "")])
def test_model_family_sees_through_profiles_and_arns(model, family):
    assert model_family(model) == family


def test_sigv4_authorization_header_arrives(make, server):
    ask(make())
    auth = server.converse_requests()[0]["headers"]["Authorization"]
    assert auth.startswith(f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/")
    assert "/us-east-1/bedrock/aws4_request" in auth
    assert CANARY_SECRET not in auth


@pytest.mark.parametrize(("fault", "kind"), [
    ("throttling", "rate_limited"), ("service_unavailable", "transient"), ("model_timeout", "transient"),
    ("internal", "transient"), ("too_long", "context_length"), ("validation", "bad_request"),
    ("not_found", "bad_request"), ("access_denied", "auth"), ("unrecognized_client", "auth"),
    ("expired_token", "auth")])
def test_fault_maps_to_error_kind(make, server, fault, kind):
    server.inject(fault)
    error = failure(make())
    assert error.kind == kind
    assert error.retryable == (kind in ("rate_limited", "transient"))
    message = str(error)
    assert "\n" not in message and message.startswith("bedrock: ") and HAIKU in message


def test_unreachable_endpoint_is_transient(make):
    error = failure(make(base_url=f"http://127.0.0.1:{free_port()}"))
    assert error.kind == "transient" and error.retryable
    assert "cannot reach" in str(error)


def test_dropped_connection_is_transient(make, server):
    server.inject("drop")
    assert failure(make()).kind == "transient"


def test_read_timeout_is_transient(make, server):
    provider = make()
    provider.read_timeout_s = 0.3
    server.slow_seconds = 1.5
    server.inject("slow")
    assert failure(provider).kind == "transient"


def test_no_credentials_is_auth(make, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    error = failure(make())
    assert error.kind == "auth" and "credentials" in str(error)


def test_throttling_passes_retry_after(make, server):
    server.inject("throttling", headers={"Retry-After": "2.5"})
    error = failure(make())
    assert error.kind == "rate_limited" and error.retry_after == 2.5 and error.status == 429


def test_botocore_does_not_retry(make, server):
    server.inject("service_unavailable", times=3)
    failure(make())
    assert len(server.converse_requests()) == 1


ANSWER_SCHEMA = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}


def test_a_schema_is_asked_for_as_a_forced_tool_and_the_tool_input_is_the_reply(make, server):
    completion = run_sync(make().complete(ChatRequest.of("What is 2+2?", json_schema=ANSWER_SCHEMA)))
    body = server.converse_requests()[0]["body"]
    tool = body["toolConfig"]["tools"][0]["toolSpec"]
    assert tool["inputSchema"]["json"] == ANSWER_SCHEMA and body["toolConfig"]["toolChoice"] == {"tool": {"name": "output"}}
    assert "system" not in body  # the tool carries the schema: no instruction in the prompt
    assert set(completion.parsed) == {"answer"} and json.loads(completion.text) == completion.parsed


def test_a_model_without_tool_use_gets_the_schema_in_the_prompt_after_one_refusal(make, server):
    provider = make("meta.llama3-8b-instruct-v1:0")
    first = run_sync(provider.complete(ChatRequest.of("What is 2+2?", json_schema=ANSWER_SCHEMA)))
    second = run_sync(provider.complete(ChatRequest.of("And 3+3?", json_schema=ANSWER_SCHEMA)))
    bodies = [r["body"] for r in server.converse_requests()]
    assert [("toolConfig" in b) for b in bodies] == [True, False, False]  # refused once, then never asked again
    system = bodies[1]["system"][0]["text"]
    assert "JSON" in system and json.dumps(ANSWER_SCHEMA) in system
    assert first.parsed == {"answer": "What is 2+2?"} and second.parsed == {"answer": "And 3+3?"}
    assert "the server refused tool" in provider.negotiation().note()


def test_tool_choice_is_any_where_naming_the_tool_is_not_supported(make, server):
    run_sync(make("mistral.mistral-7b-instruct-v0:2").complete(ChatRequest.of("hi", json_schema=ANSWER_SCHEMA)))
    assert server.converse_requests()[0]["body"]["toolConfig"]["toolChoice"] == {"any": {}}


def test_list_models_returns_text_foundation_models_and_all_profile_pages(make, server):
    models = run_sync(make().list_models())
    assert models == ["anthropic.claude-3-haiku-20240307-v1:0", "meta.llama3-8b-instruct-v1:0",
                      "mistral.mistral-7b-instruct-v0:2", "us.anthropic.claude-3-haiku-20240307-v1:0",
                      "us.meta.llama3-2-1b-instruct-v1:0", "us.anthropic.claude-3-5-sonnet-20240620-v1:0"]
    pages = [r for r in server.requests if r["operation"] == "ListInferenceProfiles"]
    assert [r["query"].get("nextToken") for r in pages] == [None, "2"]


def test_check_ok(make):
    result = run_sync(make().check())
    assert result.ok, result.message


def test_check_with_bad_credentials_says_so(make, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDWRONGWRONGWRONG0")
    result = run_sync(make().check())
    assert not result.ok
    assert "UnrecognizedClientException" in result.message and "credentials" in result.message


def test_check_with_unreachable_host_says_so(make):
    result = run_sync(make(base_url=f"http://127.0.0.1:{free_port()}").check())
    assert not result.ok and "cannot reach" in result.message


def test_check_with_unknown_model_says_so(make):
    result = run_sync(make("anthropic.claude-nonexistent-v9:0").check())
    assert not result.ok and "not offered" in result.message


def test_check_falls_back_to_a_probe_when_listing_is_denied(make, server):
    server.inject("access_denied")  # ListFoundationModels denied, Converse allowed
    result = run_sync(make().check())
    assert result.ok, result.message
    assert server.converse_requests()[0]["body"]["inferenceConfig"]["maxTokens"] == 1


def test_secrets_never_appear_in_repr_or_errors(make, server, monkeypatch):
    monkeypatch.setenv("AWS_SESSION_TOKEN", CANARY_TOKEN)
    provider = make()
    assert CANARY_SECRET not in repr(provider) and CANARY_TOKEN not in repr(provider)
    for fault in ("validation", "unrecognized_client", "throttling"):
        server.inject(fault, message=f"echoed {CANARY_SECRET} and {CANARY_TOKEN}")
        message = str(failure(provider))
        assert CANARY_SECRET not in message and CANARY_TOKEN not in message and "***" in message


def test_missing_region_is_a_bad_request_that_says_so(make, monkeypatch):
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    error = failure(make(region=None))
    assert error.kind == "bad_request" and "region" in str(error)
