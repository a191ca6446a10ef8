"""Augmentation presets: ready-made workflow steps in ``templates/workflows/<name>.yaml``.

A preset is a small workflow definition with options: ``${column}`` in its steps is replaced by the
option's value before the steps are validated. An option marked ``column: true`` names a dataset
column, so in templates it becomes a reference to that column (``question``, or ``row["Question
text"]`` for a name that is not an identifier) and in step names and output columns a slug
(``question_text``). A preset may also set workflow fields (``variations``). The result is plain steps
the user can edit further; a YAML file with the same name in ``SDSTUDIO_HOME/templates/workflows``
overrides a shipped one.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

import yaml
from pydantic import Field, StrictBool, StrictFloat, StrictInt, StrictStr, ValidationError, field_validator

from .. import filecheck, safeyaml
from ..config import WorkflowJob, WorkflowStep, _validate
from ..errors import ConfigError
from ..home import resolve_home
from ..usecases import SHIPPED_TEMPLATES

JOB_FIELDS = {"variations"}  # workflow fields a preset may set
Scalar = StrictStr | StrictInt | StrictFloat | StrictBool


class OptionSpec(filecheck.StrictFile):
    """One option of a preset, as its YAML writes it (a bare value is its default)."""

    default: Scalar | None = None  # None: the option is required
    column: bool = False  # names a dataset column
    choices: list[StrictStr | StrictInt | StrictFloat] = Field(default_factory=list)
    description: str = ""


class PresetFile(filecheck.StrictFile):
    """A preset's YAML: checked once at load, so a wrong type is one line naming the key, not an error later
    from inside the substitution (``options: 5`` used to end in "'int' object has no attribute 'items'")."""

    name: str | None = None
    description: str = ""
    options: dict[str, OptionSpec | Scalar | None] = Field(default_factory=dict)
    steps: list[dict[str, Any]] = Field(min_length=1)  # validated as WorkflowSteps once the options are filled in
    variations: StrictInt | StrictStr | None = None  # a number, or ${option} text filled in like the steps

    @field_validator("options")
    @classmethod
    def _option_names(cls, options: dict[str, Any]) -> dict[str, Any]:
        for name, spec in options.items():
            if not re.fullmatch(r"[_a-zA-Z][_a-zA-Z0-9]*", name):
                raise ValueError(f"{name!r} cannot be written ${{{name}}} in a step: use letters, digits and _")
            if isinstance(spec, OptionSpec) and spec.choices and spec.default is not None \
                    and str(spec.default) not in {str(c) for c in spec.choices}:
                raise ValueError(f"{name}: its default {spec.default!r} is not one of its choices")
        return options


def parse_preset(data: Any, label: str) -> PresetFile:
    if not isinstance(data, dict):
        raise ConfigError(f"{label}: expected a mapping with a list of steps")
    try:
        return PresetFile.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        if tuple(err["loc"]) == ("steps",) and err["type"] in ("missing", "too_short"):
            raise ConfigError(f"{label}: needs a list of steps") from None
        raise ConfigError(f"{label}: {filecheck.describe(exc, PresetFile, {'options': OptionSpec})}") from None


@dataclass(frozen=True)
class PresetOption:
    name: str
    default: Any = None  # None: required
    column: bool = False  # names a dataset column
    choices: tuple[str, ...] = ()
    description: str = ""


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    options: dict[str, PresetOption]
    steps: list[dict[str, Any]]
    fields: dict[str, Any]
    path: Path


def preset_dirs(home: str | Path | None = None) -> list[Path]:
    return [resolve_home(home) / "templates" / "workflows", SHIPPED_TEMPLATES / "workflows"]


def list_presets(home: str | Path | None = None) -> dict[str, str]:
    """Preset name -> description, the user's first."""
    found: dict[str, str] = {}
    for folder in preset_dirs(home):
        for path in sorted(folder.glob("*.yaml")) if folder.is_dir() else []:
            if path.stem not in found:
                try:
                    found[path.stem] = load_preset(path.stem, home).description
                except ConfigError as exc:  # a broken one is listed as such; the others stay usable
                    found[path.stem] = f"cannot be used: {exc}"
    return dict(sorted(found.items()))


def load_preset(name: str, home: str | Path | None = None) -> Preset:
    path = next((d / f"{name}.yaml" for d in preset_dirs(home) if (d / f"{name}.yaml").is_file()), None)
    if path is None or not re.fullmatch(r"[\w-]+", name):
        known = ", ".join(list_presets(home)) or "none"
        raise ConfigError(f"unknown workflow preset {name!r}; presets: {known}")
    try:
        data = safeyaml.load(path.read_text(encoding="utf-8"), f"preset {path}")
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"preset {path}: cannot read it ({' '.join(str(exc).split())[:160]})") from None
    spec = parse_preset(data, f"preset {path}")
    options = {}
    for key, option in spec.options.items():
        option = option if isinstance(option, OptionSpec) else OptionSpec(default=option)
        options[key] = PresetOption(key, option.default, option.column, tuple(str(c) for c in option.choices),
                                    option.description)
    fields = {k: getattr(spec, k) for k in JOB_FIELDS if getattr(spec, k) is not None}
    return Preset(name, spec.description.strip(), options, [dict(step) for step in spec.steps], fields, path)


def _slug(value: Any) -> str:
    slug = re.sub(r"\W+", "_", str(value).strip().lower()).strip("_")
    return slug if slug and not slug[0].isdigit() else f"c_{slug}"


def _reference(column: str) -> str:
    return column if column.isidentifier() else f"row[{json.dumps(column, ensure_ascii=False)}]"


def _fill(value: Any, values: dict[str, dict[str, str]], key: str = "") -> Any:
    """Substitute options into a parsed preset: prompt text gets column references, step names and
    output columns get slugs, anything else the plain value."""
    if isinstance(value, dict):
        return {k: _fill(v, values, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, values, key) for v in value]
    if isinstance(value, str):
        form = "prompt" if key in ("template", "system_prompt") else "name" if key in ("name", "output_column") \
            else "plain"
        try:
            return Template(value).substitute(values[form])
        except (KeyError, ValueError) as exc:
            raise ConfigError(f"preset uses ${{{exc.args[0] if exc.args else '?'}}}, which is not one of its "
                              f"options ({', '.join(sorted(values['plain'])) or 'none'})") from None
    return value


def preset_steps(name: str, *, home: str | Path | None = None, **options: Any) -> tuple[list[WorkflowStep], dict[str, Any]]:
    """The steps (and workflow fields) a preset makes with these options."""
    preset = load_preset(name, home)
    unknown = sorted(set(options) - set(preset.options))
    if unknown:
        raise ConfigError(f"preset {name} has no option {unknown[0]!r} (options: "
                          f"{', '.join(preset.options) or 'none'})")
    values = {}
    for option in preset.options.values():
        value = options.get(option.name, option.default)
        if value is None or (isinstance(value, str) and not value.strip()):
            raise ConfigError(f"preset {name} needs option {option.name!r}"
                              + (f" ({option.description})" if option.description else ""))
        if option.choices and str(value) not in option.choices:
            raise ConfigError(f"preset {name}: option {option.name} must be one of {', '.join(option.choices)}, "
                              f"not {value!r}")
        values[option.name] = value
    forms = {"plain": {k: str(v) for k, v in values.items()},
             "name": {k: _slug(v) for k, v in values.items()},
             "prompt": {k: _reference(str(v)) if preset.options[k].column else str(v) for k, v in values.items()}}
    steps = [_validate(WorkflowStep, _fill(step, forms), f"preset {name}") for step in preset.steps]
    return steps, _fill(preset.fields, forms)


def apply_preset(config: WorkflowJob | None, name: str, *, home: str | Path | None = None,
                 **options: Any) -> WorkflowJob:
    """``config`` with the preset's steps appended (and its workflow fields set); a new workflow when
    ``config`` is None. Unknown columns are reported when the workflow is planned against its input."""
    steps, fields = preset_steps(name, home=home, **options)
    data = config.model_dump(mode="json", exclude_none=True) if config is not None else {}
    data["steps"] = [*data.get("steps", []), *(s.model_dump(mode="json", exclude_none=True) for s in steps)]
    data.update(fields)
    data["kind"] = "workflow"
    return _validate(WorkflowJob, data, f"preset {name}")


__all__ = ["Preset", "PresetOption", "apply_preset", "list_presets", "load_preset", "preset_steps"]
