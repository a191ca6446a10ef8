"""Reading a home's metadata.db from a test while a CLI process writes it."""
from __future__ import annotations

import sqlite3
from pathlib import Path


def query(home: Path, sql: str) -> list[tuple]:
    """Rows (read-only), or [] while the CLI is still creating the database."""
    try:
        with sqlite3.connect(f"file:{home / 'metadata.db'}?mode=ro", uri=True, timeout=30) as conn:
            return conn.execute(sql).fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc) or "unable to open" in str(exc):
            return []
        raise
