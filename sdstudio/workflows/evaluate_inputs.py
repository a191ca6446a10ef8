"""What an evaluation judges: the prompt/completion pairs of a generation job's ok records, or of an uploaded
table's rows (CSV / JSONL / Parquet / JSON / Excel), each with where it came from.

Tables are streamed (``table_stream``): ``--limit N`` reads N rows, and a dry run's estimate walks the file a
chunk at a time instead of holding a million pairs (1.3 GB and 24 s before).

A table (``table:db.name``) or a URI Spark reads (``hdfs://``, ``s3a://``, ``file:``...) is read through Spark
(``spark_io``): the same rows and positions as the local reader gives the same file, the limit pushed down.

Kept apart from ``evaluate.py`` (the plan, the judge's replies and the run) because reading inputs is its own
concern, shared with the alignment workflow (``read_table``, the one rule for table values in ``_text``);
``evaluate`` re-exports these names.
"""
from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

from .. import spark_io
from ..config import EvaluationJob
from ..errors import ConfigError
from ..spark_io import is_spark_source
from ..store import Store
from ..table_stream import TableFile
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


def pairs_from_job(store: Store, job_id: int, use_case: UseCase, home: Any = None, limit: int | None = None
                   ) -> list[Pair]:
    """The ok records of a generation job (the first ``limit`` of them). Items with its prompt and completion
    fields (as its workflow declares them; else the use case's) are judged as that pair (other fields shown
    beside it); rows without them (freeform) as a whole JSON row."""
    from .fields import conversation_parts, job_fields

    pairs = []
    fields = job_fields(store, job_id, home)
    p_field = fields.prompt or use_case.prompt_field
    c_field = fields.completion or use_case.completion_field
    for rec in islice(store.records("generation", job_id, "ok"), limit):
        item = rec["output"]
        provenance = {"source_record_id": rec["id"], "source_job_id": job_id, "row": None}
        chat = item.get(fields.messages) if isinstance(item, dict) and fields.messages else None
        if isinstance(chat, list) and chat:  # a whole conversation: the opening, then every turn after it
            system, opening, rest = conversation_parts(chat)
            extras = {"system_prompt": system} if system else {}
            pair = Pair(f"rec:{rec['id']}", opening, rest, rec["topic"], extras, provenance)
        elif isinstance(item, dict) and p_field and c_field and p_field in item and c_field in item:
            extras = {k: _text(v) for k, v in item.items() if k not in (p_field, c_field)}
            pair = Pair(f"rec:{rec['id']}", _text(item[p_field]), _text(item[c_field]), rec["topic"], extras,
                        provenance)
        else:
            pair = Pair(f"rec:{rec['id']}", "", _text(item), rec["topic"], {}, provenance)
        pairs.append(pair)
    if not pairs:
        raise ConfigError(f"generation job {job_id} has no ok records to judge")
    return pairs


def open_input(path: str | Path, home: str | Path | None = None) -> TableFile:
    """An input table (CSV / TSV / JSONL / JSON / Parquet / Excel, CSV and JSONL also .gz) to stream; a bare name
    also looks in SDSTUDIO_HOME/uploads. Only the file's start is read here."""
    from ..table_stream import open_table

    return open_table(path, home=home)


def read_table(path: str | Path, home: str | Path | None = None, limit: int | None = None):
    """An input table as a DataFrame: every row, or the first ``limit`` (only those are read). Values keep
    the types pandas infers (numbers stay numbers), as the judge and the alignment prompts always had them."""
    import pandas as pd

    if is_spark_source(path):
        return spark_io.read_frame(str(path), limit=limit)[1]
    chunks = list(open_input(path, home).chunks(text_cells=False, limit=limit))
    return pd.concat(chunks) if chunks else pd.DataFrame()


def iter_chunks(path: str | Path, columns: list[str], home: str | Path | None = None, limit: int | None = None,
                master: str | None = None) -> Iterator[Any]:
    """DataFrames of just ``columns``, a chunk of rows at a time (indexed by row position); a missing column is
    one line. A column only later rows of a JSONL file have is None in the earlier ones. A Spark source streams
    from Spark (``master``: when no session runs yet)."""
    if is_spark_source(path):
        yield from spark_io.iter_chunks(str(path), columns, limit, master=master, label=f"input file {path}")
        return
    table = open_input(path, home)
    known: list[str] | None = None
    for chunk in table.chunks(text_cells=False, limit=limit):
        if known is None:
            known = list(chunk.columns)
            missing = [c for c in columns if c not in known]
            if missing:
                raise ConfigError(f"input file {path} has no column {missing[0]!r} (columns: {', '.join(known[:20])})")
        yield chunk.reindex(columns=list(dict.fromkeys(columns)))[columns]


def iter_rows(path: str | Path, columns: list[str], home: str | Path | None = None, limit: int | None = None
              ) -> Iterator[tuple[int, list[Any]]]:
    """(row position, [value of each column]) for each row, streaming; a missing column is one line."""
    for chunk in iter_chunks(path, columns, home, limit):
        yield from zip(chunk.index.tolist(), chunk.values.tolist())


def pairs_from_file(config: EvaluationJob, home: str | Path | None = None) -> list[Pair]:
    """The rows of an input table as pairs: all of them, or the first ``config.limit`` (only those read)."""
    columns = [config.prompt_column, config.completion_column] + ([config.topic_column] if config.topic_column else [])
    pairs = [_pair(i, values) for i, values in _checked_rows(config, columns, home, config.limit)]
    if not pairs:
        raise ConfigError(f"input file {config.input_file} has no rows")
    return pairs


def _pair(i: int, values: list[Any]) -> Pair:
    topic = _text(values[2]) or None if len(values) > 2 else None
    return Pair(f"row:{i}", _text(values[0]), _text(values[1]), topic, {},
                {"source_record_id": None, "source_job_id": None, "row": i})


def _checked_rows(config: EvaluationJob, columns: list[Any], home: str | Path | None, limit: int | None
                  ) -> Iterator[tuple[int, list[Any]]]:
    for chunk in _checked_chunks(config, columns, home, limit):
        yield from zip(chunk.index.tolist(), chunk.values.tolist())


def _checked_chunks(config: EvaluationJob, columns: list[Any], home: str | Path | None, limit: int | None = None
                    ) -> Iterator[Any]:
    """Chunks of the input file; a missing prompt/completion/topic column is named by its flag."""
    try:
        yield from iter_chunks(str(config.input_file), columns, home, config.limit if limit is None else limit,
                               master=config.run.spark_master)
    except ConfigError as exc:
        for flag, column in (("prompt", config.prompt_column), ("completion", config.completion_column),
                             ("topic", config.topic_column)):
            if column is not None and f"no column {column!r}" in str(exc):
                known = str(exc).split("(columns: ", 1)[-1].rstrip(")")
                raise ConfigError(f"input file {config.input_file} has no {flag} column {column!r} (columns: "
                                  f"{known})") from None
        raise


def file_prompt_sizes(config: EvaluationJob, prompt: Callable[[Pair], str], exact: int = 200,
                      home: str | Path | None = None) -> tuple[int, int, str]:
    """(rows, characters of all judge prompts, the first prompt) of an input file, streaming: a dry run over
    a million rows reads them a chunk at a time. The first ``exact`` prompts are rendered; every later one is
    estimated as its fields' length plus the rendered ones' mean template overhead (exact for templates that
    show each field once, as the shipped ones do)."""
    columns = [config.prompt_column, config.completion_column] + ([config.topic_column] if config.topic_column else [])
    rows = chars = overhead = 0
    first = ""
    for chunk in _checked_chunks(config, columns, home):
        head = min(max(exact - rows, 0), len(chunk))
        for i, values in zip(chunk.index[:head].tolist(), chunk.iloc[:head].values.tolist()):
            pair = _pair(i, values)
            text = prompt(pair)
            first = first or text
            chars += len(text)
            overhead += len(text) - len(pair.prompt) - len(pair.completion) - len(pair.topic or "")
        rest = chunk.iloc[head:]
        if len(rest):  # the fields' text, as _text makes it, measured a column at a time
            chars += sum(_text_length(rest[c]) for c in columns)
            chars += len(rest) * (overhead // max(min(rows + head, exact), 1))
        rows += len(chunk)
    if not rows:
        raise ConfigError(f"input file {config.input_file} has no rows")
    return rows, chars, first


def _text_length(column: Any) -> int:
    """Total length of a column's values as ``_text`` shows them; text columns are measured without a Python
    call per cell (a million-row dry run)."""
    import pandas as pd

    if isinstance(column.dtype, pd.StringDtype):
        return int(column.str.len().fillna(0).sum())
    return int(column.map(_text).str.len().sum())
