"""Small helpers shared by tests (fixtures live in conftest.py)."""
from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_http(url: str, timeout: float = 60.0) -> None:
    """Poll until the URL answers (any HTTP status), or fail the test."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer within {timeout}s")



def privileged(*command: str, check: bool = True) -> None:
    """Run a mount command as root: directly when root, else through passwordless sudo (as `make test` installs its
    system packages). A full disk or a read-only home is a real kernel error this way, not a mock; without root the
    test fails naming what it needs, since a skipped test would pass a machine where the failure path never ran."""
    import os
    import subprocess

    import pytest

    done = subprocess.run(list(command) if os.geteuid() == 0 else ["sudo", "-n", *command], capture_output=True)
    if check and done.returncode != 0:
        pytest.fail(f"`{' '.join(command)}` needs root or passwordless sudo: {done.stderr.decode().strip()}",
                    pytrace=False)


def mount_tmpfs(folder, size: str) -> None:
    privileged("mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder))


def unmount(folder) -> None:
    privileged("umount", "-l", str(folder), check=False)


def fake_spec(server):
    """The ModelSpec of the loopback fake OpenAI-compatible server."""
    from sdstudio.config import ModelSpec

    return ModelSpec(provider="openai_compatible", model="fake-model", base_url=server.url)


def cli(*argv: str) -> int:
    """``sdstudio.cli.main`` in-process, with the SIGTERM handler a run installs put back afterwards."""
    import signal

    from sdstudio.cli import main

    previous = signal.getsignal(signal.SIGTERM)
    try:
        return main(list(argv))
    finally:
        signal.signal(signal.SIGTERM, previous)
