"""Write the lock (constraints.txt): the exact versions of everything sdstudio and its dev extra need, as installed
in the environment `make test` passed in. `make lock` runs it; `make install`, `make test`, environment.yml and the
AMP's install task (cml/install.py) install with ``pip install -c constraints.txt``.

Why a constraints file and not ``pip freeze``: freeze lists whatever happens to be in the venv (tools someone
installed by hand, sdstudio itself as an editable path). This walks the requirements of pyproject.toml (its
dependencies, plus the extras named on the command line, default ``dev``) through each installed distribution's
metadata, markers evaluated for this interpreter, and pins each one at its installed version. Constraints only bound what gets
installed, so a pin for a package another platform does not need is harmless.

    python tools/lock.py [EXTRA ...] > constraints.txt
"""
from __future__ import annotations

import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

PROJECT = "sdstudio"
ROOT = Path(__file__).resolve().parent.parent
TOOLS = {"pip", "setuptools", "wheel"}  # the installer's own tools: the venv's pip manages them, a pin would fight it


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def project_requirements(extras: set[str]) -> list[Requirement]:
    """What pyproject.toml asks for (the source of truth: an editable install's metadata can be older)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = [*project["dependencies"], *(r for e in sorted(extras) for r in project["optional-dependencies"][e])]
    return [Requirement(line) for line in lines]


def closure(extras: set[str]) -> dict[str, str]:
    """canonical name -> installed version of every distribution the project with ``extras`` needs, transitively."""
    pins: dict[str, str] = {}
    todo: list[tuple[str, set[str]]] = [(r.name, set(r.extras)) for r in project_requirements(extras)
                                        if r.marker is None or r.marker.evaluate({"extra": ""})]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        name, wanted = todo.pop()
        key = (canonical(name), frozenset(wanted))
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise SystemExit(f"lock: {name} is required but not installed; run `make install-dev` first") from None
        if canonical(name) != PROJECT and canonical(name) not in TOOLS:
            pins[canonical(name)] = dist.version
        for line in dist.requires or []:
            requirement = Requirement(line)
            environments = [{"extra": extra} for extra in wanted] or [{"extra": ""}]
            if requirement.marker is None or any(requirement.marker.evaluate(env) for env in environments):
                todo.append((requirement.name, set(requirement.extras)))
    return pins


def main(argv: list[str]) -> int:
    extras = set(argv) or {"dev"}
    pins = closure(extras)
    print(f"# The versions `make test` passed with: {PROJECT}[{','.join(sorted(extras))}] and everything it needs, "
          f"pinned.\n# Python {sys.version_info.major}.{sys.version_info.minor}. Written by `make lock` "
          f"(tools/lock.py); do not edit by hand.")
    for name in sorted(pins):
        print(f"{name}=={pins[name]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
