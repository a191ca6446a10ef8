"""Start-up of the ``sdstudio`` command: Python's cyclic garbage collector paused while the command imports its
modules and plans its job.

Why: importing pydantic, aiohttp and sdstudio and building a job's configuration and plan allocate hundreds of
thousands of long-lived objects, and the collector makes ~100 passes over them that free nothing: 50-90 ms before
a job's first request (measured on `sdstudio generate`, ~0.3 s of start-up). ``cli.entry`` pauses it; the first job
or run resumes it (``JobRunner``, ``loops.run_coroutine``) after ``gc.freeze()``, so those start-up objects are
never traversed again; and a command that starts neither gets it back after ``LATEST_S`` whatever it does.
Cycles made meanwhile are collected once it resumes: nothing is lost, only postponed.
"""
from __future__ import annotations

import gc
import threading

LATEST_S = 3.0
_paused = False
_lock = threading.Lock()


def pause_collector() -> None:
    """Pause the collector for start-up (only if it runs: a caller's own ``gc.disable()`` is left alone)."""
    global _paused
    with _lock:
        if _paused or not gc.isenabled():
            return
        gc.disable()
        _paused = True
    timer = threading.Timer(LATEST_S, resume_collector)
    timer.daemon = True
    timer.start()


def resume_collector() -> None:
    """Start-up is over: what it made is frozen (never traversed again) and the collector runs again."""
    global _paused
    with _lock:
        if not _paused:
            return
        _paused = False
        gc.freeze()
        gc.enable()
