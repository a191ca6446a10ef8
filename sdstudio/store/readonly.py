"""Reading a home this process cannot write: a read-only mount, a shared project folder owned by someone else,
a ``metadata.db`` without write permission, or a home that does not exist and cannot be created.

Why it needs care: metadata.db is a WAL database, and SQLite reads a WAL database through two files beside it
(``-wal``, ``-shm``), which it creates on open and deletes on the last close. Where the folder cannot be
written they cannot be created, so even ``mode=ro`` fails ("unable to open database file"). SQLite's answer
is ``immutable=1``: read the file as it is, without the WAL and without locks. Its pitfalls, from SQLite's
documentation, and what is done about each:

* it ignores the ``-wal`` file, so changes not yet checkpointed into metadata.db would be silently missing
  (a run killed before its last close leaves them there). ``mode=ro`` is always tried first (it reads the WAL
  when its files exist); immutable is used only when there is no ``-wal`` holding data, and a home whose
  ``-wal`` holds data but cannot be read is refused with one line, never read stale;
* if anyone writes the file meanwhile, reads can be wrong or fail as corrupt. On a read-only mount nobody
  can; in a folder only its owner can write, a writer would first create ``-wal``: each read through an
  immutable connection checks for it and reopens with ``mode=ro`` (reading through the writer's WAL) once
  it appears;
* a missing file would be created by ``immutable=1`` alone: ``mode=ro`` is always given with it.

Writes are refused before SQLite is asked, with one line naming the home and why it cannot be written.
"""
from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path

from ..errors import StoreError
from .schema import MIGRATIONS, SCHEMA_VERSION

PROBE = "SELECT COUNT(*) FROM sqlite_master"  # mode=ro opens lazily: the first read is what fails


class ReadOnlyHome(StoreError):
    """The home (or its metadata.db) cannot be written by this process; it can still be read."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


def read_only_error(path: Path, reason: str) -> ReadOnlyHome:
    return ReadOnlyHome(f"SDSTUDIO_HOME {path.parent} is read-only ({reason}): its jobs can be listed and read "
                        "but nothing can be written there; point SDSTUDIO_HOME (or --home) at a folder you can write",
                        reason)


def refused_as_read_only(exc: Exception) -> bool:
    """SQLite's answer to a write on a file or folder it may not write (SQLITE_READONLY and its variants)."""
    return getattr(exc, "sqlite_errorname", "").startswith("SQLITE_READONLY") or "readonly database" in str(exc)


def wal_holds_data(path: Path) -> bool:
    wal = path.with_name(path.name + "-wal")
    try:
        return wal.stat().st_size > 0
    except OSError:
        return False


def writer_appeared(path: Path) -> bool:
    """A ``-wal`` beside the database: someone opened it for writing since an immutable connection was made."""
    return path.with_name(path.name + "-wal").exists()


def _connect(uri: str, timeout: float) -> sqlite3.Connection:
    conn = sqlite3.connect(uri, uri=True, timeout=timeout, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    return conn


def connect(path: Path, reason: str, timeout: float) -> tuple[sqlite3.Connection, bool]:
    """A read-only connection to metadata.db and whether it is immutable (see the module's notes)."""
    uri = path.resolve().as_uri()  # percent-encodes ? and # in folder names, which a URI would take as its own
    conn = _connect(f"{uri}?mode=ro", timeout)
    try:
        conn.execute(PROBE).fetchone()
        return conn, False
    except sqlite3.DatabaseError as exc:
        conn.close()
        # "unable to open": -shm/-wal cannot be created; "readonly": an -shm exists but cannot be set up
        if not isinstance(exc, sqlite3.OperationalError) or not any(w in str(exc) for w in ("unable to open", "readonly")):
            raise
    if wal_holds_data(path):
        raise StoreError(f"{path}-wal holds changes not yet written into {path.name}, and the home is read-only "
                         f"({reason}) so SQLite cannot apply them; open the home once where it can be written "
                         "(`sdstudio jobs` there does it), then read it here again") from None
    conn = _connect(f"{uri}?mode=ro&immutable=1", timeout)
    conn.execute(PROBE).fetchone()
    return conn, True


class EmptyStandIn:
    """A fresh home that cannot be created has no jobs: an in-memory database with the current schema answers
    every read as an empty home would (``sdstudio jobs``: "no jobs yet"), so no reader needs a special case."""

    def __init__(self) -> None:
        self.uri = f"file:sdstudio-empty-{uuid.uuid4().hex}?mode=memory&cache=shared"
        self._anchor = _connect(self.uri, 5.0)  # the database lives while one connection to it is open
        self._anchor.execute("BEGIN")
        for migration in MIGRATIONS[:SCHEMA_VERSION]:
            migration(self._anchor)
        self._anchor.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        self._anchor.execute("COMMIT")

    def connect(self) -> sqlite3.Connection:
        return _connect(self.uri, 5.0)

    def close(self) -> None:
        self._anchor.close()


def check_schema(conn: sqlite3.Connection, path: Path, reason: str) -> None:
    """A read-only home cannot be migrated: a database of another schema is one line, not wrong columns."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise StoreError(f"{path} was written by a newer sdstudio (schema {version}, this version knows "
                         f"{SCHEMA_VERSION}); upgrade sdstudio to open it")
    if version < SCHEMA_VERSION:
        raise StoreError(f"{path} was written by an older sdstudio (schema {version}, this version reads "
                         f"{SCHEMA_VERSION}) and the home is read-only ({reason}), so it cannot be upgraded here; "
                         "open it once where it can be written, or read it with the sdstudio that wrote it")
