"""Background runs for notebooks: ``submit(fn) -> RunHandle``.

A notebook's kernel already runs an asyncio loop, so a job cannot ``asyncio.run`` there without
freezing the widgets. ``submit`` runs the job on its own thread (with its own loop, made by the
engine's ``asyncio.run``) and hands back a handle to watch progress, cancel, and collect the result.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class RunHandle(Generic[T]):
    """Progress, cancel and result of a job running in the background."""

    def __init__(self) -> None:
        self.cancel_event = threading.Event()
        self.progress: Any = None
        self._listeners: list[Callable[[Any], None]] = []
        self._finished = threading.Event()
        self._result: T | None = None
        self._error: BaseException | None = None
        self.thread: threading.Thread | None = None

    def cancel(self) -> None:
        """Stop sending; in-flight requests finish (or are cut after a grace period); rows stay saved."""
        self.cancel_event.set()

    @property
    def cancelled(self) -> bool:
        return self.cancel_event.is_set()

    def add_listener(self, callback: Callable[[Any], None]) -> None:
        self._listeners.append(callback)

    def report(self, progress: Any) -> None:
        """The engine's progress callback: remember the latest figures and pass them on."""
        self.progress = progress
        for listener in list(self._listeners):
            listener(progress)

    def done(self) -> bool:
        return self._finished.is_set()

    def result(self, timeout: float | None = None) -> T:
        if not self._finished.wait(timeout):
            raise TimeoutError("the run has not finished yet")
        if self._error is not None:
            raise self._error
        return self._result  # type: ignore[return-value]

    @property
    def error(self) -> BaseException | None:
        return self._error


def submit(job: Callable[[RunHandle[T]], T], *, on_done: Callable[[RunHandle[T]], None] | None = None,
           name: str = "sdstudio-run") -> RunHandle[T]:
    """Run ``job(handle)`` on a background thread; return at once with the handle."""
    handle: RunHandle[T] = RunHandle()

    def target() -> None:
        try:
            handle._result = job(handle)
        except BaseException as exc:  # noqa: BLE001 - kept for result()/error, never lost
            handle._error = exc
        finally:
            handle._finished.set()
            if on_done is not None:
                on_done(handle)

    handle.thread = threading.Thread(target=target, name=name, daemon=True)
    handle.thread.start()
    return handle
