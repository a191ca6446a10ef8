"""The provider batches a job submitted (``batches``, migration 007): the batch half of ``Store``.

A row is written before the batch is uploaded (state ``submitting``, no remote id) and given its remote id the
moment the provider created it, so a process that dies at any point leaves a row saying what was paid for: a
later run of the same job polls that batch instead of submitting the same requests again. A row whose remote id
never came (the upload failed, or the process died during it) holds no paid batch and is dropped by the next run.
"""
from __future__ import annotations

import json
from typing import Any

_COLUMNS = ("remote_id", "input_file_id", "output_file_id", "error_file_id", "state", "completed", "failed",
            "error", "collected_at")


def _utcnow() -> str:
    from .core import utcnow

    return utcnow()


def _decode(row: Any) -> dict[str, Any]:
    data = dict(row)
    data["request_keys"] = json.loads(data.pop("request_ids") or "[]")
    return data


class BatchesMixin:
    """Per-job batch rows (connections and transactions come from the store itself)."""

    def add_batch(self, job_id: int, backend: str, request_keys: list[str]) -> dict[str, Any]:
        """A new batch of ``job_id`` about to be submitted: its next part number, state ``submitting``."""
        now = _utcnow()
        with self.transaction() as conn:
            part = conn.execute("SELECT COALESCE(MAX(part), 0) + 1 FROM batches WHERE job_id = ?",
                                (job_id,)).fetchone()[0]
            cursor = conn.execute(
                "INSERT INTO batches (job_id, part, backend, requests, state, request_ids, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, 'submitting', ?, ?, ?)",
                (job_id, part, backend, len(request_keys), json.dumps(request_keys), now, now))
            row = conn.execute("SELECT * FROM batches WHERE id = ?", (cursor.lastrowid,)).fetchone()
        return _decode(row)

    def update_batch(self, batch_row_id: int, **fields: Any) -> None:
        """Set what a submit or a poll learnt (remote id, file ids, state, counts, error, collected_at)."""
        unknown = set(fields) - set(_COLUMNS)
        if unknown:
            raise ValueError(f"unknown batch columns {sorted(unknown)}")
        if not fields:
            return
        names = ", ".join(f"{name} = ?" for name in fields)
        with self.transaction() as conn:
            conn.execute(f"UPDATE batches SET {names}, updated_at = ? WHERE id = ?",
                         (*fields.values(), _utcnow(), batch_row_id))

    def drop_batch(self, batch_row_id: int) -> None:
        """A batch that was never created remotely (its upload or create failed): nothing to poll, nothing paid."""
        with self.transaction() as conn:
            conn.execute("DELETE FROM batches WHERE id = ? AND remote_id IS NULL", (batch_row_id,))

    def job_batches(self, job_id: int, *, with_keys: bool = False) -> list[dict[str, Any]]:
        """A job's batches, oldest first (``with_keys``: with the request keys each carries, a list)."""
        columns = "*" if with_keys else ("id, job_id, part, backend, remote_id, input_file_id, output_file_id, "
                                         "error_file_id, requests, state, completed, failed, created_at, "
                                         "updated_at, collected_at, error, '[]' AS request_ids")
        rows = self.connection().execute(f"SELECT {columns} FROM batches WHERE job_id = ? ORDER BY part",
                                         (job_id,)).fetchall()
        return [_decode(row) for row in rows]

    def open_batches(self, job_id: int) -> list[dict[str, Any]]:
        """The job's batches whose results are not in its records yet (submitted, running, or finished but not
        read): what a resumed run polls instead of submitting again."""
        rows = self.connection().execute(
            "SELECT * FROM batches WHERE job_id = ? AND collected_at IS NULL ORDER BY part", (job_id,)).fetchall()
        return [_decode(row) for row in rows]
