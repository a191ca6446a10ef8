"""The generation job's config: SFT / freeform items written from topics by a use case.

Declared here, not in ``config.py``, so each workflow family owns its config (one module, one owner);
``sdstudio.config`` re-exports it, so ``from sdstudio.config import GenerationJob`` keeps working.
"""
from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import Field, field_validator, model_serializer

from ..config import (
    ModelSpec,
    RunSettings,
    StrictModel,
    _use_case,
    _use_case_defaults,
    blank_is_unset,
)
from ..samplers import Attribute, normalise


class GenerationJob(StrictModel):
    """SFT / freeform generation from topics (seeds)."""

    kind: Literal["generation"] = "generation"
    name: str | None = None
    technique: Literal["sft", "freeform"] = "sft"
    use_case: str = "code_generation"
    topics: list[str] | None = None  # None: the use case's shipped topics
    num_per_topic: int = Field(5, ge=1, le=100_000)
    batch_size: int = Field(5, ge=1, le=100)
    instruction: str | None = None  # None: the use case's own (likewise requirements, examples)
    requirements: list[str] | None = None
    examples: list[dict[str, Any]] | None = None
    output_keys: list[str] | None = None  # custom use case: the keys of one item (all strings)
    inputs: dict[str, str] | None = None  # extra template inputs, e.g. text2sql's db_schema
    dedup_threshold: float | None = Field(0.85, gt=0, le=1)  # None: keep duplicates
    avoid_limit: int = Field(20, ge=0, le=500)  # earlier items shown to the model to avoid repeats
    max_rounds: int = Field(3, ge=0, le=20)  # follow-up rounds that ask only for the shortfall
    # samplers.py: named dimensions drawn per request (None: the use case's own, if any); seed: of those draws
    attributes: dict[str, Attribute] | None = None
    seed: int | None = None
    model: ModelSpec = Field(default_factory=ModelSpec)
    run: RunSettings = Field(default_factory=RunSettings)

    _blank = field_validator("name", mode="before")(blank_is_unset)

    @field_validator("topics")
    @classmethod
    def _topics_not_blank(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            value = list(dict.fromkeys(t.strip() for t in value if t and t.strip()))  # a repeat adds nothing
            if not value:
                raise ValueError("the topic list is empty; give at least one topic")
        return value

    @field_validator("attributes", mode="before")
    @classmethod
    def _attributes(cls, value: Any) -> Any:
        return normalise(value) if isinstance(value, dict) else value

    @model_serializer(mode="wrap")
    def _unset_unsaid(self, handler: Any) -> dict[str, Any]:
        """``attributes`` and ``seed`` are left out of the dump when unset: a job's identity (its config hash)
        is what it was before they existed, so jobs of earlier versions resume."""
        data = handler(self)
        if isinstance(data, dict):
            for key in ("attributes", "seed"):
                if data.get(key) is None:
                    data.pop(key, None)
        return data

    def canonical(self, home: str | os.PathLike[str] | None = None) -> "GenerationJob":
        case = _use_case(self.use_case, home)
        if case is None:
            return self
        update = _use_case_defaults(self, case, topics=True)
        if self.attributes is not None and case.attributes and _same_attributes(self.attributes, case.attributes):
            update["attributes"] = None
        if self.technique != "sft" and self.technique == case.technique:
            update["technique"] = "sft"  # "sft" means "the use case's own technique"
        return self.model_copy(update=update) if update else self


def _same_attributes(attributes: dict[str, Attribute], shipped: dict[str, Any]) -> bool:
    """The use case's own attributes restated (in any of their written forms) are the job that leaves them unset."""
    try:
        theirs = normalise(shipped) or {}
    except ValueError:
        return False
    return {k: v.model_dump(mode="json") for k, v in attributes.items()} == \
        {k: v.model_dump(mode="json") for k, v in theirs.items()}
