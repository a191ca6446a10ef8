"""Job configuration as data: pydantic models that round-trip to YAML.

The notebooks and the CLI build the same objects, a notebook can save its config as YAML for a batch
job, and every job row stores its config JSON so any job can be re-run exactly. Unknown keys are
rejected (``extra="forbid"``) so a typo never silently falls back to a default.

Both build configs through ``parse_job``: validation, then ``canonical()``, which leaves unset every field
that restates its default (a use case's instruction, the judge ``None`` stands for), so a job's bytes and
its hash (its identity, ``workflows.jobs.config_hash``) do not depend on where it was typed.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from . import safeyaml
from .errors import ConfigError

StrictModelT = TypeVar("StrictModelT", bound="StrictModel")


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    def canonical(self, home: str | os.PathLike[str] | None = None):
        """The same job written the one way: every field that only restates its default (the use case's
        instruction, the judge that ``None`` already means...) is left unset. ``parse_job`` applies it, so
        a job typed in a notebook and on the CLI is the same bytes, the same ``config_hash``, one job."""
        return self

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json", exclude_none=True), sort_keys=False,
                              allow_unicode=True)

    @classmethod
    def from_yaml(cls, source: str | os.PathLike[str]):
        data = _read_yaml(source)
        return _validate(cls, data, _label(source))


def blank_is_unset(value: Any) -> Any:
    """An optional name, id or path given as blank text (an empty text box, ``--flag ""``) was not given."""
    return None if isinstance(value, str) and not value.strip() else value


def env_variable_name(value: str | None, field: str, example: str, secret: str) -> str | None:
    """Secrets come from the environment only: a config names the variable, never holds the value."""
    if value is not None and not value.replace("_", "").isalnum():
        raise ValueError(f"{field} is the NAME of an environment variable (e.g. {example}), not the {secret} itself")
    return value


class ModelParameters(StrictModel):
    """Sampling parameters; each provider maps what it supports and warns about the rest."""

    temperature: float | None = Field(0.7, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=1)
    max_tokens: int = Field(1024, ge=1, le=1_000_000)
    stop: list[str] = Field(default_factory=list)
    seed: int | None = None


class ModelSpec(StrictModel):
    """Which model answers: provider name, model id and where to reach it. Never holds a secret:
    ``api_key_env`` names the environment variable the key is read from."""

    provider: str = "local"
    model: str | None = None
    base_url: str | None = None
    region: str | None = None
    api_key_env: str | None = None
    parameters: ModelParameters = Field(default_factory=ModelParameters)

    _blank = field_validator("model", "base_url", "region", "api_key_env", mode="before")(blank_is_unset)

    @field_validator("api_key_env")
    @classmethod
    def _env_name_not_key(cls, value: str | None) -> str | None:
        return env_variable_name(value, "api_key_env", "MY_KEY", "key")


class RunSettings(StrictModel):
    """How the engine runs requests. Not part of a job's identity: changing these resumes the job."""

    concurrency: int = Field(16, ge=1, le=4096)
    rpm: int | None = Field(None, ge=1)
    tpm: int | None = Field(None, ge=1)
    max_attempts: int = Field(5, ge=1, le=50)
    timeout_s: float = Field(300.0, gt=0)
    backoff_base_s: float = Field(0.5, ge=0)
    backoff_max_s: float = Field(30.0, ge=0)
    max_failed_ratio: float = Field(0.5, ge=0, le=1)
    executor: str = "local"  # executors.EXECUTORS: where the work items run (the same records either way)

    @field_validator("executor")
    @classmethod
    def _known_executor(cls, value: str) -> str:
        from .executors import EXECUTORS

        if value not in EXECUTORS:
            raise ValueError(f"unknown executor {value!r}; one of {', '.join(sorted(EXECUTORS))}")
        return value


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

    def canonical(self, home: str | os.PathLike[str] | None = None) -> "GenerationJob":
        case = _use_case(self.use_case, home)
        if case is None:
            return self
        update = _use_case_defaults(self, case, topics=True)
        if self.technique != "sft" and self.technique == case.technique:
            update["technique"] = "sft"  # "sft" means "the use case's own technique"
        return self.model_copy(update=update) if update else self


class JudgeExample(StrictModel):
    """A few-shot example for the judge: a row, the score it deserves and why."""

    prompt: str
    completion: str
    score: int
    justification: str


def check_scale(scale: tuple[int, int], examples: list[JudgeExample]) -> None:
    """A judge's scale must be a real range, and its few-shot examples must score inside it."""
    low, high = scale
    if low >= high:
        raise ValueError(f"scale {low}-{high} is empty; the low end must be below the high end")
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
    scale: tuple[int, int] | None = None  # None: the use case's scale
    examples: list[JudgeExample] = Field(default_factory=list)
    template: str | None = None  # jinja source of the judge prompt; None: the use case's evaluate.jinja
    model: ModelSpec = Field(default_factory=lambda: ModelSpec(parameters=ModelParameters(temperature=0.0)))
    second_judge: ModelSpec | None = None  # another model judging the same rows: agreement figures
    second_judge_of: int | None = None  # set by sdstudio on a second judge's own job: the primary's id
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

    @model_validator(mode="after")
    def _check(self) -> "EvaluationJob":
        if self.scale is not None:
            check_scale(self.scale, self.examples)
        if (self.source_job is None) == (self.input_file is None):
            raise ValueError("give exactly one of source_job (a generation job id) or input_file")
        if self.input_file is not None and not (self.prompt_column and self.completion_column):
            raise ValueError("input_file needs prompt_column and completion_column")
        return self


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
    scale: tuple[int, int] = (1, 5)
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


ALIGNMENT_USE_CASE = "alignment"  # writes an alignment job's prompts (unless use_case names another) and judges
DEFAULT_PER_CHUNK = 3  # a document job's items per chunk when neither per_chunk nor total is given


def default_judge(model: ModelSpec) -> ModelSpec:
    """The judge ``judge: None`` means: the job's model at temperature 0."""
    return model.model_copy(update={"parameters": model.parameters.model_copy(update={"temperature": 0.0})})


def _same(a: BaseModel, b: BaseModel) -> bool:
    return a.model_dump() == b.model_dump()  # the values, not which of them were given explicitly


def _use_case(name: str, home: str | os.PathLike[str] | None) -> Any:
    """The use case whose defaults a config may restate; None when it cannot be read (the workflow's
    plan reports that, in its own words, before any call)."""
    from .errors import SdstudioError
    from .usecases import load_use_case

    try:
        return load_use_case(name, home)
    except (SdstudioError, OSError):
        return None


def _same_topics(topics: list[str], shipped: list[str]) -> bool:
    return topics == list(dict.fromkeys(t.strip() for t in shipped if t and t.strip()))


def _use_case_defaults(config: Any, case: Any, *, topics: bool) -> dict[str, Any]:
    """Updates that unset each field equal to the use case's own value (None means exactly that value)."""
    update: dict[str, Any] = {}
    for field, default in (("instruction", case.instruction), ("requirements", list(case.requirements)),
                           ("examples", list(case.examples))):
        if getattr(config, field) is not None and getattr(config, field) == default:
            update[field] = None
    if topics and config.topics is not None and _same_topics(config.topics, case.topics):
        update["topics"] = None
    if config.inputs is not None:  # the plan lays the config's inputs over the use case's
        own = {k: v for k, v in config.inputs.items() if k not in case.inputs or v != str(case.inputs[k])}
        if own != config.inputs:
            update["inputs"] = own or None
    return update


def parse_job(model_cls: type[StrictModelT], data: Any, label: str,
              home: str | os.PathLike[str] | None = None) -> StrictModelT:
    """THE way a job config is built from data, by the CLI (flags, ``--config``) and by the notebook forms
    alike: validated, then ``canonical()`` so the same job always has the same bytes and the same hash."""
    return _validate(model_cls, data, label).canonical(home)


def load_config(source: str | os.PathLike[str] | dict[str, Any]) -> StrictModel:
    """Load any job config (YAML file path, YAML text or dict); ``kind`` picks the model from the workflow
    registry (``workflows/registry.py``), the one list of kinds."""
    from .workflows import registry

    data = source if isinstance(source, dict) else _read_yaml(source)
    label = "config" if isinstance(source, dict) else _label(source)
    if not isinstance(data, dict):
        raise ConfigError(f"{label}: expected a mapping with a 'kind' (one of {', '.join(registry.kinds())})")
    if "kind" not in data:
        raise ConfigError(f"{label}: missing 'kind' (one of {', '.join(registry.kinds())})")
    if data["kind"] not in registry.kinds():
        raise ConfigError(f"{label}: unknown kind {data['kind']!r} (one of {', '.join(registry.kinds())})")
    return _validate(registry.config_class(data["kind"]), data, label)


def _label(source: Any) -> str:
    if isinstance(source, Path) or (isinstance(source, str) and "\n" not in source and len(source) < 4096):
        return str(source)
    return "config"


def _read_yaml(source: str | os.PathLike[str]) -> Any:
    text: str
    if isinstance(source, Path) or (isinstance(source, str) and "\n" not in source
                                    and source.endswith((".yaml", ".yml", ".json"))):
        path = Path(source)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from None
    else:
        text = str(source)
    try:
        data = safeyaml.load(text, _label(source))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{_label(source)}: invalid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if data is None:
        raise ConfigError(f"{_label(source)}: the config is empty")
    if not isinstance(data, dict):
        raise ConfigError(f"{_label(source)}: the config must be a mapping of keys to values")
    return data


def _validate(cls: type[BaseModel], data: Any, label: str):
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{label}: {describe_validation_error(exc)}") from None


def describe_validation_error(exc: ValidationError) -> str:
    """One line for the first problem, naming the key (pydantic's own text spans many lines)."""
    err = exc.errors()[0]
    loc = [str(p) for p in err["loc"]]
    where = ".".join(loc) or "config"
    more = f" (and {len(exc.errors()) - 1} more problem(s))" if len(exc.errors()) > 1 else ""
    if err["type"] == "extra_forbidden":
        return f"unknown key '{loc[-1]}' at {where}{more}"
    if err["type"] == "missing":
        return f"missing required key '{where}'{more}"
    msg = err["msg"].removeprefix("Value error, ")
    return f"{where}: {msg}{more}"
