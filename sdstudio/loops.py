"""Event loops for blocking callers: a run started from sync code (the CLI) or from a notebook cell, where a loop
already runs and ``asyncio.run`` would fail."""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any


def run_coroutine(make: Callable[[], Any]) -> Any:
    """Run ``make()``'s coroutine to the end on a fresh event loop. Called where a loop already runs (a
    notebook cell), it runs on a worker thread with its own loop instead of failing."""
    from .collector import fewer_collections, resume_collector

    resume_collector()  # a run is no start-up any more (collector.py)

    def blocking() -> Any:
        with fewer_collections(), asyncio.Runner(loop_factory=fast_loop_factory()) as runner:
            return runner.run(make())

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return blocking()
    with ThreadPoolExecutor(1, thread_name_prefix="sdstudio-run") as pool:
        return pool.submit(blocking).result()


def fast_loop_factory():
    """uvloop when installed (about half the per-request CPU of the stdlib loop), else the default."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop
