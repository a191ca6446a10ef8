"""Fixtures for the reliability suite (the project-wide ones in tests/conftest.py apply too)."""
from __future__ import annotations

import os
import random

import pytest

from tests.fakes.openai_server import FakeOpenAIServer


class CountingServer(FakeOpenAIServer):
    """The fake OpenAI server, also counting which fault it injected into how many replies."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.injected: dict[str, int] = {}

    def _pick_fault(self):
        fault = super()._pick_fault()
        self.injected[fault or "none"] = self.injected.get(fault or "none", 0) + 1
        return fault


@pytest.fixture
def counting_server():
    with CountingServer() as server:
        yield server


@pytest.fixture
def rng():
    """Random choices that can be replayed: the seed is in every failure message (RELIABILITY_SEED=n)."""
    seed = int(os.environ.get("RELIABILITY_SEED") or random.SystemRandom().randrange(10**6))
    generator = random.Random(seed)
    generator.seed_value = seed  # type: ignore[attr-defined]
    return generator
