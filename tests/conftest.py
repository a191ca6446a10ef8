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
