"""User datasets: read CSV, TSV, JSONL, JSON, Parquet or Excel into a DataFrame, preview it, pick rows.

Users bring whatever their tools export, so every way a file can be wrong becomes one line that names
the file and the problem: missing, empty, not UTF-8 (Excel's CSVs often are cp1252: say so, or re-save),
a JSON line that does not parse, a type that is not a table, a header naming a column twice. Text is decoded
strictly: a silently mis-decoded column would be paid for in every prompt.

CSV/TSV cells are read as text, as written (``007`` stays ``007``): a prompt should show the user's data,
not pandas' guess at its type. JSON, Parquet and Excel keep their own types.

Files are read through ``table_stream``, a chunk at a time: ``read_selection`` (a workflow's rows) and
``preview_dataset`` read only the rows they need, so ``--limit 5`` on a million-row file reads five rows.
Rows keep their position in the file as the DataFrame index, so a sampled or limited selection still
says which source row each output came from.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from .table_stream import FORMATS, DatasetError, open_table, short

PREVIEW_ROWS = 10_000  # rows a preview reads to type the columns
__all__ = ["FORMATS", "DatasetError", "column_types", "plain", "preview_dataset", "read_dataset", "read_selection",
           "resolve_input", "save_upload", "select_rows"]


def resolve_input(path: str | Path, home: str | Path | None = None) -> Path:
    """The file itself, or a bare name looked up in SDSTUDIO_HOME/uploads (where notebooks save uploads)."""
    from .home import resolve_home

    file = Path(path).expanduser()
    if not file.is_file() and not file.is_absolute():
        uploaded = resolve_home(home) / "uploads" / file
        if uploaded.is_file():
            return uploaded
    if not file.exists():
        raise DatasetError(f"input file {path} does not exist")
    if not file.is_file():
        raise DatasetError(f"input file {path} is not a file")
    return file


def save_upload(content: bytes, filename: str, home: str | Path | None = None) -> Path:
    """Keep a notebook upload under SDSTUDIO_HOME/uploads so the saved workflow can name it (and the CLI
    can run it later). The name is reduced to its last part: an upload never writes elsewhere."""
    from .home import init_home

    name = Path(filename.replace("\\", "/")).name
    if not name or name in (".", ".."):
        raise DatasetError(f"upload name {filename!r} is not a file name")
    folder = init_home(home) / "uploads"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / name
    target.write_bytes(content)
    return target


def read_dataset(source: str | Path | bytes, *, name: str | None = None, encoding: str | None = None,
                 sheet: str | None = None, home: str | Path | None = None, limit: int | None = None):
    """A file (path, or bytes with its ``name`` for the format) as a DataFrame of rows: all of them, or the
    first ``limit`` (only those are read)."""
    import pandas as pd

    table = open_table(source, name=name, encoding=encoding, sheet=sheet, home=home)
    chunks = list(table.chunks(limit=limit))
    frame = pd.concat(chunks) if chunks else pd.DataFrame()
    return _checked(frame, table.label)


def _checked(frame: Any, label: str):
    if frame.empty:
        raise DatasetError(f"input file {label} has no rows")
    frame.columns = [str(c) for c in frame.columns]
    blank = [c for c in frame.columns if not c.strip() or c.startswith("Unnamed: ")]
    if len(blank) == len(frame.columns):
        raise DatasetError(f"input file {label} has no named columns; the first row must hold column names")
    return frame


# -- preview and selection ------------------------------------------------------------------------

def plain(value: Any) -> Any:
    """A cell as a plain JSON-able Python value: numpy scalars unwrapped, NaN/NaT as None, times as text."""
    if value is None:
        return None
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):  # numpy scalars and arrays
        value = value.tolist()
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if type(value).__name__ in ("NaTType", "NAType"):
        return None
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


_INT = re.compile(r"^[+-]?\d+$")
_NUM = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object"
    text = str(value).strip()
    if _INT.match(text):
        return "integer"
    if _NUM.match(text):
        return "number"
    if text.lower() in ("true", "false"):
        return "boolean"
    return "text"


def column_values(frame, column: Any) -> tuple[list[Any], list[Any], str]:
    """A column as prompts see it: (every value, the non-empty ones, its type: text, integer, number, boolean,
    list, object, mixed or empty; integers mixed with decimals are numbers)."""
    values = [plain(v) for v in frame[column].tolist()]
    present = [v for v in values if v not in (None, "")]
    kinds = {_kind(v) for v in present}
    kind = "empty" if not kinds else kinds.pop() if len(kinds) == 1 else \
        "number" if kinds <= {"integer", "number"} else "mixed"
    return values, present, kind


def column_types(frame) -> Any:
    """One line per column: its type as a prompt sees it (text, integer, number, boolean, list, object,
    empty), how many rows have a value, and an example value."""
    import pandas as pd

    lines = []
    for column in frame.columns:
        values, present, kind = column_values(frame, column)
        example = next(iter(present), None)
        example = json.dumps(example, ensure_ascii=False) if isinstance(example, (list, dict)) else example
        lines.append({"column": column, "type": kind, "non_empty": len(present), "rows": len(values),
                      "example": short(example) if example is not None else ""})
    return pd.DataFrame(lines, columns=["column", "type", "non_empty", "rows", "example"])


def preview_dataset(source: str | Path | bytes, rows: int = 5, **read: Any) -> tuple[Any, Any]:
    """(first ``rows`` rows, column types) of a dataset: what a notebook shows after an upload. The types
    come from the first PREVIEW_ROWS rows; nothing past them is read."""
    frame = read_dataset(source, limit=max(rows, PREVIEW_ROWS), **read)
    return frame.head(rows), column_types(frame)


def read_selection(source: str | Path | bytes, *, columns: list[str] | None = None, limit: int | None = None,
                   sample: bool = False, seed: int = 42, label: str | None = None, **read: Any) -> tuple[list[str], Any]:
    """(the file's columns, the rows and columns a workflow runs over): ``select_rows(read_dataset(source))``,
    reading only what it needs. ``limit`` reads the first N rows; with ``sample``, the rows are counted (a
    stream of one column) and only the drawn ones are kept: the very rows ``frame.sample(n, random_state=seed)``
    would pick from the whole file, so a job sampled before resumes onto the same rows."""
    import numpy as np
    import pandas as pd

    table = open_table(source, **read)
    if limit is not None and sample:
        total = table.count()
        if limit < total:
            drawn = np.random.RandomState(seed).choice(total, size=limit, replace=False)
            frame = table.rows_at(sorted(drawn.tolist()))
        else:
            frame = pd.concat(list(table.chunks()) or [pd.DataFrame()])
    else:
        frame = pd.concat(list(table.chunks(limit=limit)) or [pd.DataFrame()])
    frame = _checked(frame, table.label)
    return list(frame.columns), select_rows(frame, columns=columns, label=label or f"input file {table.label}")


def select_rows(frame, *, columns: list[str] | None = None, limit: int | None = None, sample: bool = False,
                seed: int = 42, label: str = "input"):
    """The rows and columns a workflow runs over. ``limit`` keeps the first N rows, or N random ones
    (fixed ``seed``: the same rows every run, so re-running resumes) when ``sample`` is set."""
    if columns is not None:
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise DatasetError(f"{label} has no column {missing[0]!r} (columns: {', '.join(frame.columns)})")
        frame = frame[list(dict.fromkeys(columns))]
    if limit is not None and limit < len(frame):
        frame = frame.sample(n=limit, random_state=seed).sort_index() if sample else frame.head(limit)
    return frame
