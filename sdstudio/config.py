"""Job configuration as data: pydantic models that round-trip to YAML.

The notebooks and the CLI build the same objects, a notebook can save its config as YAML for a batch
job, and every job row stores its config JSON so any job can be re-run exactly. Unknown keys are
rejected (``extra="forbid"``) so a typo never silently falls back to a default.

Both build configs through ``parse_job``: validation, then ``canonical()``, which leaves unset every field
that restates its default (a use case's instruction, the judge ``None`` stands for), so a job's bytes and
its hash (its identity, ``workflows.jobs.config_hash``) do not depend on where it was typed.

This module holds the base every config shares (StrictModel, ModelSpec, RunSettings, validators, loading); each
workflow family's job config lives in ``sdstudio/configs/`` and is re-exported at the end of this module.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_serializer

from . import safeyaml
from .errors import ConfigError

StrictModelT = TypeVar("StrictModelT", bound="StrictModel")


class StrictModel(BaseModel):
    # hide_input_in_errors: a ValidationError's text must not echo a value (a key typed where its variable's
    # NAME belongs, a URL with a password); the outermost model's setting is the one pydantic applies
    model_config = ConfigDict(extra="forbid", validate_assignment=True, hide_input_in_errors=True)

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


def endpoint_url(value: str | None) -> str | None:
    """A model endpoint as stored and shown: user:password and query values masked, the real URL kept in
    memory for the provider (``urlsecrets`` says why: a config is stored, hashed and printed)."""
    from .urlsecrets import protect

    return protect(value, "base_url")


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
    # how a reply's JSON schema is asked for (providers/structured.py): auto negotiates per endpoint, a dialect
    # pins it (json_schema, json_object, guided_json, nvext, tool or prompt)
    structured_output: Literal["auto", "json_schema", "json_object", "guided_json", "nvext", "tool", "prompt"] = "auto"

    _blank = field_validator("model", "base_url", "region", "api_key_env", mode="before")(blank_is_unset)
    _url = field_validator("base_url")(endpoint_url)

    @model_serializer(mode="wrap")
    def _auto_unsaid(self, handler: Any) -> dict[str, Any]:
        """``auto`` is left out of the dump: a job's identity (its config hash) is what it was before the
        setting existed, so jobs of earlier versions resume; a pinned dialect is part of it."""
        data = handler(self)
        if isinstance(data, dict) and data.get("structured_output") == "auto":
            data.pop("structured_output")
        return data

    @field_validator("api_key_env")
    @classmethod
    def _env_name_not_key(cls, value: str | None) -> str | None:
        return env_variable_name(value, "api_key_env", "MY_KEY", "key")


LOCAL_EXECUTOR = "local"  # the in-process executor (asyncio): the default, and the only one some workflows run on


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
    executor: str = LOCAL_EXECUTOR  # executors.EXECUTORS: where the work items run (the same records either way)
    # the spark executor: the master URL when no Spark session is running yet (default local[2]), and how many
    # partitions the items are split into (default: the cluster's task slots; docs/spark.md)
    spark_master: str | None = None
    partitions: int | None = Field(None, ge=1, le=100_000)
    # where a run writes the job's ok records as Parquet, <output_uri>/job=<id>/ (a folder, file:, hdfs://, s3a://;
    # spark_output.py); None: metadata.db only
    output_uri: str | None = None
    # the batch executor (executors/batch.py): seconds between status polls at first (backing off to
    # batch_poll_max_s), and what becomes of requests whose batch line failed: asked again on demand (at once,
    # the on-demand price) or in a follow-up batch (cheaper, a day slower)
    batch_poll_s: float = Field(30.0, gt=0)
    batch_poll_max_s: float = Field(600.0, gt=0)
    batch_retry: Literal["on_demand", "batch"] = "on_demand"
    # Bedrock batch inference: the S3 bucket and prefix its request and result files go under, and the IAM role
    # Bedrock assumes to read and write them (README "Batch APIs")
    batch_bucket: str | None = None
    batch_prefix: str | None = None
    batch_role_arn: str | None = None

    @field_validator("executor")
    @classmethod
    def _known_executor(cls, value: str) -> str:
        from .executors import EXECUTORS

        if value not in EXECUTORS:
            raise ValueError(f"unknown executor {value!r}; one of {', '.join(sorted(EXECUTORS))}")
        return value


# -- canonical() helpers shared by the workflow configs (configs/*.py) ----------------------------------

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


# Each workflow's job config lives in its own module under ``sdstudio/configs/``; re-exported here so every
# ``from sdstudio.config import GenerationJob`` keeps working. Loaded on first use (PEP 562), not with this module:
# building a family's pydantic models costs a few ms each, and `sdstudio generate` needs only its own.
if TYPE_CHECKING:  # what they are, for type checkers and linters
    from .configs.alignment import ALIGNMENT_USE_CASE, AlignmentJob
    from .configs.documents import DEFAULT_PER_CHUNK, DocumentJob
    from .configs.evaluation import EvaluationJob, JudgeExample, check_scale
    from .configs.export import ExportJob
    from .configs.generation import GenerationJob
    from .configs.workflow import ParameterOverrides, StepModel, WorkflowJob, WorkflowStep

_REEXPORTS = {
    "ALIGNMENT_USE_CASE": "alignment", "AlignmentJob": "alignment", "DEFAULT_PER_CHUNK": "documents",
    "DocumentJob": "documents", "EvaluationJob": "evaluation", "JudgeExample": "evaluation", "check_scale": "evaluation",
    "ExportJob": "export", "GenerationJob": "generation", "ParameterOverrides": "workflow", "StepModel": "workflow",
    "WorkflowJob": "workflow", "WorkflowStep": "workflow",
}


def __getattr__(name: str) -> Any:
    family = _REEXPORTS.get(name)
    if family is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".configs.{family}", __package__), name)
    globals()[name] = value  # the next lookup is a plain one
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_REEXPORTS})

__all__ = [
    "ALIGNMENT_USE_CASE", "DEFAULT_PER_CHUNK", "AlignmentJob", "DocumentJob", "EvaluationJob", "ExportJob",
    "GenerationJob", "JudgeExample", "ModelParameters", "ModelSpec", "ParameterOverrides", "RunSettings",
    "StepModel", "StrictModel", "WorkflowJob", "WorkflowStep", "blank_is_unset", "check_scale", "default_judge",
    "describe_validation_error", "endpoint_url", "env_variable_name", "load_config", "parse_job",
]
