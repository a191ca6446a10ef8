"""Resume any job by its id from the config stored with it, the way ``sdstudio <workflow> --resume ID`` does
without flags: the job's kind picks its workflow from the registry, the stored config is taken as it is (so its
hash, and with it the job, stays the same), and the run continues where it stopped — rows already saved are
never asked for again. The job page's Resume button runs this."""
from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .store import Store

RESUMABLE = ("interrupted", "cancelled", "failed")  # a job stopped before it finished


STAGE_PARENTS = ("alignment", "evolve")  # kinds whose child jobs are internal stages (the job page's list too)


def stage_of(store: Store, job: dict[str, Any]) -> tuple[int, str] | None:
    """(id, kind) of the job a stage job belongs to: alignment's candidates and judge, evolve's evolutions. A
    stage has no config of its own to resume from; it continues when its parent resumes."""
    parent_id = job.get("parent_id")
    if parent_id is None:
        return None
    try:
        parent = store.get_job(None, int(parent_id))
    except Exception:  # noqa: BLE001 - a parent that is gone leaves the job on its own
        return None
    kind = parent.get("kind")
    return (int(parent_id), str(kind)) if kind in STAGE_PARENTS else None


def stage_parent(store: Store, job: dict[str, Any]) -> int | None:
    """The id of the alignment or evolve job a stage job belongs to: stages resume through their parent."""
    stage = stage_of(store, job)
    return stage[0] if stage else None


def stored_run(job_id: int, *, home: str | Path | None = None, store: Store | None = None) -> Any:
    """The workflow run (``WorkflowRun``) that continues job ``job_id``; a job that cannot be resumed here
    (an export, a stage job, no stored config) raises ``ConfigError`` saying what to do instead."""
    from .config import _validate
    from .workflows import registry

    store = store or Store.open(home)
    job = store.get_job(None, int(job_id))
    kind = job.get("kind")
    stage = stage_of(store, job)
    if stage is not None:
        raise ConfigError(f"job {job_id} is a stage of {stage[1]} job {stage[0]}: resume job {stage[0]}")
    if kind not in registry.kinds() or registry.workflow(kind).run is None:
        raise ConfigError(f"{kind} job {job_id} cannot be resumed; run it again from its page")
    config = job.get("config")
    if isinstance(config, str):
        try:
            config = json.loads(config)
        except ValueError:
            config = None
    if not config:
        raise ConfigError(f"job {job_id} has no stored config to resume from; run it again from its page")
    parsed = _validate(registry.config_class(kind), config, f"job {job_id}'s stored config")
    return registry.run_class(kind)(parsed, home=home if home is not None else store.path.parent, store=store)


def resume_job(job_id: int, *, home: str | Path | None = None, store: Store | None = None,
               on_progress: Callable[[Any], None] | None = None, cancel_event: threading.Event | None = None) -> Any:
    """Continue job ``job_id`` to its end; its JobResult (``resumed`` is true, the id is the same)."""
    run = stored_run(job_id, home=home, store=store)
    return run.run(resume=int(job_id), on_progress=on_progress, cancel_event=cancel_event)
