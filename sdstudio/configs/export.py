"""The export job's config: which jobs' records, in which training style and format, to files or the Hub.

Re-exported by ``sdstudio.config``.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from ..config import StrictModel


class ExportJob(StrictModel):
    """Export of one or more jobs' records to files or the Hugging Face Hub."""

    kind: Literal["export"] = "export"
    jobs: list[int] = Field(min_length=1)
    style: Literal["raw", "sft-messages", "sft-prompt-completion", "dpo", "kto", "openai-chat"] = "raw"
    format: Literal["jsonl", "csv", "parquet"] = "jsonl"
    out: str | None = None
    name: str | None = None
    min_score: float | None = None
    reviewed_only: bool = False
    prefer_edits: bool = True
    test_fraction: float | None = Field(None, gt=0, lt=1)
    seed: int = 42
    hf_repo: str | None = None  # OWNER/NAME of a dataset repo; None: files only
    hf_endpoint: str | None = None  # None: $HF_ENDPOINT, else https://huggingface.co
    private: bool = True
    license: str = "other"  # the dataset card's license id; model outputs carry the model's own terms
    system_prompt: str | None = None  # messages styles: a system turn first (openai-chat, sft-messages)
    conversational: bool = False  # dpo/kto: TRL's conversational form (message lists) instead of strings

    @field_validator("name")
    @classmethod
    def _name_is_one_folder(cls, value: str | None) -> str | None:
        if value is not None and (not value.strip() or value.strip() in (".", "..") or "/" in value
                                  or "\\" in value):
            raise ValueError(f"name {value!r} must be a plain folder name (no slashes), e.g. code-sft-v1")
        return value.strip() if value is not None else None
