"""Where an export's files go, and the rules that keep every other file where it is.

- **Default**: a new folder ``SDSTUDIO_HOME/exports/<name>/v<N>/`` per export. The files are written into a
  private hidden staging folder beside it, which is then renamed to ``v<N>`` (N = one past the highest
  existing version). ``rename`` onto an existing, non-empty ``v<N>`` fails, so two concurrent exports never
  share a folder (the loser takes ``v<N+1>``), and a ``v<N>`` folder is always complete: a killed export
  leaves only its staging folder, which the next export of that name removes. Earlier versions are never
  touched, so every ``export_metadata`` row keeps pointing at the files and hashes it recorded.
- **--out DIR**: the user's folder. Refused outright when it is a system folder, the filesystem root, the
  user's home, SDSTUDIO_HOME, or inside sdstudio's own ``exports``/``uploads``/``templates``; refused when
  it already holds anything unless ``overwrite``. Even then only the data files this export writes are
  replaced (each recorded with the hash it replaced); a file that appears there mid-export is never
  clobbered. The dataset card is ``README.md`` unless the folder holds a README.md no sdstudio export wrote
  (the user's own, or an sdstudio card edited since): then the card is written as ``DATASET_CARD.md``
  (still uploaded as the Hub repo's README.md), and if that name is taken too, the export is refused.
"""
from __future__ import annotations

import errno
import os
import re
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from .errors import ConfigError
from .export_files import is_stale_temp, remove_stale_temps, sha256_file, temp_name

CARD = "README.md"
ALT_CARD = "DATASET_CARD.md"
# Never an export's target, nor anything inside them: the OS's own files.
SYSTEM_TREES = ("/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/run", "/sbin",
                "/snap", "/sys", "/usr", "/var/cache", "/var/lib", "/var/log", "/var/mail", "/var/spool",
                "/System", "/Library", "/Applications", "/private/etc")
# Never an export's target themselves (their subfolders may be the user's): filesystem-wide folders.
SYSTEM_DIRS = ("/", "/home", "/root", "/var", "/opt", "/srv", "/mnt", "/media", "/tmp", "/var/tmp", "/Users",
               "/Volumes", "/private", "/private/tmp")
_VERSION = re.compile(r"^v(\d+)$")
_CLAIM_ATTEMPTS = 10_000


class KnowsExports(Protocol):
    def export_wrote(self, directory: str, name: str, sha256: str) -> int | None: ...


@dataclass
class Destination:
    """Where one export writes: a versioned folder under ``root`` (default) or the ``--out`` folder ``root``."""

    root: Path
    versioned: bool
    data: list[str]  # data file names (train, then test), as planned from the config
    card: str = CARD
    overwrite: bool = False
    replace: frozenset[str] = frozenset()  # --out names that exist now and will be replaced (overwrite only)
    directory: Path | None = None  # where the files are once published
    version: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return [*self.data, self.card]


def plan(*, out: str | None, name: str, home: Path, data: list[str], overwrite: bool,
         store: KnowsExports) -> Destination:
    """Check the destination and plan every name this export will write, before any row is read or any file
    written; every refusal is a one-line ``ConfigError``."""
    if not out:
        return Destination(root=home / "exports" / name, versioned=True, data=data)
    target = Path(out).expanduser().resolve()
    refuse_dangerous(target, home)
    if target.exists() and not target.is_dir():
        raise ConfigError(f"cannot write the export to {target}: it is a file, not a folder; choose another --out")
    present = _entries(target)
    if present and not overwrite:
        sample = ", ".join(sorted(present)[:3])
        count = f"{len(present)} entr{'y' if len(present) == 1 else 'ies'}"
        raise ConfigError(f"--out {target} is not empty ({count}, e.g. {sample}); an export never "
                          f"replaces files it did not write: give an empty or new folder, leave out --out for a new "
                          f"versioned folder under {home / 'exports'}, or pass --overwrite to replace only "
                          f"{', '.join(data)} and the dataset card")
    card = _card_name(target, present, store)
    destination = Destination(root=target, versioned=False, data=data, card=card, overwrite=overwrite,
                              replace=frozenset(n for n in (*data, card) if n in present))
    if card != CARD:
        destination.notes.append(f"{target / CARD} is not a card an sdstudio export wrote, so it stays; the dataset "
                                 f"card is {ALT_CARD}")
    return destination


def refuse_dangerous(target: Path, home: Path) -> None:
    """One line for a target no export may write into: a system folder or anything in one, the filesystem
    root, the user's home, SDSTUDIO_HOME, or sdstudio's own folders inside it."""
    def why() -> str | None:
        for tree in SYSTEM_TREES:
            for root in {Path(tree), Path(tree).resolve()}:
                if target == root or root in target.parents:
                    return f"it is inside the system folder {root}"
        if str(target) in SYSTEM_DIRS or target == target.parent:
            return "it is a system-wide folder"
        if target == Path.home().resolve():
            return "it is your home folder"
        if target == home:
            return "it is SDSTUDIO_HOME (it holds metadata.db)"
        for own in ("exports", "uploads", "templates"):
            if target == home / own or home / own in target.parents:
                return (f"it is inside SDSTUDIO_HOME/{own}, which sdstudio manages"
                        + ("; leave out --out (and give --name) for a new versioned export there" if own == "exports"
                           else ""))
        return None

    reason = why()
    if reason:
        raise ConfigError(f"refusing to export into {target}: {reason}; give --out a folder of your own, e.g. "
                          f"./my-dataset")


def _entries(folder: Path) -> set[str]:
    """What ``folder`` holds, leaving out stale temps of dead exports (garbage the next export removes)."""
    try:
        return {p.name for p in folder.iterdir() if not is_stale_temp(p)}
    except FileNotFoundError:
        return set()
    except OSError as exc:
        raise ConfigError(f"cannot read --out {folder}: {exc.strerror or exc}; choose another --out") from None


def _card_name(folder: Path, present: set[str], store: KnowsExports) -> str:
    """README.md unless a README.md there is not one an sdstudio export recorded writing (same folder, same
    hash): the user's own README is never replaced."""
    for name in (CARD, ALT_CARD):
        if name not in present or _ours(folder, name, store):
            return name
    raise ConfigError(f"--out {folder} holds a {CARD} and a {ALT_CARD} that no sdstudio export wrote; the dataset "
                      f"card would replace one of them: move one aside or choose another --out")


def _ours(folder: Path, name: str, store: KnowsExports) -> bool:
    path = folder / name
    if not path.is_file() or path.is_symlink():
        return False
    try:
        return store.export_wrote(str(folder), name, sha256_file(path)) is not None
    except OSError:
        return False


# -- staging and publishing ---------------------------------------------------------------------------

def open_staging(destination: Destination) -> Path:
    """Create the destination's folder if needed, remove stale temps of dead exports there, and create this
    export's private staging folder in it (same file system, so publishing is a rename)."""
    root = destination.root
    root.mkdir(parents=True, exist_ok=True)
    removed = remove_stale_temps(root)
    if removed:
        destination.notes.append(f"removed {len(removed)} temp file(s) a killed export left in {root}: "
                                 f"{', '.join(sorted(removed))}")
    staging = root / temp_name(f"staging-{secrets.token_hex(4)}")
    staging.mkdir()
    return staging


def discard(staging: Path) -> None:
    """Remove this export's staging folder (after a failure, or what is left after publishing)."""
    shutil.rmtree(staging, ignore_errors=True)


def publish(destination: Destination, staging: Path) -> dict[str, str]:
    """Move the staged files into place; returns name -> sha256 of each file it replaced (--overwrite).

    Versioned: the staging folder becomes ``v<N>`` in one rename. --out: names planned as new are linked in
    without replacing anything (a file that appeared meanwhile stops the export, and what it placed is taken
    back); only the names planned for replacement are renamed over the old files."""
    if destination.versioned:
        destination.directory, destination.version = claim_version(destination.root, staging)
        return {}
    folder = destination.directory = destination.root
    placed: list[str] = []
    try:
        for name in destination.names:
            if name not in destination.replace:
                _place_new(staging / name, folder / name)
                placed.append(name)
    except FileExistsError:
        for done in placed:
            _take_back(staging / done, folder / done)
        raise ConfigError(f"{folder / name} appeared while exporting (another export writing into --out {folder}?); "
                          f"it was left alone and nothing of this export was kept") from None
    replaced = {}
    for name in destination.names:
        if name in destination.replace:
            old = folder / name
            if old.is_file() and not old.is_symlink():
                replaced[name] = sha256_file(old)
            os.replace(staging / name, old)
    if replaced:
        destination.notes.append(f"--overwrite replaced {', '.join(sorted(replaced))} in {folder}")
    discard(staging)
    return replaced


def next_version(root: Path) -> int:
    """One past the highest ``v<N>`` in ``root`` (1 for none)."""
    numbers = [int(m[1]) for p in root.iterdir() if (m := _VERSION.match(p.name))]
    return max(numbers, default=0) + 1


def claim_version(root: Path, staging: Path) -> tuple[Path, int]:
    """Rename ``staging`` to the next free ``root/v<N>``. A rename onto a folder another export published
    fails (not empty), so concurrent exports each get their own version."""
    number = next_version(root)
    for _ in range(_CLAIM_ATTEMPTS):
        target = root / f"v{number}"
        try:
            os.rename(staging, target)
            return target, number
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR):
                raise
            number += 1
    raise ConfigError(f"cannot find a free version folder in {root} after {_CLAIM_ATTEMPTS} tries; give --name")


def _place_new(source: Path, target: Path) -> None:
    """Put ``source`` at ``target`` only if nothing is there (a hard link cannot replace; where the file system
    has no hard links, check then rename)."""
    try:
        os.link(source, target)
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK, errno.ENOSYS):
            raise
        if target.exists() or target.is_symlink():
            raise FileExistsError(errno.EEXIST, "exists", str(target)) from None
        shutil.copy2(source, target)


def _take_back(staged: Path, placed: Path) -> None:
    """Remove a file this export placed, only if it is still the very file it placed."""
    try:
        if os.path.samefile(staged, placed) or placed.read_bytes() == staged.read_bytes():
            placed.unlink()
    except OSError:
        pass
