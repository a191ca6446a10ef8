"""What every workflow's job shares: its identity (config hash), its result, its estimate, its progress.
The job's life itself (open, lease, run, close) is ``runner.JobRunner``.

A job's identity is its config minus the run settings (concurrency, limits, retries): re-running the same
config finds the same job and resumes it, so a killed or cancelled run continues where it stopped and a
finished one costs nothing. ``resume=JOB_ID`` picks the job explicitly.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from ..config import StrictModel
from ..engine import Progress
from ..store import config_digest


def config_hash(config: StrictModel) -> str:
    """Identity of a job: its config without the ``run`` settings, which only change how it runs."""
    return config_digest(config.model_dump(mode="json", exclude={"run"}))


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
    requests_sent: int = 0  # requests this run sent: one per work item, however often it was tried
    attempts: int = 0       # calls the provider got in this run (HTTP requests): retries and re-asks included
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

    @property
    def attempts(self) -> int:
        """Calls made to providers so far, the current round's included."""
        return self.base.attempts + self.current.attempts

    def requests(self) -> int:
        """Requests sent so far (work items, each counted once), the current round's included."""
        return self.sent + self.current.done - self.current.cached

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
                       attempts=base.attempts + cur.attempts,
                       tokens_in=base.tokens_in + cur.tokens_in, tokens_out=base.tokens_out + cur.tokens_out,
                       cost_usd=base.cost_usd + cur.cost_usd, elapsed_s=base.elapsed_s + cur.elapsed_s,
                       note=cur.note or base.note)
