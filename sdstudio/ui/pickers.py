"""Job pickers the pages share: the user's own jobs only (an alignment job's prompt, candidate and judge stages
are internal and show on its job page, not in a picker), newest first, the newest (or ``?job=ID``) chosen, and
labels that say what a job is — number, workflow, use case, rows, model, date — at a width where they can be
read whole. Export also learns here which trainer style fits a job."""
from __future__ import annotations

from typing import Any

import ipywidgets as w

from .job import blank, top_level_jobs
from .nav import preselect

# a picker as wide as the page, its description beside it at its own width (never cut to "Jo…")
PICKER_LAYOUT = {"width": "95%"}
PICKER_STYLE = {"description_width": "initial"}
SFT_STYLE = "sft-messages"


def user_jobs(store: Any, family: str = "generation", *, with_rows: bool = True) -> Any:
    """The family's jobs a user started (stage jobs left out), newest first; ``with_rows``: only those with ok
    rows (nothing else can be judged or exported)."""
    frame = top_level_jobs(store.jobs(family))
    if with_rows and len(frame):
        frame = frame[frame["ok"].fillna(0).astype(int) > 0]
    return frame.sort_values("id", ascending=False)


def job_label(job: Any) -> str:
    """'#16 · alignment (dpo) · alignment · 15 ok · model-id · 2024-05-01 12:00': what the job is, in words."""
    kind = blank(getattr(job, "kind", "")) or "generation"
    technique = blank(getattr(job, "technique", ""))
    what = f"{kind} ({technique})" if technique and technique not in (kind, "sft") else kind
    parts = [f"#{int(job.id)}", what, blank(getattr(job, "use_case", "")), f"{int(blank(job.ok) or 0)} ok",
             blank(getattr(job, "model_id", "")), str(blank(getattr(job, "created_at", "")))[:16].replace("T", " ")]
    return " · ".join(str(p) for p in parts if p not in ("", None))


def job_options(store: Any, family: str = "generation", *, with_rows: bool = True) -> list[tuple[str, int]]:
    """(label, job id) of the user's jobs, newest first."""
    return [(job_label(job), int(job.id)) for job in user_jobs(store, family, with_rows=with_rows).itertuples()]


def default_job(options: list[tuple[str, Any]]) -> Any:
    """``?job=ID`` when it is one of the options, else the newest job (the first option with a job id)."""
    newest = next((value for _, value in options if value is not None), None)
    return preselect(options, newest)


def job_dropdown(description: str = "Job") -> w.Dropdown:
    return w.Dropdown(description=description, layout=w.Layout(**PICKER_LAYOUT), style=PICKER_STYLE)


def style_for(store: Any, job_id: int) -> str:
    """The trainer style a job's rows fit: an alignment job's method (dpo pairs, kto rows), else SFT messages."""
    try:
        technique = store.get_job("generation", int(job_id)).get("technique")
    except Exception:  # noqa: BLE001 - a job of another family: the general style
        return SFT_STYLE
    return technique if technique in ("dpo", "kto") else SFT_STYLE
