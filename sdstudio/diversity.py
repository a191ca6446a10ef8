"""A job's diversity report: how varied its items are, in figures a user can compare between jobs.

Why: a synthetic dataset that repeats itself (the same openings, the same length, three topics out of twenty)
trains a model to repeat itself too, and the item counts alone do not show it. The figures:

* **distinct-1 / distinct-2** (Li et al., 2016): distinct word unigrams (bigrams) over all unigrams (bigrams)
  of the items' texts, words lower-cased (``\\w+``). 1.0: no word repeats; low values: the same phrasing again.
* **near-duplicate rate before and after the filter**: the share of texts that ``dedup.find_duplicates`` (the
  very MinHash signatures and threshold the dedup filter uses) finds to repeat an earlier one, over the items
  the job generated (ok plus those its filter removed as duplicates) and over the ok items it kept.
* **length distribution** in words: min, quartiles, max, mean and a histogram.
* **topic and attribute coverage**: items per topic (and the topics the job asked for that got none), and per
  value of each sampled attribute (``provenance.attributes``, samplers.py).
* **most repeated openings**: the first three words most items start with, and their share.

The texts are each item's prompt field (``fields.job_fields``; the user turns of a conversation), else the whole
item. Computed on demand from the records (nothing is stored), for at most ``MAX_ITEMS`` items.
"""
from __future__ import annotations

import re
import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .dedup import find_duplicates, normalize, record_text

WORD = re.compile(r"\w+")
OPENING_WORDS = 3
TOP_OPENINGS = 10
HISTOGRAM_BINS = 8
MAX_ITEMS = 50_000  # a bigger job is reported on its first MAX_ITEMS items (``sampled``)
DEFAULT_THRESHOLD = 0.85  # dedup's default
DUPLICATE = "duplicate of record"  # how dedup words the reason of a row it filtered


@dataclass
class DiversityReport:
    field: str | None              # the item field the texts come from (None: the whole item)
    items: int                     # items kept (ok): distinct-n, lengths, coverage and openings are theirs
    items_before: int              # items generated: ok plus those the duplicate filter removed
    distinct_1: float
    distinct_2: float
    near_duplicate_rate_before: float
    near_duplicate_rate_after: float
    threshold: float
    lengths: dict[str, Any] = field(default_factory=dict)
    topics: dict[str, Any] = field(default_factory=dict)
    attributes: dict[str, dict[str, int]] = field(default_factory=dict)
    openings: list[dict[str, Any]] = field(default_factory=list)
    sampled: bool = False

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("distinct_1", "distinct_2", "near_duplicate_rate_before", "near_duplicate_rate_after"):
            data[key] = round(data[key], 4)
        return data


# -- the figures, on texts ----------------------------------------------------------------------------------

def words(text: str) -> list[str]:
    return WORD.findall(text.casefold())


def distinct_n(texts: Iterable[str], n: int) -> float:
    """Distinct n-grams over all n-grams of the texts (n-grams never span two texts); 0.0 without any."""
    seen: set[tuple[str, ...]] = set()
    total = 0
    for text in texts:
        tokens = words(text)
        grams = [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
        total += len(grams)
        seen.update(grams)
    return len(seen) / total if total else 0.0


def near_duplicate_rate(texts: Sequence[str], threshold: float = DEFAULT_THRESHOLD) -> float:
    """The share of texts that repeat an earlier kept one, exactly or nearly (``dedup.find_duplicates``)."""
    return len(find_duplicates(list(texts), threshold)) / len(texts) if texts else 0.0


def length_stats(texts: Sequence[str], bins: int = HISTOGRAM_BINS) -> dict[str, Any]:
    """Lengths in words: min, p25, median, p75, max, mean, and a histogram of ``bins`` equal-width bins
    ([low, high, count]; the last bin includes its high end)."""
    lengths = sorted(len(words(t)) for t in texts)
    if not lengths:
        return {}
    low, high = lengths[0], lengths[-1]
    quartiles = statistics.quantiles(lengths, n=4, method="inclusive") if len(lengths) > 1 else [low] * 3
    width = max((high - low) / bins, 1e-9) if high > low else 1.0
    counts = [0] * (bins if high > low else 1)
    for value in lengths:
        counts[min(int((value - low) / width), len(counts) - 1)] += 1
    edges = [round(low + i * width, 2) for i in range(len(counts) + 1)] if high > low else [low, high]
    return {"unit": "words", "min": low, "p25": quartiles[0], "median": quartiles[1], "p75": quartiles[2],
            "max": high, "mean": round(sum(lengths) / len(lengths), 2),
            "histogram": [[edges[i], edges[i + 1], n] for i, n in enumerate(counts)]}


def openings(texts: Sequence[str], count: int = OPENING_WORDS, top: int = TOP_OPENINGS) -> list[dict[str, Any]]:
    """The openings (first ``count`` words, normalised) shared by at least two texts, most frequent first."""
    found = Counter(" ".join(words(normalize(t))[:count]) for t in texts if words(t))
    return [{"opening": text, "count": n, "share": round(n / len(texts), 4)}
            for text, n in sorted(found.items(), key=lambda kv: (-kv[1], kv[0])) if n > 1][:top]


def coverage(topics: Sequence[str | None], requested: Sequence[str] | None = None) -> dict[str, Any]:
    """Items per topic; with the topics the job asked for, how many got at least one item and which got none."""
    counts = Counter(t for t in topics if t)
    report: dict[str, Any] = {"distinct": len(counts), "counts": dict(counts.most_common())}
    if requested:
        wanted = list(dict.fromkeys(requested))
        report.update(requested=len(wanted), covered=sum(1 for t in wanted if counts.get(t)),
                      coverage=round(sum(1 for t in wanted if counts.get(t)) / len(wanted), 4),
                      missing=[t for t in wanted if not counts.get(t)])
    return report


def attribute_counts(draws: Iterable[dict[str, Any] | None]) -> dict[str, dict[str, int]]:
    """Items per value of each attribute drawn (samplers.py keeps each record's draw in its provenance)."""
    counts: dict[str, Counter] = {}
    for draw in draws:
        for name, value in (draw or {}).items():
            counts.setdefault(name, Counter())[str(value)] += 1
    return {name: dict(c.most_common()) for name, c in counts.items()}


def build_report(kept: Sequence[str], removed: Sequence[str] = (), *, topics: Sequence[str | None] = (),
                 requested_topics: Sequence[str] | None = None, draws: Iterable[dict[str, Any] | None] = (),
                 field_name: str | None = None, threshold: float = DEFAULT_THRESHOLD,
                 sampled: bool = False) -> DiversityReport:
    """The report of ``kept`` texts (the dataset) and ``removed`` ones (what the duplicate filter took out)."""
    before = [*kept, *removed]
    return DiversityReport(
        field=field_name, items=len(kept), items_before=len(before), distinct_1=distinct_n(kept, 1),
        distinct_2=distinct_n(kept, 2), near_duplicate_rate_before=near_duplicate_rate(before, threshold),
        near_duplicate_rate_after=near_duplicate_rate(kept, threshold), threshold=threshold,
        lengths=length_stats(kept), topics=coverage(topics, requested_topics), attributes=attribute_counts(draws),
        openings=openings(kept), sampled=sampled)


# -- a job's report -------------------------------------------------------------------------------------------

def item_text(output: Any, prompt: str | None, messages: str | None = None) -> str:
    """The text of one item the report measures: its prompt field, the user turns of its messages, or all of it."""
    if isinstance(output, dict):
        turns = output.get(messages) if messages else None
        if isinstance(turns, list):
            return "\n".join(str(t.get("content") or "") for t in turns
                             if isinstance(t, dict) and t.get("role") == "user")
        if prompt and prompt in output:
            return record_text(output, [prompt])
    return record_text(output)


def job_report(store: Any, job_id: int, home: str | Path | None = None, *,
               threshold: float = DEFAULT_THRESHOLD) -> DiversityReport | None:
    """The report of a generation-family job (None for any other job, or one with no ok item)."""
    from .workflows.fields import job_fields

    if store.job_family(job_id) != "generation":
        return None
    job = store.get_job("generation", job_id)
    fields = job_fields(store, job_id, home)
    kept, removed, topics, draws = [], [], [], []
    has_prompt = False
    for rec in store.records("generation", job_id):
        duplicate = rec["status"] == "filtered" and (rec["error"] or "").startswith(DUPLICATE)
        if rec["status"] != "ok" and not duplicate:
            continue
        if len(kept) + len(removed) >= MAX_ITEMS:
            break
        text = item_text(rec["output"], fields.prompt, fields.messages)
        has_prompt = has_prompt or (isinstance(rec["output"], dict) and bool(fields.prompt) and fields.prompt in rec["output"])
        if duplicate:
            removed.append(text)
            continue
        kept.append(text)
        topics.append(rec["topic"])
        draws.append((rec["provenance"] or {}).get("attributes") if isinstance(rec["provenance"], dict) else None)
    if not kept:
        return None
    counts = store.count_records("generation", job_id)
    sampled = counts["ok"] + counts["filtered"] > len(kept) + len(removed) and len(kept) + len(removed) >= MAX_ITEMS
    requested = job.get("topics") if isinstance(job.get("topics"), list) else None
    return build_report(kept, removed, topics=topics, requested_topics=requested, draws=draws,
                        field_name=fields.messages or (fields.prompt if has_prompt else None), threshold=threshold,
                        sampled=sampled)


def summary(report: DiversityReport) -> str:
    """One line: 'distinct-1 0.62 · distinct-2 0.91 · near duplicates 12.0% before the filter, 0.0% after'."""
    return (f"distinct-1 {report.distinct_1:.2f} · distinct-2 {report.distinct_2:.2f} · near duplicates "
            f"{report.near_duplicate_rate_before:.1%} before the filter, {report.near_duplicate_rate_after:.1%} after")
