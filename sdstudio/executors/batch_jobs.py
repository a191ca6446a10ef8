"""A batch job's batches seen from outside its run: what ``sdstudio jobs show`` and the job page list, whether the
job still waits for a provider (the job page then resumes it, and the run polls), and ``sdstudio jobs cancel``."""
from __future__ import annotations

from typing import Any

from .batch_backend import FINAL_STATES, backend_for


def job_batches(store: Any, job_id: int) -> list[dict[str, Any]]:
    """A job's batches as ``jobs show`` and the job page list them: part, backend, remote id, state, counts."""
    columns = ("part", "backend", "remote_id", "state", "requests", "completed", "failed", "created_at",
               "updated_at", "collected_at", "error")
    return [{name: row[name] for name in columns} for row in store.job_batches(job_id)]


def awaiting_results(store: Any, job_id: int) -> bool:
    """Has ``job_id`` batches submitted whose results are not in its records yet? The job page resumes the job
    (``resume.resume_job``) when it opens one, and the run polls them: the kernel may be closed meanwhile."""
    return any(row["remote_id"] for row in store.open_batches(job_id))


def cancel_job_batches(store: Any, job_id: int) -> list[str]:
    """Cancel every batch of ``job_id`` still running at its provider (``sdstudio jobs cancel ID``), from any
    process: the provider is built from the job's stored config. Returns the remote ids cancelled."""
    from ..config import ModelSpec, RunSettings
    from ..providers import get_provider

    config = store.get_job(None, job_id).get("config") or {}
    provider = get_provider(ModelSpec.model_validate(config.get("model") or {}))
    backend = backend_for(provider, RunSettings.model_validate(config.get("run") or {}))
    cancelled = []
    try:
        for row in store.open_batches(job_id):
            if row["remote_id"] is None or row["state"] in FINAL_STATES:
                continue
            backend.cancel(row["remote_id"])
            state = backend.poll(row["remote_id"])
            store.update_batch(row["id"], state=state.state, completed=state.completed, failed=state.failed)
            cancelled.append(row["remote_id"])
    finally:
        close = getattr(backend, "close", None)
        if close is not None:
            close()
    return cancelled


__all__ = ["awaiting_results", "cancel_job_batches", "job_batches"]
