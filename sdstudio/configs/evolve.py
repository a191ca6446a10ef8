"""The Evol-Instruct job's config: a generation job's instructions rewritten harder or broader for R rounds.

Re-exported by ``sdstudio.config``'s registry loading (``load_config`` picks it by ``kind: evolve``).
"""
from __future__ import annotations

import os
from typing import Literal

from pydantic import Field, field_validator

from ..config import ModelSpec, RunSettings, StrictModel, _same, blank_is_unset

# In-depth methods make an instruction harder; "breadth" writes a new, rarer one in the same domain (WizardLM).
METHODS = ("deepen", "concretize", "constraints", "reasoning", "breadth")
Method = Literal["deepen", "concretize", "constraints", "reasoning", "breadth"]


class EvolveJob(StrictModel):
    """Evol-Instruct over the ok items of ``source_job``: each instruction is rewritten ``rounds`` times (one
    method per round, drawn with ``seed`` from ``methods``), every surviving rewrite is answered again, and
    rewrites that copy their input, refuse, leak the rewriting prompt or cannot be answered are eliminated."""

    kind: Literal["evolve"] = "evolve"
    name: str | None = None
    source_job: int = Field(ge=1)
    prompt_column: str | None = None  # the item field holding the instruction; None: the source job's prompt field
    rounds: int = Field(1, ge=1, le=10)
    methods: list[Method] = Field(default_factory=lambda: list(METHODS))
    limit: int | None = Field(None, ge=1)  # at most this many seed instructions (the first ones)
    seed: int = 0  # which method each instruction gets in each round
    copy_threshold: float = Field(0.9, gt=0, le=1)  # a rewrite at least this similar to its input is a copy
    dedup_threshold: float | None = Field(0.85, gt=0, le=1)  # near-duplicate evolved instructions; None: keep
    system_prompt: str | None = None  # sent before every evolved instruction when it is answered
    model: ModelSpec = Field(default_factory=ModelSpec)  # rewrites the instructions
    answer_model: ModelSpec | None = None  # answers them; None: ``model``
    run: RunSettings = Field(default_factory=RunSettings)

    _blank = field_validator("name", "prompt_column", "system_prompt", mode="before")(blank_is_unset)

    @field_validator("methods", mode="before")
    @classmethod
    def _methods_list(cls, value: object) -> object:
        """``"deepen,breadth"`` (a flag's text) is a list too; repeats count once, order kept."""
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, list):
            value = list(dict.fromkeys(value))
            if not value:
                raise ValueError(f"give at least one method: {', '.join(METHODS)}")
        return value

    def canonical(self, home: str | os.PathLike[str] | None = None) -> "EvolveJob":
        if self.answer_model is not None and _same(self.answer_model, self.model):
            return self.model_copy(update={"answer_model": None})  # the same answerer: the same job
        return self

    def answerer(self) -> ModelSpec:
        return self.answer_model or self.model
