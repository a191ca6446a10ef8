"""What an OpenAI-style chat reply's message holds: its text, and the reasoning a thinking model wrote first.

Kept apart from ``openai_compat`` (the transport and its errors) because the on-demand path and a batch's output
file (executors/batch_openai.py) read a message the same way, through ``completion_from``.

Reasoning comes back beside the answer, never inside it, under the name the server chose: ``reasoning_content``
(DeepSeek's API, llama.cpp's server and vLLM with a reasoning parser, SGLang) or ``reasoning`` (newer vLLM,
OpenRouter, Ollama's OpenAI-compatible endpoint). Either is kept as text; a server that sends neither has none.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

REASONING_FIELDS = ("reasoning_content", "reasoning")


def reply_text(message: Mapping[str, Any], dialect: str | None) -> str:
    """The reply's text: its content, or a forced tool call's arguments (the JSON the tool dialect asked for)."""
    if dialect == "tool":
        calls = message.get("tool_calls") or []
        if calls:
            return calls[0]["function"]["arguments"] or ""
    return message.get("content") or ""


def reply_reasoning(message: Mapping[str, Any]) -> str | None:
    """The reasoning the message carries apart from its content, or None (an empty one is none)."""
    for name in REASONING_FIELDS:
        value = message.get(name)
        if isinstance(value, str) and value.strip():
            return value
    return None
