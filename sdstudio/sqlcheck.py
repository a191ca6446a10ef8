"""Checks that generated SQL is one read-only query valid against a database schema (text2sql).

Why SQLite itself rather than a SQL parser: SQLite's compiler is the authority on what runs on SQLite,
and it already reports exactly what a text2sql item gets wrong ("no such table: invoices", "no such
column: total", syntax errors). So the schema is loaded into an empty in-memory database and the SQL is
compiled with ``EXPLAIN``, which prepares the statement but never runs it.

Why nothing can escape: the database lives in memory and holds no data; ``PRAGMA query_only=ON`` and an
attach limit of zero are set after the schema is built; an authorizer denies every action but reading
and selecting while the SQL compiles (so ``WITH ... DELETE`` fails too); and statements that do not start
with SELECT or WITH are refused before SQLite sees them. Python's ``execute`` refuses a second statement.
"""
from __future__ import annotations

import re
import sqlite3
import threading
from functools import lru_cache

from .errors import ConfigError

_READ_ONLY_ACTIONS = frozenset({
    sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE})
# Authorizer action codes, by name, for naming what a denied statement tried to do. Spelled out because
# the sqlite3 module's SQLITE_* names also include result codes that reuse the same numbers.
_ACTION_NAMES = {
    getattr(sqlite3, f"SQLITE_{name}"): verb for name, verb in (
        ("INSERT", "INSERT"), ("UPDATE", "UPDATE"), ("DELETE", "DELETE"), ("ATTACH", "ATTACH"),
        ("DETACH", "DETACH"), ("PRAGMA", "PRAGMA"), ("TRANSACTION", "TRANSACTION"),
        ("SAVEPOINT", "SAVEPOINT"), ("ALTER_TABLE", "ALTER"), ("REINDEX", "REINDEX"),
        ("ANALYZE", "ANALYZE"), ("CREATE_TABLE", "CREATE"), ("CREATE_INDEX", "CREATE"),
        ("CREATE_VIEW", "CREATE"), ("CREATE_TRIGGER", "CREATE"), ("DROP_TABLE", "DROP"),
        ("DROP_INDEX", "DROP"), ("DROP_VIEW", "DROP"), ("DROP_TRIGGER", "DROP"))}
_QUERY_KEYWORDS = {"SELECT", "WITH"}
# Statements SQLite accepts that are not a query; named from the text because SQLite may deny them
# under a different action (DROP TABLE first touches sqlite_master as a DELETE) or not at all (VACUUM).
_OTHER_STATEMENTS = {
    "INSERT", "UPDATE", "DELETE", "REPLACE", "UPSERT", "DROP", "CREATE", "ALTER", "ATTACH", "DETACH",
    "PRAGMA", "VACUUM", "REINDEX", "ANALYZE", "BEGIN", "COMMIT", "END", "ROLLBACK", "SAVEPOINT",
    "RELEASE", "EXPLAIN", "VALUES"}
_FENCE = re.compile(r"```[ \t]*[A-Za-z0-9_-]*[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL)
_LEADING_NOISE = re.compile(r"(?:\s+|--[^\n]*(?:\n|\Z)|/\*.*?(?:\*/|\Z))*", re.DOTALL)
_FIRST_WORD = re.compile(r"[A-Za-z_]+")
_MAX_SQL_CHARS = 100_000


def check_sql(sql: str, db_schema: str) -> str | None:
    """None when ``sql`` is a single read-only query (SELECT, or WITH ... SELECT; one trailing semicolon
    allowed; a surrounding Markdown code fence is ignored) that compiles against ``db_schema``; otherwise
    a one-line reason meant for the record's error column. Raises ConfigError if the schema is broken,
    since that is the use case's fault, not the generated item's."""
    conn, lock = _schema_database(db_schema)
    if not isinstance(sql, str):
        return f"SQL must be text, got {type(sql).__name__}"
    sql = strip_code_fence(sql).strip()
    if not sql:
        return "SQL is empty"
    if len(sql) > _MAX_SQL_CHARS:
        return f"SQL is longer than {_MAX_SQL_CHARS} characters"
    keyword = first_keyword(sql)
    if keyword in _OTHER_STATEMENTS:
        return f"SQL is not a read-only query ({keyword})"
    denied: list[tuple[int, str | None]] = []

    def authorize(action: int, target: str | None, *_: object) -> int:
        # sqlite_master & co. are not part of the schema the question is about (pragma_* table functions
        # go through them too), so reading them is refused like a write.
        internal = bool(target) and target.lower().startswith("sqlite_")
        if action in _READ_ONLY_ACTIONS and not internal:
            return sqlite3.SQLITE_OK
        denied.append((action, target if internal else None))
        return sqlite3.SQLITE_DENY

    with lock:
        conn.set_authorizer(authorize)
        try:
            conn.execute("EXPLAIN " + sql).close()
        except sqlite3.ProgrammingError as exc:
            if "one statement" in str(exc):
                return "SQL has more than one statement"
            if "bindings" in str(exc):
                return "SQL has parameter placeholders (?, :name); write the values into the query"
            return f"SQL is invalid: {_one_line(exc)}"
        except sqlite3.DatabaseError as exc:
            if denied:
                action, internal = denied[0]
                if internal:
                    return f"SQL uses SQLite's internal tables ({internal}); query only the schema's tables"
                return f"SQL is not a read-only query ({_ACTION_NAMES.get(action, 'changes state')})"
            return _reason(exc)
        finally:
            conn.set_authorizer(None)
    if keyword not in _QUERY_KEYWORDS:
        return f"SQL is not a read-only query ({keyword or sql.split()[0]})"
    return None


def strip_code_fence(text: str) -> str:
    """The body of the first Markdown code fence (```sql ... ```) in ``text``, or ``text`` unchanged."""
    match = _FENCE.search(text)
    return match.group(1) if match else text


def first_keyword(sql: str) -> str:
    """The statement's first word, upper-cased, after leading whitespace and comments ('' if none)."""
    match = _FIRST_WORD.match(sql, _LEADING_NOISE.match(sql).end())
    return match.group(0).upper() if match else ""


def _reason(exc: sqlite3.DatabaseError) -> str:
    message = _one_line(exc)
    if message.startswith("no such table"):
        return f"SQL references a missing table: {message}"
    if message.startswith("no such column"):
        return f"SQL references a missing column: {message}"
    if "syntax error" in message or message in ("incomplete input",) or message.startswith("unrecognized token"):
        return f"SQL syntax error: {message}"
    return f"SQL is invalid: {message}"


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


@lru_cache(maxsize=16)
def _schema_database(db_schema: str) -> tuple[sqlite3.Connection, threading.Lock]:
    """An empty in-memory database built from ``db_schema``, cached per schema text. The lock serialises
    checks because the authorizer is per connection and the engine may call from several threads."""
    if not isinstance(db_schema, str) or not db_schema.strip():
        raise ConfigError("the database schema is empty; give the CREATE TABLE statements the SQL runs on")
    conn = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)

    def no_attach(action: int, *_: object) -> int:
        # An ATTACH in the schema text would create or read a file; nothing else can leave memory.
        if action in (sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH):
            return sqlite3.SQLITE_DENY
        return sqlite3.SQLITE_OK

    conn.set_authorizer(no_attach)
    try:
        conn.executescript(db_schema)
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise ConfigError(f"the database schema does not load in SQLite ({_one_line(exc)}); "
                          "fix its CREATE TABLE statements") from None
    conn.set_authorizer(None)
    tables = conn.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'").fetchone()[0]
    if not tables:
        conn.close()
        raise ConfigError("the database schema defines no tables; give the CREATE TABLE statements")
    conn.execute("PRAGMA query_only=ON")
    if hasattr(conn, "setlimit"):
        conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
    return conn, threading.Lock()
