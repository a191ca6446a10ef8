"""One ChatRequest through every registered provider: each answers with the same Completion shape."""
from __future__ import annotations

import ast
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

import sdstudio

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


# -- providers declare themselves -------------------------------------------------------------------------

PROVIDER_NAMES = ("bedrock", "caii", "openai_compatible", "openai", "local")
# Literal provider names allowed outside sdstudio/providers/, each with why: (path, value) -> how many.
NAME_EXCEPTIONS = {
    # ModelSpec's default provider (config cannot import providers: providers imports config), and
    # RunSettings' default executor (an executor's name, the in-process engine, not a provider)
    ("sdstudio/config.py", "local"): 2,
    ("sdstudio/executors/__init__.py", "local"): 1,  # an executor's name (the in-process engine), not a provider
    ("sdstudio/datacard.py", "openai"): 1,
    ("sdstudio/executors/spark.py", "local"): 1,  # a partition runs the in-process executor
    ("sdstudio/executors/batch_openai.py", "openai"): 1,  # the batch backend's name (a batches row's backend)
    ("sdstudio/executors/batch_bedrock.py", "bedrock"): 2,  # the batch backend's name and its provider's
    ("sdstudio/executors/spark_session.py", "local"): 3,  # Spark's local[N] masters
    ("sdstudio/ui/run_settings.py", "local"): 1,  # the in-process executor's name in the Run on picker  # a Hugging Face dataset tag of the openai-chat export style
}


def test_every_registered_provider_declares_its_fields_key_variable_and_status(monkeypatch):
    from sdstudio.providers import describe, provider_class, provider_names

    assert provider_names() == sorted(REGISTRY)
    for name in provider_names():
        info = describe(name)
        assert provider_class(name).name == name
        assert info.ui_fields and info.ui_fields[0] == "model", name
        assert set(info.ui_fields) <= set(ModelSpec.model_fields) - {"provider", "parameters"}, name
        assert info.key_env is None or info.key_env.replace("_", "").isalnum(), name
        assert info.key_env or not info.needs_key, f"{name} needs a key but names no variable"
        assert info.summary, name
        assert isinstance(provider_class(name).status(), str), name


def test_the_default_provider_is_registered_and_is_the_model_specs_default():
    from sdstudio.providers import DEFAULT_PROVIDER

    assert DEFAULT_PROVIDER in REGISTRY and ModelSpec().provider == DEFAULT_PROVIDER


def test_the_model_picker_shows_exactly_the_fields_each_provider_declares():
    from sdstudio.providers import describe
    from sdstudio.ui.components import ModelPicker

    picker = ModelPicker()
    for name in sorted(REGISTRY):
        picker.provider.value = name
        assert set(picker.shown_fields()) == set(describe(name).ui_fields), name


def test_the_model_picker_passes_the_key_variable_name_into_the_spec():
    from sdstudio.ui.components import ModelPicker

    picker = ModelPicker("openai_compatible", "m", "http://127.0.0.1:9/v1", api_key_env="MY_KEY")
    assert picker.spec().api_key_env == "MY_KEY"


def test_a_key_typed_where_its_variable_name_belongs_is_refused_without_echoing_it():
    from sdstudio.ui.components import ModelPicker

    picker = ModelPicker("openai_compatible", "m", "http://127.0.0.1:9/v1")
    picker.api_key_env.value = "sk-live-abc/123"
    assert picker.list_models() == []
    assert "sds-error" in picker.status.value and "api_key_env" in picker.status.value
    assert "sk-live-abc" not in picker.status.value


def test_status_lines_say_what_is_configured_and_never_show_a_secret(monkeypatch, tmp_path):
    from sdstudio.providers import statuses

    monkeypatch.setenv("OPENAI_API_KEY", "sk-status-canary")
    monkeypatch.setenv("CDP_TOKEN", "cdp-status-canary")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDSTATUSCANARY")
    lines = statuses()
    assert set(lines) == set(REGISTRY)
    assert lines["openai"] == "OPENAI_API_KEY set" and lines["caii"] == "CDP_TOKEN set"
    assert all("canary" not in line.lower() for line in lines.values())
    monkeypatch.delenv("OPENAI_API_KEY")
    monkeypatch.delenv("CDP_TOKEN")
    monkeypatch.setenv("SDSTUDIO_CAII_JWT_FILE", str(tmp_path / "no-jwt"))
    lines = statuses()
    assert lines["openai"] == "" and lines["caii"] == ""


def test_model_id_is_the_resolved_model_for_every_provider(monkeypatch):
    from sdstudio.providers import get_provider, model_id
    from sdstudio.providers.local import packaged_model_path

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    assert model_id(ModelSpec()) == packaged_model_path().stem  # the embedded GGUF's name
    assert model_id(ModelSpec(provider="openai")) == "gpt-4o-mini"  # the provider's default
    assert model_id(ModelSpec(provider="openai_compatible", base_url="http://127.0.0.1:9/v1")) is None
    spec = ModelSpec(provider="bedrock", model="anthropic.claude-3-haiku-20240307-v1:0", region="us-east-1")
    assert model_id(spec) == get_provider(spec).model_id == spec.model


def test_model_id_loads_no_model_and_imports_no_sdk():
    code = ("import sys; from sdstudio.config import ModelSpec; from sdstudio.providers import model_id, statuses; "
            "model_id(ModelSpec()); model_id(ModelSpec(provider='bedrock', model='m', region='us-east-1')); "
            "statuses(); print(sorted(m for m in ('llama_cpp', 'boto3', 'botocore', 'openai') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_only_providers_that_declare_a_tokenizer_count_exactly():
    from sdstudio.providers import describe
    from sdstudio.tokens import count_tokens, counts_exactly

    for name in sorted(REGISTRY):
        spec = ModelSpec(provider=name)
        assert counts_exactly(spec) == describe(name).exact_tokens, name
        if not counts_exactly(spec):  # an estimate needs no provider at all, not even its settings
            assert count_tokens("twelve chars", spec) == (3, False), name
    assert count_tokens("hello world", ModelSpec())[1] is True
    assert counts_exactly(ModelSpec(provider="no-such-provider")) is False


def test_prices_come_from_the_provider_class():
    from sdstudio.pricing import price_for
    from sdstudio.providers import price

    assert price(ModelSpec()).cost(10**6, 10**6) == 0 and price(ModelSpec()).known  # your own CPU
    spec = ModelSpec(provider="bedrock", model="us.anthropic.claude-3-haiku-20240307-v1:0", region="us-east-1")
    assert price(spec) == price_for(spec.model)


def test_the_provider_flag_help_lists_every_registered_provider():
    import argparse

    from sdstudio.commands.common import add_model_flags

    parser = argparse.ArgumentParser()
    add_model_flags(parser)
    help_text = next(a.help for a in parser._actions if "--provider" in a.option_strings)
    assert all(name in help_text for name in REGISTRY)


def test_no_provider_name_is_hard_coded_outside_the_providers_package():
    root = Path(sdstudio.__file__).parent
    found: Counter[tuple[str, str]] = Counter()
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root.parent).as_posix()
        if relative.startswith("sdstudio/providers/"):
            continue
        for node in ast.walk(ast.parse(path.read_text(), relative)):
            if isinstance(node, ast.Constant) and node.value in PROVIDER_NAMES:
                found[(relative, node.value)] += 1
    unexpected = {key: n for key, n in found.items() if n > NAME_EXCEPTIONS.get(key, 0)}
    assert not unexpected, ("provider names belong to sdstudio/providers/ (use DEFAULT_PROVIDER, describe(), "
                            f"statuses(), provider_names()): {unexpected}")


def test_a_providers_client_loads_on_first_use_or_before_a_job_not_when_it_is_built():
    script = ("import sys\n"
              "from sdstudio.config import ModelSpec\n"
              "from sdstudio.providers import get_provider, load_clients\n"
              "provider = get_provider(ModelSpec(provider='openai_compatible', model='m', base_url='http://127.0.0.1:9/v1'))\n"
              "built = 'aiohttp' in sys.modules\n"
              "load_clients(provider)\n"
              "print(built, 'aiohttp' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).resolve().parent.parent,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "False True", done.stderr
