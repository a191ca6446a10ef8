"""Reading judgements: score tables, statistics, agreement, filtering, and human review.

Everything here is computed from the ``records`` and ``reviews`` tables of metadata.db, so it answers
the same while a job runs and after it finished. Decisions:

* Failed judgements have no score: they count as failed and nowhere else (never 0 in an average).
* A review of a judged generation row is stored on the *generation* record (that is what export
  writes and what "prefer reviewed edits" replaces); a row judged from an uploaded file has no
  generation record, so its review goes on the evaluation record, and an edit there is over
  ``{prompt, completion}``.
* Each review row is the reviewer's whole current view of the row: a verdict given alone keeps the
  row's latest edit and vice versa, and a partial edit (``{"solution": ...}``) is merged over the
  latest edit or the original. So the newest review of a record is its current state
  (``Store.latest_reviews``), and the original output is never written to.
"""
from __future__ import annotations

from typing import Any

from .errors import ConfigError
from .store import Store

KIND = "evaluation"
NO_TOPIC = "(no topic)"
DISTRIBUTION_LIMIT = 100  # scales up to this many values list every value in the distribution
COLUMNS = ["record_id", "topic", "prompt", "completion", "score", "justification", "verdict", "edited", "status",
           "error", "reviewer", "source_record_id", "row"]


def source_key(provenance: dict[str, Any] | None) -> str:
    """Which source row a judgement is about: ``rec:<generation record id>`` or ``row:<file row>``."""
    prov = provenance or {}
    if prov.get("source_record_id") is not None:
        return f"rec:{prov['source_record_id']}"
    return f"row:{prov.get('row')}"


# -- statistics -------------------------------------------------------------------------------

def _scored(store: Store, job_id: int) -> list[tuple[str | None, str, int | None, Any]]:
    """(topic, status, score, provenance) of a job's current judgements (stale ones left out)."""
    return [(t, s, int(v) if s == "ok" and v is not None else None, p)
            for t, s, v, p in store.current_judgements(job_id)]


def _mean(values: list[int]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None


def judgement_stats(store: Store, job_id: int, scale: tuple[int, int]) -> dict[str, Any]:
    """Average, distribution ``{score: count}`` and per-topic mean/min/max/count/failed of a job's ok
    judgements; failed ones are only counted as failed."""
    low, high = scale
    rows = _scored(store, job_id)
    scores = [s for _, status, s, _ in rows if status == "ok" and s is not None]
    values = range(low, high + 1) if high - low < DISTRIBUTION_LIMIT else sorted(set(scores))
    distribution = {str(v): 0 for v in values}
    for s in scores:
        distribution[str(s)] = distribution.get(str(s), 0) + 1
    grouped: dict[str, tuple[list[int], list[int]]] = {}
    for topic, status, score, _ in rows:
        ok, failed = grouped.setdefault(topic or NO_TOPIC, ([], []))
        if status == "ok" and score is not None:
            ok.append(score)
        else:
            failed.append(1)
    topics = {topic: {"mean": _mean(ok), "min": min(ok, default=None), "max": max(ok, default=None),
                      "count": len(ok), "failed": len(failed)} for topic, (ok, failed) in grouped.items()}
    return {"average": _mean(scores), "count": len(scores),
            "failed": sum(1 for _, status, _, _ in rows if status == "failed"),
            "distribution": distribution, "topics": topics}


def agreement(store: Store, first_job: int, second_job: int) -> dict[str, Any]:
    """How two judges agree on the rows both scored: exact agreement rate, share within one point,
    mean absolute difference."""
    first = {source_key(p): s for _, status, s, p in _scored(store, first_job) if status == "ok"}
    second = {source_key(p): s for _, status, s, p in _scored(store, second_job) if status == "ok"}
    diffs = [abs(first[k] - second[k]) for k in sorted(first.keys() & second.keys())]
    n = len(diffs)
    return {"second_judge_job": second_job, "model_id": store.get_job(KIND, second_job).get("model_id"),
            "compared": n, "exact_agreement": round(sum(d == 0 for d in diffs) / n, 4) if n else None,
            "within_one": round(sum(d <= 1 for d in diffs) / n, 4) if n else None,
            "mean_abs_diff": round(sum(diffs) / n, 4) if n else None}


def second_judge_job(store: Store, job_id: int) -> int | None:
    """The newest second-judge job that double-checked evaluation ``job_id``."""
    return store.newest_second_judge(job_id)


# -- what export reads --------------------------------------------------------------------------

def latest_evaluation(store: Store, generation_job_id: int) -> int | None:
    """The most recently finished (primary, not second-judge) evaluation of a generation job."""
    return store.latest_primary_evaluation(generation_job_id)


def latest_scores(store: Store, generation_job_id: int) -> dict[int, int]:
    """Generation record id -> judge score, from the newest finished evaluation of that job. Records
    whose judgement failed have no entry (they have no score)."""
    job_id = latest_evaluation(store, generation_job_id)
    if job_id is None:
        return {}
    return {p["source_record_id"]: s for _, status, s, p in _scored(store, job_id)
            if status == "ok" and p and p.get("source_record_id") is not None}


# -- tables -----------------------------------------------------------------------------------

def _open(store: Store | None) -> Store:
    return store if store is not None else Store.open()


def _review_target(record: dict[str, Any]) -> tuple[str, int]:
    prov = record["provenance"] or {}
    if prov.get("source_record_id") is not None:
        return "generation", int(prov["source_record_id"])
    return KIND, int(record["id"])


def scores(job_id: int, store: Store | None = None):
    """One row per judged pair of an evaluation (failed judgements included, with no score):
    record_id (the evaluation record), topic, prompt, completion, score, justification, the current
    review verdict and edit, status, error, reviewer, source_record_id, row; plus second_score when a
    second judge ran."""
    import pandas as pd

    store = _open(store)
    job = store.get_job(KIND, job_id)
    records = [r for r in store.records(KIND, job_id) if r["status"] != "filtered"]
    reviews: dict[tuple[str, int], dict[str, Any]] = {}
    source_job = job.get("source_generation_id") or (job.get("config") or {}).get("source_job")
    if source_job is not None:
        reviews.update({("generation", rid): v for rid, v in store.latest_reviews("generation", source_job).items()})
    reviews.update({(KIND, rid): v for rid, v in store.latest_reviews(KIND, job_id).items()})
    second = second_judge_job(store, job_id)
    second_scores = ({source_key(p): s for _, status, s, p in _scored(store, second) if status == "ok"}
                     if second is not None else None)
    rows = []
    for rec in records:
        prov, given, judged = rec["provenance"] or {}, rec["input"] or {}, rec["output"] or {}
        review = reviews.get(_review_target(rec), {})
        row = {"record_id": rec["id"], "topic": rec["topic"], "prompt": given.get("prompt"),
               "completion": given.get("completion"), "score": judged.get("score") if rec["status"] == "ok" else None,
               "justification": judged.get("justification"), "verdict": review.get("verdict"),
               "edited": review.get("edited_output"), "status": rec["status"], "error": rec["error"],
               "reviewer": review.get("reviewer"), "source_record_id": prov.get("source_record_id"),
               "row": prov.get("row")}
        if second_scores is not None:
            row["second_score"] = second_scores.get(source_key(prov))
        rows.append(row)
    frame = pd.DataFrame(rows, columns=COLUMNS + (["second_score"] if second_scores is not None else []))
    for column in ("score", "second_score", "source_record_id", "row"):
        if column in frame:
            frame[column] = frame[column].astype("Int64")
    # source order (records are stored in the order judgements finished)
    return frame.sort_values(["source_record_id", "row", "record_id"], na_position="last").reset_index(drop=True)


def select(job_id: int, min_score: float | None = None, accepted_only: bool = False, *,
           drop_rejected: bool = True, store: Store | None = None):
    """The derived selection export can take: ok judgements with score >= ``min_score``, only
    reviewer-accepted rows with ``accepted_only``, and without reviewer-rejected rows unless
    ``drop_rejected=False``."""
    frame = scores(job_id, store)
    keep = frame["status"] == "ok"
    if min_score is not None:
        keep &= frame["score"].fillna(min_score - 1) >= min_score
    if accepted_only:  # an edit is an accept (rows edited before edits carried a verdict included)
        keep &= (frame["verdict"] == "accept") | (frame["verdict"].isna() & frame["edited"].notna())
    if drop_rejected:
        keep &= frame["verdict"] != "reject"
    return frame[keep.astype(bool)].reset_index(drop=True)


FINAL_NOTE = "final verdict"  # the note of a review that settles reviewers' disagreement on a row


def verdicts_of(history: list[dict[str, Any]]) -> tuple[dict[str, str], dict[str, Any] | None, bool]:
    """From a row's reviews (oldest first): each reviewer's standing verdict, the final verdict that
    settled a disagreement (or None), and whether reviewers disagree. A final verdict settles what came
    before it; a reviewer who disagrees with it afterwards opens the conflict again."""
    final_at = max((i for i, r in enumerate(history) if r.get("note") == FINAL_NOTE and r.get("verdict")),
                   default=None)
    standing: dict[str, str] = {}
    for r in history:
        if r.get("verdict"):
            standing[r["reviewer"]] = r["verdict"]
    since = history[final_at:] if final_at is not None else history
    current = {r["reviewer"]: r["verdict"] for r in since if r.get("verdict")}
    final = history[final_at] if final_at is not None else None
    return standing, final, len(set(current.values())) > 1


def desk(job_id: int, store: Store | None = None):
    """``scores()`` plus what the review desk shows: ``verdicts`` (reviewer -> standing verdict),
    ``final`` ("verdict by name" when a final verdict settled a disagreement) and ``conflict``."""
    store = _open(store)
    frame = scores(job_id, store)
    job = store.get_job(KIND, job_id)
    source_job = job.get("source_generation_id") or (job.get("config") or {}).get("source_job")
    histories: dict[tuple[str, int], list[dict[str, Any]]] = {}
    if source_job is not None:
        histories.update({("generation", rid): h for rid, h in store.job_reviews("generation", source_job).items()})
    histories.update({(KIND, rid): h for rid, h in store.job_reviews(KIND, job_id).items()})
    verdicts, finals, conflicts = [], [], []
    for row in frame.itertuples():
        target = ((KIND, int(row.record_id)) if _isna(row.source_record_id)
                  else ("generation", int(row.source_record_id)))
        standing, final, conflict = verdicts_of(histories.get(target, []))
        verdicts.append(standing)
        finals.append(f"{final['verdict']} by {final['reviewer']}" if final else None)
        conflicts.append(conflict)
    frame["verdicts"], frame["final"], frame["conflict"] = verdicts, finals, conflicts
    return frame


def _isna(value: Any) -> bool:
    import pandas as pd

    return bool(pd.isna(value))


def progress(frame) -> dict[str, Any]:
    """Per reviewer: rows given a verdict out of the reviewable (ok) rows; and the open conflicts."""
    total = int((frame["status"] == "ok").sum())
    done: dict[str, int] = {}
    for standing in frame["verdicts"]:
        for name in standing:
            done[name] = done.get(name, 0) + 1
    return {"total": total, "reviewers": dict(sorted(done.items())), "conflicts": int(frame["conflict"].sum())}


def summary(job_id: int, store: Store | None = None) -> dict[str, Any]:
    """Everything about one evaluation in one JSON-able dict: the judge, criteria and scale, counts,
    average, distribution, per-topic figures, agreement with a second judge, and review counts."""
    store = _open(store)
    job = store.get_job(KIND, job_id)
    scale = (int(job["scale_min"]), int(job["scale_max"]))
    stats = judgement_stats(store, job_id, scale)
    second = second_judge_job(store, job_id)
    frame = scores(job_id, store)
    config = job.get("config") or {}
    return {"job_id": job_id, "status": job["status"], "source_job": job["source_generation_id"],
            "input_file": config.get("input_file"), "use_case": config.get("use_case"), "judge": job["model_id"],
            "provider": job["inference_type"], "parameters": job["model_parameters"], "criteria": job["criteria"],
            "scale": list(scale), "examples": job["examples"] or [], "judged": stats["count"],
            "failed": stats["failed"], "average_score": stats["average"], "distribution": stats["distribution"],
            "topics": stats["topics"], "agreement": agreement(store, job_id, second) if second is not None else None,
            "reviews": {"accepted": int((frame["verdict"] == "accept").sum()),
                        "rejected": int((frame["verdict"] == "reject").sum()),
                        "edited": int(frame["edited"].notna().sum())}}


def histogram(job_id: int, store: Store | None = None):
    """A matplotlib Figure of the score distribution (the second judge's beside it when one ran).
    Drawn on the Agg canvas, never through pyplot, so it is safe off the main thread and leaves a
    notebook's backend alone; it displays in Jupyter and saves with ``fig.savefig(path)``."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    store = _open(store)
    job = store.get_job(KIND, job_id)
    scale = (int(job["scale_min"]), int(job["scale_max"]))
    stats = judgement_stats(store, job_id, scale)
    second = second_judge_job(store, job_id)
    series = [(job["model_id"] or "judge", stats)]
    if second is not None:
        series.append((store.get_job(KIND, second)["model_id"] or "second judge",
                       judgement_stats(store, second, scale)))
    values = sorted({int(v) for _, s in series for v in s["distribution"]})
    fig = Figure(figsize=(6.4, 3.6))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    width = 0.8 / len(series)
    for index, (label, got) in enumerate(series):
        offset = (index - (len(series) - 1) / 2) * width
        ax.bar([v + offset for v in values], [got["distribution"].get(str(v), 0) for v in values], width=width,
               label=f"{label} (n={got['count']}, failed={got['failed']})")
    if stats["average"] is not None:
        ax.axvline(stats["average"], color="black", linestyle="--", linewidth=1,
                   label=f"average {stats['average']:.2f}")
    if len(values) <= 20:
        ax.set_xticks(values)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(f"score ({scale[0]}-{scale[1]})")
    ax.set_ylabel("rows")
    ax.set_title(f"Judge scores, evaluation #{job_id}")
    ax.legend(fontsize="small")
    fig.tight_layout()

    def png() -> bytes:
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        return buffer.getvalue()

    fig._repr_png_ = png  # shows in a notebook even when pyplot (and its inline hook) was never imported
    return fig


# -- human review -------------------------------------------------------------------------------

def _record(store: Store, record_id: int) -> dict[str, Any] | None:
    return store.record(record_id)


def review(record_id: int, reviewer: str, verdict: str | None = None, edited_output: Any = None,
           note: str | None = None, *, store: Store | None = None) -> int:
    """Accept / reject / edit a row; returns the review id. ``record_id`` may be an evaluation record
    (as in ``scores()``) or a generation record; a judged generation row's review lands on the
    generation record. The original output is never changed: the edit is stored beside it."""
    store = _open(store)
    record = _record(store, record_id)
    if record is None:
        raise ConfigError(f"no record with id {record_id}")
    if record["job_kind"] == KIND and (record["provenance"] or {}).get("source_record_id") is not None:
        source = _record(store, int(record["provenance"]["source_record_id"]))
        record = source or record
    if verdict is None and edited_output is None and note is None:
        raise ConfigError("a review needs a verdict ('accept' or 'reject'), an edit or a note")
    if verdict not in (None, "accept", "reject"):
        raise ConfigError(f"verdict must be 'accept' or 'reject', got {verdict!r}")
    history = store.reviews(record["id"])
    latest = history[-1] if history else {}
    original = record["input"] if record["job_kind"] == KIND else record["output"]
    if edited_output is not None:
        base = latest.get("edited_output") or original
        if isinstance(edited_output, dict) and isinstance(base, dict):
            unknown = sorted(set(edited_output) - set(base))
            if unknown:
                raise ConfigError(f"record {record['id']} has no field(s) {', '.join(unknown)} to edit "
                                  f"(fields: {', '.join(base)})")
            edited_output = {**base, **edited_output}
    else:
        edited_output = latest.get("edited_output")
    return store.add_review(record["id"], reviewer, verdict if verdict is not None else latest.get("verdict"),
                            edited_output, note)
