"""From judged candidates to alignment rows: DPO preference pairs and KTO labelled completions.

Pure functions over plain data, no store and no model, so every rule is tested on its own and a re-run
over the same candidates and judgements gives the very same rows. The rules:

* A candidate counts only with a judgement that succeeded. A failed judgement (or a failed candidate)
  has no score: it is never ranked and never taken for a 0.
* DPO, per prompt: candidates ranked by (score descending, candidate index ascending); chosen is the first,
  rejected the last, so ties break the same way whatever order completions arrived in, and with two or
  more judged candidates chosen and rejected are always different candidates. A pair is dropped when the
  texts are identical or near-identical (character 5-gram Jaccard, as ``dedup`` measures it), or when the
  margin is below ``min_margin`` or zero (equal scores say nothing about preference).
* KTO, per candidate: label true at score >= ``desirable_at``, false at score <= ``undesirable_at``; the
  middle band and a repeat of an earlier candidate's text for the same prompt are dropped. Optional
  rebalancing down-samples the larger label with a fixed seed.

Every input yields exactly one row (ok, filtered or failed) whose ``reason`` starts with a fixed phrase
before a colon, so ``balance`` can count the reasons from stored records alone.
"""
from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ..dedup import normalize, similarity

# the fixed phrases that start a row's reason (see ``balance``)
NO_CANDIDATES, TOO_FEW_JUDGED, IDENTICAL, NEAR_IDENTICAL, SMALL_MARGIN = (
    "no candidates", "too few judged", "identical", "near-identical", "small margin")
NOT_JUDGED, MIDDLE_BAND, REPEATED, DOWNSAMPLED = "not judged", "middle band", "repeated text", "down-sampled"


@dataclass(frozen=True)
class Candidate:
    """One response to one prompt, with its judgement when it has one."""

    prompt_id: str
    prompt: str
    index: int  # the candidate's slot (model + temperature) among the K
    text: str | None  # None: the candidate itself failed
    model: str | None = None
    temperature: float | None = None
    topic: str | None = None
    record_id: int | None = None
    score: int | None = None  # None: not judged (failed, or never asked)
    justification: str | None = None
    judgement_id: int | None = None
    error: str | None = None  # why it has no text or no score


@dataclass(frozen=True)
class Row:
    """One row of an alignment job: ``ok`` rows are the dataset; the others say why they are not in it."""

    key: str
    status: str  # ok | filtered | failed
    prompt_id: str
    topic: str | None
    output: dict[str, Any] | None
    reason: str | None = None
    provenance: dict[str, Any] = field(default_factory=dict)


def _judged(candidates: Iterable[Candidate]) -> list[Candidate]:
    return [c for c in candidates if c.text is not None and c.score is not None]


def _side(c: Candidate, prefix: str) -> dict[str, Any]:
    return {f"{prefix}_score": c.score, f"{prefix}_justification": c.justification, f"{prefix}_model": c.model,
            f"{prefix}_temperature": c.temperature}


# -- DPO --------------------------------------------------------------------------------------------

def dpo_row(prompt_id: str, candidates: Sequence[Candidate], min_margin: float, threshold: float) -> Row:
    """The preference pair of one prompt (or the reason there is none)."""
    topic = next((c.topic for c in candidates), None)
    judged = sorted(_judged(candidates), key=lambda c: (-int(c.score), c.index))  # type: ignore[arg-type]
    key = f"dpo:{prompt_id}"
    if not candidates:
        return Row(key, "failed", prompt_id, topic, None, f"{NO_CANDIDATES}: no candidate was written")
    if len(judged) < 2:
        lost = [f"#{c.index}: {c.error or 'not judged'}" for c in candidates if c not in judged]
        return Row(key, "failed", prompt_id, topic, None,
                   f"{TOO_FEW_JUDGED}: {len(judged)} of {len(candidates)} candidates judged, a pair needs 2 "
                   f"({'; '.join(lost)[:300]})")
    chosen, rejected = judged[0], judged[-1]
    margin = int(chosen.score) - int(rejected.score)  # type: ignore[arg-type]
    similar = similarity(chosen.text, rejected.text)  # type: ignore[arg-type]
    output = {"prompt": chosen.prompt, "chosen": chosen.text, "rejected": rejected.text, **_side(chosen, "chosen"),
              **_side(rejected, "rejected"), "margin": margin, "similarity": round(similar, 4)}
    provenance = {"prompt_id": prompt_id, "chosen_record_id": chosen.record_id,
                  "rejected_record_id": rejected.record_id, "chosen_judgement_id": chosen.judgement_id,
                  "rejected_judgement_id": rejected.judgement_id, "candidates": len(candidates),
                  "judged": len(judged)}
    reason = None
    if similar == 1.0:
        reason = f"{IDENTICAL}: chosen #{chosen.index} and rejected #{rejected.index} have the same text"
    elif similar >= threshold:
        reason = (f"{NEAR_IDENTICAL}: chosen #{chosen.index} and rejected #{rejected.index} are {similar:.2f} "
                  f"similar (threshold {threshold:g})")
    elif margin <= 0:
        reason = f"{SMALL_MARGIN}: every judged candidate scored {chosen.score}, so none is preferred"
    elif margin < min_margin:
        reason = f"{SMALL_MARGIN}: {chosen.score} vs {rejected.score} is a margin of {margin}, below {min_margin:g}"
    return Row(key, "filtered" if reason else "ok", prompt_id, topic, output, reason, provenance)


def dpo_rows(groups: Mapping[str, Sequence[Candidate]], min_margin: float = 1.0, threshold: float = 0.9) -> list[Row]:
    """One row per prompt, in the mapping's order (the prompts' own order)."""
    return [dpo_row(pid, cands, min_margin, threshold) for pid, cands in groups.items()]


# -- KTO --------------------------------------------------------------------------------------------

def kto_rows(groups: Mapping[str, Sequence[Candidate]], desirable_at: int, undesirable_at: int) -> list[Row]:
    """One row per candidate, prompts in the mapping's order and candidates by index."""
    rows = []
    for prompt_id, candidates in groups.items():
        seen: dict[str, int] = {}
        for c in sorted(candidates, key=lambda c: c.index):
            key = f"kto:{prompt_id}:{c.index}"
            provenance = {"prompt_id": prompt_id, "candidate_record_id": c.record_id, "judgement_id": c.judgement_id,
                          "candidate": c.index}
            if c.text is None or c.score is None:
                rows.append(Row(key, "failed", prompt_id, c.topic, None,
                                f"{NOT_JUDGED}: candidate #{c.index}: {c.error or 'no judgement'}", provenance))
                continue
            middle = undesirable_at < c.score < desirable_at
            output = {"prompt": c.prompt, "completion": c.text, "label": None if middle else c.score >= desirable_at,
                      "score": c.score, "justification": c.justification, "model": c.model,
                      "temperature": c.temperature}
            norm = normalize(c.text)
            reason = None
            if norm in seen:
                reason = f"{REPEATED}: candidate #{c.index} repeats candidate #{seen[norm]} of the same prompt"
            elif middle:
                reason = f"{MIDDLE_BAND}: score {c.score} is above {undesirable_at} and below {desirable_at}"
            seen.setdefault(norm, c.index)
            rows.append(Row(key, "filtered" if reason else "ok", prompt_id, c.topic, output, reason, provenance))
    return rows


def rebalance(rows: Sequence[Row], ratio: float, seed: int = 42) -> list[Row]:
    """Down-sample the larger label so larger:smaller <= ``ratio``; the dropped rows become filtered.
    The pick is a seeded sample over the rows in key order, so it never depends on arrival order."""
    ok = [r for r in rows if r.status == "ok"]
    desirable = [r for r in ok if r.output and r.output["label"]]
    undesirable = [r for r in ok if r.output and not r.output["label"]]
    larger, smaller = (desirable, undesirable) if len(desirable) >= len(undesirable) else (undesirable, desirable)
    keep_n = int(len(smaller) * ratio)
    if not smaller or len(larger) <= keep_n:
        return list(rows)
    pool = sorted(larger, key=lambda r: r.key)
    cut = {r.key for r in pool} - {r.key for r in random.Random(seed).sample(pool, keep_n)}
    label = "desirable" if larger is desirable else "undesirable"
    reason = f"{DOWNSAMPLED}: {label} rows cut to {keep_n} for a ratio of at most {ratio:g}:1 (seed {seed})"
    return [replace(r, status="filtered", reason=reason) if r.key in cut else r for r in rows]


def balance(rows: Iterable[tuple[str, Any, str | None]], thresholds: tuple[int, int] | None = None,
            ratio: float | None = None) -> dict[str, Any]:
    """The desirable:undesirable report of KTO rows given as (status, label or None, reason)."""
    desirable = undesirable = 0
    dropped: dict[str, int] = {}
    for status, label, reason in rows:
        if status == "ok":
            desirable += bool(label)
            undesirable += not label
        else:
            phrase = (reason or "unknown").split(":", 1)[0]
            dropped[phrase] = dropped.get(phrase, 0) + 1
    total = desirable + undesirable
    report: dict[str, Any] = {
        "desirable": desirable, "undesirable": undesirable,
        "ratio": round(desirable / undesirable, 4) if undesirable else None,
        "desirable_share": round(desirable / total, 4) if total else None,
        "middle_band": dropped.get(MIDDLE_BAND, 0), "repeated": dropped.get(REPEATED, 0),
        "not_judged": dropped.get(NOT_JUDGED, 0), "downsampled": dropped.get(DOWNSAMPLED, 0),
        "rebalance": ratio}
    if thresholds is not None:
        report["desirable_at"], report["undesirable_at"] = thresholds
    return report


__all__ = ["Candidate", "Row", "balance", "dpo_row", "dpo_rows", "kto_rows", "rebalance", "similarity"]
