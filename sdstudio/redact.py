"""Credentials never reach a log: every secret sdstudio reads is registered here, and log records that carry
one (from any library: botocore prints the AWS session token in its DEBUG request dump, httpx logs every
request URL with its query) are masked.

A log-record factory rather than a handler filter: filters sit on the handlers a user or a notebook
configures, which sdstudio does not own; the factory sees every record before any handler does. Records
are only built for enabled levels, so with DEBUG off this costs nothing.

Secrets shorter than 8 characters are only masked where a URL puts them (``//user:pw@``, ``?name=value`` of a
query name registered by ``urlsecrets``): masking ``abc`` everywhere would garble logs and messages.
"""
from __future__ import annotations

import logging
import re
import threading

MASK = "***"
_secrets: set[str] = set()
_query_names: set[str] = set()
_query_pattern: re.Pattern[str] | None = None
_lock = threading.Lock()
_previous_factory = None
# user:password@ of any URL: always a credential, whoever wrote the URL
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/?#\s@\"'<>]+@")
# every query value of any URL (for text no one registered, e.g. a mistyped flag argparse echoes)
_ANY_QUERY = re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://[^\s\"'<>?#]*\?)([^\s\"'<>#]*)")


def register(*values: str | None) -> None:
    """Remember credentials to mask (short values are ignored: masking 'abc' everywhere would garble logs)."""
    with _lock:
        _secrets.update(v for v in values if v and len(v) >= 8)
        _install()


def register_query_names(*names: str) -> None:
    """Query parameters whose values are credentials (``api_key`` of ``?api_key=...``): masked in any URL."""
    global _query_pattern
    with _lock:
        _query_names.update(n for n in names if n)
        if _query_names:
            alternatives = "|".join(re.escape(n) for n in sorted(_query_names, key=len, reverse=True))
            _query_pattern = re.compile(rf"([?&](?:{alternatives})=)[^&#\s\"'<>]*")
        _install()


def _install() -> None:
    global _previous_factory
    if _previous_factory is None and (_secrets or _query_names):
        _previous_factory = logging.getLogRecordFactory()
        logging.setLogRecordFactory(_masking_factory)


def mask(text: str) -> str:
    """``text`` with every registered secret, URL user:password and registered query value masked."""
    for secret in sorted(_secrets, key=len, reverse=True):  # a longer secret may contain a shorter one
        if secret in text:
            text = text.replace(secret, MASK)
    if "@" in text:
        text = _USERINFO.sub(rf"\1{MASK}@", text)
    if _query_pattern is not None and "=" in text:
        text = _query_pattern.sub(rf"\1{MASK}", text)
    return text


def mask_urls(text: str) -> str:
    """``mask``, and also every query value of every URL in ``text``: for text that may hold a URL sdstudio
    never parsed (argparse echoing a mistyped flag's argument)."""
    def values(match: re.Match[str]) -> str:
        pairs = match.group(2).split("&")
        return match.group(1) + "&".join(f"{p.partition('=')[0]}={MASK}" if "=" in p else p for p in pairs)

    return _ANY_QUERY.sub(values, mask(text))


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
