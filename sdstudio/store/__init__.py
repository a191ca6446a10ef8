"""metadata.db, the one SQLite file that makes every job traceable, reproducible and resumable.
All SQL lives in this package: ``schema`` (migrations), ``jobs`` (the job table and its lease),
``core`` (connections, records), ``reviews``, ``queries`` (what workflows, reviews, dedup and export ask
of records and judge runs), ``readonly`` (reading a home this process cannot write). Nothing outside this
package opens a connection or runs a statement."""
from .core import BUSY_TIMEOUT_S, DATABASE_HANDLES, JOB_TABLES, RECORD_STATUSES, Record, Store, utcnow
from .jobs import decode_job
from .readonly import ReadOnlyHome
from .schema import JOB_STATUSES, MIGRATIONS, SCHEMA_VERSION, config_digest

__all__ = ["BUSY_TIMEOUT_S", "DATABASE_HANDLES", "JOB_STATUSES", "JOB_TABLES", "RECORD_STATUSES", "MIGRATIONS", "ReadOnlyHome", "Record", "SCHEMA_VERSION",
           "Store",
           "config_digest", "decode_job", "utcnow"]
