"""Use cases: what to generate, described as data in ``templates/<name>/``.

Each folder holds ``use_case.yaml`` (description, default topics, examples, requirements, the output
JSON schema of one item, default judge criteria and scale) plus ``generate.jinja`` and
``evaluate.jinja``. A folder in ``SDSTUDIO_HOME/templates`` with the same name overrides the shipped one,
so users add or adapt use cases without touching the package.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from . import safeyaml
from .errors import ConfigError
from .home import resolve_home

SHIPPED_TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


@dataclass(frozen=True)
class UseCase:
    name: str
    description: str
    folder: Path
    generate_template: str
    evaluate_template: str
    technique: str = "sft"
    instruction: str = ""
    topics: list[str] = field(default_factory=list)
    examples: list[dict[str, Any]] = field(default_factory=list)
    requirements: list[str] = field(default_factory=list)
    output_schema: dict[str, Any] = field(default_factory=dict)
    prompt_field: str = "question"
    completion_field: str = "solution"
    judge_criteria: str = ""
    judge_scale: tuple[int, int] = (1, 5)
    inputs: dict[str, Any] = field(default_factory=dict)
    validators: list[str] = field(default_factory=list)
    attributes: dict[str, Any] = field(default_factory=dict)  # samplers.py; a job's own replace them


def template_dirs(home: str | Path | None = None) -> list[Path]:
    """Where use cases are looked up, first match wins: the user's, then the shipped ones."""
    return [resolve_home(home) / "templates", SHIPPED_TEMPLATES]


def list_use_cases(home: str | Path | None = None) -> list[str]:
    names: set[str] = set()
    for root in template_dirs(home):
        if root.is_dir():
            names.update(p.parent.name for p in root.glob("*/use_case.yaml"))
    return sorted(names)


def load_use_case(name: str, home: str | Path | None = None) -> UseCase:
    """A use case by name (the user's templates first, then the shipped ones), or by the path of its folder
    (``--use-case ./my_case``: anything with a slash, or starting with ``~`` or ``.``)."""
    if "/" in name or os.sep in name or name.startswith(("~", ".")):
        folder = Path(name).expanduser()
        if not (folder / "use_case.yaml").is_file():
            raise ConfigError(f"use case folder {folder} holds no use_case.yaml")
        return _load(folder)
    for root in template_dirs(home):
        folder = root / name
        if (folder / "use_case.yaml").is_file():
            return _load(folder)
    known = ", ".join(list_use_cases(home)) or "none"
    raise ConfigError(f"unknown use case {name!r}; known: {known}")


def _load(folder: Path) -> UseCase:
    """The use case in ``folder``; any mistake in its files is one ConfigError line naming the file (and, for
    ``use_case.yaml``, the key: its shape is ``usecase_file.UseCaseFile``)."""
    from .usecase_file import parse

    path = folder / "use_case.yaml"
    try:
        data = safeyaml.load(path.read_text(encoding="utf-8"), str(path))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read it ({' '.join(str(exc).split())[:200]})") from None
    spec = parse({} if data is None else data, str(path))
    templates = {}
    for kind in ("generate", "evaluate"):
        file = folder / f"{kind}.jinja"
        if not file.is_file():
            raise ConfigError(f"use case {folder.name}: {file} is missing")
        try:
            templates[kind] = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{file}: cannot read it ({' '.join(str(exc).split())[:200]})") from None
    return UseCase(
        name=spec.name or folder.name, description=spec.description, folder=folder,
        generate_template=templates["generate"], evaluate_template=templates["evaluate"],
        technique=spec.technique, instruction=spec.instruction, topics=list(spec.topics),
        examples=[dict(row) for row in spec.examples], requirements=list(spec.requirements),
        output_schema=dict(spec.output_schema), prompt_field=spec.prompt_field,
        completion_field=spec.completion_field, judge_criteria=spec.judge.criteria, judge_scale=spec.judge.scale,
        inputs=dict(spec.inputs), validators=list(spec.validators), attributes=dict(spec.attributes))


def schema_from_keys(keys: list[str]) -> dict[str, Any]:
    """Item schema for a custom use case: every named key is a required, non-empty string."""
    return {"type": "object", "additionalProperties": False, "required": list(keys),
            "properties": {k: {"type": "string", "minLength": 1} for k in keys}}


def schema_from_examples(examples: list[dict[str, Any]]) -> dict[str, Any]:
    """Item schema for freeform rows: the examples' keys, each with the JSON type the examples use."""
    if not examples:
        raise ConfigError("freeform generation needs at least one example row")
    names = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "object"}
    properties: dict[str, Any] = {}
    for row in examples:
        if not isinstance(row, dict) or not row:
            raise ConfigError("each freeform example must be a non-empty mapping of column -> value")
        for key, value in row.items():
            kind = names.get(type(value), "string")
            seen = properties.setdefault(key, {"type": kind})["type"]
            if seen != kind:
                if {seen, kind} == {"integer", "number"}:
                    properties[key]["type"] = "number"
                else:
                    raise ConfigError(f"freeform examples disagree on the type of {key!r} ({seen} vs {kind})")
    return {"type": "object", "additionalProperties": False, "required": list(properties),
            "properties": properties}
