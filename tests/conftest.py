"""Shared fixtures: a temporary SDSTUDIO_HOME per test and a store inside it."""
from __future__ import annotations

import os

import pytest

from sdstudio.store import Store

AWS_ACCESS_KEY = "AKIDFAKEEXAMPLE12345"
AWS_CANARY_SECRET = "canary-secret-5f1e2d3c4b5a69788796a5b4c3d2e1f0"


@pytest.fixture
def home(tmp_path, monkeypatch):
    root = tmp_path / "home"
    monkeypatch.setenv("SDSTUDIO_HOME", str(root))
    return root


@pytest.fixture
def store(home):
    s = Store.open(home)
    yield s
    s.close()


@pytest.fixture
def openai_server():
    """A real OpenAI-compatible HTTP server on 127.0.0.1 (see tests/fakes/openai_server.py)."""
    from tests.fakes.openai_server import FakeOpenAIServer

    with FakeOpenAIServer() as server:
        yield server


@pytest.fixture
def aws_env(monkeypatch, tmp_path):
    """Fake credentials only; no real AWS config, no instance metadata lookups, no proxies."""
    for variable in list(os.environ):
        if variable.startswith("AWS_") or variable.lower().endswith("_proxy"):
            monkeypatch.delenv(variable)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", AWS_ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_CANARY_SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture(scope="session")
def llama_server():
    """llama-cpp-python's own OpenAI-compatible server with the embedded GGUF (tests/llama_server.py). Not
    skipped when its extra is missing: CI installs the dev extra, so a missing server is a failure."""
    from tests.llama_server import LlamaServer, LlamaServerError

    try:
        server = LlamaServer().__enter__()
    except LlamaServerError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield server
    finally:
        server.stop()
