"""What a run kept and what it did not: every workflow page ends in the same three tabs — Results, Failed (n),
Filtered (n) — so a row a run dropped is one click away with its reason, and a run that kept nothing says why
and what to change, on the page, not only in SQLite. A job's stage jobs (alignment's candidates and judge)
count as its own: their failures are the reasons the parent has no pairs."""
from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import ipywidgets as w

from .components import PagedTable, escape

RAW_CHARS = 300  # of the model's reply shown next to a reason: enough to see what went wrong

# what usually helps, by words a reason contains (first match wins)
ADVICE: tuple[tuple[tuple[str, ...], str], ...] = (
    (("cut off", "max_tokens", "length", "truncated"), "raise max_tokens (Model settings) or ask for fewer items "
                                                       "per call"),
    (("scored", "margin", "same score", "tie"), "a stronger or a different judge model, more candidates per "
                                                 "prompt, or a lower minimum margin"),
    (("json", "parse", "no items", "schema", "expected", "field"), "a stronger model, fewer items per call, or "
                                                                   "an example that shows the exact shape"),
    (("duplicate", "repeated", "near-duplicate"), "more or broader topics, or a higher temperature"),
    (("grounded", "grounding", "evidence", "not supported"), "questions closer to the document's text, or a "
                                                             "stronger model"),
    (("refused", "bad request", "400", "unsupported"), "check the model id and the endpoint; "
                                                       "--structured-output prompt avoids server-side schemas"),
    (("timeout", "timed out", "connect", "unreachable", "server error", "502", "503"),
     "check that the endpoint is up; Run again resumes the job"),
)


def advice_for(reason: str) -> str | None:
    text = reason.lower()
    for words, advice in ADVICE:
        if any(word in text for word in words):
            return advice
    return None


def reasons_html(reasons: list[tuple[str, int]]) -> str:
    """The top reasons as a list, each with what usually helps."""
    items = []
    for reason, count in reasons:
        advice = advice_for(reason)
        tip = f' <span class="sds-advice" style="color:#57606a">— try: {escape(advice)}</span>' if advice else ""
        items.append(f'<li><b>{count}×</b> <span class="sds-reason">{escape(reason)}</span>{tip}</li>')
    return f'<ul class="sds-reasons">{"".join(items)}</ul>' if items else ""


def _cell(value: Any, limit: int = RAW_CHARS) -> str:
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[:limit] + "…"


def outcome_frame(rows: list[dict[str, Any]], parent_id: int):
    """Dropped rows as a table: the row's topic, the reason, the reply it came from, and the stage job it
    belongs to when that is not the job itself. No None/NaN cell reaches the page."""
    import pandas as pd

    table = []
    for row in rows:
        entry = {"topic": _cell(row.get("topic")), "reason": _cell(row.get("error"), 500),
                 "model reply": _cell(row.get("raw_text")), "row id": row["id"]}
        if row["job_id"] != parent_id:
            entry = {"stage job": f"#{row['job_id']}", **entry}
        table.append(entry)
    frame = pd.DataFrame(table)
    if len(frame) and "stage job" in frame.columns:
        frame["stage job"] = frame["stage job"].fillna("")
        frame = frame[["stage job"] + [c for c in frame.columns if c != "stage job"]]
    return frame


class OutcomeTabs(w.VBox):
    """Results | Failed (n) | Filtered (n), and above them why a run kept nothing.

    ``results`` is the page's own table of kept rows; ``job_id`` says which job is on screen (None: nothing
    run yet). ``show()`` refreshes all three after a run; a new form clears them (``clear()``)."""

    def __init__(self, store: Any, results: w.Widget, job_id: Callable[[], int | None], results_title: str = "Results",
                 page_size: int = 10):
        self.store = store
        self.job_id = job_id
        self.results_title = results_title
        self.results = results
        self.failed = PagedTable(self._fetch("failed"), page_size=page_size)
        self.filtered = PagedTable(self._fetch("filtered"), page_size=page_size)
        self.why = w.HTML()
        self.tabs = w.Tab([results, self.failed, self.filtered])
        self._titles(0, 0)
        super().__init__([self.why, self.tabs])

    def _titles(self, failed: int, filtered: int) -> None:
        self.tabs.titles = (self.results_title, f"Failed ({failed:,})", f"Filtered ({filtered:,})")

    def _fetch(self, status: str) -> Callable[[int, int], tuple[Any, int]]:
        def fetch(offset: int, limit: int):
            job_id = self.job_id()
            if job_id is None:
                return None, 0
            rows, total = self.store.outcome_page(job_id, status, offset, limit)
            return outcome_frame(rows, job_id), total
        return fetch

    def show(self, kept: int | None = None) -> None:
        """Refresh the Failed and Filtered tabs (the page refreshes its own results table). With ``kept`` == 0
        the reasons go above the tabs and the tab with the most rows opens."""
        self.failed.show(0)
        self.filtered.show(0)
        self._titles(self.failed.total, self.filtered.total)
        job_id = self.job_id()
        if job_id is None or kept is None or kept > 0 or not (self.failed.total or self.filtered.total):
            self.why.value = ""
            return
        reasons = (self.store.outcome_reasons(job_id, "failed") + self.store.outcome_reasons(job_id, "filtered"))
        reasons.sort(key=lambda pair: -pair[1])
        self.why.value = (f'<div class="sds-why"><b>Nothing was kept</b> ({self.failed.total:,} failed, '
                          f'{self.filtered.total:,} filtered). The reasons:{reasons_html(reasons[:4])}</div>')
        self.tabs.selected_index = 1 if self.failed.total >= self.filtered.total else 2

    def clear(self) -> None:
        """A changed form: the last run's outcome no longer describes what is on screen."""
        self.why.value = ""
        self._titles(0, 0)
        for table in (self.failed, self.filtered):
            table.total, table.frame = 0, None
            table.table.value = ""
            table.info.value = ""
        self.tabs.selected_index = 0
