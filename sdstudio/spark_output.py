"""A job's ok records as Parquet under an output URI (a local folder, ``file:``, ``hdfs://``, ``s3a://``...),
partitioned by job: ``<output-uri>/job=<id>/part-*.parquet``, the location kept on the job's row.

When. ``run.output_uri`` (``--output-uri``) is a setting, not a threshold sdstudio guesses: where a data lake's
tables live is the user's call. After each run of a job that has one (or already has a location), the job's ok
records are written there through Spark (overwriting that job's partition, so a resumed job's Parquet holds
all its rows), and ``metadata.db`` keeps the job row, counts, lineage and the location.

What stays in SQLite. Every record stays in ``metadata.db`` too: resume takes the keys already done from it
(a Parquet copy would have to be read back on every run, from a cluster file system), and so do the review
desk, evaluation and the job page's counts; the Parquet is the job's output as the lake sees it. Export reads
the Parquet when the job has a location (``job_records``), the very rows a lake consumer reads, and falls back to
SQLite with a warning when the Parquet's row count no longer matches the job's ok records (written before a
later run that had no Spark to write with).

Columns are the records table's, JSON fields (provenance, input, output) as JSON text, ``id`` the record id,
so reviews and judge scores still join on it; a reader of ``<output-uri>`` gets ``job`` from the partition.
"""
from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .spark_io import is_spark_source, session

BATCH_ROWS = 50_000  # records sent to Spark at a time: the driver never holds a big job's rows at once
INTEGER_COLUMNS = ("id", "job_id", "tokens_in", "tokens_out")
FLOAT_COLUMNS = ("latency_ms", "cost_usd")
JSON_COLUMNS = ("provenance", "input", "output")


def job_location(uri: str, job_id: int) -> str:
    return f"{uri.rstrip('/')}/job={job_id}"


def output_location(store: Any, job_id: int) -> str | None:
    """Where the job's Parquet is, or None (its records are read from SQLite only)."""
    return store.output_uri(job_id)


def _schema(columns: list[str]) -> Any:
    from pyspark.sql.types import DoubleType, LongType, StringType, StructField, StructType

    return StructType([StructField(c, LongType() if c in INTEGER_COLUMNS else DoubleType() if c in FLOAT_COLUMNS
                                   else StringType(), c not in ("id", "job_id")) for c in columns])


def write_job_output(store: Any, job_id: int, uri: str, master: str | None = None) -> str:
    """Write the job's ok records to ``<uri>/job=<id>/`` (replacing what was there) and record the location."""
    job_kind = store.job_family(job_id)
    location = job_location(_as_uri(uri), job_id)
    spark = session(master)
    mode = "overwrite"  # the first batch replaces the partition (a job with no ok rows: an empty one)
    for columns, rows in store.ok_record_batches(job_kind, job_id, BATCH_ROWS):
        spark.createDataFrame(rows, _schema(columns)).write.mode(mode).parquet(location)
        mode = "append"
    store.update_job(None, job_id, output_uri=location)
    return location


def _as_uri(uri: str) -> str:
    """A bare path becomes an absolute ``file:`` URI: Spark on a cluster would take it for its default FS."""
    return uri if is_spark_source(uri) else Path(uri).expanduser().resolve().as_uri()


def after_run(job: Any, result: Any) -> str | None:
    """The CLI's hook after a run: write the Parquet when ``run.output_uri`` is set or the job has a location
    already (a resumed job's partition is rewritten with all its rows). Nothing for a cancelled run."""
    store = getattr(job, "store", None)
    config = getattr(job, "config", None)
    run = getattr(config, "run", None)
    if store is None or result is None or result.status == "cancelled":
        return None
    uri = getattr(run, "output_uri", None)
    location = output_location(store, result.job_id)
    if uri is None and location is None:
        return None
    target = uri if uri is not None else location.rsplit("/job=", 1)[0]
    return write_job_output(store, result.job_id, target, getattr(run, "spark_master", None))


# -- reading back --------------------------------------------------------------------------------

def read_output(location: str, master: str | None = None) -> list[dict[str, Any]]:
    """The records under a job's location, in id order, decoded as ``Store.records`` decodes them. A local
    (``file:``) location is read with pyarrow (no JVM for an export); any other through Spark."""
    if location.startswith("file:") or not is_spark_source(location):
        import pyarrow.parquet as pq

        path = location
        if location.startswith("file:"):
            from urllib.parse import unquote, urlparse

            path = unquote(urlparse(location).path)
        rows = pq.read_table(path).sort_by("id").to_pylist()
    else:
        frame = session(master).read.parquet(location).orderBy("id")
        rows = [row.asDict() for row in frame.toLocalIterator()]
    for row in rows:
        row.pop("job", None)
        for name in JSON_COLUMNS:
            if name in row:
                row[name] = None if row[name] is None else json.loads(row[name])
    return rows


def job_records(store: Any, job_kind: str, job_id: int, status: str | None = "ok") -> Iterator[dict[str, Any]]:
    """A job's records as ``store.records`` gives them; its ok records from its Parquet when it has a location
    (export reads either transparently)."""
    location = output_location(store, job_id) if status == "ok" else None
    if location is None:
        yield from store.records(job_kind, job_id, status)
        return
    try:
        rows = read_output(location)
    except Exception as exc:  # noqa: BLE001 - a folder removed, a cluster file system out of reach: one line
        from .errors import ConfigError

        raise ConfigError(f"job {job_id}'s records at {location} cannot be read ({' '.join(str(exc).split())[:200]}); "
                          "restore them, or write them again: resume the job with --output-uri URI") from None
    expected = store.count_records(job_kind, job_id)["ok"]
    if len(rows) != expected:
        warnings.warn(f"job {job_id}: its Parquet at {location} holds {len(rows)} rows, not its {expected} ok "
                      "records (a run since wrote none); reading metadata.db instead", stacklevel=2)
        yield from store.records(job_kind, job_id, status)
        return
    yield from rows


__all__ = ["after_run", "job_location", "job_records", "output_location", "read_output", "write_job_output"]
