"""The evaluation job's config (LLM as judge) and the judge's few-shot examples and scale check.

``JudgeExample`` and ``check_scale`` live here because judging is evaluation's; the alignment job reuses them.
Re-exported by ``sdstudio.config``.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, StrictInt, field_validator, model_serializer, model_validator

from ..config import (
    ModelParameters,
    ModelSpec,
    RunSettings,
    StrictModel,
    blank_is_unset,
)


class JudgeExample(StrictModel):
    """A few-shot example for the judge: a row, the score it deserves and why."""

    prompt: str
    completion: str
    score: int
    justification: str


SCALE_LIMIT = 1_000_000  # a scale end beyond this is a typo, and would not fit metadata.db's integer columns


def check_scale(scale: tuple[int, int], examples: list[JudgeExample]) -> None:
    """A judge's scale must be a real range, and its few-shot examples must score inside it."""
    low, high = scale
    if low >= high:
        raise ValueError(f"scale {low}-{high} is empty; the low end must be below the high end")
    if max(abs(low), abs(high)) > SCALE_LIMIT:
        raise ValueError(f"scale {low}-{high} is out of range; both ends must be within ±{SCALE_LIMIT:,}")
    for ex in examples:
        if not low <= ex.score <= high:
            raise ValueError(f"judge example score {ex.score} is outside the scale {low}-{high}")


class EvaluationJob(StrictModel):
    """LLM-as-judge over a generation job or an uploaded prompt/completion dataset."""

    kind: Literal["evaluation"] = "evaluation"
    name: str | None = None
    source_job: int | None = None
    input_file: str | None = None  # CSV, JSONL or Parquet
    prompt_column: str | None = None
    completion_column: str | None = None
    topic_column: str | None = None  # optional: per-topic statistics for an input file
    use_case: str | None = None  # None: the generation job's use case, or `custom` for an input file
    criteria: str | None = None  # None: the use case's default criteria
    scale: tuple[StrictInt, StrictInt] | None = None  # None: the use case's scale (true is not 1, nor 1.5 one)
    examples: list[JudgeExample] = Field(default_factory=list)
    template: str | None = None  # jinja source of the judge prompt; None: the use case's evaluate.jinja
    model: ModelSpec = Field(default_factory=lambda: ModelSpec(parameters=ModelParameters(temperature=0.0)))
    second_judge: ModelSpec | None = None  # another model judging the same rows: agreement figures
    second_judge_of: int | None = None  # set by sdstudio on a second judge's own job: the primary's id
    limit: int | None = Field(None, ge=1)  # judge only the first N rows or records; None: all
    run: RunSettings = Field(default_factory=RunSettings)

    _blank = field_validator("name", "input_file", "prompt_column", "completion_column", "topic_column", "use_case",
                             mode="before")(blank_is_unset)

    @field_validator("model", "second_judge", mode="before")
    @classmethod
    def _judges_default_to_temperature_zero(cls, spec: Any) -> Any:
        """A judge should give the same row the same score: temperature 0 unless one is set."""
        if isinstance(spec, ModelSpec) and "temperature" not in spec.parameters.model_fields_set:
            return spec.model_copy(update={"parameters": spec.parameters.model_copy(update={"temperature": 0.0})})
        if isinstance(spec, dict):
            params = spec.get("parameters")
            if params is None or (isinstance(params, dict) and "temperature" not in params):
                return {**spec, "parameters": {**(params or {}), "temperature": 0.0}}
        return spec

    @model_serializer(mode="wrap")
    def _unset_limit_is_absent(self, handler: Any) -> dict[str, Any]:
        """No limit is written as no key, so every job judged before ``limit`` existed keeps its config hash
        (its identity) and still resumes."""
        data = handler(self)
        if isinstance(data, dict) and data.get("limit") is None:
            data.pop("limit", None)
        return data

    @model_validator(mode="after")
    def _check(self) -> "EvaluationJob":
        if self.scale is not None:
            check_scale(self.scale, self.examples)
        if (self.source_job is None) == (self.input_file is None):
            raise ValueError("give exactly one of source_job (a generation job id) or input_file")
        if self.input_file is not None and not (self.prompt_column and self.completion_column):
            raise ValueError("input_file needs prompt_column and completion_column")
        return self
