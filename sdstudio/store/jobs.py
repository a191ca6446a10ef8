"""The ``jobs`` table: one id space for every kind of job, its family's details, and its lease.

A job's *kind* is its workflow (generation, documents, workflow, alignment, candidates, evaluation, export,
and any later one); its *family* says which detail table holds what only that family has (generation,
evaluation, export: the seed's three tables, now views). Callers name the family where they need its
details (``get_job("generation", 4)``); job ids are unique across all of them.

The lease makes a job run in one process at a time: opening a job for a run takes it inside the same
write transaction that finds or creates the job, so two processes started on the same config at the same
moment get one job, and the second is refused (``JobBusy``) before it sends anything. A lease whose owner
is dead (SIGKILL, power cut) is taken over, and the job reads as ``interrupted`` until then.
"""
from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Mapping
from typing import Any

from ..errors import JobBusy, StoreError
from . import lease
from .schema import FAMILY_COLUMNS, VIEWS

JOB_COLUMNS = ("kind", "parent_id", "created_at", "started_at", "finished_at", "status", "requested", "ok",
               "failed", "filtered", "tokens_in", "tokens_out", "cost_usd", "config", "config_hash", "error",
               "requests", "attempts", "notes", "output_uri")
_JOB_JSON_COLUMNS = ("model_parameters", "topics", "examples", "config", "score_distribution",
                     "topic_stats", "source_job_ids", "file_hashes", "filters", "files", "notes")


def _encode(value: Any) -> Any:
    return json.dumps(value, ensure_ascii=False, default=str) if isinstance(value, (dict, list, tuple)) else value


def decode_job(row: Mapping[str, Any]) -> dict[str, Any]:
    data = dict(row)
    for name in _JOB_JSON_COLUMNS:
        if isinstance(data.get(name), str):
            try:
                data[name] = json.loads(data[name])
            except json.JSONDecodeError:
                pass  # free text stored by an older writer stays text
    return data


def _in_range(job_id: int, family: str | None = None) -> int:
    """A job id SQLite can hold: a larger one (typed by hand, ``--job 10**20``) is no job, not an OverflowError."""
    if not -2**63 <= job_id < 2**63:
        raise StoreError(f"no {family or ''} job with id {job_id}; `sdstudio jobs` lists them".replace("  ", " "))
    return job_id


def _view(family: str) -> str:
    try:
        return VIEWS[family]
    except KeyError:
        raise StoreError(f"unknown job family {family!r}; expected one of {sorted(VIEWS)}") from None


class JobsMixin:
    """The job half of ``Store`` (connections and transactions come from the store itself)."""

    read_only: str | None  # the Store's: why the home cannot be written, None when it can

    def _split(self, family: str | None, fields: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        details = FAMILY_COLUMNS.get(family or "", ())
        common = {k: _encode(v) for k, v in fields.items() if k in JOB_COLUMNS}
        own = {k: _encode(v) for k, v in fields.items() if k in details and k not in JOB_COLUMNS}
        unknown = sorted(set(fields) - set(common) - set(own))
        if unknown:
            raise StoreError(f"{VIEWS.get(family or '', 'jobs')} has no column(s) {', '.join(unknown)}")
        return common, own

    def _insert_job(self, conn, family: str, kind: str | None, fields: Mapping[str, Any]) -> int:
        from .core import utcnow

        _view(family)
        common, own = self._split(family, {"created_at": utcnow(), "kind": kind or family, **fields})
        cur = conn.execute(f"INSERT INTO jobs ({', '.join(common)}) VALUES ({', '.join('?' * len(common))})",
                           tuple(common.values()))
        job_id = int(cur.lastrowid)
        own["job_id"] = job_id
        conn.execute(f"INSERT INTO {family}_jobs ({', '.join(own)}) VALUES ({', '.join('?' * len(own))})",
                     tuple(own.values()))
        return job_id

    def create_job(self, family: str, *, kind: str | None = None, **fields: Any) -> int:
        """A new job of ``family`` (its kind defaults to the family's name)."""
        with self.transaction() as conn:
            return self._insert_job(conn, family, kind, fields)

    def update_job(self, family: str | None, job_id: int, **fields: Any) -> None:
        common, own = self._split(family, fields)
        with self.transaction() as conn:
            for table, key, values in (("jobs", "id", common), (f"{family}_jobs", "job_id", own)):
                if values:
                    sets = ", ".join(f"{name} = ?" for name in values)
                    if conn.execute(f"UPDATE {table} SET {sets} WHERE {key} = ?", (*values.values(), job_id)).rowcount == 0:
                        raise StoreError(f"no {family or ''} job with id {job_id}".replace("  ", " "))

    def get_job(self, family: str | None, job_id: int) -> dict[str, Any]:
        """A job with its family's details (``family=None``: the common columns only)."""
        table = "jobs" if family is None else _view(family)
        row = self.connection().execute(f"SELECT * FROM {table} WHERE id = ?", (_in_range(job_id, family),)).fetchone()
        if row is None:
            other = self.connection().execute("SELECT kind FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if other is not None:
                raise StoreError(f"job {job_id} is a {other[0]} job, not a {family} job")
            raise StoreError(f"no {family or ''} job with id {job_id}; `sdstudio jobs` lists them".replace("  ", " "))
        return self._reaped(decode_job(row))

    def job_family(self, job_id: int) -> str:
        """Which family's details a job has (``get_job(job_family(i), i)`` shows any job by its id)."""
        _in_range(job_id)
        for family in VIEWS:
            if self.connection().execute(f"SELECT 1 FROM {family}_jobs WHERE job_id = ?", (job_id,)).fetchone():
                return family
        raise StoreError(f"no job with id {job_id}; `sdstudio jobs` lists them")

    def find_job(self, family: str, config_hash: str) -> dict[str, Any] | None:
        """The newest job of this family made from the same config (how re-running a config resumes it)."""
        row = self.connection().execute(
            f"SELECT * FROM {_view(family)} WHERE config_hash = ? ORDER BY id DESC LIMIT 1", (config_hash,)
        ).fetchone()
        return None if row is None else self._reaped(decode_job(row))

    def child_jobs(self, job_id: int) -> list[dict[str, Any]]:
        rows = self.connection().execute("SELECT * FROM jobs WHERE parent_id = ? ORDER BY id", (job_id,))
        return [decode_job(r) for r in rows]

    def jobs(self, family: str | None = None, *, kind: str | None = None):
        """Jobs as a pandas DataFrame, newest first: one family's seed table, or an overview of all jobs
        (of one ``kind`` when given)."""
        import pandas as pd

        dead = self.reap_interrupted()
        conn = self.connection()
        if family is not None:
            return self._shown_interrupted(
                pd.read_sql_query(f"SELECT * FROM {_view(family)} ORDER BY id DESC", conn), dead)
        overview = """
            SELECT j.id, j.kind, j.parent_id, j.created_at, j.status,
                   COALESCE(g.technique || ':' || COALESCE(g.use_case, ''),
                            CASE WHEN e.job_id IS NOT NULL
                                 THEN 'judge of #' || COALESCE(e.source_generation_id, '?') END,
                            x.destination || ':' || COALESCE(x.style, '')) AS what,
                   COALESCE(g.model_id, e.model_id, x.repo_id, x.path) AS model_id,
                   j.requested, j.ok, j.failed, j.filtered, j.tokens_in, j.tokens_out, j.cost_usd,
                   j.requests, j.attempts, j.error
              FROM jobs j LEFT JOIN generation_jobs g ON g.job_id = j.id
                          LEFT JOIN evaluation_jobs e ON e.job_id = j.id
                          LEFT JOIN export_jobs x ON x.job_id = j.id
             WHERE ? IS NULL OR j.kind = ?
             ORDER BY j.id DESC"""
        return self._shown_interrupted(pd.read_sql_query(overview, conn, params=(kind, kind)), dead)

    def _shown_interrupted(self, frame: Any, dead: list[int]) -> Any:
        """A read-only home cannot store that a dead run's job is interrupted: it is shown so all the same."""
        if dead and self.read_only is not None:
            frame.loc[frame["id"].isin(dead), "status"] = "interrupted"
        return frame

    def refresh_counts(self, family: str | None, job_id: int, *, with_children: bool = False) -> dict[str, int]:
        """Recompute a job's counts, tokens and cost from its records and write them on its row. Tokens
        and cost are what the records say was paid (a killed run's replies included), so a resumed job
        reports what an uninterrupted one would; ``with_children`` adds its stage jobs' spend."""
        conn = self.connection()
        counts = dict(conn.execute(
            "SELECT status, COUNT(*) FROM records WHERE job_id = ? GROUP BY status", (job_id,)).fetchall())
        counts = {status: int(counts.get(status, 0)) for status in ("ok", "failed", "filtered")}
        ids = self._job_tree(job_id) if with_children else [job_id]
        marks = ", ".join("?" * len(ids))
        tokens_in, tokens_out, cost = conn.execute(
            f"SELECT COALESCE(SUM(tokens_in), 0), COALESCE(SUM(tokens_out), 0), COALESCE(SUM(cost_usd), 0) "
            f"FROM records WHERE job_id IN ({marks})", ids).fetchone()
        self.update_job(None, job_id, **counts, tokens_in=tokens_in, tokens_out=tokens_out, cost_usd=cost)
        return counts

    def job_figures(self, job_id: int) -> dict[str, Any]:
        """A job's sends and totals alone (requests, attempts, tokens, cost): what a run reads at its start and end,
        without decoding its config (a 100k-topic job's is megabytes of JSON)."""
        row = self.connection().execute(
            "SELECT requests, attempts, tokens_in, tokens_out, cost_usd FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise StoreError(f"no job with id {job_id}; `sdstudio jobs` lists them")
        return dict(row)

    def note_sends(self, job_id: int, requests: int, attempts: int) -> None:
        """Store how many requests a job has sent and how many calls (attempts, retries included) the
        provider got, over all its runs. Never lowers them: the lease's heartbeat and the run's close both
        write, and a heartbeat counted just before the close must not undo it."""
        with self.transaction() as conn:
            conn.execute("UPDATE jobs SET requests = MAX(requests, ?), attempts = MAX(attempts, ?) WHERE id = ?",
                         (requests, attempts, job_id))

    def _job_tree(self, job_id: int) -> list[int]:
        rows = self.connection().execute(
            "WITH RECURSIVE tree(id) AS (SELECT ? UNION SELECT j.id FROM jobs j JOIN tree ON j.parent_id = tree.id) "
            "SELECT id FROM tree", (job_id,)).fetchall()
        return [int(r[0]) for r in rows]

    # -- the lease ---------------------------------------------------------------------------------
    def open_job(self, family: str, *, kind: str, config: Any, config_hash: str, resume: int | None = None,
                 parent_id: int | None = None, fields: Mapping[str, Any] | None = None,
                 owner: str | None = None) -> tuple[int, bool]:
        """Find (by ``resume`` or by config hash) or create the job and take its lease, in one write
        transaction: (job id, resumed?). Raises ``JobBusy`` when a live process holds the lease."""
        from .core import utcnow

        owner = owner or lease.this_owner()
        if resume is not None:
            _in_range(resume, family)
        with self.transaction() as conn:
            if resume is not None:
                row = conn.execute(f"SELECT * FROM {_view(family)} WHERE id = ?", (resume,)).fetchone()
                if row is None:
                    self.get_job(family, resume)  # raises the one-line "no such job" / "wrong kind"
                if row["config_hash"] != config_hash:
                    from ..errors import ConfigError

                    raise ConfigError(f"job {resume} was made from a different config; resume it without changing "
                                      "the job settings (only run settings such as --concurrency may change)")
            else:
                row = conn.execute(f"SELECT * FROM {_view(family)} WHERE config_hash = ? ORDER BY id DESC LIMIT 1",
                                   (config_hash,)).fetchone()
            if row is None:
                job_id = self._insert_job(conn, family, kind, {"config": config, "config_hash": config_hash,
                                                               "status": "queued", "parent_id": parent_id,
                                                               **(fields or {})})
                resumed = False
            else:
                job_id, resumed = int(row["id"]), True
                held = conn.execute("SELECT lease_owner, lease_heartbeat FROM jobs WHERE id = ?", (job_id,)).fetchone()
                if held["lease_owner"] and lease.owner_alive(held["lease_owner"], held["lease_heartbeat"]):
                    raise JobBusy(f"job {job_id} is already running in {lease.describe(held['lease_owner'])}; "
                                  "wait for it to finish (or pass --wait), or stop it first")
                if parent_id is not None:
                    conn.execute("UPDATE jobs SET parent_id = COALESCE(parent_id, ?) WHERE id = ?", (parent_id, job_id))
            conn.execute("UPDATE jobs SET lease_owner = ?, lease_heartbeat = ?, status = 'running', started_at = ?, "
                         "finished_at = NULL, error = NULL WHERE id = ?", (owner, time.time(), utcnow(), job_id))
        return job_id, resumed

    def heartbeat(self, job_id: int, owner: str) -> bool:
        """Renew the lease; False when it is no longer ours (another process took it over)."""
        with self.transaction() as conn:
            cur = conn.execute("UPDATE jobs SET lease_heartbeat = ? WHERE id = ? AND lease_owner = ?",
                               (time.time(), job_id, owner))
        return cur.rowcount == 1

    def release_job(self, job_id: int, owner: str, **fields: Any) -> None:
        """Set the final fields (status, error, finished_at...) and give the lease up, in one transaction."""
        common, _ = self._split(None, fields)
        sets = "".join(f", {name} = ?" for name in common)
        with self.transaction() as conn:
            conn.execute(f"UPDATE jobs SET lease_owner = NULL, lease_heartbeat = NULL{sets} "
                         "WHERE id = ? AND (lease_owner = ? OR lease_owner IS NULL)", (*common.values(), job_id, owner))

    def _reaped(self, job: dict[str, Any]) -> dict[str, Any]:
        """A job whose run died reads (and is stored) as ``interrupted``."""
        if job.get("status") == "running":
            held = self.connection().execute("SELECT lease_owner, lease_heartbeat FROM jobs WHERE id = ?",
                                             (job["id"],)).fetchone()
            if held is not None and not lease.owner_alive(held[0], held[1]):
                self._mark_interrupted([job["id"]])
                job["status"] = "interrupted"
        return job

    def reap_interrupted(self) -> list[int]:
        """Mark every ``running`` job whose lease owner is gone as ``interrupted``; their ids."""
        rows = self.connection().execute(
            "SELECT id, lease_owner, lease_heartbeat FROM jobs WHERE status = 'running'").fetchall()
        dead = [int(r[0]) for r in rows if not lease.owner_alive(r[1], r[2])]
        self._mark_interrupted(dead)
        return dead

    def _mark_interrupted(self, ids: list[int]) -> None:
        if not ids or self.read_only is not None:
            return  # a read-only home shows the status without storing it
        try:
            with self.transaction() as conn:
                conn.executemany("UPDATE jobs SET status = 'interrupted', lease_owner = NULL, lease_heartbeat = NULL "
                                 "WHERE id = ? AND status = 'running'", [(i,) for i in ids])
        except (StoreError, sqlite3.OperationalError):
            pass  # a full disk (or a home made read-only since it was opened) still reads: the status shows anyway
