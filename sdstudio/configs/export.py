"""The export job's config: which jobs' records, in which training style and format, to files or the Hub.

Re-exported by ``sdstudio.config``.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from ..config import StrictModel


class ExportJob(StrictModel):
    """Export of one or more jobs' records to files or the Hugging Face Hub."""

    kind: Literal["export"] = "export"
    jobs: list[int] = Field(min_length=1)
    style: Literal["raw", "sft-messages", "sft-prompt-completion", "dpo", "kto", "openai-chat"] = "raw"
    format: Literal["jsonl", "csv", "parquet"] = "jsonl"
    out: str | None = None  # None: a new folder SDSTUDIO_HOME/exports/<name>/v<N>/ per export
    overwrite: bool = False  # out only: a non-empty folder is accepted; only the files this export writes are replaced
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
    with_reasoning: bool = False  # keep the model's reasoning (export_messages.py: where each style puts it)

    @field_validator("hf_endpoint")
    @classmethod
    def _endpoint_without_credentials(cls, value: str | None) -> str | None:
        """huggingface_hub builds its URLs as ``f"{endpoint}/api/..."`` (a query would break every path) and
        sends the token as ``Authorization: Bearer`` (a URL's user:password would replace it): refused, so a
        credential in the endpoint is never stored, sent or shown."""
        from ..urlsecrets import refuse_credentials

        return refuse_credentials(value, "hf_endpoint", "put a Hub token in the HF_TOKEN environment variable")

    @field_validator("name")
    @classmethod
    def _name_is_one_folder(cls, value: str | None) -> str | None:
        if value is not None and (not value.strip() or value.strip() in (".", "..") or "/" in value
                                  or "\\" in value):
            raise ValueError(f"name {value!r} must be a plain folder name (no slashes), e.g. code-sft-v1")
        return value.strip() if value is not None else None

    @model_validator(mode="after")
    def _overwrite_needs_out(self) -> "ExportJob":
        # the default destination is a new folder per export, so there is nothing to overwrite; saying so
        # beats silently ignoring a flag the user believes protects or replaces something
        if self.overwrite and not self.out:
            raise ValueError("overwrite applies to out only (every export without out gets a new folder "
                             "exports/<name>/v<N>/); give out or drop overwrite")
        return self
