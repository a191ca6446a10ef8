"""Where sdstudio keeps its state: ``SDSTUDIO_HOME`` (default ``~/sdstudio``).

On Cloudera AI ``~`` is the project file system, so the default puts the database and exports where
the project keeps its files. The layout is fixed so notebooks, the CLI and Voilà agree on it.
"""
from __future__ import annotations

import os
from pathlib import Path

DEFAULT_HOME = "~/sdstudio"
DB_NAME = "metadata.db"
SUBDIRS = ("exports", "uploads", "templates")


def resolve_home(home: str | os.PathLike[str] | None = None) -> Path:
    """The home directory: the explicit argument, else ``$SDSTUDIO_HOME``, else ``~/sdstudio``."""
    chosen = home if home not in (None, "") else os.environ.get("SDSTUDIO_HOME") or DEFAULT_HOME
    return Path(chosen).expanduser().resolve()


def init_home(home: str | os.PathLike[str] | None = None) -> Path:
    """Create the home layout if missing (idempotent) and return its path."""
    root = resolve_home(home)
    for sub in SUBDIRS:
        (root / sub).mkdir(parents=True, exist_ok=True)
    return root


def db_path(home: str | os.PathLike[str] | None = None) -> Path:
    return resolve_home(home) / DB_NAME
