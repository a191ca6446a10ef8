"""The job page's Batches section: a batch job's provider batches (part, remote id, state, counts, times, error),
a Cancel batches button (what ``sdstudio jobs cancel ID`` does), and whether opening the page should resume the
job so its batches are polled.

Why the page resumes on open: a batch takes hours, and the kernel that submitted it may be long gone. The batch
ids are in metadata.db, so the job's run can be picked up by whichever process looks next; a job page opened on
such a job continues it in the background (``resume.resume_job``: the run adopts the submitted batches and pays
for nothing twice). A job a live process still runs (its lease) is only shown, never taken over; a job the user
cancelled stays cancelled (resuming it would submit its cancelled requests again: the Resume button does that,
on request).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ipywidgets as w

from .components import escape, message

STATE_COLOURS = {"completed": "#1a7f37", "in_progress": "#0969da", "validating": "#57606a",
                 "finalizing": "#0969da", "submitting": "#57606a", "failed": "#cf222e", "expired": "#9a6700",
                 "cancelling": "#9a6700", "cancelled": "#9a6700"}
STOPPED = ("cancelling", "cancelled")  # batches a user stopped: never polled again without being asked
RUNNING = ("submitting", "validating", "in_progress", "finalizing")  # what Cancel batches can still stop
COLUMNS = (("part", "part"), ("remote id", "remote_id"), ("state", "state"), ("requests", "requests"),
           ("completed", "completed"), ("failed", "failed"), ("created", "created_at"), ("updated", "updated_at"),
           ("error", "error"))


def polled_batches(store: Any, job_id: int) -> list[dict[str, Any]]:
    """The job's submitted batches whose results are not in yet and that nobody stopped: what a run polls."""
    return [row for row in store.open_batches(job_id) if row["remote_id"] and row["state"] not in STOPPED]


def held_by_live_process(job: dict[str, Any]) -> bool:
    """Does a live process (another kernel, the CLI, this kernel's own page) hold the job's lease?"""
    from ..store import lease

    return lease.owner_alive(job.get("lease_owner"), job.get("lease_heartbeat"))


def resumes_on_open(store: Any, job: dict[str, Any]) -> bool:
    """Should opening the page continue ``job`` (a ``get_job`` dict with ``id``) to poll its batches? Yes when
    batches it submitted still wait for their results, no live process runs it, the user did not cancel it and
    the home can be written."""
    from ..executors.batch_jobs import awaiting_results

    job_id = int(job["id"])
    if getattr(store, "read_only", None) is not None or job.get("status") == "cancelled":
        return False
    return (awaiting_results(store, job_id) and bool(polled_batches(store, job_id))
            and not held_by_live_process(job))


def state_badge(state: Any) -> str:
    colour = STATE_COLOURS.get(str(state), "#57606a")
    return (f'<span class="sds-batch-state sds-batch-{escape(state)}" style="color:{colour};font-weight:600">'
            f"{escape(state)}</span>")


def batches_html(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return '<p class="sds-empty"><i>no batches</i></p>'
    head = "".join(f"<th>{escape(label)}</th>" for label, _ in COLUMNS)
    body = ""
    for row in rows:
        cells = []
        for _, name in COLUMNS:
            value = row.get(name)
            if name == "state":
                cells.append(state_badge(value))
            elif name in ("created_at", "updated_at"):
                cells.append(escape(str(value or "")[:19].replace("T", " ")))
            else:
                cells.append(escape("" if value is None else value))
        body += "<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>"
    return f'<table class="sds-table sds-batches"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


class BatchesSection(w.VBox):
    """The section itself, hidden for a job without batches. ``running()`` returns the page's own run of this
    job while it is live (None otherwise): Cancel batches then stops that run, which cancels its batches at the
    provider; without one it cancels them as ``sdstudio jobs cancel`` does (a run elsewhere sees it at its next
    poll and ends cancelled)."""

    def __init__(self, store: Any, job_id: int, running: Callable[[], Any] | None = None):
        self.store, self.job_id = store, int(job_id)
        self.running = running or (lambda: None)
        self.rows: list[dict[str, Any]] = []
        self.table = w.HTML()
        self.cancel_button = w.Button(description="Cancel batches", icon="stop", disabled=True,
                                      tooltip="cancel the batches still running at the provider "
                                              "(sdstudio jobs cancel ID)")
        self.refresh_button = w.Button(description="Refresh", icon="refresh")
        self.status = w.HTML()
        self.cancel_button.on_click(lambda _: self.cancel())
        self.refresh_button.on_click(lambda _: self.show())
        super().__init__([w.HTML("<h3>Batches</h3>"), self.table, w.HBox([self.cancel_button, self.refresh_button]),
                          self.status], layout=w.Layout(display="none"))

    def show(self) -> list[dict[str, Any]]:
        """Read the job's batches again and redraw (from any thread: a run's progress listener calls this)."""
        from ..executors.batch_jobs import job_batches

        self.rows = job_batches(self.store, self.job_id)
        html = batches_html(self.rows)
        if html != self.table.value:
            self.table.value = html
        self.layout.display = None if self.rows else "none"
        self.cancel_button.disabled = not any(row["remote_id"] and row["state"] in RUNNING for row in self.rows)
        return self.rows

    def watch(self, handle: Any) -> None:
        """Redraw as ``handle``'s run reports (it reports after each poll)."""
        handle.add_listener(lambda _progress: self.show())

    def cancel(self) -> list[str]:
        """Cancel the job's running batches; the remote ids cancelled (empty when this page's run does it)."""
        from ..errors import SdstudioError
        from ..executors.batch_jobs import cancel_job_batches

        handle = self.running()
        if handle is not None:
            handle.cancel()  # the run cancels its open batches at the provider and ends cancelled
            self.status.value = message("info", "cancelling: the run cancels its batches at the provider; answers "
                                                "already in stay, Resume submits the rest again")
            return []
        try:
            cancelled = cancel_job_batches(self.store, self.job_id)
        except SdstudioError as exc:
            self.status.value = message("error", str(exc))
            return []
        what = ", ".join(cancelled) if cancelled else "none was still running"
        self.status.value = message("ok" if cancelled else "info", f"batches cancelled: {what}")
        self.show()
        return cancelled


__all__ = ["BatchesSection", "batches_html", "polled_batches", "resumes_on_open"]
