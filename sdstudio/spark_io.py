"""Data-lake inputs: rows of a Spark table or of a Parquet/CSV/JSON path Spark reads, and documents of a folder
read through Spark's binary file source.

A source goes through Spark when it is a table (``table:db.name``, the CLI's ``--input-table db.name``) or a
URI whose scheme Spark's file systems handle (``hdfs://``, ``s3a://``, ``abfss://``, ``gs://``, ``file:``...).
A bare path stays the driver's own file, read by ``table_stream`` as always, whatever the executor: on YARN a
bare path would mean HDFS to Spark and the local disk to everything else, and the local reader gives the same
rows without starting a JVM. Write ``file:///data/x.parquet`` to read a local file through Spark.

Rows keep the identity the local reader gives them: a row's position is its place in Spark's scan order, which
for one file is the file's order (Spark's partitions of one file follow its row groups), so the same file read
locally or through Spark yields the same positions, the same values and so the same item keys; a job's hash and
resume behave alike. ``--limit N`` is a Spark ``limit``: Spark reads the first partition(s) until it has N rows
and never brings the rest to the driver. ``--sample`` draws the very positions the local reader draws
(``numpy.random.RandomState(seed).choice(count, N)``), then Spark keeps those rows (``zipWithIndex`` + filter): a
full scan on the executors, N rows on the driver.
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import Any

from .table_stream import CHUNK_ROWS, DatasetError

TABLE_PREFIX = "table:"
# file systems Spark (Hadoop) reads; a Windows drive letter ("C:\\...") is not a scheme
SPARK_SCHEMES = ("hdfs", "s3a", "s3", "s3n", "abfs", "abfss", "wasb", "wasbs", "adl", "gs", "file", "viewfs", "ofs",
                 "o3fs", "oss", "cosn", "dbfs", "jfs", "har")
FORMAT_BY_SUFFIX = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".tsv": "tsv", ".json": "json",
                    ".jsonl": "json", ".ndjson": "json", ".orc": "orc"}
_INDEX_COLUMN = re.compile(r"__index_level_\d+__")  # a pandas index saved in the Parquet: not a column


def is_spark_source(source: Any) -> bool:
    """A table name (``table:db.name``) or a URI with a scheme Spark reads."""
    if not isinstance(source, str):
        return False
    if source.startswith(TABLE_PREFIX):
        return True
    scheme, sep, _ = source.partition(":")
    return bool(sep) and scheme.lower() in SPARK_SCHEMES


def table_source(name: str) -> str:
    """``--input-table db.name`` as the input_file a config stores (its identity, like a path)."""
    name = name.strip()
    if not re.fullmatch(r"[A-Za-z0-9_`.\-]+", name):
        raise DatasetError(f"--input-table {name!r}: give a table name such as db.table")
    return TABLE_PREFIX + name


def input_flag(args: Any) -> None:
    """``--input-table db.name`` becomes the input every reader understands: ``--input table:db.name``."""
    if getattr(args, "input_table", None):
        args.input = table_source(args.input_table)


def start_for(data: dict[str, Any]) -> None:
    """A job config whose input goes through Spark starts the session on its ``run.spark_master`` now, so the
    readers (which take the running session) and the executor use the master asked for."""
    if is_spark_source(data.get("input_file")):
        session((data.get("run") or {}).get("spark_master"))


def session(master: str | None = None) -> Any:
    """The running SparkSession, or one made for ``master`` (default local[2]) as the executor makes it."""
    from .executors.spark_session import spark_session

    return spark_session(master, 0)


def spark_frame(source: str, spark: Any, encoding: str | None = None) -> Any:
    """The source as a Spark DataFrame: a table, or a path read by the format its suffix names (a folder without
    one: Parquet). CSV/TSV cells are text as written (an empty cell is '', as locally); JSON is JSON Lines."""
    try:
        if source.startswith(TABLE_PREFIX):
            frame = spark.table(source[len(TABLE_PREFIX):])
        else:
            kind = source_format(source)
            reader = spark.read
            if kind in ("csv", "tsv"):
                reader = reader.option("header", True).option("inferSchema", False).option("multiLine", True)
                reader = reader.option("escape", '"').option("sep", "\t" if kind == "tsv" else ",")
                if encoding:
                    reader = reader.option("encoding", encoding)
                frame = reader.csv(source)
            elif kind == "json":
                frame = _first_line_order(reader.json(source), spark, source)
            else:
                frame = reader.format(kind).load(source)
    except Exception as exc:  # noqa: BLE001 - AnalysisException (no such path/table) and friends: one line
        raise DatasetError(f"input {source}: Spark cannot read it ({_first_line(exc)})") from None
    frame = frame.drop(*[c for c in frame.columns if _INDEX_COLUMN.fullmatch(c)])
    if not source.startswith(TABLE_PREFIX) and source_format(source) in ("csv", "tsv"):
        frame = frame.fillna("")
    return frame


def _first_line_order(frame: Any, spark: Any, source: str) -> Any:
    """Spark sorts JSON columns by name; the local reader keeps the order of the first row's keys: so do we."""
    import json

    first = spark.read.text(source).limit(1).collect()
    try:
        keys = list(json.loads(first[0][0])) if first else []
    except (ValueError, TypeError):
        return frame
    ordered = [k for k in keys if k in frame.columns] + [c for c in frame.columns if c not in keys]
    return frame.select(*[_quoted(c) for c in ordered])


def source_format(source: str) -> str:
    suffixes = [s.lower() for s in PurePosixPath(source.rstrip("/")).suffixes[-2:]]
    if suffixes and suffixes[-1] in (".gz", ".bz2", ".snappy", ".zst"):
        suffixes = suffixes[:-1]
    return FORMAT_BY_SUFFIX.get(suffixes[-1] if suffixes else "", "parquet")


def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split("\n", 1)[0].split())
    return text[:200] or type(exc).__name__


# -- rows ----------------------------------------------------------------------------------------

def _pandas(rows: list[Any], columns: list[str], positions: list[int]) -> Any:
    import pandas as pd

    records = [row.asDict(recursive=True) for row in rows]
    return pd.DataFrame.from_records(records, columns=columns, index=positions) if records else \
        pd.DataFrame(columns=columns)


def _checked_columns(frame: Any, columns: list[str] | None, label: str) -> Any:
    if columns is None:
        return frame
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DatasetError(f"{label} has no column {missing[0]!r} (columns: {', '.join(frame.columns[:20])})")
    return frame.select(*[_quoted(c) for c in dict.fromkeys(columns)])


def _quoted(column: str) -> str:
    """A column by its exact name (a dot or a space in it is not a path into a struct)."""
    return "`" + column.replace("`", "``") + "`"


def read_frame(source: str, *, columns: list[str] | None = None, limit: int | None = None, sample: bool = False,
               seed: int = 42, master: str | None = None, label: str | None = None, encoding: str | None = None
               ) -> tuple[list[str], Any]:
    """(the source's columns, a pandas DataFrame of the chosen rows indexed by position). Only the chosen rows
    reach the driver: a limit is pushed down, a sample is drawn on the executors."""
    label = label or f"input {source}"
    spark = session(master)
    whole = spark_frame(source, spark, encoding)
    all_columns = list(whole.columns)
    frame = _checked_columns(whole, columns, label)
    names = list(frame.columns)
    if limit is not None and sample:
        import numpy as np

        total = whole.count()
        if limit < total:
            drawn = sorted(np.random.RandomState(seed).choice(total, size=limit, replace=False).tolist())
            wanted = spark.sparkContext.broadcast(set(drawn))
            picked = (frame.rdd.zipWithIndex().filter(lambda pair: pair[1] in wanted.value).collect())
            picked.sort(key=lambda pair: pair[1])
            return all_columns, _pandas([row for row, _ in picked], names, [i for _, i in picked])
        limit = None
    rows = frame.limit(limit).collect() if limit is not None else list(frame.toLocalIterator())
    return all_columns, _pandas(rows, names, list(range(len(rows))))


def read_selection(source: str, *, columns: list[str] | None = None, limit: int | None = None, sample: bool = False,
                   seed: int = 42, label: str | None = None, master: str | None = None, encoding: str | None = None
                   ) -> tuple[list[str], Any]:
    """``datasets.read_selection`` for a Spark source: (the source's columns, the rows and columns a workflow
    runs over), the same rows the local reader picks from the same file."""
    label = label or f"input file {source}"
    file_columns, frame = read_frame(source, columns=columns, limit=limit, sample=sample, seed=seed, master=master,
                                     label=label, encoding=encoding)
    if frame.empty:
        raise DatasetError(f"{label} has no rows")
    return file_columns, frame


def read_rows(source: str, limit: int | None = None, sample: int | bool | None = None, spark_master: str | None = None,
              *, columns: list[str] | None = None, seed: int = 42) -> list[dict[str, Any]]:
    """The chosen rows as plain dicts (the interface a planner calls): ``sample`` True or a count draws random
    rows (a count sets the limit), else the first ``limit``. A bare path is read locally, as ``datasets`` does."""
    from .datasets import plain

    if isinstance(sample, int) and not isinstance(sample, bool):
        limit, sample = sample, True
    if is_spark_source(source):
        _, frame = read_frame(source, columns=columns, limit=limit, sample=bool(sample), seed=seed,
                              master=spark_master)
    else:
        from .datasets import read_selection as local_selection

        _, frame = local_selection(source, columns=columns, limit=limit, sample=bool(sample), seed=seed)
    return [{str(k): plain(v) for k, v in record.items()} for record in frame.to_dict("records")]


def iter_chunks(source: str, columns: list[str] | None = None, limit: int | None = None,
                chunk_rows: int = CHUNK_ROWS, master: str | None = None, label: str | None = None) -> Iterator[Any]:
    """pandas DataFrames of at most ``chunk_rows`` rows indexed by position, streamed from the executors a
    partition at a time (``toLocalIterator``), at most ``limit`` rows (pushed down)."""
    label = label or f"input file {source}"
    spark = session(master)
    frame = _checked_columns(spark_frame(source, spark), columns, label)
    names = list(frame.columns)
    if limit is not None:
        frame = frame.limit(limit)
    start, batch = 0, []
    for row in frame.toLocalIterator():
        batch.append(row)
        if len(batch) == chunk_rows:
            yield _pandas(batch, names, list(range(start, start + len(batch))))
            start, batch = start + len(batch), []
    if batch:
        yield _pandas(batch, names, list(range(start, start + len(batch))))


# -- documents -----------------------------------------------------------------------------------

def binary_files(uri: str, suffixes: list[str], master: str | None = None) -> Iterator[tuple[str, bytes]]:
    """(path, bytes) of the documents under ``uri`` (a folder, read recursively, or a glob) whose extension is
    one of ``suffixes``, through Spark's ``binaryFile`` source, in path order, one partition on the driver at a
    time. Hidden files and Office lock files are skipped, as locally."""
    spark = session(master)
    pattern = "*.{" + ",".join(s.lstrip(".") for s in suffixes) + "}"
    reader = spark.read.format("binaryFile").option("pathGlobFilter", pattern)
    if not any(ch in uri for ch in "*?["):
        reader = reader.option("recursiveFileLookup", True)
    try:
        frame = reader.load(uri).select("path", "content").orderBy("path")
        for row in frame.toLocalIterator():
            name = PurePosixPath(row["path"]).name
            if not name.startswith((".", "~$")):
                yield row["path"], bytes(row["content"])
    except Exception as exc:  # noqa: BLE001 - a path that does not exist: one line
        if isinstance(exc, DatasetError):
            raise
        raise DatasetError(f"documents {uri}: Spark cannot read them ({_first_line(exc)})") from None


__all__ = ["TABLE_PREFIX", "binary_files", "is_spark_source", "iter_chunks", "read_frame", "read_rows",
           "read_selection", "session", "source_format", "spark_frame", "table_source"]
