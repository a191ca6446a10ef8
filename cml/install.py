"""The AMP's install task (Cloudera AI Job "Install sdstudio"): the same install as `make install`, from the lock.

``pip install -c constraints.txt -e .`` with the Makefile's ``CMAKE_ARGS`` (llama-cpp-python builds from source;
the Makefile skips the parts of llama.cpp we never run), read from the Makefile so the two never drift. The
Application and the workflow Jobs only import what this installed: nothing is built twice. Run it again after
``git pull``: it does nothing when pyproject.toml and constraints.txt are what it installed last time.

Run it anywhere with ``python cml/install.py``; ``--dev`` adds the test extra (what `make install-dev` does).
"""
from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "constraints.txt"
STAMP = Path(os.environ.get("SDSTUDIO_INSTALL_STAMP", Path.home() / ".cache" / "sdstudio" / "install.stamp"))


def cmake_args() -> str:
    """The Makefile's ``export CMAKE_ARGS ?= ...`` (an explicit CMAKE_ARGS in the environment wins, as in make)."""
    match = re.search(r"^export CMAKE_ARGS \?= *(.*)$", (ROOT / "Makefile").read_text(), re.MULTILINE)
    return os.environ.get("CMAKE_ARGS") or (match.group(1).strip() if match else "")


def fingerprint(extra: str) -> str:
    """What an install depends on: the project's requirements, the lock, the extra and this interpreter."""
    digest = hashlib.sha256(f"{sys.executable}\n{extra}\n".encode())
    for path in (ROOT / "pyproject.toml", LOCK):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def command(extra: str) -> list[str]:
    target = f".[{extra}]" if extra else "."
    return [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-c", str(LOCK),
            "-e", target]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    extra = "dev" if "--dev" in args else ""
    if not LOCK.is_file():
        print(f"sdstudio install: {LOCK} is missing; `make lock` writes it", file=sys.stderr)
        return 2
    wanted = fingerprint(extra)
    if STAMP.is_file() and STAMP.read_text().strip() == wanted and "--force" not in args:
        print("sdstudio install: already installed from this lock (--force installs again)", flush=True)
        return 0
    env = {**os.environ, "CMAKE_ARGS": cmake_args(), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    print(f"sdstudio install: {' '.join(command(extra))}", flush=True)
    code = subprocess.call(command(extra), cwd=ROOT, env=env)
    if code == 0:
        STAMP.parent.mkdir(parents=True, exist_ok=True)
        STAMP.write_text(wanted + "\n")
        print("sdstudio install: done; start the Application or run a Job", flush=True)
    else:
        print(f"sdstudio install: pip failed (exit {code}); its output above names the package", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
