"""Reviews: a reviewer's verdict and/or edit of a record, kept beside it (the record's own output is never
touched), so the original and every reviewer's change stay traceable. The review half of ``Store``."""
from __future__ import annotations

import json
from typing import Any

from ..errors import StoreError


def _dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False, default=str)


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _utcnow() -> str:
    from .core import utcnow

    return utcnow()


class ReviewsMixin:
    """Reviews of records (connections and transactions come from the store itself)."""

    def add_review(self, record_id: int, reviewer: str, verdict: str | None = None,
                   edited_output: Any = None, note: str | None = None) -> int:
        """Store a reviewer's verdict and/or edit. The record's original output is never touched."""
        if verdict not in (None, "accept", "reject"):
            raise StoreError(f"verdict must be 'accept' or 'reject', got {verdict!r}")
        if not reviewer or not reviewer.strip():
            raise StoreError("a review needs the reviewer's name")
        with self.transaction() as conn:
            cur = conn.execute(
                "INSERT INTO reviews (record_id, reviewer, verdict, edited_output, note, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (record_id, reviewer.strip(), verdict, _dumps(edited_output), note, _utcnow()))
            return int(cur.lastrowid)

    def reviews(self, record_id: int) -> list[dict[str, Any]]:
        rows = self.connection().execute(
            "SELECT * FROM reviews WHERE record_id = ? ORDER BY id", (record_id,)).fetchall()
        return [{**dict(r), "edited_output": _loads(r["edited_output"])} for r in rows]

    def latest_reviews(self, job_kind: str, job_id: int) -> dict[int, dict[str, Any]]:
        """The newest review of each reviewed record of a job, keyed by record id."""
        rows = self.connection().execute(
            "SELECT v.* FROM reviews v JOIN records r ON r.id = v.record_id "
            "WHERE r.job_kind = ? AND r.job_id = ? AND v.id = "
            "(SELECT MAX(id) FROM reviews WHERE record_id = v.record_id)", (job_kind, job_id)).fetchall()
        return {r["record_id"]: {**dict(r), "edited_output": _loads(r["edited_output"])} for r in rows}

    def job_reviews(self, job_kind: str, job_id: int) -> dict[int, list[dict[str, Any]]]:
        """Every review of every reviewed record of a job, oldest first, keyed by record id (the desk's
        per-reviewer progress and conflicts need the whole history, not just the newest)."""
        rows = self.connection().execute(
            "SELECT v.* FROM reviews v JOIN records r ON r.id = v.record_id "
            "WHERE r.job_kind = ? AND r.job_id = ? ORDER BY v.id", (job_kind, job_id)).fetchall()
        history: dict[int, list[dict[str, Any]]] = {}
        for r in rows:
            history.setdefault(r["record_id"], []).append({**dict(r), "edited_output": _loads(r["edited_output"])})
        return history
