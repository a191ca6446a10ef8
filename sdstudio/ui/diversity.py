"""The job page's Diversity section: a generation job's diversity report (``sdstudio.diversity``) as HTML —
the figures, the length histogram as bars, topic and attribute coverage, and the most repeated openings."""
from __future__ import annotations

from typing import Any

from .components import escape

_BAR = "display:inline-block;height:10px;background:#0969da;vertical-align:middle;margin-right:6px"


def section_html(store: Any, job_id: int, home: Any = None) -> str:
    """The section for job ``job_id``: empty for a job that is not a generation job or has no ok item yet."""
    from ..diversity import job_report

    try:
        report = job_report(store, int(job_id), home)
    except Exception as exc:  # noqa: BLE001 - a report that cannot be made must not break the page
        return f"<h3>Diversity</h3><p class='sds-empty'><i>no report: {escape(exc)}</i></p>"
    return "" if report is None else "<h3>Diversity</h3>" + report_html(report.to_json())


def report_html(report: dict[str, Any]) -> str:
    what = f"<code>{escape(report['field'])}</code>" if report.get("field") else "the whole item"
    facts = [("Measured on", f"{what} of {report['items']:,} kept items"
                            + (" (a sample)" if report.get("sampled") else "")),
             ("distinct-1 / distinct-2", f"{report['distinct_1']:.2f} / {report['distinct_2']:.2f}"),
             ("Near duplicates", f"{report['near_duplicate_rate_before']:.1%} of {report['items_before']:,} before "
                                 f"the filter · {report['near_duplicate_rate_after']:.1%} after "
                                 f"(similarity ≥ {report['threshold']:g})")]
    lengths = report.get("lengths") or {}
    if lengths:
        facts.append(("Length (words)", f"min {lengths['min']} · median {lengths['median']:g} · mean "
                                        f"{lengths['mean']:g} · max {lengths['max']}"))
    topics = report.get("topics") or {}
    if topics.get("requested"):
        missing = ", ".join(str(t) for t in topics.get("missing", []))
        facts.append(("Topic coverage", f"{topics['covered']} of {topics['requested']}"
                                        + (f" · none for: {missing}" if missing else "")))
    elif topics.get("distinct"):
        facts.append(("Topics", f"{topics['distinct']}"))
    for name, counts in (report.get("attributes") or {}).items():
        facts.append((f"Attribute {name}", " · ".join(f"{value}: {n}" for value, n in counts.items())))
    rows = "".join(f"<tr><th style='text-align:left;padding-right:1em'>{escape(k)}</th><td>"
                   f"{v if k == 'Measured on' else escape(v)}</td></tr>" for k, v in facts)
    parts = [f"<table class='sds-diversity'>{rows}</table>"]
    histogram = lengths.get("histogram") or []
    if histogram:
        peak = max(n for _, _, n in histogram) or 1
        bars = "".join(f"<div><span style='display:inline-block;width:7em'>{low:g}–{high:g}</span>"
                       f"<span style='{_BAR};width:{max(1, round(200 * n / peak))}px'></span>{n}</div>"
                       for low, high, n in histogram)
        parts.append(f"<h4>Lengths</h4><div class='sds-length-histogram'>{bars}</div>")
    if report.get("openings"):
        items = "".join(f"<li>“{escape(o['opening'])}…” · {o['count']} ({o['share']:.0%})</li>"
                        for o in report["openings"])
        parts.append(f"<h4>Most repeated openings</h4><ul class='sds-openings'>{items}</ul>")
    return "".join(parts)
