"""The document job's config: grounded Q/A from files, chunked by tokens, optionally grounding-checked.

Re-exported by ``sdstudio.config``.
"""
from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from ..config import (
    ModelSpec,
    RunSettings,
    StrictModel,
    _same,
    _use_case,
    _use_case_defaults,
    blank_is_unset,
    default_judge,
    env_variable_name,
)
from .evaluation import EvaluationJob

DEFAULT_PER_CHUNK = 3  # a document job's items per chunk when neither per_chunk nor total is given


class DocumentJob(StrictModel):
    """Grounded Q/A from documents (PDF, DOCX, TXT, Markdown, HTML): files -> token-aware chunks -> N items
    per chunk (or ``total`` spread evenly), each with its chunk's provenance; optionally a grounding check."""

    kind: Literal["documents"] = "documents"
    name: str | None = None
    files: list[str] = Field(min_length=1)  # paths, globs or folders (uploads live in SDSTUDIO_HOME/uploads)
    use_case: str = "document_qa"
    chunk_tokens: int = Field(512, ge=32, le=100_000)
    chunk_overlap: int = Field(64, ge=0)  # at most half of chunk_tokens
    per_chunk: int | None = Field(None, ge=1, le=1000)  # None: 3 per chunk, unless total is given
    total: int | None = Field(None, ge=1, le=10_000_000)  # items for the whole job, spread evenly over chunks
    batch_size: int = Field(5, ge=1, le=100)
    instruction: str | None = None  # None: the use case's own (likewise requirements, examples)
    requirements: list[str] | None = None
    examples: list[dict[str, Any]] | None = None
    inputs: dict[str, str] | None = None
    grounding: bool = False  # a judge call per item: is the answer supported by the chunk? no -> filtered
    judge: ModelSpec | None = None  # None: `model` at temperature 0
    password_env: str | None = None  # NAME of the environment variable holding encrypted PDFs' password
    dedup_threshold: float | None = Field(0.85, gt=0, le=1)
    avoid_limit: int = Field(20, ge=0, le=500)
    max_rounds: int = Field(3, ge=0, le=20)
    file_hashes: dict[str, str | None] | None = None  # set by sdstudio when the job runs: path -> sha256
    model: ModelSpec = Field(default_factory=ModelSpec)
    run: RunSettings = Field(default_factory=RunSettings)

    _judge_temperature = field_validator("judge", mode="before")(
        EvaluationJob._judges_default_to_temperature_zero.__func__)
    _blank = field_validator("name", "password_env", mode="before")(blank_is_unset)

    def canonical(self, home: str | os.PathLike[str] | None = None) -> "DocumentJob":
        case = _use_case(self.use_case, home)
        update = _use_case_defaults(self, case, topics=False) if case is not None else {}
        if self.per_chunk == DEFAULT_PER_CHUNK and self.total is None:
            update["per_chunk"] = None
        if self.judge is not None and _same(self.judge, default_judge(self.model)):
            update["judge"] = None
        return self.model_copy(update=update) if update else self

    @field_validator("password_env")
    @classmethod
    def _password_env_is_a_name(cls, value: str | None) -> str | None:
        return env_variable_name(value, "password_env", "PDF_PASSWORD", "password")

    @field_validator("files")
    @classmethod
    def _files_not_blank(cls, value: list[str]) -> list[str]:
        value = [f.strip() for f in value if f and f.strip()]
        if not value:
            raise ValueError("the file list is empty; give at least one file, folder or glob")
        return value

    @model_validator(mode="after")
    def _check(self) -> "DocumentJob":
        if self.chunk_overlap > self.chunk_tokens // 2:
            raise ValueError(f"chunk_overlap ({self.chunk_overlap}) must be at most half of chunk_tokens "
                             f"({self.chunk_tokens})")
        if self.per_chunk is not None and self.total is not None:
            raise ValueError("give per_chunk or total, not both")
        return self
