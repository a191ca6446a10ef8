"""Credentials written into a URL (``http://user:pass@host/v1``, ``http://host/v1?api_key=...``) live in this
process's memory only.

A config is stored (metadata.db), hashed (a job's identity) and shown (``jobs show``, ``--json``, errors), so
the config field holds the URL's *shown* form, every secret part masked: ``http://***@host/v1?api_key=***``.
``protect`` (the config validators call it) keeps the real URL in a vault keyed by that shown form;
``reveal`` (the provider that talks to the endpoint calls it) gives it back, split into what a client
needs: the bare URL requests go to, the user and password for an HTTP Basic ``Authorization`` header, and
the query parameters to add to every request (pasted in front of ``/chat/completions`` they would break
the path).

Chosen on purpose, and documented in docs/architecture.md:

- Identity: the hash is of the shown form, so two runs that differ only in the password or a query value
  are the same job (the credential is how the endpoint is reached, not what the job is). Every query value
  is masked, also ones that are not secret (``api-version=...``): sdstudio cannot tell which are.
- The same shown form typed twice with different secrets in one process: the latest wins.
- A job resumed in a new process from its stored config has only the masks: ``reveal`` says, in one line,
  to give the URL with its credentials again.
- A URL whose host part is not ``host[:port]``, or with an ``@`` after the host, is refused without echoing
  it: that is a password with an unencoded ``/``, ``?`` or ``#``, and any guess would show part of it.
"""
from __future__ import annotations

import base64
import logging
import re
import threading
from dataclasses import dataclass
from urllib.parse import unquote

from . import redact
from .errors import ConfigError

MASK = redact.MASK
log = logging.getLogger("sdstudio.urlsecrets")
_HOST = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~%!$&'()*+,;=-]*)(?::\d*)?$")
_vault: dict[str, "EndpointUrl"] = {}
_lock = threading.Lock()


@dataclass(frozen=True)
class EndpointUrl:
    """A URL taken apart: ``url`` is where requests go (no user, no query, no fragment); ``shown`` is the
    form safe to store and print; ``username``/``password``/``query`` are the secrets, in memory only."""

    url: str
    shown: str
    username: str | None = None
    password: str | None = None
    query: tuple[tuple[str, str], ...] = ()

    @property
    def has_userinfo(self) -> bool:
        return self.username is not None

    @property
    def has_secrets(self) -> bool:
        return self.username is not None or bool(self.query)

    def basic_authorization(self) -> str | None:
        """The ``Authorization`` header value for the URL's user and password (RFC 7617), or None."""
        if self.username is None:
            return None
        token = base64.b64encode(f"{self.username}:{self.password or ''}".encode()).decode("ascii")
        return f"Basic {token}"

    def query_params(self) -> dict[str, str]:
        """The query as a mapping for a client's default query (a repeated name keeps its last value)."""
        return dict(self.query)


@dataclass(frozen=True)
class _Parts:
    prefix: str  # "scheme://" or ""
    userinfo: str | None
    host: str
    path: str
    query: str | None
    fragment: str | None


def _split(text: str, what: str) -> _Parts:
    """RFC 3986 split that also takes a URL without a scheme (so ``user:pw@host`` is masked, then refused as
    not http(s) by the provider). Raises ValueError, never showing the URL, when part of a credential
    would land outside the user part."""
    scheme, sep, rest = text.partition("://")
    prefix = f"{scheme}{sep}" if sep else ""
    if not sep:
        rest = text
    end = len(rest)
    for mark in "/?#":
        index = rest.find(mark)
        if index != -1:
            end = min(end, index)
    authority, tail = rest[:end], rest[end:]
    userinfo, at, host = authority.rpartition("@")
    tail, hashmark, fragment = tail.partition("#")
    path, qmark, query = tail.partition("?")
    if not _HOST.match(host) or "@" in path or "@" in fragment:
        raise ValueError(f"{what} is not a valid URL: its host part is not host[:port] or an '@' follows the host; "
                         "if it carries user:password, percent-encode '/', '?', '#' and '@' in them (%2F %3F %23 %40)")
    return _Parts(prefix, userinfo if at else None, host, path, query if qmark else None,
                  fragment if hashmark else None)


def _shown(parts: _Parts) -> str:
    user = f"{MASK}@" if parts.userinfo is not None else ""
    query = ""
    if parts.query:
        pairs = [p for p in parts.query.split("&") if p]
        query = "?" + "&".join(f"{p.partition('=')[0]}={MASK}" if "=" in p else MASK for p in pairs)
    return f"{parts.prefix}{user}{parts.host}{parts.path}{query}"


def _masks(parts: _Parts) -> tuple[int, int]:
    """(masked, real) counts of the URL's secret parts: a shown form (copied from `jobs show`, or a config read
    back from metadata.db) has only masks."""
    values = [p.partition("=")[2] if "=" in p else p for p in (parts.query or "").split("&") if p]
    if parts.userinfo is not None:
        values.append(parts.userinfo)
    masked = sum(v == MASK for v in values)
    return masked, len(values) - masked


def protect(url: str | None, what: str = "base_url") -> str | None:
    """The form of ``url`` to store and show: unchanged when it carries no credential; otherwise masked, the
    real URL kept in memory (and its secrets registered with ``redact``) for ``reveal``."""
    if url is None:
        return None
    text = url.strip()
    parts = _split(text, what)
    if parts.userinfo is None and not parts.query:
        return url  # as typed: a URL without credentials keeps the bytes (and the job hash) it always had
    shown = _shown(parts)
    masked, real = _masks(parts)
    if masked and real:
        raise ValueError(f"{what} {shown} mixes masked ({MASK}) and real credentials; give the URL in full")
    if masked:
        return shown
    username = password = None
    if parts.userinfo is not None:
        user, colon, secret = parts.userinfo.partition(":")
        username, password = unquote(user), unquote(secret) if colon else None
    query = tuple((unquote(n.replace("+", " ")), unquote(v.replace("+", " ")))
                  for n, _, v in (p.partition("=") for p in parts.query.split("&") if p)) if parts.query else ()
    endpoint = EndpointUrl(url=f"{parts.prefix}{parts.host}{parts.path}", shown=shown, username=username,
                           password=password, query=query)
    redact.register(password, parts.userinfo.partition(":")[2] if parts.userinfo else None,
                    endpoint.basic_authorization(), *(v for _, v in query),
                    *(p.partition("=")[2] for p in (parts.query or "").split("&")))
    redact.register_query_names(*(p.partition("=")[0] for p in (parts.query or "").split("&") if "=" in p))
    with _lock:
        earlier, _vault[shown] = _vault.get(shown), endpoint
    if earlier is not None and earlier != endpoint:
        log.warning("%s %s was given with other credentials earlier in this process; the latest are used for every "
                    "job on it", what, shown)
    return shown


def reveal(url: str, what: str = "base_url", flag: str = "--base-url") -> EndpointUrl:
    """The endpoint a stored/shown URL stands for, its credentials back from memory. A URL carrying masks
    this process never saw (a job resumed elsewhere, a URL copied from `jobs show`) is one ConfigError."""
    try:
        parts = _split(url.strip(), what)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if parts.userinfo is None and not parts.query:
        return EndpointUrl(url=f"{parts.prefix}{parts.host}{parts.path}", shown=url.strip())
    shown = _shown(parts)
    if _masks(parts)[0]:
        with _lock:
            known = _vault.get(shown)
        if known is None:
            raise ConfigError(f"{what} {shown} has its credentials masked (sdstudio never stores them); give the URL "
                              f"with them again ({flag}, or the notebook's field)")
        return known
    try:
        protect(url, what)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    with _lock:
        return _vault[shown]


def refuse_credentials(url: str | None, what: str, fix: str) -> str | None:
    """``url`` when it carries no user:password and no query; otherwise ValueError (shown form only) naming
    ``fix``: for endpoints whose client cannot apply them correctly."""
    if url is None:
        return None
    parts = _split(url.strip(), what)
    if parts.userinfo is not None or parts.query:
        raise ValueError(f"{what} {_shown(parts)} carries user:password or a ?query, which sdstudio does not store and "
                         f"this client cannot send; remove them and {fix}")
    return url


def shown(url: str | None) -> str | None:
    """The printable form of any URL (masked; a malformed one is replaced by a placeholder, never echoed)."""
    if url is None:
        return None
    try:
        return _shown(_split(url.strip(), "url"))
    except ValueError:
        return "(a malformed URL)"


def forget_all() -> None:
    """Drop every remembered URL (tests: a fresh process without restarting one)."""
    with _lock:
        _vault.clear()
