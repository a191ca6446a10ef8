"""The studio's way around: one navigation bar on every page (with the page-wide style that keeps widget labels
whole), each finished run's next steps, job-page links, and ``?job=ID`` read from the page's URL.

Every page is served at ``/voila/render/NN_name.ipynb``, so links are relative notebook names. The bar is
built from the workflow registry; the pages no workflow owns (home, review desk, job pages) are added here.
"""
from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import parse_qs

import ipywidgets as w

from ..workflows import registry
from .components import escape

NOTEBOOKS = Path(__file__).resolve().parent.parent.parent / "notebooks"
HOME_NOTEBOOK = "00_home.ipynb"
JOB_NOTEBOOK = "08_job.ipynb"
REVIEW_NOTEBOOK = "07_review.ipynb"
SHORT = {"workflow": "Workflow"}  # a registry title's first word, unless it says too little

_LINK = ("display:inline-block;padding:4px 12px;margin:0 4px 4px 0;border:1px solid #d0d7de;border-radius:6px;"
         "text-decoration:none;color:#0969da;background:#f6f8fa;font-weight:500")
_CURRENT = _LINK.replace("color:#0969da;background:#f6f8fa", "color:#fff;background:#0969da")
_ACTION = _LINK.replace("background:#f6f8fa", "background:#fff")

# ipywidgets gives every description a fixed 80px and cuts the rest ("temperat…", "Requirem…"). The bar is on
# every page, so it carries the one fix: a description is as wide as its text (at least the usual 80px, so short
# ones still line up) and is never cut. An explicit ``description_width`` (an inline style) still wins.
LABEL_CSS = ("<style class='sds-label-fix'>"
             "body .widget-inline-hbox .widget-label{width:auto;min-width:var(--jp-widgets-inline-label-width);"
             "max-width:none;flex-shrink:0}"
             "body .widget-label,body .widget-label-basic{overflow:visible;text-overflow:clip}"
             "body .widget-label-basic span{overflow:visible;text-overflow:clip}"
             "</style>")


def notebook_for(kind: str) -> str | None:
    try:
        return registry.workflow(kind).notebook
    except Exception:  # noqa: BLE001 - an unknown kind has no page
        return None


def review_href() -> str:
    """The review desk: its own notebook when there is one, else the evaluate page's review mode."""
    return REVIEW_NOTEBOOK if (NOTEBOOKS / REVIEW_NOTEBOOK).is_file() else "05_evaluate.ipynb?mode=review"


def pages() -> list[tuple[str, str]]:
    """(label, href) of every page, in the order a job travels through them."""
    entries = [(SHORT.get(entry.kind, entry.title.split(" ")[0]), entry.notebook) for entry in registry.WORKFLOWS
               if entry.notebook]
    links = [("Home", HOME_NOTEBOOK)]
    for label, href in entries:
        links.append((label, href))
        if href == notebook_for("evaluation"):
            links.append(("Review", review_href()))
    if not any(label == "Review" for label, _ in links):
        links.append(("Review", review_href()))
    links.append(("Jobs", JOB_NOTEBOOK))
    return links


def link(label: str, href: str, *, style: str = _ACTION, **attrs: str) -> str:
    extra = "".join(f' {name.rstrip("_").replace("_", "-")}="{escape(value)}"' for name, value in attrs.items())
    return f'<a href="{escape(href)}" target="_self" style="{style}"{extra}>{escape(label)}</a>'


def nav_html(current: str | None = None) -> str:
    """The bar as HTML; ``current`` (a notebook name) is highlighted."""
    items = "".join(link(label, href, style=_CURRENT if href.split("?")[0] == current else _LINK,
                         class_="sds-nav-link") for label, href in pages())
    return f'{LABEL_CSS}<nav class="sds-nav" style="margin-bottom:8px;border-bottom:1px solid #d0d7de">{items}</nav>'


def nav_bar(current: str | None = None) -> w.HTML:
    """The navigation bar widget every app puts at its top."""
    return w.HTML(nav_html(current), layout=w.Layout(width="100%"))


def job_href(job_id: int) -> str:
    return f"{JOB_NOTEBOOK}?job={int(job_id)}"


def job_link(job_id: int, label: str | None = None) -> str:
    return f'<a href="{job_href(job_id)}" target="_self">{escape(label or f"#{job_id}")}</a>'


def next_steps(job_id: int, kind: str) -> list[tuple[str, str]]:
    """What a finished job of ``kind`` leads to: (label, href)."""
    job_id = int(job_id)
    steps = [("Open job page", job_href(job_id))]
    if kind == "evaluation":
        steps += [("Review", f"{review_href()}{'&' if '?' in review_href() else '?'}job={job_id}"),
                  ("Export", f"06_export.ipynb?job={job_id}")]
    elif kind != "export":
        steps += [("Evaluate this job", f"05_evaluate.ipynb?job={job_id}"),
                  ("Export", f"06_export.ipynb?job={job_id}")]
    return steps


def next_steps_html(job_id: int, kind: str) -> str:
    items = "".join(link(label, href, class_="sds-next") for label, href in next_steps(job_id, kind))
    return f'<div class="sds-next-steps"><b>Next:</b> {items}</div>'


def query_job(query: str | None = None) -> int | None:
    """``?job=ID`` of the page (Voilà puts the URL's query in the kernel's ``QUERY_STRING``)."""
    values = parse_qs(os.environ.get("QUERY_STRING", "") if query is None else query).get("job") or [""]
    try:
        return int(values[0])
    except ValueError:
        return None


def preselect(options, default):
    """The picker value ``?job=ID`` names when it is one of ``options`` ((label, value) pairs), else ``default``."""
    wanted = query_job()
    return wanted if wanted is not None and any(value == wanted for _, value in options) else default
