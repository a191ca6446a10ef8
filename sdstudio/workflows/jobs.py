"""The life of a job row, shared by every workflow: find or create it, run rounds, close it.

A job's identity is its config minus the run settings (concurrency, limits, retries): re-running the same
config finds the same job and resumes it, so a killed or cancelled run continues where it stopped and a
finished one costs nothing. ``resume=JOB_ID`` picks the job explicitly.
"""
from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from ..config import StrictModel
from ..engine import Progress
from ..errors import ConfigError
from ..store import Store, utcnow


def config_hash(config: StrictModel) -> str:
    """Identity of a job: its config without the ``run`` settings, which only change how it runs."""
    data = config.model_dump(mode="json", exclude={"run"})
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:32]


@dataclass
class JobResult:
    """What a finished (or stopped) run reports; ``--json`` prints exactly this."""

    kind: str
    job_id: int
    status: str
    ok: int = 0
    failed: int = 0
    filtered: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    elapsed_s: float = 0.0
    resumed: bool = False
    requests_sent: int = 0
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["cost_usd"] = round(self.cost_usd, 6)
        data["elapsed_s"] = round(self.elapsed_s, 3)
        return data

    @property
    def failed_ratio(self) -> float:
        total = self.ok + self.failed
        return self.failed / total if total else 0.0


@dataclass(frozen=True)
class Estimate:
    """The token and cost estimate every workflow's preview (``--dry-run``) carries; each preview adds
    what it shows (the first prompt, its counts). ``to_json`` is what ``--dry-run --json`` prints."""

    est_tokens_in: int
    est_tokens_out: int
    est_cost_usd: float
    price_known: bool

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "est_cost_usd": round(self.est_cost_usd, 6)}


def open_job(store: Store, kind: str, config: StrictModel, resume: int | None, **fields: Any) -> tuple[int, bool]:
    """(job id, resumed?). An explicit ``resume`` must exist and be of this kind; otherwise the newest
    job made from the same config is resumed, or a new one is created."""
    digest = config_hash(config)
    if resume is not None:
        row = store.get_job(kind, resume)
        if row.get("config_hash") != digest:
            raise ConfigError(f"job {resume} was made from a different config; resume it without "
                              "changing the job settings (only run settings such as --concurrency may change)")
        return resume, True
    existing = store.find_job(kind, digest)
    if existing is not None:
        return int(existing["id"]), True
    config_json = config.model_dump(mode="json")
    job_id = store.create_job(kind, config=config_json, config_hash=digest, status="queued", **fields)
    return job_id, False


class ProgressTotals:
    """Adds up the engine's per-round progress into one running figure for the whole job."""

    def __init__(self, listener: Callable[[Progress], None] | None):
        self.listener = listener
        self.base = Progress()
        self.current = Progress()
        self.sent = 0

    def planned(self, extra: int) -> None:
        self.base.total += extra

    def __call__(self, progress: Progress) -> None:
        self.current = progress
        if self.listener is not None:
            self.listener(self.combined())

    def end_round(self, progress: Progress) -> None:
        self.sent += progress.done - progress.cached
        merged = self.combined(progress)
        merged.total = self.base.total
        merged.in_flight = 0
        self.base = merged
        self.current = Progress()

    def combined(self, current: Progress | None = None) -> Progress:
        cur, base = current or self.current, self.base
        return replace(base, done=base.done + cur.done, ok=base.ok + cur.ok, failed=base.failed + cur.failed,
                       cached=base.cached + cur.cached, in_flight=cur.in_flight, retries=base.retries + cur.retries,
                       tokens_in=base.tokens_in + cur.tokens_in, tokens_out=base.tokens_out + cur.tokens_out,
                       cost_usd=base.cost_usd + cur.cost_usd, elapsed_s=base.elapsed_s + cur.elapsed_s,
                       note=cur.note or base.note)


def close_job(store: Store, kind: str, job_id: int, *, started: float, cancelled: bool, totals: ProgressTotals,
              resumed: bool, notes: list[str], error: str | None = None) -> JobResult:
    """Copy counts onto the job row and set its final status (cancelled jobs stay resumable)."""
    counts = store.refresh_counts(kind, job_id)
    row = store.get_job(kind, job_id)
    status = "failed" if error else "cancelled" if cancelled else "done"
    cost = float(row.get("cost_usd") or 0.0) + totals.base.cost_usd
    store.update_job(kind, job_id, status=status, finished_at=utcnow(), cost_usd=cost, error=error)
    return JobResult(kind=kind, job_id=job_id, status=status, ok=counts["ok"], failed=counts["failed"],
                     filtered=counts["filtered"], tokens_in=int(row["tokens_in"]), tokens_out=int(row["tokens_out"]),
                     cost_usd=cost, elapsed_s=time.monotonic() - started, resumed=resumed,
                     requests_sent=totals.sent, notes=notes)
