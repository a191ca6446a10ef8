"""Shared fixtures: a temporary SDSTUDIO_HOME per test and a store inside it."""
from __future__ import annotations

import pytest

from sdstudio.store import Store


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
