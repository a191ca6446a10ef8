"""What one item of a job is in metadata.db: the ``Record`` dataclass and how its fields become a row and back.

Kept apart from core.py (connections, transactions, the records table's queries): executors, handlers and the
writer all build and ship records; only the store reads and writes rows.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any


def utcnow() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")

@dataclass
class Record:
    """One item of a job as the store keeps it. JSON-able fields are stored as JSON text."""

    job_kind: str
    job_id: int
    item_key: str
    status: str
    request_key: str | None = None
    topic: str | None = None
    provenance: Any = None
    input: Any = None
    output: Any = None
    error: str | None = None
    raw_text: str | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    latency_ms: float | None = None
    created_at: str = field(default_factory=utcnow)
    cost_usd: float = 0.0
    # what the model reasoned before answering, as its provider returned it apart from the reply (migration 008);
    # None: no reasoning came back. Export keeps it only when asked (``--with-reasoning``)
    reasoning: str | None = None
    # not a row but a stamp onto the stored ok row with this item key (a check's verdict): its provenance
    # keys are merged in, its tokens and cost added, its status and error set; nothing if that row is not ok
    stamp: bool = False

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict: how an executor brings a record back from another process to the run's writer."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Record":
        return cls(**data)


_JSON_RECORD_FIELDS = ("provenance", "input", "output")
_RECORD_FIELDS = tuple(name for name in Record.__dataclass_fields__ if name != "stamp")


def _dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False, default=str)


_ALL_RECORD_FIELDS = tuple(Record.__dataclass_fields__)


def _row_fields(rec: Record) -> dict[str, Any]:
    """The record's fields as ``asdict`` gives them, without its deep copy of input, output and provenance
    (~20 µs a record; the writer only serializes them). The JSON fields are returned already as their JSON text,
    the text ``_dumps(asdict(rec)[name])`` is: plain JSON values serialize the same copied or not, and a value
    json cannot take as it is (a dataclass inside an output) goes through ``asdict``'s conversion as before."""
    data = {name: getattr(rec, name) for name in _ALL_RECORD_FIELDS}
    converted: dict[str, Any] | None = None
    for name in _JSON_RECORD_FIELDS:
        value = data[name]
        if value is None:
            continue
        try:
            data[name] = json.dumps(value, ensure_ascii=False)
        except (TypeError, ValueError):
            converted = converted or asdict(rec)
            data[name] = _dumps(converted[name])
    return data


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _decode_record(row: dict[str, Any]) -> dict[str, Any]:
    for name in _JSON_RECORD_FIELDS:
        row[name] = _loads(row[name])
    return row
