"""The custom workflow's config: ordered steps (prompt -> column) over a user dataset, each step
optionally with its own model (``StepModel``, inheriting what it leaves unset from the workflow's model).

Re-exported by ``sdstudio.config``.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from ..config import ModelSpec, RunSettings, StrictModel, blank_is_unset, endpoint_url


class ParameterOverrides(StrictModel):
    """A workflow step's sampling parameters; unset ones come from the workflow's model."""

    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=1)
    max_tokens: int | None = Field(None, ge=1, le=1_000_000)
    stop: list[str] | None = None
    seed: int | None = None


class StepModel(StrictModel):
    """A workflow step's own model. Every field is optional so a saved workflow keeps only what the step
    changes (``model: {model: gpt-4o}``) and still inherits the rest after a YAML round trip."""

    provider: str | None = None
    model: str | None = None
    base_url: str | None = None
    region: str | None = None
    api_key_env: str | None = None
    parameters: ParameterOverrides | None = None

    _blank = field_validator("provider", "model", "base_url", "region", "api_key_env", mode="before")(blank_is_unset)
    _key_env = field_validator("api_key_env")(ModelSpec._env_name_not_key.__func__)
    _url = field_validator("base_url")(endpoint_url)

    def resolve(self, default: ModelSpec) -> ModelSpec:
        """The workflow's model with this step's changes. Naming another provider starts from that
        provider's defaults (the workflow's endpoint, region and key belong to its own provider)."""
        base = default if self.provider in (None, default.provider) else ModelSpec(provider=self.provider)
        fields = self.model_dump(exclude_none=True, exclude={"parameters"})
        params = default.parameters.model_copy(
            update=self.parameters.model_dump(exclude_none=True) if self.parameters else {})
        return ModelSpec.model_validate({**base.model_dump(), **fields, "parameters": params.model_dump()})


class WorkflowStep(StrictModel):
    """One step of a custom workflow: a prompt over a row's columns and earlier steps' outputs, whose
    reply becomes a new column (text, or JSON checked against ``json_schema``)."""

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    template: str = Field(min_length=1)
    output_column: str | None = None  # None: the step's name
    output_type: Literal["text", "json"] = "text"
    json_schema: dict[str, Any] | None = None  # json steps: the reply must validate (None: any JSON)
    system_prompt: str | None = None
    model: StepModel | None = None  # None: the workflow's model

    @property
    def column(self) -> str:
        return self.output_column or self.name

    @model_validator(mode="after")
    def _check(self) -> "WorkflowStep":
        if self.json_schema is not None and self.output_type != "json":
            raise ValueError(f"step {self.name}: json_schema needs output_type: json")
        if self.output_column is not None and not self.output_column.strip():
            raise ValueError(f"step {self.name}: output_column is blank")
        return self


class WorkflowJob(StrictModel):
    """A custom workflow: ordered steps run over every selected row of a user dataset."""

    kind: Literal["workflow"] = "workflow"
    name: str | None = None
    description: str | None = None
    input_file: str | None = None  # CSV, TSV, JSONL, JSON array, Parquet or Excel (the CLI's --input)
    encoding: str | None = None  # text files; None: UTF-8 (a BOM is honoured)
    sheet: str | None = None  # Excel; None: the first sheet
    columns: list[str] | None = None  # input columns kept and offered to templates; None: all
    limit: int | None = Field(None, ge=1)  # rows to run; None: all
    sample: bool = False  # limit picks random rows (with seed) instead of the first ones
    seed: int = 42
    variations: int = Field(1, ge=1, le=100)  # runs of the chain per row, each its own output row
    prompt_column: str | None = None  # export: the SFT prompt column
    completion_column: str | None = None  # export: the SFT completion column
    steps: list[WorkflowStep] = Field(min_length=1)
    model: ModelSpec = Field(default_factory=ModelSpec)
    run: RunSettings = Field(default_factory=RunSettings)

    _blank = field_validator("name", "input_file", "encoding", "sheet", "prompt_column", "completion_column",
                             mode="before")(blank_is_unset)

    @model_validator(mode="after")
    def _check(self) -> "WorkflowJob":
        for what, values in (("step name", [s.name for s in self.steps]),
                             ("output column", [s.column for s in self.steps])):
            repeated = sorted({v for v in values if values.count(v) > 1})
            if repeated:
                raise ValueError(f"two steps share the {what} {repeated[0]!r}; each needs its own")
        return self
