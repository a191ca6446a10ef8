"""Who is running a job: the lease's owner string, and whether that owner is still alive.

A lease names its owner as ``host:pid:start`` (``start`` = the process's start time in clock ticks from
/proc, so a recycled pid is not mistaken for the owner). On the same host the owner is alive exactly when
that process still exists with that start time, which a SIGKILL ends at once; on another host (a shared
project file system) only the heartbeat can tell, so an owner whose heartbeat is older than
``LEASE_TTL_S`` is taken for dead.
"""
from __future__ import annotations

import os
import socket
import time

HEARTBEAT_S = 5.0
LEASE_TTL_S = 60.0


def _start_ticks(pid: int) -> str | None:
    """The process's start time (field 22 of /proc/PID/stat), or None when there is no such process.
    Without /proc (macOS), "exists" is all we can tell: the owner's pid stands in for its start time."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as file:
            stat = file.read()
        return stat.rsplit(")", 1)[1].split()[19]
    except FileNotFoundError:
        return None
    except OSError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return str(pid)


def this_owner() -> str:
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{_start_ticks(pid)}"


def owner_alive(owner: str | None, heartbeat: float | None) -> bool:
    if not owner:
        return False
    try:
        host, pid_text, ticks = owner.rsplit(":", 2)
        pid = int(pid_text)
    except ValueError:
        return False
    if host == socket.gethostname():
        return _start_ticks(pid) == ticks
    return heartbeat is not None and time.time() - heartbeat < LEASE_TTL_S


def describe(owner: str) -> str:
    """'process 1234 on host' for error messages."""
    try:
        host, pid, _ = owner.rsplit(":", 2)
    except ValueError:
        return owner
    here = " (this process)" if owner == this_owner() else ""
    return f"process {pid} on {host}{here}"
