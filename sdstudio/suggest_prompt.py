"""A use case drafted from example data: column statistics and a few rows go to the model, which drafts the
instruction, requirements and output keys; the draft is saved as a use case folder in the home's templates/.

Why statistics and not only rows: five rows show the style but not the spread. The model also needs each
column's type, how long its texts run, the range of its numbers and the labels a category column takes
(Cloudera's studio's "Generate Prompt", synthetic-data-kit's seeds from examples). The output schema is
not left to the model: a key that is a column keeps that column's type (an enum for a category column),
any other key is text, so the saved use case describes the data the user showed.

The folder (``use_case.yaml``, ``generate.jinja``, ``evaluate.jinja`` from the custom use case) is the user's
to edit; an existing folder is never overwritten: without ``--name`` the next free name is taken
(``tickets-2``), with it the command refuses.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .config import ModelSpec
from .errors import ConfigError

SAMPLE_ROWS = 5
STAT_ROWS = 2_000  # rows read for the statistics
MAX_CATEGORIES = 12  # a column with at most this many distinct values (repeated) is a category
FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

DRAFT_SCHEMA: dict[str, Any] = {
    "type": "object", "additionalProperties": False,
    "required": ["description", "instruction", "requirements", "output_keys", "prompt_field", "completion_field",
                 "topics"],
    "properties": {
        "description": {"type": "string", "minLength": 1},
        "instruction": {"type": "string", "minLength": 1},
        "requirements": {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1}},
        "output_keys": {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1}},
        "prompt_field": {"type": "string"}, "completion_field": {"type": "string"},
        "topics": {"type": "array", "items": {"type": "string", "minLength": 1}}}}


@dataclass
class Draft:
    """What the model drafted, checked, and where it was saved."""

    name: str
    folder: Path | None
    use_case: dict[str, Any]
    statistics: list[dict[str, Any]]
    tokens_in: int = 0
    tokens_out: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "folder": str(self.folder) if self.folder else None, "use_case": self.use_case,
                "statistics": self.statistics, "tokens_in": self.tokens_in, "tokens_out": self.tokens_out}


# -- what the model sees ---------------------------------------------------------------------------

def column_statistics(frame: Any) -> list[dict[str, Any]]:
    """Per column: its type, how many rows have a value, text lengths (chars), number ranges, categories."""
    from .datasets import column_values

    stats = []
    for column in frame.columns:
        values, present, kind = column_values(frame, column)
        entry: dict[str, Any] = {"column": str(column), "type": kind, "non_empty": len(present), "rows": len(values)}
        if kind in ("integer", "number"):
            numbers = [float(v) for v in present]
            entry.update(min=_tidy(min(numbers)), max=_tidy(max(numbers)))
        texts = [v if isinstance(v, str) else json.dumps(v, ensure_ascii=False) for v in present]
        distinct = sorted(set(texts))
        if texts and kind in ("text", "boolean", "integer") and len(distinct) <= MAX_CATEGORIES \
                and len(distinct) < len(texts):
            counts = {value: texts.count(value) for value in distinct}
            entry["categories"] = dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
        elif texts and kind in ("text", "mixed", "list", "object"):
            lengths = [len(t) for t in texts]
            entry["length"] = {"min": min(lengths), "mean": round(sum(lengths) / len(lengths)), "max": max(lengths)}
        stats.append(entry)
    return stats


def _tidy(number: float) -> float | int:
    return int(number) if number.is_integer() else round(number, 4)


def draft_prompt(statistics: list[dict[str, Any]], rows: list[dict[str, Any]], describe: str | None = None) -> str:
    lines = ["Below are statistics of a dataset's columns and a few of its rows. We want to generate more rows like "
             "them with a language model, one topic per request. Draft that generation prompt."]
    if describe:
        lines.append(f"What the data is for, in the user's words: {describe}")
    lines.append("\nColumns (type, rows with a value, text length in characters, number range, categories):")
    lines.extend(json.dumps(stat, ensure_ascii=False) for stat in statistics)
    lines.append("\nRows:")
    lines.extend(json.dumps(row, ensure_ascii=False)[:1500] for row in rows)
    lines.append(
        "\nReply with JSON only, with these keys: description (one sentence: what the data is), instruction (what "
        "to write for a topic, ending with a colon), requirements (rules each generated row must follow: its "
        "lengths, ranges, allowed categories, style), output_keys (the columns a generated row has: normally "
        "the dataset's columns, as they are named), prompt_field and completion_field (the output key that is "
        "the input of a training example and the one that is its answer), topics (5 to 10 topics that spread "
        "the rows over the domain).")
    return "\n".join(lines)


def read_examples(path: str | Path, home: str | Path | None = None) -> Any:
    from .datasets import read_dataset, resolve_input

    return read_dataset(resolve_input(path, home), limit=STAT_ROWS)


def sample_rows(frame: Any, count: int = SAMPLE_ROWS) -> list[dict[str, Any]]:
    """Rows spread over the file (first, last and between), not only its head."""
    from .datasets import plain

    total = len(frame)
    picks = sorted({round(i * (total - 1) / max(count - 1, 1)) for i in range(min(count, total))})
    return [{str(k): plain(v) for k, v in frame.iloc[i].items() if plain(v) not in (None, "")} for i in picks]


# -- the draft -> a use case folder ----------------------------------------------------------------

def suggest_use_case(input_file: str | Path, model: ModelSpec, *, home: str | Path | None = None,
                     name: str | None = None, describe: str | None = None, rows: int = SAMPLE_ROWS,
                     provider: Any = None, save: bool = True) -> Draft:
    """Ask the model for a draft from ``input_file``'s statistics and rows; save it as a use case folder."""
    from .topics import ask_json

    frame = read_examples(input_file, home)
    statistics = column_statistics(frame)
    shown = sample_rows(frame, rows)
    reply, completion = ask_json(model, draft_prompt(statistics, shown, describe), DRAFT_SCHEMA, provider=provider)
    chosen = name or folder_name(Path(str(input_file)).stem)
    case = use_case_from(reply, statistics, shown, chosen)
    draft = Draft(chosen, None, case, statistics, completion.usage.input_tokens, completion.usage.output_tokens)
    if save:
        draft.folder = save_use_case(case, home, explicit=name is not None)
        draft.name = draft.folder.name
    return draft


def use_case_from(reply: dict[str, Any], statistics: list[dict[str, Any]], rows: list[dict[str, Any]],
                  name: str) -> dict[str, Any]:
    """The use_case.yaml content: the model's words, the keys checked, the schema from the columns."""
    columns = {stat["column"]: stat for stat in statistics}
    keys = list(dict.fromkeys(k.strip() for k in reply["output_keys"] if FIELD_NAME.match(k.strip())))
    if not keys:
        keys = [c for c in columns if FIELD_NAME.match(c)]
    if not keys:
        raise ConfigError("no output key is a usable field name (letters, digits and _); rename the columns")
    prompt_field = reply.get("prompt_field") if reply.get("prompt_field") in keys else keys[0]
    completion_field = reply.get("completion_field") if reply.get("completion_field") in keys else keys[-1]
    examples = [{k: typed(row[k], columns.get(k)) for k in keys if k in row} for row in rows[:3]]
    return {
        "name": name, "description": " ".join(str(reply["description"]).split()), "technique": "sft",
        "instruction": str(reply["instruction"]).strip(), "prompt_field": prompt_field,
        "completion_field": completion_field,
        "topics": [t.strip() for t in reply.get("topics", []) if t.strip()][:20] or ["General"],
        "examples": [e for e in examples if e],
        "requirements": [r.strip() for r in reply["requirements"] if r.strip()],
        "output_schema": {"type": "object", "additionalProperties": False, "required": keys,
                          "properties": {k: key_schema(columns.get(k)) for k in keys}},
        "judge": {"scale": [1, 5], "criteria": "- The row is realistic and consistent with the examples.\n"
                                              "- Every requirement is met."},
    }


def key_schema(stat: dict[str, Any] | None) -> dict[str, Any]:
    """A column's JSON schema: its categories as an enum, its numeric type, else text."""
    if stat is None:
        return {"type": "string", "minLength": 1}
    if stat.get("categories") and stat["type"] == "text":
        return {"enum": list(stat["categories"])}
    return {"integer": {"type": "integer"}, "number": {"type": "number"}, "boolean": {"type": "boolean"},
            "list": {"type": "array"}, "object": {"type": "object"}}.get(stat["type"], {"type": "string"})


def typed(value: Any, stat: dict[str, Any] | None) -> Any:
    """A cell as its column's type (a CSV's "4" is the integer 4), so the examples agree with the schema."""
    kind = (stat or {}).get("type")
    try:
        if kind == "integer" and not isinstance(value, bool):
            return int(str(value).strip())
        if kind == "number" and not isinstance(value, bool):
            return float(str(value).strip())
    except ValueError:
        return value
    if kind == "boolean" and isinstance(value, str):
        return value.strip().lower() == "true"
    return value


def folder_name(stem: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9_-]+", "_", stem).strip("_-").lower()
    return cleaned or "suggested"


def save_use_case(case: dict[str, Any], home: str | Path | None = None, *, explicit: bool = False) -> Path:
    """Write the folder under the home's templates/; an existing folder is never touched."""
    from .home import init_home
    from .usecases import SHIPPED_TEMPLATES, load_use_case

    root = init_home(home) / "templates"
    name = folder_name(case["name"])
    folder = root / name
    if explicit and (folder.exists() or (SHIPPED_TEMPLATES / name).exists()):
        raise ConfigError(f"use case {name} exists already ({folder if folder.exists() else SHIPPED_TEMPLATES / name})"
                          "; choose another --name (nothing was overwritten)")
    number = 2
    while folder.exists() or (SHIPPED_TEMPLATES / folder.name).exists():
        folder, number = root / f"{name}-{number}", number + 1
    folder.mkdir(parents=True)
    case = {**case, "name": folder.name}
    (folder / "use_case.yaml").write_text(
        "# Drafted by `sdstudio suggest-prompt` from your examples: edit anything, it is yours.\n" +
        yaml.safe_dump(case, sort_keys=False, allow_unicode=True, width=110), encoding="utf-8")
    for template in ("generate.jinja", "evaluate.jinja"):
        (folder / template).write_text((SHIPPED_TEMPLATES / "custom" / template).read_text(encoding="utf-8"),
                                       encoding="utf-8")
    load_use_case(folder.name, home)  # the saved folder reads back as a use case (or says what is wrong)
    return folder
