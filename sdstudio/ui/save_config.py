"""Saving a page's job as YAML, so the same job runs from the CLI (`sdstudio <command> --config FILE`)."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..errors import SdstudioError
from .components import RunControls, message


def save_job_yaml(controls: RunControls, to_yaml: Callable[[], str], location: str, home: Path,
                  command: str) -> Path | None:
    """Write the page's job (``to_yaml``: a bad form raises its one-line error) to ``location`` (relative paths are
    under the home); the status line says where it went and the command that runs it, or what went wrong."""
    try:
        text = to_yaml()
    except SdstudioError as exc:
        controls.error(str(exc))
        return None
    path = Path(location).expanduser()
    if not path.is_absolute():
        path = home / path
    try:
        path.write_text(text)
    except OSError as exc:  # a read-only home, a folder that does not exist
        controls.error(f"cannot save {path}: {exc.strerror or exc}")
        return None
    controls.status.value = message("ok", f"saved {path} — run it with: sdstudio {command} --config {path}")
    return path
