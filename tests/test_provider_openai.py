"""OpenAI, OpenAI-compatible and Cloudera AI Inference providers, through the real `openai` client
against the loopback fake server."""
from __future__ import annotations

import asyncio
import json
import logging

import pytest

from sdstudio.config import ModelParameters, ModelSpec
from sdstudio.errors import ConfigError
from sdstudio.providers import ChatRequest, ProviderError, get_provider
from tests.helpers import free_port
from tests.fakes.openai_server import requested_schema

SCHEMA = {"type": "object", "properties": {"question": {"type": "string"}, "answer": {"type": "string"}},
          "required": ["question", "answer"]}
CANARY = "sk-canary-5f3e9d1c7b"


def compat(server, **kw):
    return get_provider(ModelSpec(provider="openai_compatible", model="fake-model", base_url=server.url, **kw))


def run(provider, method: str, *args):
    """Call a provider method on a fresh loop and close the provider's HTTP session on that loop."""
    async def go():
        try:
            return await getattr(provider, method)(*args)
        finally:
            await provider.aclose()
    return asyncio.run(go())


def test_parameters_and_schema_reach_the_server(openai_server):
    params = ModelParameters(temperature=0.3, top_p=0.9, top_k=20, max_tokens=77, stop=["###"], seed=7)
    completion = run(compat(openai_server), "complete", ChatRequest.of(
        [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}], params, SCHEMA))
    body = openai_server.requests[-1]
    assert (body["temperature"], body["top_p"], body["top_k"], body["max_tokens"], body["stop"], body["seed"]) \
        == (0.3, 0.9, 20, 77, ["###"], 7)
    # llama-cpp-python's server (the fake's default) takes the schema as json_object + schema, also in the prompt
    assert body["messages"][0]["role"] == "system" and body["messages"][0]["content"].startswith("be brief\n\n")
    assert body["response_format"] == {"type": "json_object", "schema": SCHEMA} and requested_schema(body) == SCHEMA
    assert completion.parsed == json.loads(completion.text) and set(completion.parsed) == {"question", "answer"}
    assert completion.usage.output_tokens > 0 and completion.finish_reason == "stop"


def test_openai_reads_its_key_from_the_environment_and_drops_top_k(openai_server, monkeypatch, caplog):
    openai_server.api_key = CANARY
    monkeypatch.setenv("OPENAI_API_KEY", CANARY)
    provider = get_provider(ModelSpec(provider="openai", model="fake-model", base_url=openai_server.url))
    with caplog.at_level(logging.WARNING, logger="sdstudio.providers"):
        completion = run(provider, "complete", ChatRequest.of("hi", ModelParameters(top_k=5, max_tokens=9)))
    assert completion.text.startswith("reply")
    body = openai_server.requests[-1]
    assert "top_k" not in body and body["max_completion_tokens"] == 9
    assert "does not support parameter 'top_k'" in caplog.text


def test_openai_without_a_key_is_a_clear_config_error(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="OPENAI_API_KEY is not set"):
        get_provider(ModelSpec(provider="openai"))


def test_compatible_server_key_comes_from_the_named_variable(openai_server, monkeypatch):
    openai_server.api_key = CANARY
    monkeypatch.setenv("MY_VLLM_KEY", CANARY)
    assert run(compat(openai_server, api_key_env="MY_VLLM_KEY"), "complete", ChatRequest.of("x")).text


def test_caii_uses_cdp_token(openai_server, monkeypatch):
    openai_server.api_key = CANARY
    monkeypatch.setenv("CDP_TOKEN", CANARY)
    provider = get_provider(ModelSpec(provider="caii", model="fake-model", base_url=openai_server.url))
    assert run(provider, "complete", ChatRequest.of("x")).text


def test_caii_falls_back_to_the_session_jwt_file(openai_server, monkeypatch, tmp_path):
    openai_server.api_key = CANARY
    monkeypatch.delenv("CDP_TOKEN", raising=False)
    jwt = tmp_path / "jwt"
    jwt.write_text(json.dumps({"access_token": CANARY}))
    monkeypatch.setenv("SDSTUDIO_CAII_JWT_FILE", str(jwt))
    provider = get_provider(ModelSpec(provider="caii", model="fake-model", base_url=openai_server.url))
    assert run(provider, "complete", ChatRequest.of("x")).text


def test_caii_without_any_token_says_where_it_looked(monkeypatch, tmp_path):
    monkeypatch.delenv("CDP_TOKEN", raising=False)
    monkeypatch.setenv("SDSTUDIO_CAII_JWT_FILE", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="set CDP_TOKEN"):
        get_provider(ModelSpec(provider="caii", model="m", base_url="http://127.0.0.1:1/v1"))


@pytest.mark.parametrize("fault, kind", [
    ("rate_limit", "rate_limited"), ("server_error", "transient"), ("malformed_body", "transient"),
    ("truncated", "transient"), ("context_length", "context_length"),
])
def test_server_faults_map_to_error_kinds(openai_server, fault, kind):
    openai_server.script.append(fault)
    with pytest.raises(ProviderError) as info:
        run(compat(openai_server), "complete", ChatRequest.of("x"))
    assert info.value.kind == kind
    if kind == "rate_limited":
        assert info.value.retry_after == pytest.approx(openai_server.retry_after)


def test_bad_key_is_an_auth_error_that_never_shows_the_key(openai_server, monkeypatch):
    openai_server.api_key = "the-right-key"
    monkeypatch.setenv("WRONG", CANARY)
    provider = compat(openai_server, api_key_env="WRONG")
    with pytest.raises(ProviderError) as info:
        run(provider, "complete", ChatRequest.of("x"))
    assert info.value.kind == "auth"
    assert CANARY not in str(info.value) and CANARY not in repr(provider)
    check = run(provider, "check")
    assert not check.ok and "refused the credentials" in check.message and CANARY not in check.message


def test_unknown_model_is_a_bad_request_and_check_names_it(openai_server):
    provider = get_provider(ModelSpec(provider="openai_compatible", model="nope", base_url=openai_server.url))
    with pytest.raises(ProviderError) as info:
        run(provider, "complete", ChatRequest.of("x"))
    assert info.value.kind == "bad_request"
    check = run(provider, "check")
    assert not check.ok and "'nope' is not offered" in check.message


def test_unreachable_host_is_transient_and_check_says_so():
    provider = get_provider(ModelSpec(provider="openai_compatible", model="m",
                                      base_url=f"http://127.0.0.1:{free_port()}/v1"))
    with pytest.raises(ProviderError) as info:
        run(provider, "complete", ChatRequest.of("x"))
    assert info.value.kind == "transient"
    assert "connection to" in run(provider, "check").message


def test_list_models_and_check(openai_server):
    provider = compat(openai_server)
    assert run(provider, "list_models") == ["fake-judge", "fake-model"]
    assert run(provider, "check").ok
