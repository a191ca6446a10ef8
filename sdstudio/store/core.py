"""metadata.db: connections, transactions, records and reviews. The one SQLite file that makes every job traceable, reproducible and resumable.

Why stdlib sqlite3 in WAL mode: readers (notebooks, Voilà) never block the writer, and a second process
writing waits on ``busy_timeout`` instead of failing with "database is locked". Writes take the lock up
front (``BEGIN IMMEDIATE``) so two writers never deadlock upgrading a read lock.

Schema changes are numbered, append-only migration functions; ``PRAGMA user_version`` records how many
have run. Never edit an old migration: add a new one. Secrets have no column anywhere.
"""
from __future__ import annotations

import random
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import StoreError
from ..home import db_path, init_home
from . import readonly
from .batches import BatchesMixin
from .endpoints import EndpointsMixin
from .jobs import JobsMixin
from .queries import QueriesMixin
from .records import (  # noqa: F401 - Record and utcnow are imported from here too
    _JSON_RECORD_FIELDS,
    _RECORD_FIELDS,
    Record,
    _decode_record,
    _dumps,
    _loads,
    _row_fields,
    utcnow,
)
from .reviews import ReviewsMixin
from .schema import MIGRATIONS, SCHEMA_VERSION, VIEWS

JOB_TABLES = VIEWS  # family -> the seed's table (a view since migration 002)
RECORD_STATUSES = ("ok", "failed", "filtered")
BUSY_TIMEOUT_S = 60.0
RESERVE_BYTES = 256 * 1024


def _enable_wal(conn: sqlite3.Connection) -> None:
    """Switch to WAL. Switching a new database needs an exclusive lock, and SQLite answers a process racing
    another one through it "database is locked" at once (busy_timeout does not apply): wait and retry
    until one of them has switched it (WAL is then permanent for the file)."""
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
        if time.monotonic() > deadline:
            raise sqlite3.OperationalError("database is locked (could not switch it to WAL mode)")
        time.sleep(random.uniform(0.005, 0.05))


# what only the process that opened metadata.db may hold: never shipped to another process (Spark)

DATABASE_HANDLES = (sqlite3.Connection, sqlite3.Cursor)


class _Connection(sqlite3.Connection):
    """A connection ``close_all`` can find. sqlite3's statement cache holds its connection in a reference cycle, so
    a dropped connection stays open until a garbage collection: a process leaving without one would leave its
    last writes in metadata.db-wal instead of the database."""


_CONNECTIONS: "weakref.WeakSet[_Connection]" = weakref.WeakSet()



class Store(JobsMixin, QueriesMixin, ReviewsMixin, EndpointsMixin, BatchesMixin):
    """Access to one metadata.db. Safe to share between threads: each thread gets its own connection."""

    def __init__(self, path: str | Path, *, read_only: str | None = None):
        """``read_only``: why this process cannot write the home (``Store.open`` finds out); the store then
        reads (``store/readonly.py`` says how) and refuses every write with one line saying so."""
        self.path = Path(path)
        self.read_only = read_only
        self._local = threading.local()
        self._columns: dict[str, tuple[str, ...]] = {}
        self._identity: tuple[int, int] | None = None
        self._empty: readonly.EmptyStandIn | None = None
        if read_only is None:
            self._migrate()
        elif not self.path.exists():
            self._empty = readonly.EmptyStandIn()
        else:
            try:
                readonly.check_schema(self.connection(), self.path, read_only)
            except sqlite3.DatabaseError as exc:
                raise self._unusable(exc) from None
        self._identity = self._file_identity()

    @classmethod
    def open(cls, home: str | Path | None = None) -> "Store":
        """Open (creating and migrating if needed) the store under ``SDSTUDIO_HOME``. A home this process
        cannot write (a read-only mount, a folder or metadata.db without write permission, a home that cannot
        be created) opens read-only: ``sdstudio jobs``, ``jobs show`` and the dashboards read it; a write is one
        line saying the home is read-only."""
        from ..home import read_only_reason, resolve_home

        root = resolve_home(home)
        reason = read_only_reason(root)
        if reason is None:
            init_home(root)
            try:
                return cls(db_path(root))
            except readonly.ReadOnlyHome as exc:  # SQLite refused a write the checks above did not foresee
                reason = exc.reason
        return cls(db_path(root), read_only=reason)

    # -- connections and transactions -----------------------------------------------------------
    def connection(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is not None and getattr(self._local, "immutable", False) and readonly.writer_appeared(self.path):
            conn.close()  # an immutable read of a file being written can be wrong: read through its WAL now
            conn = self._local.conn = None
        if conn is None:
            try:
                conn = self._connect()
            except sqlite3.DatabaseError as exc:
                raise self._unusable(exc) from None
            self._local.conn = conn
        return conn

    def _connect(self) -> sqlite3.Connection:
        if self.read_only is not None:
            if self._empty is not None:
                return self._empty.connect()
            conn, self._local.immutable = readonly.connect(self.path, self.read_only, BUSY_TIMEOUT_S)
            return conn
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False,
                               factory=_Connection)
        _CONNECTIONS.add(conn)
        conn.row_factory = sqlite3.Row
        _enable_wal(conn)
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
        return conn

    def require_writable(self) -> None:
        """Raise the one-line "home is read-only" error now, before work that would be lost (files written,
        requests paid) when the first write is refused."""
        if self.read_only is not None:
            raise readonly.read_only_error(self.path, self.read_only)

    # -- room to fail in ----------------------------------------------------------------------------
    @property
    def _reserve(self) -> Path:
        return self.path.with_name(self.path.name + "-reserve")

    def keep_reserve(self) -> None:
        """Hold RESERVE_BYTES of the disk in a ballast file beside the database. When the disk fills up,
        the first refused write frees it, so the job's final status (failed, with the reason) still fits
        instead of the job being left ``running``."""
        if self.read_only is not None:
            return
        try:
            if not self._reserve.exists():
                with open(self._reserve, "wb") as file:
                    file.write(b"\0" * RESERVE_BYTES)
        except OSError:
            self._reserve.unlink(missing_ok=True)  # no room for it: nothing more to give back later either

    def _free_reserve(self) -> None:
        try:
            self._reserve.unlink(missing_ok=True)
        except OSError:
            pass

    def _file_identity(self) -> tuple[int, int] | None:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return None
        return stat.st_dev, stat.st_ino

    def check_identity(self) -> None:
        """Raise if metadata.db was deleted or replaced since this store opened it: SQLite would go on
        writing into the unlinked file and every row written from now on would be lost unseen."""
        if self._identity is not None and self._file_identity() != self._identity:
            raise StoreError(f"{self.path} was deleted or replaced while sdstudio was using it; rows written "
                             "since then are not in it. Put the database back (or start over) and run the job again")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction that takes the write lock at once (no lock-upgrade deadlocks). A write that
        SQLite refuses (full disk, read-only home, I/O error) becomes one StoreError line."""
        self.require_writable()
        self.check_identity()
        conn = self.connection()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.OperationalError as exc:
            if "full" in str(exc):
                self._free_reserve()
            if readonly.refused_as_read_only(exc):
                raise self._unusable(exc) from None
            raise StoreError(f"cannot write {self.path}: {exc}; rows saved before this are kept"
                             + ("; free some space and run the job again" if "full" in str(exc) else "")) from None

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
        if self._empty is not None:
            self._empty.close()

    def _migrate(self) -> None:
        try:
            with self.transaction() as conn:
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    raise StoreError(
                        f"{self.path} was written by a newer sdstudio (schema {version}, this version "
                        f"knows {SCHEMA_VERSION}); upgrade sdstudio to open it")
                for number in range(version, SCHEMA_VERSION):
                    MIGRATIONS[number](conn)
                if version != SCHEMA_VERSION:
                    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except sqlite3.DatabaseError as exc:
            raise self._unusable(exc) from None

    def _unusable(self, exc: Exception) -> StoreError:
        """Why the database cannot be used: a home we may not write (SQLite needs to write beside the file even
        to read it in WAL mode) is not a broken database, and ``Store.open`` reads it read-only instead."""
        from ..home import read_only_reason

        reason = read_only_reason(self.path.parent) or (
            f"SQLite: {exc}" if readonly.refused_as_read_only(exc) else None)
        if reason is not None and self.read_only is None:
            return readonly.read_only_error(self.path, reason)
        return StoreError(f"{self.path} is not a usable SQLite database ({exc}); "
                          "move it aside or point SDSTUDIO_HOME elsewhere")

    def columns(self, table: str) -> tuple[str, ...]:
        if table not in self._columns:
            rows = self.connection().execute(f"PRAGMA table_info({table})").fetchall()
            self._columns[table] = tuple(r["name"] for r in rows)
        return self._columns[table]

    # -- records --------------------------------------------------------------------------------
    def add_records(self, records: Iterable[Record | Mapping[str, Any]], *,
                    replace_failed_requests: bool = False) -> int:
        """Write a batch in one transaction. A row already ``ok`` is never overwritten (resume-safe);
        a failed or filtered row with the same key is replaced by the new attempt. With
        ``replace_failed_requests``, earlier *failed* rows of the batch's requests go first, so a
        retried request leaves only its latest outcome (the engine writes this way)."""
        rows, stamps = [], []
        for rec in records:
            data = _row_fields(rec if isinstance(rec, Record) else Record(**rec))  # JSON fields as their text
            if data["status"] not in RECORD_STATUSES:
                raise StoreError(f"record status must be one of {RECORD_STATUSES}, got {data['status']!r}")
            if data["stamp"]:
                stamps.append(data)
                continue
            rows.append(tuple(data[name] for name in _RECORD_FIELDS))
        if not rows and not stamps:
            return 0
        names = ", ".join(_RECORD_FIELDS)
        marks = ", ".join("?" for _ in _RECORD_FIELDS)
        updates = ", ".join(f"{n} = excluded.{n}" for n in _RECORD_FIELDS if n not in ("job_kind", "job_id", "item_key"))
        sql = (f"INSERT INTO records ({names}) VALUES ({marks}) "
               f"ON CONFLICT (job_kind, job_id, item_key) DO UPDATE SET {updates} "
               f"WHERE records.status != 'ok'")
        with self.transaction() as conn:
            if replace_failed_requests:
                keys = {(row[0], row[1], row[4]) for row in rows if row[4]}  # job_kind, job_id, request_key
                keys |= {(d["job_kind"], d["job_id"], d["request_key"]) for d in stamps if d["request_key"]}
                conn.executemany("DELETE FROM records WHERE job_kind = ? AND job_id = ? AND request_key = ? "
                                 "AND status = 'failed'", sorted(keys))
            conn.executemany(sql, rows)
            conn.executemany(
                "UPDATE records SET provenance = json_patch(COALESCE(provenance, '{}'), json(?)), "
                "tokens_in = tokens_in + ?, tokens_out = tokens_out + ?, cost_usd = cost_usd + ?, status = ?, "
                "error = ? WHERE job_kind = ? AND job_id = ? AND item_key = ? AND status = 'ok'",
                [(d["provenance"] or "{}", d["tokens_in"], d["tokens_out"], d["cost_usd"], d["status"],
                  d["error"], d["job_kind"], d["job_id"], d["item_key"]) for d in stamps])
        return len(rows) + len(stamps)

    def records(self, job_kind: str, job_id: int, status: str | None = None) -> Iterator[dict[str, Any]]:
        """Records of a job in insertion order, JSON fields decoded."""
        sql = "SELECT * FROM records WHERE job_kind = ? AND job_id = ?"
        params: tuple[Any, ...] = (job_kind, job_id)
        if status is not None:
            sql += " AND status = ?"
            params += (status,)
        for row in self.connection().execute(sql + " ORDER BY id", params):
            yield _decode_record(dict(row))

    def records_page(self, job_kind: str, job_id: int, status: str | None = None, offset: int = 0,
                     limit: int = 20) -> tuple[list[dict[str, Any]], int]:
        """One page of a job's records (JSON decoded) and the total count: tables show 100k-row jobs a
        page at a time without loading them."""
        where = "WHERE job_kind = ? AND job_id = ?" + (" AND status = ?" if status else "")
        params: tuple[Any, ...] = (job_kind, job_id) + ((status,) if status else ())
        conn = self.connection()
        total = conn.execute(f"SELECT COUNT(*) FROM records {where}", params).fetchone()[0]
        rows = conn.execute(f"SELECT * FROM records {where} ORDER BY id LIMIT ? OFFSET ?",
                            (*params, limit, offset)).fetchall()
        return [_decode_record(dict(row)) for row in rows], int(total)

    def records_frame(self, job_kind: str, job_id: int, status: str | None = None):
        import pandas as pd

        return pd.DataFrame(list(self.records(job_kind, job_id, status)),
                            columns=["id", *_RECORD_FIELDS])

    def count_records(self, job_kind: str, job_id: int) -> dict[str, int]:
        rows = self.connection().execute(
            "SELECT status, COUNT(*) FROM records WHERE job_kind = ? AND job_id = ? GROUP BY status",
            (job_kind, job_id)).fetchall()
        counts = dict.fromkeys(RECORD_STATUSES, 0)
        counts.update({status: n for status, n in rows})
        return counts

    def done_request_keys(self, job_kind: str, job_id: int) -> set[str]:
        """Request keys that already produced a kept record (ok, or ok then filtered by dedup): the
        engine never sends these again."""
        rows = self.connection().execute(
            "SELECT DISTINCT request_key FROM records WHERE job_kind = ? AND job_id = ? "
            "AND status IN ('ok', 'filtered') AND request_key IS NOT NULL", (job_kind, job_id)).fetchall()
        return {r[0] for r in rows}

    def record(self, record_id: int) -> dict[str, Any] | None:
        """One record by id (JSON fields decoded), None when there is none."""
        row = self.connection().execute("SELECT * FROM records WHERE id = ?", (record_id,)).fetchone()
        return None if row is None else _decode_record(dict(row))

    def set_record_status(self, record_ids: Iterable[int], status: str, error: str | None = None) -> None:
        if status not in RECORD_STATUSES:
            raise StoreError(f"record status must be one of {RECORD_STATUSES}, got {status!r}")
        with self.transaction() as conn:
            conn.executemany("UPDATE records SET status = ?, error = ? WHERE id = ?",
                             [(status, error, rid) for rid in record_ids])

    def filter_if_ok(self, reasons: Iterable[tuple[int, str]]) -> None:
        """Filter each (record id, why) whose record is still ok, in one transaction. Rows no longer ok are
        left alone: a concurrent reviewer or re-run may have changed them since they were read."""
        with self.transaction() as conn:
            conn.executemany("UPDATE records SET status = 'filtered', error = ? WHERE id = ? AND status = 'ok'",
                             [(why, rid) for rid, why in reasons])

    def rewrite_records(self, changes: Iterable[tuple[int, Mapping[str, Any]]]) -> None:
        """Overwrite fields of records in place, in one transaction: (record id, {field: value}) with
        JSON fields given as values (a job that recomputes its rows, such as alignment pairs, keeps each
        row's id and reviews). Unlike ``add_records`` this also rewrites ok rows."""
        allowed = set(_RECORD_FIELDS) - {"job_kind", "job_id", "item_key"}
        with self.transaction() as conn:
            for rid, fields in changes:
                unknown = sorted(set(fields) - allowed)
                if unknown:
                    raise StoreError(f"records cannot be rewritten in column(s) {', '.join(unknown)}")
                values = [_dumps(v) if name in _JSON_RECORD_FIELDS else v for name, v in fields.items()]
                sets = ", ".join(f"{name} = ?" for name in fields)
                conn.execute(f"UPDATE records SET {sets} WHERE id = ?", (*values, rid))


def close_all() -> None:
    """Close every writable connection this process still has, on any thread (the last one to close writes the WAL
    into metadata.db and removes it): for a process that leaves without the interpreter's teardown (``cli.entry``),
    so the home is left as a normal exit leaves it."""
    for conn in list(_CONNECTIONS):
        try:
            conn.close()
        except Exception:  # noqa: BLE001 - every write is committed already: nothing is lost
            pass
