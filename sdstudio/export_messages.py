"""Export's chat shapes: whole conversations as TRL's multi-turn ``messages``, and reasoning kept or dropped.

A conversation job's item holds its transcript (``workflows.fields``' ``messages`` field): ``sft-messages`` and
``openai-chat`` write it as it is (a system turn first when the export names one and the chat has none).

Reasoning (what a thinking model returned apart from its answer: ``records.reasoning``, and per assistant turn
``provenance.turns[].reasoning`` for conversations) is dropped unless the export asks for it
(``with_reasoning``). Kept, it goes where trainers read it: in messages styles as the assistant message's
``thinking`` (the key transformers' chat templates for thinking models read, e.g. gpt-oss, and TRL's examples
train on), in ``sft-prompt-completion`` and ``raw`` as a ``reasoning`` column. OpenAI's fine-tuning format has no
place for it, and preference rows have no single answer to attach it to: those styles refuse it in one line.
"""
from __future__ import annotations

import json
from typing import Any

from .errors import ConfigError

REASONING_STYLES = ("raw", "sft-messages", "sft-prompt-completion")
THINKING_KEY = "thinking"  # the assistant message's reasoning in messages styles
REASONING_COLUMN = "reasoning"


def check_reasoning_style(style: str, with_reasoning: bool) -> None:
    if with_reasoning and style not in REASONING_STYLES:
        raise ConfigError(f"--with-reasoning keeps reasoning in styles {', '.join(REASONING_STYLES)}; style {style} "
                          "has no place for it (drop --with-reasoning, or export sft-messages)")


def is_conversation(item: dict[str, Any], messages_field: str | None) -> bool:
    return bool(messages_field) and isinstance(item.get(messages_field), list) and bool(item.get(messages_field))


def turn_reasonings(provenance: Any) -> list[str | None]:
    """The reasoning of each message of a conversation, in order (None where a message has none)."""
    turns = provenance.get("turns") if isinstance(provenance, dict) else None
    return [t.get("reasoning") if isinstance(t, dict) else None for t in turns or []]


def conversation_messages(item: dict[str, Any], messages_field: str, system_prompt: str | None,
                          provenance: Any, with_reasoning: bool) -> list[dict[str, Any]]:
    """The chat as TRL's ``messages``: role and content only, plus each assistant turn's ``thinking`` when
    reasoning is kept and that turn had any."""
    messages = [{"role": str(m.get("role")), "content": _text(m.get("content"))} for m in item[messages_field]
                if isinstance(m, dict)]
    reasonings = iter(turn_reasonings(provenance) if with_reasoning else [])
    for message in messages:
        if message["role"] == "system":
            continue
        thought = next(reasonings, None)
        if thought and message["role"] == "assistant":
            message[THINKING_KEY] = thought
    if system_prompt and not (messages and messages[0]["role"] == "system"):
        messages.insert(0, {"role": "system", "content": system_prompt})
    return messages


def add_reasoning(out: dict[str, Any], row: dict[str, Any], style: str) -> dict[str, Any]:
    """``out`` (an exported single-turn row) with the record's reasoning where ``style`` keeps it."""
    reasoning = row.get("reasoning")
    if style == "sft-messages":
        if reasoning:
            out["messages"][-1][THINKING_KEY] = reasoning
        return out
    out[f"sdstudio_{REASONING_COLUMN}" if style == "raw" and REASONING_COLUMN in row["item"] else REASONING_COLUMN] \
        = reasoning
    return out


def without_reasoning(provenance: Any) -> Any:
    """A record's provenance with the conversation turns' reasoning taken out (``raw`` without reasoning)."""
    if not isinstance(provenance, dict) or not isinstance(provenance.get("turns"), list):
        return provenance
    turns = [{k: v for k, v in t.items() if k != "reasoning"} if isinstance(t, dict) else t
             for t in provenance["turns"]]
    return {**provenance, "turns": turns}


def conversational_form(row: dict[str, Any], answers: tuple[str, ...], system_prompt: str | None) -> dict[str, Any]:
    """TRL's conversational preference form: the prompt as a list of messages (system turn first when
    given), each answer as a one-message assistant turn; the column names stay the same."""
    prompt = [{"role": "system", "content": system_prompt}] if system_prompt else []
    prompt.append({"role": "user", "content": row["prompt"]})
    return {**row, "prompt": prompt, **{k: [{"role": "assistant", "content": row[k]}] for k in answers}}


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
