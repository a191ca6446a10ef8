"""A user's table (CSV, TSV, JSONL, JSON, Parquet, Excel; CSV/TSV/JSONL also gzipped) read a chunk of rows at a
time, so a limit or a preview reads only what it needs.

``--limit 5`` on a million-row CSV used to read the whole file into pandas (817 MB) before keeping five rows;
now the first rows are parsed and the rest of the file is never read. Counting rows (a sample's draw, a dry
run's estimate) streams in fixed-size chunks of only the columns it needs; Parquet's row count is in its
footer. Only a JSON array is read whole: it has no row boundaries before it is parsed.

Text is decoded strictly as it streams (``DecodedReader``): a byte that is not valid in the encoding stops the
read with one line giving its offset in the file, as before. A header naming one column twice is refused with
one line naming the duplicates: pandas would silently rename the second to ``question.1``, and a prompt would
read the wrong one.

Every chunk keeps the rows' positions in the file as its index, so a limited or sampled selection still says
which source row each output came from.
"""
from __future__ import annotations

import codecs
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from .errors import ConfigError

CHUNK_ROWS = 10_000
BLOCK = 1 << 20  # bytes decoded at a time
TEXT_FORMATS = {".csv": "csv", ".tsv": "tsv", ".txt": None, ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json"}
BINARY_FORMATS = {".parquet": "parquet", ".pq": "parquet", ".xlsx": "excel", ".xlsm": "excel"}
FORMATS = ".csv, .tsv, .jsonl, .json, .parquet or .xlsx"
MAX_REASON = 160


class DatasetError(ConfigError):
    """An input dataset cannot be read or used; the message names the file and what to do."""


def short(text: Any) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= MAX_REASON else text[:MAX_REASON - 3] + "..."


class DecodedReader:
    """A binary stream as text, decoded strictly a block at a time; a bad byte becomes a DatasetError that
    gives its offset in the file (pandas reads this like a text file)."""

    def __init__(self, raw: BinaryIO, encoding: str | None, label: str) -> None:
        self.raw, self.label = raw, label
        self.pending = raw.read(4)
        if encoding is None:
            encoding = "utf-16" if self.pending.startswith((b"\xff\xfe", b"\xfe\xff")) else "utf-8-sig"
        try:
            self.decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
        except LookupError:
            raise DatasetError(f"unknown text encoding {encoding!r}; use e.g. utf-8, cp1252 or latin-1") from None
        self.encoding, self.consumed, self.error = encoding, 0, None

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self.raw.close()

    def read(self, size: int = -1) -> str:
        block = self.pending + self.raw.read(BLOCK if size is None or size < 0 else max(size, 4))
        self.pending = b""
        buffered = len(self.decoder.getstate()[0])
        try:
            text = self.decoder.decode(block, final=not block)
        except UnicodeDecodeError as exc:
            shown = "UTF-8" if self.encoding == "utf-8-sig" else self.encoding
            offset = self.consumed - buffered + exc.start
            self.error = DatasetError(f"input file {self.label} is not {shown} text (byte 0x{exc.object[exc.start]:02x} "
                                      f"at offset {offset}); re-save it as UTF-8 or give its encoding (e.g. "
                                      "encoding: cp1252)")
            raise self.error from None
        self.consumed += len(block)
        return text

    def lines(self) -> Iterator[str]:
        """Lines split on \\n only (a JSON string may hold U+2028, which str.splitlines would split on)."""
        rest = ""
        while True:
            text = self.read()
            if not text:
                break
            parts = (rest + text).split("\n")
            rest = parts.pop()
            yield from parts
        if rest:
            yield rest


@dataclass
class TableFile:
    """One table to read: where its bytes are, its format and encoding. Nothing is read until asked."""

    label: str
    kind: str  # csv | tsv | jsonl | json | parquet | excel
    path: Path | None = None
    data: bytes | None = None
    encoding: str | None = None
    sheet: str | None = None
    gzipped: bool = False

    # -- raw access ------------------------------------------------------------------------------
    def raw(self) -> BinaryIO:
        stream: BinaryIO = io.BytesIO(self.data) if self.data is not None else open(self.path, "rb")  # noqa: SIM115
        if self.gzipped:
            import gzip

            stream = gzip.GzipFile(fileobj=stream)  # type: ignore[assignment]
        return stream

    def text(self) -> DecodedReader:
        return DecodedReader(self.raw(), self.encoding, self.label)

    def _fail(self, exc: BaseException, reader: DecodedReader | None = None) -> DatasetError:
        if reader is not None and reader.error is not None:
            return reader.error
        if isinstance(exc, DatasetError):
            return exc
        if isinstance(exc, OSError) and not str(exc).startswith(("Not a gzipped", "Compressed file")):
            return DatasetError(f"cannot read input file {self.label}: {exc.strerror or exc}")
        shown = {"csv": "CSV", "tsv": "TSV", "parquet": "Parquet", "excel": "Excel (.xlsx)"}.get(self.kind, self.kind)
        return DatasetError(f"cannot read input file {self.label} as {shown}: {short(exc)}")

    # -- the header ------------------------------------------------------------------------------
    def check_header(self) -> None:
        """Refuse a header that names a column twice (CSV, TSV, Excel, Parquet)."""
        names = self.header()
        seen: dict[str, list[int]] = {}
        for number, name in enumerate(names, 1):
            if name.strip():
                seen.setdefault(name, []).append(number)
        twice = {name: where for name, where in seen.items() if len(where) > 1}
        if twice:
            listed = "; ".join(f"{name!r} (columns {', '.join(map(str, where))})" for name, where in twice.items())
            raise DatasetError(f"input file {self.label} names a column more than once: {listed}; give each column "
                               "its own name (pandas would silently rename the repeats)")

    def header(self) -> list[str]:
        import pandas as pd

        if self.kind in ("csv", "tsv"):
            reader = self.text()
            try:
                first = pd.read_csv(reader, sep=self._sep, header=None, nrows=1, dtype=object, keep_default_na=False)
            except pd.errors.EmptyDataError:
                return []
            except Exception as exc:  # noqa: BLE001 - pandas raises many kinds; the user needs one line
                raise self._fail(exc, reader) from None
            finally:
                reader.close()
            return [str(v) for v in first.iloc[0].tolist()] if len(first) else []
        if self.kind == "parquet":
            return list(self._parquet().schema_arrow.names)
        if self.kind == "excel":
            first = self._excel(header=None, nrows=1)
            return [str(v) for v in first.iloc[0].tolist()] if len(first) else []
        return []

    @property
    def _sep(self) -> str:
        return "\t" if self.kind == "tsv" else ","

    # -- rows --------------------------------------------------------------------------------------
    def chunks(self, *, text_cells: bool = True, limit: int | None = None, columns: list[str] | None = None,
               chunk_rows: int = CHUNK_ROWS) -> Iterator[Any]:
        """DataFrames of at most ``chunk_rows`` rows, in file order, indexed by row position; at most ``limit``
        rows in all. ``columns`` (when every chunk has them) narrows what is parsed where the format allows."""
        start = 0
        for frame in self._frames(text_cells, limit, columns, chunk_rows):
            if limit is not None and start + len(frame) > limit:
                frame = frame.iloc[:limit - start]
            frame.columns = [str(c) for c in frame.columns]
            frame.index = range(start, start + len(frame))
            start += len(frame)
            if len(frame):
                yield frame
            if limit is not None and start >= limit:
                return

    def _frames(self, text_cells: bool, limit: int | None, columns: list[str] | None, size: int) -> Iterator[Any]:
        import pandas as pd

        if self.kind in ("csv", "tsv"):
            reader = self.text()
            try:
                frames = pd.read_csv(reader, sep=self._sep, keep_default_na=False, dtype=object if text_cells else None,
                                     chunksize=size, nrows=limit, usecols=columns)
                yield from frames
            except pd.errors.EmptyDataError:
                return
            except Exception as exc:  # noqa: BLE001
                raise self._fail(exc, reader) from None
            finally:
                reader.close()
        elif self.kind == "jsonl":
            yield from self._jsonl(min(size, limit) if limit else size)
        elif self.kind == "json":
            rows = self._json_rows()
            for start in range(0, len(rows), size):
                yield records_frame(rows[start:start + size], self.label, start)
        elif self.kind == "parquet":
            parquet = self._parquet()
            stored = (parquet.schema_arrow.pandas_metadata or {}) if parquet.schema_arrow.metadata else {}
            index = {c for c in stored.get("index_columns", []) if isinstance(c, str)}  # a saved DataFrame index
            wanted = [n for n in parquet.schema_arrow.names if n not in index and (columns is None or n in columns)]
            try:
                for batch in parquet.iter_batches(batch_size=size, columns=wanted):
                    yield batch.to_pandas()
            except Exception as exc:  # noqa: BLE001
                raise self._fail(exc) from None
        else:
            frame = self._excel(header=0, nrows=limit)
            for start in range(0, len(frame), size):
                yield frame.iloc[start:start + size]

    def _jsonl(self, size: int) -> Iterator[Any]:
        reader = self.text()
        try:
            first, lines = 0, []  # (line number, text) of the rows of one chunk
            for number, line in enumerate(reader.lines(), 1):
                if line.strip():
                    lines.append((number, line))
                if len(lines) == size:
                    yield records_frame(self._parse_lines(lines), self.label, first)
                    first, lines = first + len(lines), []
            if lines:
                yield records_frame(self._parse_lines(lines), self.label, first)
        finally:
            reader.close()

    def _parse_lines(self, lines: list[tuple[int, str]]) -> list[Any]:
        """A chunk's lines parsed as one JSON array (one C call, not one per line); if that fails or merges
        lines (a line holding ``{...}, {...}``), line by line, so the error names the line."""
        try:
            rows = json.loads("[" + ",".join(text for _, text in lines) + "]")
            if len(rows) == len(lines):
                return rows
        except (json.JSONDecodeError, RecursionError):
            pass
        rows = []
        for number, line in lines:
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(f"input file {self.label}: line {number} is not valid JSON ({exc.msg})") from None
            except RecursionError:
                raise DatasetError(f"input file {self.label}: line {number} nests JSON too deeply to be a row") from None
            rows.append(value)
        return rows

    def _json_rows(self) -> list[Any]:
        reader = self.text()
        try:
            text = "".join(iter(reader.read, ""))
        finally:
            reader.close()
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"input file {self.label} is not valid JSON (line {exc.lineno}: {exc.msg})") from None
        except RecursionError:
            raise DatasetError(f"input file {self.label} nests JSON too deeply to be a table of rows") from None
        if isinstance(value, dict):  # {"data": [...]} / {"rows": [...]}: the one list of rows inside
            lists = [v for v in value.values() if isinstance(v, list)]
            if len(lists) != 1:
                raise DatasetError(f"input file {self.label}: expected a JSON array of objects (one per row)")
            value = lists[0]
        if not isinstance(value, list):
            raise DatasetError(f"input file {self.label}: expected a JSON array of objects (one per row)")
        return value

    def _parquet(self) -> Any:
        import pyarrow.parquet as pq

        try:
            # page by page: a million-row row group is not buffered whole
            return pq.ParquetFile(str(self.path) if self.data is None and not self.gzipped else self.raw(),
                                  pre_buffer=False, buffer_size=1 << 20)
        except Exception as exc:  # noqa: BLE001
            raise self._fail(exc) from None

    def _excel(self, header: int | None, nrows: int | None) -> Any:
        import pandas as pd

        try:
            import openpyxl  # noqa: F401
        except ImportError:
            raise DatasetError("reading Excel files needs openpyxl: pip install openpyxl (or save as CSV)") from None
        try:
            source = self.path if self.data is None else io.BytesIO(self.data)
            return pd.read_excel(source, sheet_name=self.sheet if self.sheet is not None else 0, dtype=object,
                                 engine="openpyxl", header=header, nrows=nrows)
        except ValueError as exc:
            if self.sheet is not None and "not found" in str(exc).lower():
                raise DatasetError(f"input file {self.label} has no sheet {self.sheet!r}") from None
            raise self._fail(exc) from None
        except Exception as exc:  # noqa: BLE001 - a corrupt zip, a renamed .xls...
            raise self._fail(exc) from None

    def count(self, column: str | None = None) -> int:
        """How many rows the table has, streaming (only ``column`` is parsed, where the format allows)."""
        if self.kind == "parquet":
            return self._parquet().metadata.num_rows
        return sum(len(chunk) for chunk in self.chunks(columns=[column] if column and self.kind in ("csv", "tsv")
                                                        else None, chunk_rows=50_000))

    def rows_at(self, positions: list[int], *, text_cells: bool = True) -> Any:
        """The rows at these (sorted) positions, streaming: only they are kept."""
        import pandas as pd

        wanted, kept = set(positions), []
        last = max(positions, default=-1)
        for chunk in self.chunks(text_cells=text_cells, limit=last + 1):
            kept.append(chunk[chunk.index.isin(wanted)])
        return pd.concat(kept) if kept else pd.DataFrame()


def records_frame(rows: list[Any], label: str, first: int = 0) -> Any:
    """JSON rows as a DataFrame; a row that is not an object is refused (each row needs column names)."""
    import pandas as pd

    bad = next((i for i, row in enumerate(rows) if not isinstance(row, dict)), None)
    if bad is not None:
        raise DatasetError(f"input file {label}: row {first + bad + 1} is not a JSON object (each row needs column names)")
    return pd.DataFrame.from_records(rows)


def open_table(source: str | Path | bytes, *, name: str | None = None, encoding: str | None = None,
               sheet: str | None = None, home: str | Path | None = None) -> TableFile:
    """A path (or a bare name in SDSTUDIO_HOME/uploads), or bytes with their file ``name``, as a TableFile whose
    format is known, which is not empty and whose header names each column once. Reads only the file's start."""
    from .datasets import resolve_input

    if isinstance(source, (bytes, bytearray)):
        label, path, data = name or "upload", None, bytes(source)
        suffixes = [s.lower() for s in Path(label).suffixes[-2:]]
    else:
        path, data, label = resolve_input(source, home), None, str(source)
        suffixes = [s.lower() for s in path.suffixes[-2:]]
    gzipped = bool(suffixes) and suffixes[-1] == ".gz"
    suffix = (suffixes[-2] if len(suffixes) > 1 else "") if gzipped else (suffixes[-1] if suffixes else "")
    if suffix not in TEXT_FORMATS and suffix not in BINARY_FORMATS or (gzipped and suffix in BINARY_FORMATS):
        raise DatasetError(f"input file {label}: unknown format {suffix or '(no extension)'!r}; use {FORMATS}")
    table = TableFile(label, BINARY_FORMATS.get(suffix) or TEXT_FORMATS[suffix] or "", path, data, encoding, sheet,
                      gzipped)
    start = _start(table)
    if not start:
        raise DatasetError(f"input file {label} is empty")
    if not table.kind:  # .txt: a table in disguise; the first line decides
        table.kind = "jsonl" if start[0] == "{" else "json" if start[0] == "[" else \
            "tsv" if "\t" in start.split("\n", 1)[0] else "csv"
    table.check_header()
    return table


def _start(table: TableFile) -> str:
    """The table's first non-blank text (its first line or so), or '' for an empty file."""
    if table.kind in BINARY_FORMATS.values():
        with table.raw() as raw:
            return "binary" if raw.read(BLOCK).strip() else ""
    try:
        reader = table.text()
    except OSError as exc:
        raise table._fail(exc) from None
    try:
        while True:
            text = reader.read()
            if not text:
                return ""
            if text.strip():
                return text.lstrip()[:65536]
    except OSError as exc:
        raise table._fail(exc) from None
    finally:
        reader.close()
