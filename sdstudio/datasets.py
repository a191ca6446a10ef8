"""User datasets: read CSV, TSV, JSONL, JSON, Parquet or Excel into a DataFrame, preview it, pick rows.

Users bring whatever their tools export, so every way a file can be wrong becomes one line that names
the file and the problem: missing, empty, not UTF-8 (Excel's CSVs often are cp1252: say so, or re-save),
a JSON line that does not parse, a type that is not a table. Text is decoded strictly: a silently
mis-decoded column would be paid for in every prompt.

CSV/TSV cells are read as text, as written (``007`` stays ``007``): a prompt should show the user's data,
not pandas' guess at its type. JSON, Parquet and Excel keep their own types.

Rows keep their position in the file as the DataFrame index, so a sampled or limited selection still
says which source row each output came from.
"""
from __future__ import annotations

import io
import json
import math
import re
from pathlib import Path
from typing import Any

from .errors import ConfigError

TEXT_FORMATS = {".csv": "csv", ".tsv": "tsv", ".txt": None, ".jsonl": "jsonl", ".ndjson": "jsonl",
                ".json": "json"}
BINARY_FORMATS = {".parquet": "parquet", ".pq": "parquet", ".xlsx": "excel", ".xlsm": "excel"}
FORMATS = ".csv, .tsv, .jsonl, .json, .parquet or .xlsx"
MAX_REASON = 160


class DatasetError(ConfigError):
    """An input dataset cannot be read or used; the message names the file and what to do."""


def _short(text: Any) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= MAX_REASON else text[:MAX_REASON - 3] + "..."


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
                 sheet: str | None = None, home: str | Path | None = None):
    """A file (path, or bytes with its ``name`` for the format) as a DataFrame of rows."""
    import pandas as pd  # noqa: F401 - fail here, not halfway, if pandas is missing

    if isinstance(source, (bytes, bytearray)):
        label, data = name or "upload", bytes(source)
        suffix = Path(label).suffix.lower()
    else:
        file = resolve_input(source, home)
        label, suffix = str(source), file.suffix.lower()
        try:
            data = file.read_bytes()
        except OSError as exc:
            raise DatasetError(f"cannot read input file {label}: {exc.strerror or exc}") from None
    if suffix not in TEXT_FORMATS and suffix not in BINARY_FORMATS:
        raise DatasetError(f"input file {label}: unknown format {suffix or '(no extension)'!r}; use {FORMATS}")
    if not data.strip():
        raise DatasetError(f"input file {label} is empty")
    kind = BINARY_FORMATS.get(suffix) or TEXT_FORMATS[suffix]
    frame = _parse_binary(data, kind, label, sheet) if suffix in BINARY_FORMATS \
        else _parse_text(_decode(data, encoding, label), kind, label)
    if frame.empty:
        raise DatasetError(f"input file {label} has no rows")
    frame.columns = [str(c) for c in frame.columns]
    blank = [c for c in frame.columns if not c.strip() or c.startswith("Unnamed: ")]
    if len(blank) == len(frame.columns):
        raise DatasetError(f"input file {label} has no named columns; the first row must hold column names")
    return frame.reset_index(drop=True)


def _decode(data: bytes, encoding: str | None, label: str) -> str:
    if encoding is None:
        if data.startswith((b"\xff\xfe", b"\xfe\xff")):
            encoding = "utf-16"
        else:
            encoding = "utf-8-sig"
    try:
        return data.decode(encoding)
    except LookupError:
        raise DatasetError(f"unknown text encoding {encoding!r}; use e.g. utf-8, cp1252 or latin-1") from None
    except UnicodeDecodeError as exc:
        shown = "UTF-8" if encoding == "utf-8-sig" else encoding
        raise DatasetError(f"input file {label} is not {shown} text (byte 0x{data[exc.start]:02x} at offset "
                           f"{exc.start}); re-save it as UTF-8 or give its encoding (e.g. encoding: cp1252)") from None


def _parse_text(text: str, kind: str | None, label: str):
    import pandas as pd

    if kind is None:  # .txt: a table in disguise; the first line decides
        first = text.lstrip()[:1]
        kind = "jsonl" if first == "{" else "json" if first == "[" else "tsv" if "\t" in text.split("\n", 1)[0] else "csv"
    if kind in ("csv", "tsv"):
        try:
            return pd.read_csv(io.StringIO(text), sep="\t" if kind == "tsv" else ",", keep_default_na=False,
                               dtype=object)
        except Exception as exc:  # noqa: BLE001 - pandas raises many kinds; the user needs one line
            raise DatasetError(f"cannot read input file {label} as {kind.upper()}: {_short(exc)}") from None
    if kind == "jsonl":
        rows = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise DatasetError(f"input file {label}: line {number} is not valid JSON ({exc.msg})") from None
            except RecursionError:
                raise DatasetError(f"input file {label}: line {number} nests JSON too deeply to be a row") from None
        return _frame_from_records(rows, label)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"input file {label} is not valid JSON (line {exc.lineno}: {exc.msg})") from None
    except RecursionError:
        raise DatasetError(f"input file {label} nests JSON too deeply to be a table of rows") from None
    if isinstance(value, dict):  # {"data": [...]} / {"rows": [...]}: the one list of rows inside
        lists = [v for v in value.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise DatasetError(f"input file {label}: expected a JSON array of objects (one per row)")
        value = lists[0]
    if not isinstance(value, list):
        raise DatasetError(f"input file {label}: expected a JSON array of objects (one per row)")
    return _frame_from_records(value, label)


def _frame_from_records(rows: list[Any], label: str):
    import pandas as pd

    bad = next((i for i, row in enumerate(rows) if not isinstance(row, dict)), None)
    if bad is not None:
        raise DatasetError(f"input file {label}: row {bad + 1} is not a JSON object (each row needs column names)")
    return pd.DataFrame.from_records(rows)


def _parse_binary(data: bytes, kind: str, label: str, sheet: str | None):
    import pandas as pd

    if kind == "parquet":
        try:
            return pd.read_parquet(io.BytesIO(data))
        except Exception as exc:  # noqa: BLE001
            raise DatasetError(f"cannot read input file {label} as Parquet: {_short(exc)}") from None
    try:
        import openpyxl  # noqa: F401
    except ImportError:
        raise DatasetError("reading Excel files needs openpyxl: pip install openpyxl (or save as CSV)") from None
    try:
        return pd.read_excel(io.BytesIO(data), sheet_name=sheet if sheet is not None else 0, dtype=object,
                             engine="openpyxl")
    except ValueError as exc:
        if sheet is not None and "not found" in str(exc).lower():
            raise DatasetError(f"input file {label} has no sheet {sheet!r}") from None
        raise DatasetError(f"cannot read input file {label} as Excel: {_short(exc)}") from None
    except Exception as exc:  # noqa: BLE001 - a corrupt zip, a renamed .xls...
        raise DatasetError(f"cannot read input file {label} as Excel (.xlsx): {_short(exc)}") from None


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


def column_types(frame) -> Any:
    """One line per column: its type as a prompt sees it (text, integer, number, boolean, list, object,
    empty), how many rows have a value, and an example value."""
    import pandas as pd

    lines = []
    for column in frame.columns:
        values = [plain(v) for v in frame[column].tolist()]
        present = [v for v in values if v not in (None, "")]
        kinds = {_kind(v) for v in present}
        kind = "empty" if not kinds else kinds.pop() if len(kinds) == 1 else \
            "number" if kinds <= {"integer", "number"} else "mixed"
        example = next(iter(present), None)
        example = json.dumps(example, ensure_ascii=False) if isinstance(example, (list, dict)) else example
        lines.append({"column": column, "type": kind, "non_empty": len(present), "rows": len(values),
                      "example": _short(example) if example is not None else ""})
    return pd.DataFrame(lines, columns=["column", "type", "non_empty", "rows", "example"])


def preview_dataset(source: str | Path | bytes, rows: int = 5, **read: Any) -> tuple[Any, Any]:
    """(first ``rows`` rows, column types) of a dataset: what a notebook shows after an upload."""
    frame = read_dataset(source, **read)
    return frame.head(rows), column_types(frame)


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
