"""One ChatRequest through every registered provider: each answers with the same Completion shape."""
from __future__ import annotations

import pytest

from sdstudio.config import ModelParameters, ModelSpec
from sdstudio.providers import REGISTRY, ChatRequest, Completion, get_provider, run_sync
from tests.fakes.bedrock_server import FakeBedrockServer

REQUEST = ChatRequest.of([{"role": "system", "content": "Answer in one word."},
                          {"role": "user", "content": "Name a colour."}],
                         ModelParameters(temperature=0.0, max_tokens=8, seed=1))


@pytest.fixture
def specs(openai_server, aws_env, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("CDP_TOKEN", "cdp-test")
    with FakeBedrockServer() as bedrock:
        yield {
            "openai": ModelSpec(provider="openai", model="fake-model", base_url=openai_server.url),
            "openai_compatible": ModelSpec(provider="openai_compatible", model="fake-model",
                                           base_url=openai_server.url),
            "caii": ModelSpec(provider="caii", model="fake-model", base_url=openai_server.url),
            "bedrock": ModelSpec(provider="bedrock", model="anthropic.claude-3-haiku-20240307-v1:0",
                                 base_url=bedrock.url, region="us-east-1"),
            "local": ModelSpec(provider="local"),
        }


def test_every_provider_answers_the_same_request(specs):
    assert set(specs) == set(REGISTRY)
    for name, spec in specs.items():
        provider = get_provider(spec)

        async def ask():
            try:
                return await provider.complete(REQUEST), await provider.list_models()
            finally:
                await provider.aclose()

        completion, models = run_sync(ask())
        assert isinstance(completion, Completion), name
        assert completion.text.strip() and completion.usage.output_tokens > 0, name
        assert completion.latency_ms > 0 and models, name
