"""The alignment job's config: DPO pairs or KTO labels from K judged candidates per prompt.

Its ``canonical()`` leaves unset what restates the ``alignment`` use case or the default judge.
Re-exported by ``sdstudio.config``.
"""
from __future__ import annotations

import os
from typing import Annotated, Any, Literal

from pydantic import Field, StrictInt, field_validator, model_validator

from ..config import (
    ModelSpec,
    RunSettings,
    StrictModel,
    _same,
    _same_topics,
    _use_case,
    blank_is_unset,
    default_judge,
)
from .evaluation import EvaluationJob, JudgeExample, check_scale

ALIGNMENT_USE_CASE = "alignment"  # writes an alignment job's prompts (unless use_case names another) and judges


class AlignmentJob(StrictModel):
    """DPO preference pairs or KTO labelled completions: prompts -> K candidates each -> judge -> selection.

    Prompts come from exactly one source: a generation job (``source_job``), a file column (``input_file``
    + ``prompt_column``), or topics (the default; prompts are written first, by ``use_case``)."""

    kind: Literal["alignment"] = "alignment"
    name: str | None = None
    method: Literal["dpo", "kto"] = "dpo"
    source_job: int | None = None
    input_file: str | None = None  # CSV, JSONL or Parquet
    prompt_column: str | None = None  # input_file: its column; source_job: the item field (None: the use case's)
    topics: list[str] | None = None  # None (and no other source): the use case's shipped topics
    use_case: str | None = None  # who writes prompts from topics; None: `alignment` (prompts only)
    prompts_per_topic: int = Field(5, ge=1, le=10_000)
    limit: int | None = Field(None, ge=1)  # at most this many prompts (the first ones)
    candidates: int = Field(4, ge=2, le=64)  # K responses per prompt
    temperatures: list[Annotated[float, Field(ge=0, le=2)]] | None = None  # None: spread (workflows/candidates.py)
    candidate_models: list[ModelSpec] | None = None  # None: `model` alone; several: e.g. a strong and a weak one
    system_prompt: str | None = None  # sent before every prompt when candidates are written
    model: ModelSpec = Field(default_factory=ModelSpec)
    judge: ModelSpec | None = None  # None: `model` at temperature 0
    criteria: str | None = None  # None: the `alignment` use case's response criteria
    scale: tuple[StrictInt, StrictInt] = (1, 5)
    examples: list[JudgeExample] = Field(default_factory=list)
    judge_template: str | None = None  # jinja source; None: templates/alignment/evaluate.jinja
    min_margin: float = Field(1.0, ge=0)  # DPO: drop pairs whose score gap is smaller
    similarity_threshold: float = Field(0.9, gt=0, le=1)  # DPO: drop pairs at least this similar (1: identical only)
    desirable_at: int | None = None  # KTO: label true at score >= this; None: 4 on 1-5 (top quarter)
    undesirable_at: int | None = None  # KTO: label false at score <= this; None: 2 on 1-5 (bottom quarter)
    rebalance: float | None = Field(None, ge=1)  # KTO: down-sample the larger label to at most this ratio
    seed: int = 42  # KTO down-sampling
    run: RunSettings = Field(default_factory=RunSettings)

    _judge_temperature = field_validator("judge", mode="before")(
        EvaluationJob._judges_default_to_temperature_zero.__func__)
    _blank = field_validator("name", "input_file", "prompt_column", "use_case", mode="before")(blank_is_unset)

    def canonical(self, home: str | os.PathLike[str] | None = None) -> "AlignmentJob":
        update: dict[str, Any] = {}
        if self.use_case == ALIGNMENT_USE_CASE:
            update["use_case"] = None
        if self.judge is not None and _same(self.judge, default_judge(self.model)):
            update["judge"] = None
        if self.candidate_models is not None and len(self.candidate_models) == 1 \
                and _same(self.candidate_models[0], self.model):
            update["candidate_models"] = None  # the one model is `model`: the same slots
        judging = _use_case(ALIGNMENT_USE_CASE, home)
        if judging is not None:
            if self.criteria is not None and self.criteria == judging.judge_criteria:
                update["criteria"] = None
            if self.judge_template is not None and self.judge_template == judging.evaluate_template:
                update["judge_template"] = None
        writing = _use_case(self.use_case or ALIGNMENT_USE_CASE, home)
        if self.topics is not None and writing is not None and _same_topics(self.topics, writing.topics):
            update["topics"] = None
        return self.model_copy(update=update) if update else self

    def kto_thresholds(self) -> tuple[int, int]:
        """(desirable_at, undesirable_at) with the defaults filled in from the scale."""
        low, high = self.scale
        quarter = (high - low) // 4
        return (high - quarter if self.desirable_at is None else self.desirable_at,
                low + quarter if self.undesirable_at is None else self.undesirable_at)

    @model_validator(mode="after")
    def _check(self) -> "AlignmentJob":
        check_scale(self.scale, self.examples)
        low, high = self.scale
        if self.source_job is not None and self.input_file is not None:
            raise ValueError("give one prompt source: source_job, input_file or topics")
        if self.topics is not None and (self.source_job is not None or self.input_file is not None):
            raise ValueError("give one prompt source: topics, or source_job, or input_file (not both)")
        if self.input_file is not None and not self.prompt_column:
            raise ValueError("input_file needs prompt_column (--prompt-col)")
        if self.topics is not None and not [t for t in self.topics if t.strip()]:
            raise ValueError("the topic list is empty; give at least one topic")
        if self.min_margin > high - low:
            raise ValueError(f"min_margin {self.min_margin:g} is wider than the scale {low}-{high}: no pair can pass")
        good, bad = self.kto_thresholds()
        if not (low <= bad < good <= high):
            raise ValueError(f"KTO thresholds need {low} <= undesirable_at ({bad}) < desirable_at ({good}) <= {high}")
        return self
