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
    """Create the home layout if missing (idempotent) and return its path: what everything that writes into
    the home calls first. A home this process cannot write is one line saying so (reading needs no call)."""
    from .errors import StoreError

    root = resolve_home(home)
    reason = read_only_reason(root)
    if reason is not None:  # before anything is written: an upload or an export fails whole, with this line
        from .store.readonly import read_only_error

        raise read_only_error(root / DB_NAME, reason)
    try:
        for sub in SUBDIRS:
            (root / sub).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create SDSTUDIO_HOME {root} ({exc.strerror or exc}); point SDSTUDIO_HOME "
                         "(or --home) at a folder you can write") from None
    return root


def read_only(folder: Path) -> bool:
    """Is ``folder`` on a read-only file system (or not writable by us)? Root ignores permissions, so
    the mount flag is asked first."""
    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return True
    except (OSError, AttributeError):
        pass
    return not os.access(folder, os.W_OK | os.X_OK)


def read_only_reason(root: Path) -> str | None:
    """Why this process cannot write the home at ``root`` (None when it can): the store then opens it for
    reading instead of failing. A home that does not exist yet is judged by the folder it would be created in."""
    if not root.exists():
        parent = next((p for p in root.parents if p.exists()), None)
        if parent is None or not parent.is_dir():
            return None  # creating it fails with its own one line (init_home)
        return f"cannot create it in {parent}: {_why_not_writable(parent)}" if read_only(parent) else None
    if root.is_dir() and read_only(root):
        return _why_not_writable(root)
    db = root / DB_NAME
    if db.is_file() and not os.access(db, os.W_OK):
        return f"no write permission on {DB_NAME}"
    return None


def _why_not_writable(folder: Path) -> str:
    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return "read-only file system"
    except (OSError, AttributeError):
        pass
    return "no write permission"


def db_path(home: str | os.PathLike[str] | None = None) -> Path:
    return resolve_home(home) / DB_NAME
