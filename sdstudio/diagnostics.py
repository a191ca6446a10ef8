"""Why a model reply is unusable, worded so the user knows what to change.

The advice "raise max_tokens" is only right when the provider says the reply hit the token limit: a reply
that ends inside its JSON after the model stopped on its own (``finish_reason: stop``) is malformed, and
more tokens would pay for the same broken reply. Providers name the limit differently (OpenAI-compatible
servers and llama.cpp ``length``, Bedrock's ``stopReason`` ``max_tokens``), so this module is the one
place that reads a finish reason; every workflow words its reply errors through ``explain``.
"""
from __future__ import annotations

__all__ = ["CUT_OFF_REASONS", "UNCLOSED", "cut_off", "explain", "no_json"]

# finish reasons meaning "stopped because the reply reached max_tokens", per provider
CUT_OFF_REASONS = frozenset({"length", "max_tokens"})
# what parsing can tell from the text alone: the reply ends before its JSON closes
UNCLOSED = "reply ends before its JSON closes (no complete item)"


def cut_off(finish_reason: str | None) -> bool:
    """True when the provider says the reply stopped at max_tokens."""
    return (finish_reason or "").lower() in CUT_OFF_REASONS


def explain(error: str, finish_reason: str | None, max_tokens: int | None = None) -> str:
    """``error`` about a reply, plus what the finish reason tells: "raise max_tokens" when it was cut off at
    the limit, "the model ended it itself" when an unclosed reply was not (never a max_tokens hint then)."""
    if cut_off(finish_reason):
        limit = f" ({max_tokens})" if max_tokens else ""
        return f"{error}; the reply was cut off at max_tokens{limit}: raise max_tokens"
    if error.startswith(UNCLOSED):
        if finish_reason:
            return (f"{error}: malformed JSON, the model ended the reply itself (finish reason {finish_reason!r}), "
                    "so more max_tokens would not help")
        return f"{error}; the provider did not say why the reply ended"
    return error


def no_json(text: str) -> str:
    """The error for a reply holding no JSON at all, quoting how it starts."""
    stripped = " ".join(text.split())
    if not stripped:
        return "reply is empty"
    head = stripped if len(stripped) <= 30 else stripped[:30] + " ..."
    return f"reply contains no JSON (starts with: {head!r})"
