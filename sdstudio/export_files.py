"""An export's files on disk: writing rows as JSONL, CSV or Parquet, temp names and their cleanup, hashes.

Every file an export writes is first written under a temp name (a hidden ``.NAME.PID@HOST.tmp`` file, or a
whole hidden staging folder of that form) and renamed into place, so a reader never sees half a file. A
process killed mid-write leaves its temp behind; the next export into the same folder removes the temps of
processes that are gone: on this host a dead pid (a zombie counts as dead), from another host (a shared
project file system, where our pids mean nothing) only a temp untouched for ``FOREIGN_STALE_S``. A temp of a
live process is never touched. The pid-only form ``.NAME.PID.tmp`` of earlier versions is cleaned too.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import shutil
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FOREIGN_STALE_S = 24 * 3600  # another host's temp: only this old is surely abandoned
_TEMP = re.compile(r"^\.(?P<base>.+)\.(?P<pid>\d+)(?:@(?P<host>[A-Za-z0-9-]{1,40}))?\.tmp$")


@dataclass(frozen=True)
class WrittenFile:
    """One file an export wrote, as its ``export_metadata.files`` entry records it."""

    name: str
    sha256: str
    bytes: int
    rows: int | None  # data rows; None for the dataset card
    split: str | None = None
    replaced: str | None = None  # sha256 of the file an --overwrite export replaced under this name

    def to_json(self) -> dict[str, Any]:
        data = {"name": self.name, "split": self.split, "rows": self.rows, "sha256": self.sha256, "bytes": self.bytes}
        if self.replaced:
            data["replaced_sha256"] = self.replaced
        return data


# -- temp names --------------------------------------------------------------------------------------

def host_tag() -> str:
    """This host's name as it appears in temp names (letters, digits and '-' only)."""
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40] or "host"


def temp_name(base: str) -> str:
    """The hidden temp name of ``base`` for this process: ``.BASE.PID@HOST.tmp``."""
    return f".{base}.{os.getpid()}@{host_tag()}.tmp"


def pid_alive(pid: int) -> bool:
    """Does process ``pid`` exist on this host and still run? A killed child not yet reaped (a zombie)
    writes nothing more, so it counts as dead; a pid we may not signal belongs to a live process."""
    if pid == os.getpid():
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as file:
            return file.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_stale_temp(path: Path, now: float | None = None) -> bool:
    """Is ``path`` a temp file or staging folder of an export whose process is gone?"""
    match = _TEMP.match(path.name)
    if match is None:
        return False
    host = match["host"]
    if host is None or host == host_tag():
        return not pid_alive(int(match["pid"]))
    try:  # another host: its pids mean nothing here, so only age can tell
        newest = max([path.lstat().st_mtime, *(p.lstat().st_mtime for p in path.iterdir())] if path.is_dir()
                     else [path.lstat().st_mtime])
    except OSError:
        return False
    return (now or time.time()) - newest > FOREIGN_STALE_S


def remove_stale_temps(folder: Path) -> list[str]:
    """Remove the stale temps directly in ``folder`` (only names of the temp form, see ``is_stale_temp``);
    the names removed."""
    removed = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for entry in entries:
        if is_stale_temp(entry):
            try:
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
            except FileNotFoundError:
                pass  # another export cleaned it first
            removed.append(entry.name)
    return removed


# -- writing -------------------------------------------------------------------------------------------

def atomic_write(path: Path, writer: Callable[[Path], Any]) -> None:
    """Have ``writer`` write a temp file beside ``path``, then rename it over ``path``: a reader sees the old
    file or the new one, never half of one; a failure removes the temp."""
    tmp = path.with_name(temp_name(path.name))
    try:
        writer(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def columns_of(rows: list[dict[str, Any]]) -> list[str]:
    """Every column in first-seen order (raw rows of different use cases may differ)."""
    return list(dict.fromkeys(key for row in rows for key in row))


def write_rows(path: Path, rows: list[dict[str, Any]], fmt: str) -> None:
    """Write ``rows`` as JSONL, CSV or Parquet at ``path`` (callers write into a private staging folder or
    through ``atomic_write``, so ``path`` is never a file a reader is looking at)."""
    columns = columns_of(rows)
    full = [{c: row.get(c) for c in columns} for row in rows]  # the same columns on every row
    if fmt == "jsonl":
        with path.open("w", encoding="utf-8") as handle:
            for row in full:
                handle.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
    elif fmt == "csv":
        with path.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            for row in full:  # nested values (messages, dict items) as JSON text: CSV has no nesting
                writer.writerow({k: json.dumps(v, ensure_ascii=False) if isinstance(v, (dict, list)) else v
                                 for k, v in row.items()})
    elif fmt == "parquet":
        _write_parquet(path, full)
    else:
        from .errors import ConfigError

        raise ConfigError(f"unknown format {fmt!r}; use jsonl, csv or parquet")


def _write_parquet(path: Path, rows: list[dict[str, Any]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pa.Table.from_pylist(rows)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        # values of one column with differing types (raw rows of freeform jobs): keep them as JSON text
        mixed = {k for k in rows[0] if _mixed(row.get(k) for row in rows)}
        table = pa.Table.from_pylist([{k: json.dumps(v, ensure_ascii=False, default=str) if k in mixed and v is not None
                                       else v for k, v in row.items()} for row in rows])
    pq.write_table(table, path)


def _mixed(values: Iterable[Any]) -> bool:
    kinds = {type(v) for v in values if v is not None}
    return len(kinds) > 1 or bool(kinds & {dict, list})


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def describe_file(path: Path, *, rows: int | None, split: str | None = None) -> WrittenFile:
    """The ``WrittenFile`` entry of a file just written (hashed from disk, so the record is what is there)."""
    return WrittenFile(name=path.name, sha256=sha256_file(path), bytes=path.stat().st_size, rows=rows, split=split)
