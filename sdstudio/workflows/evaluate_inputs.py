"""What an evaluation judges: the prompt/completion pairs of a generation job's ok records, or of an uploaded
table's rows (CSV / JSONL / Parquet), each with where it came from.

Kept apart from ``evaluate.py`` (the plan, the judge's replies and the run) because reading inputs is its own
concern, shared with the alignment workflow (``read_table``, the one rule for table values in ``_text``);
``evaluate`` re-exports these names.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import EvaluationJob
from ..errors import ConfigError
from ..store import Store
from ..usecases import UseCase


@dataclass(frozen=True)
class Pair:
    """One prompt/completion pair to judge and where it came from."""

    source: str  # "rec:<generation record id>" or "row:<index in the input file>"
    prompt: str
    completion: str
    topic: str | None = None
    extras: dict[str, str] = field(default_factory=dict)  # the item's other fields (an explanation...)
    provenance: dict[str, Any] = field(default_factory=dict)


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):  # None / NaN from pandas
        return ""
    if isinstance(value, str):
        return value
    if hasattr(value, "tolist"):  # numpy arrays and scalars from Parquet
        value = value.tolist()
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


def pairs_from_job(store: Store, job_id: int, use_case: UseCase, home: Any = None) -> list[Pair]:
    """The ok records of a generation job. Items with its prompt and completion fields (as its workflow
    declares them; else the use case's) are judged as that pair (other fields shown beside it); rows
    without them (freeform) as a whole JSON row."""
    from .fields import job_fields

    pairs = []
    fields = job_fields(store, job_id, home)
    p_field = fields.prompt or use_case.prompt_field
    c_field = fields.completion or use_case.completion_field
    for rec in store.records("generation", job_id, "ok"):
        item = rec["output"]
        provenance = {"source_record_id": rec["id"], "source_job_id": job_id, "row": None}
        if isinstance(item, dict) and p_field and c_field and p_field in item and c_field in item:
            extras = {k: _text(v) for k, v in item.items() if k not in (p_field, c_field)}
            pair = Pair(f"rec:{rec['id']}", _text(item[p_field]), _text(item[c_field]), rec["topic"], extras,
                        provenance)
        else:
            pair = Pair(f"rec:{rec['id']}", "", _text(item), rec["topic"], {}, provenance)
        pairs.append(pair)
    if not pairs:
        raise ConfigError(f"generation job {job_id} has no ok records to judge")
    return pairs


def read_table(path: str | Path, home: str | Path | None = None):
    """A CSV / JSONL / Parquet file as a DataFrame. A bare name also looks in SDSTUDIO_HOME/uploads."""
    import pandas as pd

    from ..home import resolve_home

    file = Path(path).expanduser()
    if not file.is_file() and not file.is_absolute() and (resolve_home(home) / "uploads" / file).is_file():
        file = resolve_home(home) / "uploads" / file
    if not file.is_file():
        raise ConfigError(f"input file {path} does not exist")
    suffix = "".join(file.suffixes[-2:]).lower() if file.suffix.lower() == ".gz" else file.suffix.lower()
    try:
        if suffix.startswith((".csv", ".tsv")):
            return pd.read_csv(file, sep="\t" if suffix.startswith(".tsv") else ",", keep_default_na=False)
        if suffix.startswith((".jsonl", ".ndjson")):
            return pd.read_json(file, lines=True, dtype=False)
        if suffix.startswith(".json"):
            return pd.read_json(file, dtype=False)
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(file)
    except Exception as exc:  # noqa: BLE001 - pandas raises many kinds; the user needs one line
        raise ConfigError(f"cannot read input file {file}: {' '.join(str(exc).split())[:200]}") from None
    raise ConfigError(f"input file {file}: unknown format {file.suffix!r}; use .csv, .jsonl or .parquet")


def pairs_from_file(config: EvaluationJob, home: str | Path | None = None) -> list[Pair]:
    frame = read_table(config.input_file, home)
    for flag, column in (("prompt", config.prompt_column), ("completion", config.completion_column),
                         ("topic", config.topic_column)):
        if column is not None and column not in frame.columns:
            known = ", ".join(map(str, frame.columns[:20]))
            raise ConfigError(f"input file {config.input_file} has no {flag} column {column!r} (columns: {known})")
    if frame.empty:
        raise ConfigError(f"input file {config.input_file} has no rows")
    topics = frame[config.topic_column].tolist() if config.topic_column else [None] * len(frame)
    return [Pair(f"row:{i}", _text(p), _text(c), _text(t) or None, {},
                 {"source_record_id": None, "source_job_id": None, "row": i})
            for i, (p, c, t) in enumerate(zip(frame[config.prompt_column].tolist(),
                                               frame[config.completion_column].tolist(), topics))]
