"""The shape of ``use_case.yaml``: every key a use case may set, with its type and range.

Why a model of its own: a use case is data a user writes by hand (in ``SDSTUDIO_HOME/templates``), and the
code that reads it (plans, the judge, export, the notebook forms) trusts its types. Before this model a
wrong type went through (``examples: abc`` became three examples 'a', 'b', 'c') or surfaced later as an
``AttributeError`` far from the file. Checked once at load, a mistake is one line naming the file and the key
(``.../use_case.yaml: judge.scale: ...; the high end is not a whole number``), and the rest of the code can
rely on the values. Imported by ``usecases`` only when a use case is loaded, so the CLI's start-up does not pay for it.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, StrictBool, StrictFloat, StrictInt, StrictStr, ValidationError, field_validator

from . import filecheck
from .errors import ConfigError
from .filecheck import StrictFile

VALIDATORS = ("sql",)  # the checks sft.GenerationRun._check knows: a name it does not know would never run


class JudgeSpec(StrictFile):
    """The judge's defaults for this use case: its criteria and the integer scale it scores on."""

    criteria: str = ""
    # not strict as a whole: YAML has no tuples, so the list [1, 5] is the way to write one (its ends stay strict)
    scale: Annotated[tuple[StrictInt, StrictInt], Field(strict=False)] = (1, 5)

    @field_validator("scale")
    @classmethod
    def _a_real_range(cls, scale: tuple[int, int]) -> tuple[int, int]:
        from .config import check_scale  # the judge's own rule, so a use case cannot hold a scale a job refuses

        check_scale(scale, [])
        return scale


class UseCaseFile(StrictFile):
    """``use_case.yaml`` as written. Every key is optional; what is left out takes the default shown."""

    name: str | None = None  # None: the folder's name
    description: str = ""
    technique: Literal["sft", "freeform"] = "sft"
    instruction: str = ""
    topics: list[str] = Field(default_factory=list)
    examples: list[dict[str, Any]] = Field(default_factory=list)
    requirements: list[str] = Field(default_factory=list)
    output_schema: dict[str, Any] = Field(default_factory=dict)
    prompt_field: str = "question"
    completion_field: str = "solution"
    judge: JudgeSpec = Field(default_factory=JudgeSpec)
    inputs: dict[str, StrictStr | StrictInt | StrictFloat | StrictBool] = Field(default_factory=dict)
    validators: list[Literal[VALIDATORS]] = Field(default_factory=list)  # type: ignore[valid-type]
    attributes: dict[str, Any] = Field(default_factory=dict)  # samplers.py: dimensions drawn per request

    @field_validator("attributes")
    @classmethod
    def _attributes_are_samplers(cls, attributes: dict[str, Any]) -> dict[str, Any]:
        from .samplers import normalise

        normalise(attributes)  # a mistake is a ValueError naming the attribute
        return attributes

    @field_validator("name")
    @classmethod
    def _name_not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("is blank; leave it out to use the folder's name")
        return value

    @field_validator("topics", "requirements")
    @classmethod
    def _no_blank_lines(cls, values: list[str]) -> list[str]:
        for index, value in enumerate(values):
            if not value.strip():
                raise ValueError(f"entry {index} is blank")
        return values

    @field_validator("examples")
    @classmethod
    def _examples_are_rows(cls, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for index, row in enumerate(rows):
            if not row:
                raise ValueError(f"example {index} is empty; each example is a mapping of key: value")
        return rows

    @field_validator("inputs")
    @classmethod
    def _inputs_are_template_names(cls, inputs: dict[str, Any]) -> dict[str, Any]:
        for name in inputs:
            if not name.isidentifier():
                raise ValueError(f"{name!r} is not a template variable name (letters, digits and _)")
        return inputs

    @field_validator("output_schema")
    @classmethod
    def _an_object_schema(cls, schema: dict[str, Any]) -> dict[str, Any]:
        """Empty (freeform: inferred from the examples), or a valid JSON schema of one object (the plan,
        export and the review desk read its keys from ``properties``)."""
        if not schema:
            return schema
        from .validation import check_schema, jsonschema_module

        try:
            check_schema(schema)  # jsonschema is imported only for a schema outside the fast predicate's subset
        except jsonschema_module().exceptions.SchemaError as exc:
            where = ".".join(str(p) for p in exc.path)
            raise ValueError(f"not a valid JSON schema{f' at {where}' if where else ''}: "
                             f"{' '.join(exc.message.split())[:160]}") from None
        if schema.get("type") != "object":
            raise ValueError("must describe one item: type: object (its keys under properties)")
        properties = schema.get("properties", {})
        if schema.get("additionalProperties") is False:  # then a required key outside properties can never be met
            missing = [key for key in schema.get("required", []) if key not in properties]
            if missing:
                raise ValueError(f"required names {missing[0]!r}, which is not under properties")
        return schema


def describe(exc: ValidationError) -> str:
    """One line for the first problem; the scale's ends get words of their own (the commonest mistake)."""
    err = exc.errors()[0]
    loc = [str(p) for p in err["loc"]]
    if loc[:2] == ["judge", "scale"]:
        if len(loc) == 3:  # one end is not a whole number (.inf, 1.5, true, "1"), or missing
            end = "low" if loc[2] == "0" else "high"
            problem = "is missing" if err["type"] == "missing" else "is not a whole number"
            return f"judge.scale: expected two whole numbers, e.g. [1, 5]; the {end} end {problem}"
        if err["type"] in ("tuple_type", "too_long", "too_short"):
            return "judge.scale: expected a list of two whole numbers, e.g. [1, 5]"
    return filecheck.describe(exc, UseCaseFile, {"judge": JudgeSpec})


def parse(data: Any, label: str) -> UseCaseFile:
    """``use_case.yaml``'s parsed YAML as a UseCaseFile, or a ConfigError: ``<label>: <key>: <what is wrong>``."""
    if not isinstance(data, dict):
        raise ConfigError(f"{label}: expected a mapping of keys (description, topics, examples, output_schema, "
                          "judge...)")
    try:
        return UseCaseFile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{label}: {describe(exc)}") from None
