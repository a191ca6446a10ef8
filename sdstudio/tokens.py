"""Token counts for previews and estimates, without downloading a tokenizer.

The embedded model counts exactly with its own llama.cpp tokenizer (it ships in the wheel). Remote
models' tokenizers are not installed and must not be fetched at run time, so their counts are the usual
~4 characters per token estimate, flagged as such.
"""
from __future__ import annotations

from functools import lru_cache

from .config import ModelSpec

CHARS_PER_TOKEN = 4


@lru_cache(maxsize=4)
def _local_provider(model: str | None):
    from .providers import get_provider

    return get_provider(ModelSpec(provider="local", model=model))


def count_tokens(text: str, spec: ModelSpec | None = None) -> tuple[int, bool]:
    """(token count, exact?) of ``text`` for the model ``spec`` names."""
    if spec is not None and spec.provider == "local":
        try:
            return _local_provider(spec.model).count_tokens(text), True
        except Exception:  # noqa: BLE001 - a preview must not fail because the tokenizer did
            pass
    return max(1, (len(text) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN), False
