"""A job's life in time order on its page: created, started, finished; its stage jobs; its provider batches
(submitted, and how each ended); the evaluations that judged it; its reviewers' work; the exports that took its
rows. Everything comes from times the store already
keeps, so the timeline of an old job is as complete as its rows."""
from __future__ import annotations

import json
from collections import Counter
from typing import Any

from .components import escape
from .nav import job_link

MAX_EVENTS = 200  # a job exported or reviewed many times keeps a page that loads


def job_ids(value: Any) -> list[int]:
    """The job ids a row lists (an export's ``source_job_ids``: JSON text or a list); none when unreadable."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return []
    try:
        return [int(v) for v in value or []]
    except (TypeError, ValueError):
        return []


def _present(value: Any) -> bool:
    return value is not None and value == value and str(value).strip() != ""  # not None / NaN / ""


def _job_events(job: dict[str, Any], what: str) -> list[tuple[str, str]]:
    """created / started / finished of one job, as (time, HTML) with ``what`` naming it (already HTML)."""
    events = [(job.get("created_at"), f"{what} created")]
    events.append((job.get("started_at"), f"{what} started"))
    status = job.get("status")
    if status in ("done", "failed", "cancelled", "interrupted"):
        counts = f"{int(job.get('ok') or 0)} ok, {int(job.get('failed') or 0)} failed, " \
                 f"{int(job.get('filtered') or 0)} filtered"
        events.append((job.get("finished_at"), f"{what} {escape(status)}: {escape(counts)}"))
    return [(str(t), html) for t, html in events if _present(t)]


def timeline_events(store: Any, job: dict[str, Any]) -> list[tuple[str, str]]:
    """(time, HTML) of everything that happened to ``job`` (a ``get_job`` dict with ``id`` and ``family``),
    oldest first."""
    job_id = int(job["id"])
    events = _job_events(job, "job")
    evaluations: dict[int, dict[str, Any]] = {}
    for child in store.child_jobs(job_id):
        target = evaluations if child.get("kind") == "evaluation" else None
        if target is not None:
            target[int(child["id"])] = child
        else:
            events += _job_events(child, f"stage {job_link(int(child['id']))} ({escape(child.get('kind'))})")
    if job.get("family") == "generation":
        judged = store.jobs("evaluation")
        for row in judged[judged["source_generation_id"] == job_id].to_dict("records"):
            evaluations.setdefault(int(row["id"]), row)
    for ev_id, ev in sorted(evaluations.items()):
        events += _job_events(ev, f"evaluation {job_link(ev_id)}")
    exports = store.jobs("export")
    for row in exports.to_dict("records"):
        if job_id in job_ids(row.get("source_job_ids")):
            rows = f"{int(row['row_count'])} rows, " if _present(row.get("row_count")) else ""
            events.append((str(row.get("created_at")), f"export {job_link(int(row['id']))}: {escape(rows)}"
                           f"{escape(row.get('style'))} {escape(row.get('format'))} ({escape(row.get('status'))})"))
    events += _review_events(store, job)
    events += _batch_events(store, job_id)
    events = [(t, html) for t, html in events if _present(t) and t != "None"]
    return sorted(events, key=lambda e: _when(e[0]))


def _review_events(store: Any, job: dict[str, Any]) -> list[tuple[str, str]]:
    """One event per reviewer, at their latest review: how many verdicts and edits they gave on this job."""
    if job.get("family") not in ("generation", "evaluation"):
        return []
    history = store.job_reviews(job["family"], int(job["id"]))
    by_reviewer: dict[str, Counter] = {}
    latest: dict[str, str] = {}
    for reviews in history.values():
        for review in reviews:
            name = review["reviewer"]
            tally = by_reviewer.setdefault(name, Counter())
            tally[review.get("verdict") or "note"] += 1
            if review.get("edited_output") is not None:
                tally["edit"] += 1
            latest[name] = max(latest.get(name, ""), str(review.get("created_at") or ""))
    return [(latest[name], f"review by {escape(name)}: " + escape(", ".join(f"{n} {k}" for k, n in tally.items())))
            for name, tally in by_reviewer.items()]


def _batch_events(store: Any, job_id: int) -> list[tuple[str, str]]:
    """Each provider batch's submission and, once the provider is done with it, how it ended."""
    from ..executors.batch_backend import FINAL_STATES

    events = []
    for row in store.job_batches(job_id):
        name = f"batch {escape(row['remote_id'] or '(not created)')} (part {int(row['part'])})"
        events.append((str(row.get("created_at")), f"{name} submitted: {int(row['requests'] or 0)} requests"))
        if row.get("state") in FINAL_STATES:
            counts = f"{int(row['completed'] or 0)} completed, {int(row['failed'] or 0)} failed"
            error = f" ({escape(row['error'])})" if _present(row.get("error")) else ""
            events.append((str(row.get("updated_at")), f"{name} {escape(row['state'])}: {counts}{error}"))
    return events


def _when(text: str) -> Any:
    import pandas as pd

    moment = pd.to_datetime(text, utc=True, errors="coerce")
    return moment if moment is not pd.NaT else pd.Timestamp.max.tz_localize("UTC")


def timeline_html(events: list[tuple[str, str]]) -> str:
    if not events:
        return '<p class="sds-empty"><i>no times recorded</i></p>'
    more = len(events) - MAX_EVENTS
    shown = events[:MAX_EVENTS]
    items = "".join(f'<li><time datetime="{escape(t)}" style="color:#57606a;font-family:monospace">'
                    f"{escape(t[:19].replace('T', ' '))}</time> {html}</li>" for t, html in shown)
    tail = f"<li><i>… {more} more</i></li>" if more > 0 else ""
    return f'<ol class="sds-timeline" style="list-style:none;padding-left:0">{items}{tail}</ol>'
