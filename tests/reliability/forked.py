"""Run many `sdstudio` commands, each in its own process, for the price of one interpreter start.

A fresh `sdstudio` process costs ~1 s of imports; dozens of memory-bomb cases would cost a minute of CPU on a
shared machine. So one fresh child (the zygote) imports the CLI and what the cases' paths import, then forks one
grandchild per case: each case runs `sdstudio.cli.main` in a process of its own, starting from what a CLI run
has loaded, and its peak RSS (wait4's ru_maxrss, which starts from that baseline) and wall time come back.
The grandchild caps its address space so a regression fails fast instead of taking the machine.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

ZYGOTE = r"""
import json, os, resource, signal, sys, time, traceback
import sdstudio.cli as cli
cli.build_parser()  # every subcommand's module
for module in sys.argv[2:]:
    __import__(module)
limit = int(sys.argv[1]) * 2**20
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    case = json.loads(line)
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:
        try:
            os.setsid()
            for fd, path in ((1, case["stdout"]), (2, case["stderr"])):
                os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
            sys.stdout = os.fdopen(1, "w", buffering=1)
            sys.stderr = os.fdopen(2, "w", buffering=1)
            os.environ.update(case["env"])
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
            code = cli.main(case["argv"])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            traceback.print_exc()
            code = 99
        sys.stdout.flush(); sys.stderr.flush()
        os._exit(code if isinstance(code, int) else 1)
    deadline, hung = started + case["timeout"], False
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            hung = True
            os.killpg(pid, signal.SIGKILL)
            _, status, usage = os.wait4(pid, 0)
            break
        time.sleep(0.01)
    print(json.dumps({"code": None if hung else os.waitstatus_to_exitcode(status),
                      "peak_mb": usage.ru_maxrss / 1024, "seconds": time.monotonic() - started}), flush=True)
"""


@dataclass
class Outcome:
    code: int | None  # None: killed after the timeout
    stdout: str
    stderr: str
    peak_mb: float
    seconds: float

    @property
    def lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


class Zygote:
    """``with Zygote(["pandas"]) as z: z.run(argv, folder)``: one warm interpreter, one process per run."""

    def __init__(self, preload: list[str] = (), address_space_mb: int = 3072) -> None:
        self.args = [sys.executable, "-c", ZYGOTE, str(address_space_mb), *preload]

    def __enter__(self) -> Zygote:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "SDSTUDIO_DEBUG": ""}
        self.proc = subprocess.Popen(self.args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
                                     cwd=ROOT)
        assert json.loads(self.proc.stdout.readline()) == {"ready": True}
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)

    def run(self, argv: list[str], folder: Path, env: dict[str, str] | None = None, timeout: float = 60) -> Outcome:
        folder.mkdir(parents=True, exist_ok=True)
        out, err = folder / "stdout", folder / "stderr"
        case = {"argv": argv, "stdout": str(out), "stderr": str(err), "env": env or {}, "timeout": timeout}
        self.proc.stdin.write(json.dumps(case) + "\n")
        self.proc.stdin.flush()
        result = json.loads(self.proc.stdout.readline())
        return Outcome(result["code"], out.read_text(errors="replace"), err.read_text(errors="replace"),
                       result["peak_mb"], result["seconds"])


def run_fresh(argv: list[str], folder: Path, timeout: float = 120) -> Outcome:
    """One `sdstudio` run in a fresh interpreter (for figures a warm zygote would flatter), with its peak RSS."""
    import time

    folder.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SDSTUDIO_DEBUG": ""}
    started = time.monotonic()
    with open(folder / "stdout", "wb") as out, open(folder / "stderr", "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "sdstudio.cli", *argv], stdout=out, stderr=err, env=env,
                                cwd=folder, start_new_session=True)
        try:
            _, status, usage = _wait4(proc.pid, timeout)
        finally:
            proc.returncode = 0  # reaped by wait4: Popen must not wait again
    code = None if status is None else os.waitstatus_to_exitcode(status)
    return Outcome(code, (folder / "stdout").read_text(errors="replace"), (folder / "stderr").read_text(errors="replace"),
                   usage.ru_maxrss / 1024, time.monotonic() - started)


def _wait4(pid: int, timeout: float):
    import signal
    import time

    deadline = time.monotonic() + timeout
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            return done, status, usage
        if time.monotonic() > deadline:
            os.killpg(pid, signal.SIGKILL)
            _, _, usage = os.wait4(pid, 0)
            return pid, None, usage
        time.sleep(0.02)
