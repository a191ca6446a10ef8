"""Which output fields of a job's items are the prompt, the completion and the messages: the one answer that
export, the judge, alignment and the review desk all read.

Each registered workflow may declare its own ``fields(job, home) -> Fields`` (``Workflow.fields`` in the
registry); a job of a workflow that declares none answers with its use case's ``prompt_field`` and
``completion_field`` (generation, documents, and the alignment stages' prompts and candidates).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from . import registry


@dataclass(frozen=True)
class Fields:
    prompt: str | None       # the item key holding the prompt (None: the items have no prompt/completion pair)
    completion: str | None   # the item key holding the answer (DPO: the chosen one)
    messages: str | None = None  # the item key holding a chat transcript, for conversation workflows


def use_case_fields(job: dict[str, Any], home: str | Path | None = None) -> Fields:
    """The fields the job's use case names (none when the use case is gone: the items' keys still tell)."""
    from ..usecases import load_use_case

    try:
        use_case = load_use_case(job.get("use_case") or "custom", home)
    except ConfigError:
        return Fields(None, None)
    return Fields(use_case.prompt_field or None, use_case.completion_field or None)


def job_fields(store: Any, job_id: int, home: str | Path | None = None) -> Fields:
    """The fields of job ``job_id``'s items, as its workflow declares them."""
    job = store.get_job(store.job_family(job_id), job_id)
    declared = next((w.fields for w in registry.WORKFLOWS if w.kind == job.get("kind") and w.fields), None)
    if declared is None:
        return use_case_fields(job, home)
    module, _, name = declared.partition(":")
    return getattr(importlib.import_module(module), name)(job, home)


def transcript(messages: list[dict[str, Any]], names: dict[str, str] | None = None) -> str:
    """A chat as text, one labelled paragraph per message (``User: ...``); ``names`` relabels roles."""
    names = names or {"system": "System", "user": "User", "assistant": "Assistant"}
    return "\n\n".join(f"{names.get(str(m.get('role')), str(m.get('role')))}: {m.get('content') or ''}"
                        for m in messages if isinstance(m, dict))


def conversation_parts(messages: list[dict[str, Any]]) -> tuple[str, str, str]:
    """How a judge reads a whole conversation: (its system prompt, the user's opening message, the rest of the
    chat as a labelled transcript), so every assistant turn is scored in the context of the turns before it."""
    system = "\n\n".join(str(m.get("content") or "") for m in messages if isinstance(m, dict) and m.get("role") == "system")
    chat = [m for m in messages if isinstance(m, dict) and m.get("role") != "system"]
    if chat and chat[0].get("role") == "user":
        return system, str(chat[0].get("content") or ""), transcript(chat[1:])
    return system, "", transcript(chat)
