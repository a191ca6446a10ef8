"""The reviewers' dashboard: judged rows a page at a time, each with Accept / Reject / Edit.

Verdicts and edits go to the ``reviews`` table with the reviewer's name and time (``reviews.review``);
the original output is never overwritten. Everything a model wrote is HTML-escaped: a row holding
``<script>`` shows as text and runs nothing.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import ipywidgets as w

from ..store import Store
from .components import escape, message

PAGE_SIZE = 10


class ReviewRow(w.VBox):
    """One judged row: prompt, completion, score and justification, and the reviewer's buttons."""

    def __init__(self, panel: "ReviewPanel", row: dict[str, Any]):
        self.panel, self.record_id = panel, int(row["record_id"])
        score = "failed" if row.get("score") is None or row.get("score") != row.get("score") else row["score"]
        self.body = w.HTML(
            f'<div class="sds-review-row" data-record="{self.record_id}">'
            f"<b>#{self.record_id}</b> · topic: {escape(row.get('topic'))} · score: <b>{escape(score)}</b>"
            f"<pre style='white-space:pre-wrap'>{escape(row.get('prompt'))}</pre>"
            f"<pre style='white-space:pre-wrap;background:#f6f8fa'>{escape(row.get('completion'))}</pre>"
            f"<i>{escape(row.get('justification'))}</i></div>")
        self.verdict = w.HTML(self._verdict_html(row.get("verdict")))
        self.accept = w.Button(description="Accept", button_style="success", icon="check")
        self.reject = w.Button(description="Reject", button_style="danger", icon="times")
        self.edit = w.Textarea(value=str(row.get("completion") or ""), layout=w.Layout(width="100%", height="6em"))
        self.save_edit = w.Button(description="Save edit", icon="pencil")
        self.accept.on_click(lambda _: self.decide("accept"))
        self.reject.on_click(lambda _: self.decide("reject"))
        self.save_edit.on_click(lambda _: self.save())
        edit_box = w.Accordion([w.VBox([self.edit, self.save_edit])], titles=("Edit the completion",))
        edit_box.selected_index = None
        super().__init__([self.body, w.HBox([self.accept, self.reject, self.verdict]), edit_box],
                         layout=w.Layout(border="1px solid #d0d7de", padding="6px", margin="4px 0"))

    @staticmethod
    def _verdict_html(verdict: str | None) -> str:
        return f'<span class="sds-verdict">{escape(verdict or "not reviewed")}</span>'

    def decide(self, verdict: str) -> None:
        if self.panel.record(self.record_id, verdict=verdict):
            self.verdict.value = self._verdict_html(verdict)

    def save(self) -> None:
        if self.panel.record(self.record_id, completion=self.edit.value):
            self.verdict.value = self._verdict_html("edited")


class ReviewPanel(w.VBox):
    def __init__(self, home: str | Path | None = None, job_id: int | None = None, store: Store | None = None):
        self.store = store or Store.open(home)
        self.reviewer = w.Text(placeholder="your name", description="Reviewer")
        self.job = w.Dropdown(description="Evaluation")
        self.only_unreviewed = w.Checkbox(value=False, description="only rows not reviewed yet")
        self.prev = w.Button(description="◀", layout=w.Layout(width="3em"))
        self.next = w.Button(description="▶", layout=w.Layout(width="3em"))
        self.info = w.HTML()
        self.status = w.HTML()
        self.rows = w.VBox()
        self.page = 0
        self.frame: Any = None
        self.prev.on_click(lambda _: self.show(self.page - 1))
        self.next.on_click(lambda _: self.show(self.page + 1))
        self.job.observe(lambda _: self.show(0), "value")
        self.only_unreviewed.observe(lambda _: self.show(0), "value")
        super().__init__([w.HBox([self.reviewer, self.job, self.only_unreviewed]),
                          w.HBox([self.prev, self.info, self.next]), self.status, self.rows])
        self.load_jobs(job_id)

    def load_jobs(self, job_id: int | None = None) -> None:
        frame = self.store.jobs("evaluation")
        options = [(f"#{r.id} · {r.model_id} · avg {r.average_score if r.average_score == r.average_score else '-'}",
                    int(r.id)) for r in frame.itertuples() if r.status in ("done", "cancelled")]
        self.job.options = options
        if job_id is not None:
            self.job.value = job_id
        elif options:
            self.job.value = options[0][1]

    def show(self, page: int = 0) -> None:
        from ..reviews import scores

        if self.job.value is None:
            self.rows.children = ()
            self.info.value = "no judged rows yet"
            return
        frame = scores(self.job.value, self.store)
        if self.only_unreviewed.value:
            frame = frame[frame["verdict"].isna()]
        self.frame = frame.reset_index(drop=True)
        pages = max(1, -(-len(self.frame) // PAGE_SIZE))
        self.page = min(max(page, 0), pages - 1)
        chunk = self.frame.iloc[self.page * PAGE_SIZE:(self.page + 1) * PAGE_SIZE]
        self.rows.children = tuple(ReviewRow(self, row) for row in chunk.to_dict("records"))
        self.info.value = escape(f" page {self.page + 1} of {pages} ({len(self.frame)} rows) ")
        self.prev.disabled, self.next.disabled = self.page == 0, self.page >= pages - 1

    def record(self, record_id: int, verdict: str | None = None, completion: str | None = None) -> bool:
        """Store a verdict or an edited completion for a row; False (with a message) when it cannot."""
        from ..errors import SdstudioError
        from ..reviews import review

        name = self.reviewer.value.strip()
        if not name:
            self.status.value = message("error", "enter your name as reviewer first")
            return False
        edited = None
        if completion is not None:
            edited = self._edit_for(record_id, completion)
        try:
            review(record_id, name, verdict=verdict, edited_output=edited, store=self.store)
        except SdstudioError as exc:
            self.status.value = message("error", str(exc))
            return False
        what = verdict or "edit"
        self.status.value = message("ok", f"saved {what} of row #{record_id} by {name}")
        return True

    def _edit_for(self, record_id: int, completion: str) -> Any:
        """An edited completion as the partial output the review API merges (its completion field)."""
        row = self.store.record(record_id)
        provenance = row["provenance"] or {}
        source = provenance.get("source_record_id")
        if row["job_kind"] == "evaluation" and source is None:
            return {"completion": completion}
        from ..workflows.fields import job_fields

        judged = self.store.record(source) if source is not None else None
        field = job_fields(self.store, judged["job_id"]).completion if judged else "completion"
        if not field:  # a freeform row has no completion field: the edit is the whole row, as JSON
            try:
                return json.loads(completion)
            except json.JSONDecodeError:
                return {"completion": completion}
        return {field: completion}
