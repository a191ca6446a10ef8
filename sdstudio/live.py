"""What a run is doing right now, for whoever watches it (a notebook's progress panel): the requests in flight
(since when, for which item) and, from a provider that writes token by token on this machine (the embedded
model), the text it is writing.

Nothing here runs unless someone watches. ``runner.submit`` (the notebooks' background runs) sets a
``LiveActivity`` on its thread's context with ``watching``; the engine picks it up when it is built and otherwise
does nothing, so a run from the CLI does no work for it. A remote request costs two dict operations (started,
ended), never work per token; only the embedded model, already looping over its tokens in Python, reports its
partial text, through the ``writer()`` the engine sets for the request's task.
"""
from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

LABEL_CHARS = 60


@dataclass
class Flight:
    """One request in flight: which item, since when (``time.monotonic()``), and the text written so far."""

    label: str
    started: float
    text: str = ""

    def elapsed_s(self, now: float | None = None) -> float:
        return (time.monotonic() if now is None else now) - self.started


class LiveActivity:
    """The requests of a run in flight, oldest first. Written by the engine (its event loop) and the embedded model
    (its own thread), read by the page (another thread): every access holds one small lock."""

    def __init__(self) -> None:
        self._flights: dict[int, Flight] = {}  # insertion order is start order
        self._next = 0
        self._lock = threading.Lock()

    def start(self, label: str) -> int:
        with self._lock:
            self._next += 1
            self._flights[self._next] = Flight(label, time.monotonic())
            return self._next

    def end(self, token: int) -> None:
        with self._lock:
            self._flights.pop(token, None)

    def write(self, token: int, text: str) -> None:
        """The whole text the model has written so far for this request (not a delta)."""
        flight = self._flights.get(token)
        if flight is not None:
            flight.text = text  # one reference assignment: the reader sees the old text or the new one

    def in_flight(self) -> list[Flight]:
        """A copy of the requests in flight, oldest first."""
        with self._lock:
            return [Flight(f.label, f.started, f.text) for f in self._flights.values()]


def label_of(item: Any) -> str:
    """A work item as a person recognises it: its topic, else the start of its input, else its key."""
    value = getattr(item, "topic", None) or getattr(item, "input", None)
    if isinstance(value, dict):
        value = next((v for v in value.values() if isinstance(v, str) and v.strip()), None)
    text = " ".join(str(value).split()) if value not in (None, "") else f"item {str(getattr(item, 'key', ''))[:8]}"
    return text if len(text) <= LABEL_CHARS else text[:LABEL_CHARS - 1] + "…"


_ACTIVITY: contextvars.ContextVar[LiveActivity | None] = contextvars.ContextVar("sdstudio_live", default=None)
_WRITER: contextvars.ContextVar[Callable[[str], None] | None] = contextvars.ContextVar("sdstudio_writer", default=None)


@contextmanager
def watching(activity: LiveActivity) -> Iterator[LiveActivity]:
    """Runs started inside this block (on this thread) report their requests in flight to ``activity``."""
    token = _ACTIVITY.set(activity)
    try:
        yield activity
    finally:
        _ACTIVITY.reset(token)


def current() -> LiveActivity | None:
    """The activity a run built here reports to; None when nobody watches (the CLI)."""
    return _ACTIVITY.get()


@contextmanager
def writing(activity: LiveActivity, token: int) -> Iterator[None]:
    """Inside this block (one request's task) a streaming provider finds where its partial text goes."""
    reset = _WRITER.set(lambda text: activity.write(token, text))
    try:
        yield
    finally:
        _WRITER.reset(reset)


def writer() -> Callable[[str], None] | None:
    """Where a streaming provider passes the text written so far for the request it is serving; None when
    nobody watches (then it does no work per token for it)."""
    return _WRITER.get()
