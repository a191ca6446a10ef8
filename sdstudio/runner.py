"""How jobs run: ``JobRunner`` (one job's open / lease / run / close, for every workflow) and, for notebooks,
background runs: ``submit(fn) -> RunHandle``.

A notebook's kernel already runs an asyncio loop, so a job cannot ``asyncio.run`` there without
freezing the widgets. ``submit`` runs the job on its own thread (with its own loop, made by the
engine's ``asyncio.run``) and hands back a handle to watch progress, cancel, and collect the result.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class RunHandle(Generic[T]):
    """Progress, cancel and result of a job running in the background."""

    def __init__(self) -> None:
        from .live import LiveActivity

        self.cancel_event = threading.Event()
        self.progress: Any = None
        self.live = LiveActivity()  # the requests in flight and what the embedded model is writing (live.py)
        self._listeners: list[Callable[[Any], None]] = []
        self._finished = threading.Event()
        self._result: T | None = None
        self._error: BaseException | None = None
        self.thread: threading.Thread | None = None

    def cancel(self) -> None:
        """Stop sending: nothing new starts; replies already on their way get a short grace, then are abandoned
        (their items stay unsent, not failed, so Resume sends them); the job ends cancelled, saved rows stay."""
        self.cancel_event.set()

    @property
    def cancelled(self) -> bool:
        return self.cancel_event.is_set()

    def add_listener(self, callback: Callable[[Any], None]) -> None:
        self._listeners.append(callback)

    def report(self, progress: Any) -> None:
        """The engine's progress callback: remember the latest figures and pass them on."""
        self.progress = progress
        for listener in list(self._listeners):
            listener(progress)

    def done(self) -> bool:
        return self._finished.is_set()

    def result(self, timeout: float | None = None) -> T:
        if not self._finished.wait(timeout):
            raise TimeoutError("the run has not finished yet")
        if self._error is not None:
            raise self._error
        return self._result  # type: ignore[return-value]

    @property
    def error(self) -> BaseException | None:
        return self._error


def submit(job: Callable[[RunHandle[T]], T], *, on_done: Callable[[RunHandle[T]], None] | None = None,
           name: str = "sdstudio-run", handle: RunHandle[T] | None = None) -> RunHandle[T]:
    """Run ``job(handle)`` on a background thread; return at once with the handle (``handle``: one made, and
    watched, beforehand). The runs it starts report their requests in flight to ``handle.live``."""
    from .live import watching

    handle = handle if handle is not None else RunHandle()

    def target() -> None:
        try:
            with watching(handle.live):
                handle._result = job(handle)
        except BaseException as exc:  # noqa: BLE001 - kept for result()/error, never lost
            handle._error = exc
        finally:
            handle._finished.set()
            if on_done is not None:
                on_done(handle)

    handle.thread = threading.Thread(target=target, name=name, daemon=True)
    handle.thread.start()
    return handle


# -- one job's life, for every workflow ------------------------------------------------------------

import contextvars  # noqa: E402 - kept beside the one class that uses it

# the job whose block is running on this thread: a job opened inside it (an alignment job's stages) is its child
_CURRENT_JOB: contextvars.ContextVar[int | None] = contextvars.ContextVar("sdstudio_current_job", default=None)


def current_job_id() -> int | None:
    return _CURRENT_JOB.get()


class JobRunner:
    """Open / resume / lease / progress / cancel / errors / close of one job, the same for every workflow.

    ``with JobRunner(...) as job:`` finds or creates the job and takes its lease (``JobBusy`` when another
    live process runs it; ``wait=True`` waits for it instead), ``job.execute(...)`` runs work items through
    an executor, and ``job.finish()`` recomputes counts, tokens and cost from the records and closes the
    job. Whatever escapes the block closes the job too: Ctrl-C as ``cancelled``, any other exception (a
    full disk, a read-only home, a replaced database, a provider that cannot work) as ``failed`` with its
    first line, so no process that is gone leaves a job ``running``; the exception is re-raised.
    """

    def __init__(self, store: Any, family: str, kind: str, config: Any, *, resume: int | None = None,
                 parent_id: int | None = None, fields: dict[str, Any] | None = None,
                 on_progress: Callable[[Any], None] | None = None, cancel_event: threading.Event | None = None,
                 wait: bool = False, with_children: bool = False):
        from .workflows.jobs import ProgressTotals

        self.store, self.family, self.kind, self.config = store, family, kind, config
        self.resume, self.fields = resume, fields or {}
        self.parent_id = parent_id if parent_id is not None else current_job_id()
        self.cancel_event, self.wait, self.with_children = cancel_event, wait, with_children
        self.totals = ProgressTotals(on_progress)
        self.notes: list[str] = []
        self.cancelled = False
        self.job_id = 0
        self.resumed = False
        self.result: Any = None
        self._owner = ""
        self._sent_before = (0, 0)  # requests and attempts of the job's earlier runs
        self._stop_heartbeat = threading.Event()

    # -- open ------------------------------------------------------------------------------------------
    def __enter__(self) -> "JobRunner":
        from .errors import JobBusy
        from .collector import resume_collector
        from .store import lease
        from .workflows.jobs import config_hash

        resume_collector()  # the command's start-up is over (collector.py)

        self.started = time.monotonic()
        self._owner = lease.this_owner()
        self.store.keep_reserve()
        config_json = self.config.model_dump(mode="json") if hasattr(self.config, "model_dump") else self.config
        digest = config_hash(self.config)
        while True:
            try:
                self.job_id, self.resumed = self.store.open_job(
                    self.family, kind=self.kind, config=config_json, config_hash=digest, resume=self.resume,
                    parent_id=self.parent_id, fields=self.fields, owner=self._owner)
                break
            except JobBusy:
                if not self.wait or self._cancel_requested():
                    raise
                time.sleep(1.0)
        row = self.store.job_figures(self.job_id)  # what earlier runs sent: this run's counts add to them
        self._sent_before = (int(row.get("requests") or 0), int(row.get("attempts") or 0))
        threading.Thread(target=self._heartbeat, name=f"sdstudio-lease-{self.job_id}", daemon=True).start()
        self._context_token = _CURRENT_JOB.set(self.job_id)
        return self

    def _cancel_requested(self) -> bool:
        return self.cancel_event is not None and self.cancel_event.is_set()

    def _heartbeat(self) -> None:
        """Renew the lease while the job runs (what another host sees; this host checks the pid)."""
        from .store import lease

        while not self._stop_heartbeat.wait(lease.HEARTBEAT_S):
            try:
                self.store.heartbeat(self.job_id, self._owner)
                self._save_sends()  # a killed run still leaves (nearly) what it sent
            except Exception:  # noqa: BLE001 - a full disk fails the run itself; the lease can wait
                pass

    def _save_sends(self) -> None:
        """Requests and attempts on the job's row: earlier runs' plus this one's so far."""
        requests, attempts = self._sent_before
        self.store.note_sends(self.job_id, requests + self.totals.requests(), attempts + self.totals.attempts)

    # -- run -------------------------------------------------------------------------------------------
    def execute(self, provider: Any, items: Any, handler: Any = None, *, settings: Any, price: Any = None,
                family: str | None = None, plan: bool = True, phase: str | None = None, **options: Any) -> Any:
        """Run work items through the configured executor into this job's records; one round of the job
        (``plan=False``: the caller already added the items to the progress total; ``phase`` names the step
        in the progress note, e.g. "grounding check")."""
        from dataclasses import replace

        from .executors import executor_class

        report = self.totals
        if phase:
            def report(progress: Any) -> None:
                self.totals(replace(progress, note=f"{phase}; {progress.note}" if progress.note else phase))
        executor = executor_class(settings.executor)(
            provider, self.store, family or self.family, self.job_id, settings, price=price,
            on_progress=report, cancel_event=self.cancel_event, **options)
        if plan:
            self.totals.planned(len(items))
        self._recall_endpoint(provider)
        result = None
        try:
            result = executor.execute(items, handler)
        finally:  # a run that stopped still made its calls, and its notes say how it asked
            self._remember_endpoint(provider, result)
        self.totals.end_round(result.progress)
        if result.cancelled:
            self.cancelled = True
        return result

    def _recall_endpoint(self, provider: Any) -> None:
        """Start the provider where earlier jobs found its endpoint working: the structured-output dialect that
        worked (no renegotiation) and whether it answered this model before (no slow start)."""
        if not hasattr(provider, "negotiation") or getattr(provider, "recalled", False):
            return
        dialect, answered = self.store.endpoint_dialect(provider.name, provider.endpoint_key(), provider.model_id or "")
        provider.negotiation().start_at(dialect)
        provider.proven = answered
        provider.recalled = True

    def _remember_endpoint(self, provider: Any, result: Any) -> None:
        """Keep what worked for the next job; the job's notes say which dialect this one used."""
        if not hasattr(provider, "negotiation"):
            return
        negotiation = provider.negotiation()
        self.totals.base.attempts += negotiation.refused_calls  # refused for their dialect: calls all the same
        negotiation.refused_calls = 0
        if negotiation.used:
            note = negotiation.note()
            if note not in self.notes:
                self.notes.append(note)
        if result is not None:
            self._record_answering_model(provider, result.models)
        if result is not None and result.answered:
            provider.proven = True
            dialect = negotiation.dialect if negotiation.used and negotiation.confirmed else None
            self.store.remember_endpoint(provider.name, provider.endpoint_key(), provider.model_id or "", dialect)

    def _record_answering_model(self, provider: Any, models: set[str]) -> None:
        """The job's model is the one that answered: a server may map the id asked for to another (an alias to a
        dated snapshot). Only for the job's own model (not a grounding judge's), and only when one model answered."""
        asked = provider.model_id
        if len(models) != 1 or asked != self.fields.get("model_id") or asked in models:
            return
        answered = next(iter(models))
        self.store.update_job(self.family, self.job_id, model_id=answered)
        self.fields["model_id"] = answered
        note = f"asked for model {asked}; the server answered as {answered}"
        if note not in self.notes:
            self.notes.append(note)

    def add_sends(self, requests: int, attempts: int) -> None:
        """Requests and attempts made for this job by jobs it ran (an alignment job's stages): its row and
        result report them as its own too."""
        self.totals.sent += requests
        self.totals.base.attempts += attempts

    def note_price(self, price: Any, model_id: str) -> None:
        if not price.known:
            note = f"no price known for {model_id}: cost shown as 0"
            if note not in self.notes:
                self.notes.append(note)

    # -- close -----------------------------------------------------------------------------------------
    def finish(self, *, error: str | None = None) -> Any:
        """Counts, tokens and cost from the records; the final status; the lease given up."""
        from .store import utcnow
        from .workflows.jobs import JobResult

        self._stop_heartbeat.set()
        counts = self.store.refresh_counts(self.family, self.job_id, with_children=self.with_children)
        self._save_sends()
        status = "failed" if error else "cancelled" if self.cancelled else "done"
        self.store.release_job(self.job_id, self._owner, status=status, finished_at=utcnow(), error=error,
                               notes=self.notes or None)
        row = self.store.job_figures(self.job_id)
        self.result = JobResult(kind=self.kind, job_id=self.job_id, status=status, ok=counts["ok"],
                                failed=counts["failed"], filtered=counts["filtered"], tokens_in=int(row["tokens_in"]),
                                tokens_out=int(row["tokens_out"]), cost_usd=float(row["cost_usd"] or 0.0),
                                elapsed_s=time.monotonic() - self.started, resumed=self.resumed,
                                requests_sent=self.totals.sent, attempts=self.totals.attempts, notes=self.notes)
        return self.result

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        self._stop_heartbeat.set()
        _CURRENT_JOB.reset(self._context_token)
        if self.result is not None:
            return False
        if exc is None:
            self.finish()
            return False
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            self.cancelled = True
            error = None
        else:
            error = one_line(exc)
        from .store import utcnow

        status = "failed" if error else "cancelled"
        try:  # the smallest write first: on a full disk the status may fit where the counts do not
            self.store.release_job(self.job_id, self._owner, status=status, finished_at=utcnow(), error=error)
        except Exception:  # noqa: BLE001 - the store itself failed: the dead lease shows the job interrupted
            pass
        try:
            self.finish(error=error)
        except Exception:  # noqa: BLE001 - counts are recomputed from the records by the next run anyway
            pass
        return False


def one_line(exc: BaseException) -> str:
    """The first line of an error's message (its type when it has none), as jobs and the CLI show it; any
    credential ``redact`` knows masked (a library's exception may echo a URL with its query key)."""
    from .redact import mask

    text = str(exc).strip().splitlines()
    return mask(text[0]) if text else type(exc).__name__
