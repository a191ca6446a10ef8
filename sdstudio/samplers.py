"""Attribute samplers: named dimensions (difficulty, audience, persona...) drawn per request for diversity.

Why: a model asked the same prompt many times writes the same few items. Varying what the prompt says about
the item (how hard, for whom, in whose voice) spreads the data out (Data Designer's samplers, persona
columns). A generation config declares them under ``attributes``::

    attributes:
      difficulty: [easy, medium, hard]               # uniform
      audience: {beginner: 3, expert: 1}             # weighted
      persona: "@personas.txt"                       # a file, one value a line
      depth:                                         # conditional on another attribute
        given: difficulty
        cases:
          easy: [one step]
          hard: {three steps: 2, five steps: 1}
        values: [two steps]                          # for a value of `difficulty` without a case

Every form is stored one way (``Attribute``: ``values`` + ``weights``, ``given`` + ``cases``), so a job typed
as a list, a mapping or on the CLI is the same config and the same hash.

Each request's draw depends only on the job's ``seed`` and the request's own name (topic, round, part): a
resumed run rebuilds the very same prompts (and request keys), so nothing already answered is asked again,
and the draws do not depend on how many requests came before. A ``@file`` is read when the plan is built,
looked up as a path, then in the use case's folder, then in ``templates/attributes/`` of the home and of
sdstudio (which ships ``personas.txt``).
"""
from __future__ import annotations

import hashlib
import random
from bisect import bisect_right
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_serializer, model_validator

from .errors import ConfigError

ATTRIBUTE_FOLDER = "attributes"  # under templates/: shared value files (personas.txt)
MAX_FILE_VALUES = 100_000
SPEC_KEYS = {"values", "weights", "given", "cases"}


class AttributeValues(BaseModel):
    """Values and their weights (None: uniform); ``values`` may be ``"@file"``, read when the plan is built."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, hide_input_in_errors=True)

    values: list[str] | str = Field(default_factory=list)
    weights: list[float] | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        """A list, ``"@file"`` or a ``{value: weight}`` mapping, as well as the full form."""
        if isinstance(data, (list, tuple)):
            return {"values": list(data)}
        if isinstance(data, str):
            return {"values": data}
        if isinstance(data, dict) and data and not set(data) & SPEC_KEYS:
            return {"values": [str(k) for k in data], "weights": list(data.values())}
        return data

    @field_validator("values", mode="before")
    @classmethod
    def _values_as_text(cls, value: Any) -> Any:
        if isinstance(value, (list, tuple)):  # YAML's `[1, 2, 3]` or `[yes, no]`: the values are names
            return [v if isinstance(v, str) else str(v).lower() if isinstance(v, bool) else str(v) for v in value]
        return value

    @field_validator("values")
    @classmethod
    def _file_or_values(cls, value: list[str] | str) -> list[str] | str:
        if isinstance(value, str):
            if not value.startswith("@") or not value[1:].strip():
                raise ValueError(f"{value!r}: give a list of values, or @FILE (one value a line)")
            return "@" + value[1:].strip()
        cleaned = [v.strip() for v in value]
        if any(not v for v in cleaned):
            raise ValueError("a value is blank")
        if len(set(cleaned)) != len(cleaned):
            raise ValueError("a value is listed twice; give it a higher weight instead")
        return cleaned

    @model_validator(mode="after")
    def _weights_fit(self) -> "AttributeValues":
        if self.weights is None:
            return self
        if any(w < 0 for w in self.weights) or not sum(self.weights) > 0:
            raise ValueError("weights must be >= 0 and not all 0")
        if isinstance(self.values, list) and len(self.weights) != len(self.values):
            raise ValueError(f"{len(self.weights)} weights for {len(self.values)} values")
        if isinstance(self.values, str):
            raise ValueError("weights cannot go with a @file (every line is one equally likely value)")
        if len(set(self.weights)) == 1:  # equal weights are uniform: one job, however it was written
            object.__setattr__(self, "weights", None)
        return self

    @model_serializer(mode="wrap")
    def _unset_unsaid(self, handler: Any) -> dict[str, Any]:
        """What is not set is not written: the stored config (and its hash) holds only what was said."""
        data = handler(self)
        return {k: v for k, v in data.items() if v not in (None, [], {})} if isinstance(data, dict) else data


class Attribute(AttributeValues):
    """One dimension: its values, or ``cases`` per value of another attribute (``given``), with ``values``
    as the fallback for a value of ``given`` that has no case."""

    given: str | None = None
    cases: dict[str, AttributeValues] | None = None

    @model_validator(mode="after")
    def _cases_need_given(self) -> "Attribute":
        if (self.given is None) != (not self.cases):
            raise ValueError("`given` (the attribute it depends on) and `cases` (values per value of it) go together")
        if self.given is None and not self.values:
            raise ValueError("no values")
        return self


def normalise(attributes: dict[str, Any] | None) -> dict[str, Attribute] | None:
    """Check the names and the ``given`` links (known, no cycle); the values are checked by ``Attribute``."""
    if attributes is None:
        return None
    from pydantic import ValidationError

    out: dict[str, Attribute] = {}
    for name, spec in attributes.items():
        try:
            out[str(name)] = spec if isinstance(spec, Attribute) else Attribute.model_validate(spec)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            raise ValueError(f"attribute {name}: {where + ': ' if where else ''}"
                             f"{err['msg'].removeprefix('Value error, ')}") from None
    for name, spec in out.items():
        if not name.isidentifier():
            raise ValueError(f"attribute {name!r}: not a template variable name (letters, digits and _)")
        if spec.given is not None and spec.given not in out:
            raise ValueError(f"attribute {name}: given {spec.given!r}, which is not an attribute of this job")
    order(out)
    return out  # {}: no attributes, not even the use case's


def order(specs: dict[str, Attribute]) -> list[str]:
    """Names in declaration order, each after the one it is ``given`` (a cycle is an error)."""
    done: list[str] = []

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in done:
            return
        if name in path:
            raise ValueError(f"attributes depend on each other in a circle: {' -> '.join((*path, name))}")
        given = specs[name].given
        if given is not None:
            visit(given, (*path, name))
        done.append(name)

    for name in specs:
        visit(name, ())
    return done


def parse_flag(text: str) -> tuple[str, dict[str, Any]]:
    """``--attribute NAME=v1,v2,v3`` (``NAME=v1:3,v2:1`` weights them: every value then carries a weight, so a
    value such as ``10:30`` in an unweighted list stays whole; ``NAME=@file``) -> (name, its spec)."""
    name, sep, rest = text.partition("=")
    name = name.strip()
    if not sep or not name or not rest.strip():
        raise ConfigError(f"--attribute {text!r}: expected NAME=v1,v2,v3 (or NAME=@FILE)")
    if rest.strip().startswith("@"):
        return name, {"values": rest.strip()}
    parts = [part.strip() for part in rest.split(",")]
    weighted = [_weighted(part) for part in parts]
    if all(w is not None for w in weighted):
        return name, {"values": [v for v, _ in weighted], "weights": [w for _, w in weighted]}
    return name, {"values": parts}


def _weighted(part: str) -> tuple[str, float] | None:
    value, colon, weight = part.rpartition(":")
    try:
        return (value.strip(), float(weight)) if colon and value.strip() else None
    except ValueError:
        return None


# -- drawing ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Choice:
    """Values and their cumulative weights: one uniform number picks one value."""

    values: tuple[str, ...]
    cumulative: tuple[float, ...]

    @classmethod
    def of(cls, values: list[str], weights: list[float] | None) -> "Choice":
        weights = weights or [1.0] * len(values)
        return cls(tuple(values), tuple(accumulate(weights)))

    def pick(self, u: float) -> str:
        """The value at ``u`` in [0, 1): the same ``u`` always picks the same value."""
        index = bisect_right(self.cumulative, u * self.cumulative[-1])
        return self.values[min(index, len(self.values) - 1)]

    def probabilities(self) -> dict[str, float]:
        total, previous, out = self.cumulative[-1], 0.0, {}
        for value, upto in zip(self.values, self.cumulative):
            out[value], previous = (upto - previous) / total, upto
        return out


@dataclass(frozen=True)
class Dimension:
    name: str
    default: Choice | None       # the values (for a conditional one: when its given value has no case)
    given: str | None = None
    cases: dict[str, Choice] | None = None

    def choice(self, drawn: dict[str, str]) -> Choice:
        if self.given is not None and self.cases and drawn[self.given] in self.cases:
            return self.cases[drawn[self.given]]
        assert self.default is not None  # build() refused a value of `given` with neither case nor fallback
        return self.default


class AttributeSampler:
    """The job's dimensions, resolved (files read, conditions checked), drawing one combination per name."""

    def __init__(self, dimensions: list[Dimension], seed: int = 0):
        self.dimensions = dimensions
        self.seed = seed
        self.names = [d.name for d in dimensions]

    @classmethod
    def build(cls, attributes: dict[str, Any], seed: int | None = None,
              folders: list[Path] | tuple[Path, ...] = ()) -> "AttributeSampler":
        try:
            specs = normalise(attributes) or {}
            names = order(specs)
        except ValueError as exc:
            raise ConfigError(f"attributes: {exc}") from None
        dimensions: list[Dimension] = []
        known: dict[str, tuple[str, ...]] = {}
        for name in names:
            spec = specs[name]
            default = _choice(spec, name, folders) if spec.values else None
            cases = None
            if spec.given is not None:
                cases = {key: _choice(case, f"{name} (case {key})", folders) for key, case in (spec.cases or {}).items()}
                parent = known[spec.given]
                unknown = sorted(set(cases) - set(parent))
                if unknown:
                    raise ConfigError(f"attributes: {name}: case {unknown[0]!r} is not a value of {spec.given} "
                                      f"({', '.join(parent[:8])}{'...' if len(parent) > 8 else ''})")
                uncovered = [v for v in parent if v not in cases]
                if uncovered and default is None:
                    raise ConfigError(f"attributes: {name}: no case for {spec.given} = {uncovered[0]!r}; add one, or "
                                      "`values:` for the values of it without a case")
            dimension = Dimension(name, default, spec.given, cases)
            possible = set(default.values if default else ())
            for case in (cases or {}).values():
                possible.update(case.values)
            known[name] = tuple(sorted(possible))
            dimensions.append(dimension)
        return cls(dimensions, seed or 0)

    def draw(self, name: str) -> dict[str, str]:
        """The combination for the request called ``name``: the same seed and name, the same draw."""
        digest = hashlib.sha256(f"{self.seed}|{name}".encode()).digest()
        rng = random.Random(int.from_bytes(digest[:8], "big"))
        drawn: dict[str, str] = {}
        for dimension in self.dimensions:
            drawn[dimension.name] = dimension.choice(drawn).pick(rng.random())
        return drawn

    def expected(self, name: str, given_value: str | None = None) -> dict[str, float]:
        """The probability of each value of ``name`` (given its parent's value, for a conditional one)."""
        dimension = next(d for d in self.dimensions if d.name == name)
        if dimension.given is None:
            return dimension.default.probabilities() if dimension.default else {}
        return dimension.choice({dimension.given: given_value or ""}).probabilities()

    def describe(self) -> str:
        """One line per dimension, for a preview: ``difficulty: easy 33%, medium 33%, hard 33%``."""
        lines = []
        for d in self.dimensions:
            shown = _percent(d.default) if d.default else ""
            if d.given is not None:
                cases = "; ".join(f"{key} -> {_percent(c)}" for key, c in (d.cases or {}).items())
                shown = f"given {d.given}: {cases}" + (f"; otherwise {shown}" if shown else "")
            lines.append(f"{d.name}: {shown}")
        return "\n".join(lines)


def _percent(choice: Choice) -> str:
    shown = [f"{v if len(v) <= 40 else v[:37] + '...'} {p:.0%}" for v, p in list(choice.probabilities().items())[:6]]
    more = len(choice.values) - len(shown)
    return ", ".join(shown) + (f" ... (+{more} more)" if more > 0 else "")


def _choice(spec: AttributeValues, name: str, folders: list[Path] | tuple[Path, ...]) -> Choice:
    values = read_values(spec.values[1:], name, folders) if isinstance(spec.values, str) else spec.values
    return Choice.of(values, spec.weights)


def read_values(reference: str, name: str, folders: list[Path] | tuple[Path, ...] = ()) -> list[str]:
    """The values of a ``@file``: one a line, blank lines and ``#`` comments skipped, repeats dropped."""
    path = find_file(reference, folders)
    if path is None:
        where = ", ".join(str(f) for f in folders) or "the current folder"
        raise ConfigError(f"attributes: {name}: @{reference} not found (looked as a path and in {where})")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"attributes: {name}: cannot read {path} ({exc}); save it as UTF-8 text") from None
    values = list(dict.fromkeys(line.strip() for line in text.splitlines()
                                if line.strip() and not line.lstrip().startswith("#")))
    if not values:
        raise ConfigError(f"attributes: {name}: {path} holds no values (one a line)")
    if len(values) > MAX_FILE_VALUES:
        raise ConfigError(f"attributes: {name}: {path} holds {len(values):,} values; at most {MAX_FILE_VALUES:,}")
    return values


def find_file(reference: str, folders: list[Path] | tuple[Path, ...] = ()) -> Path | None:
    direct = Path(reference).expanduser()
    if direct.is_file():
        return direct
    if direct.is_absolute():
        return None
    return next((folder / reference for folder in folders if (folder / reference).is_file()), None)


def value_folders(use_case_folder: Path | None, home: str | Path | None = None) -> list[Path]:
    """Where a ``@file`` is looked up after its own path: the use case's folder, then templates/attributes/ of
    the home and of sdstudio."""
    from .usecases import template_dirs

    folders = [use_case_folder] if use_case_folder is not None else []
    return [*folders, *(root / ATTRIBUTE_FOLDER for root in template_dirs(home))]
