"""Structured output: how to ask a server for JSON that follows a schema, found by trying.

Servers speak different dialects. OpenAI and recent vLLM / LM Studio / Ollama take
``response_format: {"type": "json_schema", ...}``; llama-cpp-python's server takes
``{"type": "json_object", "schema": ...}`` and answers json_schema with a 500; older vLLM takes a top-level
``guided_json``; NVIDIA NIM (behind Cloudera AI Inference) ``nvext.guided_json``; Bedrock Converse has no schema
field, but a forced tool whose input schema is the item schema gives schema-shaped output; some servers take
none of these, and the schema goes in the prompt (parsing.py repairs what comes back).

Each provider lists the dialects it may support, strongest first (``chain``). A ``Negotiation`` starts at the
first (or at what metadata.db remembers for this endpoint and model), sends one request at a time until a reply
confirms the dialect, and on an error that says the field is not understood falls back to the next one. So a
server that rejects json_schema costs one extra request per run, not one per item, and no request of a run is
sent more than once per dialect tried. ``model.structured_output`` pins a dialect (no fallback).

Vendor fields that a server does not know are often ignored silently (llama-cpp-python answers ``guided_json``
with free text), so every dialect except json_schema and tool also puts the schema in the prompt: the reply is
then still parsed and validated against it, whatever the server made of the field.
"""
from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

DIALECTS = ("json_schema", "json_object", "guided_json", "nvext", "tool", "prompt")
CHOICES = ("auto", *DIALECTS)
SCHEMA_IN_PROMPT = frozenset({"json_object", "guided_json", "nvext", "prompt"})
TOOL_NAME = "output"

# what an error that refuses a dialect names (lower case), beyond a generic "unknown field" message
_FIELD_MARKERS: dict[str, tuple[str, ...]] = {
    "json_schema": ("response_format", "json_schema"),
    "json_object": ("response_format", "json_object"),
    "guided_json": ("guided_json", "guided_decoding"),
    "nvext": ("nvext", "guided_json"),
    "tool": ("tool", "function"),
    "prompt": (),
}
# statuses a server answers an unknown or unsupported field with: 400/422 (most), 500 (llama-cpp-python turns
# its pydantic validation error into a 500), 501 (not implemented)
_REJECTION_STATUSES = frozenset({400, 415, 422, 500, 501})
# bodies of request-validation errors: retrying the same request cannot succeed, whatever the status
_VALIDATION = re.compile(r"validation error|literal_error|extra_forbidden|extra inputs are not permitted|"
                         r"unrecognized request argument|invalid_request_error|input should be|"
                         r"unsupported parameter|not supported with this model|is not supported|"
                         r"doesn't support|does not support|unknown field|unexpected keyword", re.IGNORECASE)

T = TypeVar("T")


def is_validation_error(detail: str) -> bool:
    """Does an error body say the request itself is invalid (so a retry would fail the same way)?"""
    return bool(_VALIDATION.search(detail))


def rejects(dialect: str, status: int | None, detail: str) -> bool:
    """Does this error say the server does not understand ``dialect``'s field?"""
    if dialect == "prompt" or status not in _REJECTION_STATUSES:
        return False
    text = detail.lower()
    return any(marker in text for marker in _FIELD_MARKERS[dialect]) and (
        status != 500 or is_validation_error(text))


def schema_instruction(schema: dict[str, Any]) -> str:
    return ("Reply with JSON only (no prose, no code fences) that validates against this JSON schema:\n"
            + json.dumps(schema, ensure_ascii=False))


def with_schema_in_prompt(messages: list[dict[str, str]], schema: dict[str, Any]) -> list[dict[str, str]]:
    """The schema instruction appended to the system message (one is added when there is none)."""
    messages = [dict(m) for m in messages]
    instruction = schema_instruction(schema)
    if messages and messages[0]["role"] == "system":
        messages[0]["content"] = f"{messages[0]['content']}\n\n{instruction}"
    else:
        messages.insert(0, {"role": "system", "content": instruction})
    return messages


def openai_fields(dialect: str, schema: dict[str, Any]) -> dict[str, Any]:
    """The request-body fields of ``dialect`` on an OpenAI-style ``/chat/completions``."""
    if dialect == "json_schema":
        return {"response_format": {"type": "json_schema", "json_schema": {"name": TOOL_NAME, "schema": schema}}}
    if dialect == "json_object":
        return {"response_format": {"type": "json_object", "schema": schema}}
    if dialect == "guided_json":
        return {"guided_json": schema}
    if dialect == "nvext":
        return {"nvext": {"guided_json": schema}}
    if dialect == "tool":
        return {"tools": [{"type": "function", "function": {"name": TOOL_NAME, "parameters": schema}}],
                "tool_choice": {"type": "function", "function": {"name": TOOL_NAME}}}
    return {}


class DialectRejected(Exception):
    """Raised by a provider's call when the server refused the dialect's field (carries the provider error)."""

    def __init__(self, error: Exception):
        super().__init__(str(error))
        self.error = error


class Negotiation:
    """The dialect one endpoint and model take, found by trying down ``chain``.

    Until a reply confirms the current dialect, one request is sent at a time (the others wait), so a server
    that refuses a field refuses it once per run. A confirmed dialect that a server refuses later (it was
    upgraded, or a remembered dialect is stale) falls back the same way. A pinned dialect never falls back."""

    def __init__(self, chain: tuple[str, ...], pinned: str | None = None):
        self.chain = (pinned,) if pinned else chain
        self.pinned = pinned is not None
        self.index = 0
        self.confirmed = False
        self.rejected: list[tuple[str, str]] = []  # (dialect, the server's reason), in the order they failed
        self.used = False  # a request with a schema went out (only then do the job's notes name the dialect)
        self.recalled = False  # started from what metadata.db remembered
        self.refused_calls = 0  # requests the server refused for their dialect: calls it got, on the job's count
        self._lock: asyncio.Lock | None = None
        self._lock_loop: asyncio.AbstractEventLoop | None = None

    @property
    def probing(self) -> bool:
        """Is there a choice left to find out by trying (not confirmed, not pinned, more than one dialect)?"""
        return not self.confirmed and not self.pinned and len(self.chain) > 1

    @property
    def dialect(self) -> str:
        return self.chain[self.index]

    def start_at(self, dialect: str | None) -> None:
        """Start where an earlier job found a working dialect (metadata.db); trusted until refused."""
        if not self.pinned and dialect in self.chain and not self.rejected:
            self.index, self.confirmed = self.chain.index(dialect), True
            self.recalled = True

    def note(self) -> str:
        """What the job's notes say: the dialect used and what the server refused on the way."""
        text = f"structured output: {self.dialect}"
        if self.dialect in SCHEMA_IN_PROMPT and self.dialect != "prompt":
            text += " (+ schema in the prompt)"
        elif self.dialect == "prompt":
            text += " (schema in the prompt, replies parsed and validated)"
        if self.rejected:
            text += "; the server refused " + ", ".join(name for name, _ in self.rejected)
        elif self.recalled:
            text += "; remembered from an earlier job on this endpoint"
        return text

    def _fall_back(self, dialect: str, reason: str) -> bool:
        """Move past ``dialect`` (unless another request already did); False when nothing is left to try."""
        if self.dialect != dialect:
            return True
        if self.pinned or self.index + 1 >= len(self.chain):
            return False
        self.rejected.append((dialect, reason))
        self.index += 1
        self.confirmed = False
        return True

    def _probe_lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock_loop is not loop:  # a lock belongs to one event loop
            self._lock, self._lock_loop = asyncio.Lock(), loop
        return self._lock

    async def send(self, call: Callable[[str], Awaitable[T]]) -> T:
        """``call(dialect)`` sends one request in that dialect and raises ``DialectRejected`` when the server
        refuses the dialect's field; any other error passes through."""
        self.used = True
        while True:
            if self.confirmed:
                dialect = self.dialect
                try:
                    return await call(dialect)
                except DialectRejected as exc:
                    self.refused_calls += 1
                    if not self._fall_back(dialect, str(exc)):
                        raise exc.error from None
                    continue
            async with self._probe_lock():
                if self.confirmed:
                    continue
                dialect = self.dialect
                try:
                    result = await call(dialect)
                except DialectRejected as exc:
                    self.refused_calls += 1
                    if not self._fall_back(dialect, str(exc)):
                        raise exc.error from None
                    continue
                self.confirmed = True
                return result
