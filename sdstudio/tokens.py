"""Token counts for previews and estimates, without downloading a tokenizer.

A provider that declares ``exact_tokens`` (the embedded model: its llama.cpp tokenizer ships in the wheel)
counts exactly. Remote models' tokenizers are not installed and must not be fetched at run time, so their
counts are the usual ~4 characters per token estimate, flagged as such.
"""
from __future__ import annotations

from functools import lru_cache

from .config import ModelSpec

CHARS_PER_TOKEN = 4


def counts_exactly(spec: ModelSpec | None) -> bool:
    """Whether ``spec``'s provider declares an exact tokenizer (an unknown provider does not)."""
    from .errors import ConfigError
    from .providers import provider_class

    if spec is None:
        return False
    try:
        return bool(provider_class(spec.provider).exact_tokens)
    except ConfigError:
        return False


@lru_cache(maxsize=4)
def _counter(provider: str, model: str | None):
    """Built once per model: the tokenizer loads with the model."""
    from .providers import get_provider

    return get_provider(ModelSpec(provider=provider, model=model))


def count_tokens(text: str, spec: ModelSpec | None = None) -> tuple[int, bool]:
    """(token count, exact?) of ``text`` for the model ``spec`` names."""
    if spec is not None and counts_exactly(spec):
        try:
            return _counter(spec.provider, spec.model).count_tokens(text), True
        except Exception:  # noqa: BLE001 - a preview must not fail because the tokenizer did
            pass
    return max(1, (len(text) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN), False
