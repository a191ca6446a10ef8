"""Credentials never reach a log: every secret sdstudio reads is registered here, and log records that carry
one (from any library: botocore prints the AWS session token in its DEBUG request dump) are masked.

A log-record factory rather than a handler filter: filters sit on the handlers a user or a notebook
configures, which sdstudio does not own; the factory sees every record before any handler does. Records
are only built for enabled levels, so with DEBUG off this costs nothing.
"""
from __future__ import annotations

import logging
import threading

MASK = "***"
_secrets: set[str] = set()
_lock = threading.Lock()
_previous_factory = None


def register(*values: str | None) -> None:
    """Remember credentials to mask (short values are ignored: masking 'abc' everywhere would garble logs)."""
    global _previous_factory
    with _lock:
        _secrets.update(v for v in values if v and len(v) >= 8)
        if _previous_factory is None and _secrets:
            _previous_factory = logging.getLogRecordFactory()
            logging.setLogRecordFactory(_masking_factory)


def mask(text: str) -> str:
    for secret in sorted(_secrets, key=len, reverse=True):  # a longer secret may contain a shorter one
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def _masking_factory(*args, **kwargs) -> logging.LogRecord:
    record = _previous_factory(*args, **kwargs)  # type: ignore[misc]
    try:
        message = record.getMessage()
    except Exception:  # noqa: BLE001 - a badly formatted record is logging's to report, not ours
        return record
    masked = mask(message)
    if masked != message:
        record.msg, record.args = masked, None
    return record
