"""Alignment data for DPO and KTO: prompts -> K candidates each -> the judge -> selection, in TRL's shapes.

Four stages, each its own job so each resumes on its own and is shared where it can be:

1. **prompts**: a generation job's items, a file column, or topics (then a generation job of use case
   ``alignment``, or ``use_case``, writes them first);
2. **candidates**: a generation job (technique ``candidates``) holding K responses per prompt (``candidates.py``);
3. **judging**: an evaluation job over the candidates job, run by the evaluation workflow itself: same
   judge prompt machinery, retries of unusable judgements, and failed judgements never scored;
4. **selection**: the rules of ``pairs.py``, written as the records of the alignment job itself, a
   generation job with technique ``dpo`` or ``kto``. Its ok records are the dataset: DPO ``{prompt, chosen,
   rejected}`` and KTO ``{prompt, completion, label}``, plus scores, justifications, margin and models, which
   export's ``dpo`` / ``kto`` styles cut to TRL's columns and its ``raw`` style keeps. Dropped rows stay as
   filtered (failed when candidates or judgements failed) with the reason.

Every stage finds its job again by config and the engine skips what is saved, so re-running a finished
alignment makes no call, a killed one resumes, and DPO and KTO over the same prompts and candidate
settings share the candidates and the judgements. Selection is recomputed on every run and written in
place under stable item keys (``dpo:<prompt id>``, ``kto:<prompt id>:<candidate>``), so reviews stay put.

The alignment job's row: ``model_id`` the candidate models; ``model_parameters`` the slots, the judge, the
scale, the thresholds and ``stage_jobs`` (prompts / candidates / evaluation job ids).
"""
from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from ..config import AlignmentJob, EvaluationJob
from ..engine import Progress
from ..errors import ConfigError
from ..providers import get_provider
from ..store import Record, Store
from ..usecases import load_use_case
from . import pairs
from .candidates import (
    USE_CASE,
    AlignmentPreview,
    CandidatesRun,
    Prompt,
    candidate_slots,
    judge_spec,
    preview,
    prompt_job_config,
    prompts_from_file,
    prompts_from_job,
)
from ..runner import JobRunner
from .jobs import JobResult

KIND = "generation"
STALE = "stale: no longer produced by this job's prompts and candidates"


def judge_config(config: AlignmentJob, candidates_job: int) -> EvaluationJob:
    return EvaluationJob(source_job=candidates_job, use_case=USE_CASE, criteria=config.criteria, scale=config.scale,
                         examples=config.examples, template=config.judge_template, model=judge_spec(config),
                         run=config.run)


def check_judge(config: AlignmentJob, home: str | Path | None = None) -> str:
    """Fail before any call if the judge cannot work (no model id, a template that does not render,
    no criteria); returns the judge's model id."""
    from ..providers import required_model_id
    from .evaluate import EvaluationPlan, Pair

    spec = judge_spec(config)
    model_id = required_model_id(get_provider(spec), spec)
    use_case = load_use_case(USE_CASE, home)
    criteria = config.criteria if config.criteria is not None else use_case.judge_criteria
    if not criteria.strip():
        raise ConfigError("the judge criteria are empty; give criteria (--criteria-file on the CLI)")
    resolved = judge_config(config, 0).model_copy(update={"criteria": criteria})
    plan = EvaluationPlan(resolved, use_case, [Pair("check", "a prompt", "a response")],
                          config.judge_template or use_case.evaluate_template, {})
    plan._check_template()  # the evaluation workflow's own check, on a stand-in pair
    return model_id


class StageProgress:
    """One running figure over the stages, so a notebook shows one bar; ``note`` names the stage."""

    def __init__(self, listener: Callable[[Progress], None] | None):
        self.listener = listener
        self.base, self.last, self.stage, self.ahead = Progress(), Progress(), "", 0

    def begin(self, stage: str, ahead: int = 0) -> None:
        """``ahead``: requests expected in later stages, counted in the total already."""
        self.stage, self.ahead, self.last = stage, ahead, Progress()

    def __call__(self, progress: Progress) -> None:
        self.last = progress
        if self.listener is not None:
            self.listener(self.merged(progress))

    def merged(self, cur: Progress) -> Progress:
        b = self.base
        return Progress(total=b.total + cur.total + self.ahead, done=b.done + cur.done, ok=b.ok + cur.ok,
                        failed=b.failed + cur.failed, cached=b.cached + cur.cached, in_flight=cur.in_flight,
                        retries=b.retries + cur.retries, tokens_in=b.tokens_in + cur.tokens_in,
                        tokens_out=b.tokens_out + cur.tokens_out, cost_usd=b.cost_usd + cur.cost_usd,
                        elapsed_s=b.elapsed_s + cur.elapsed_s,
                        note=self.stage + (f"; {cur.note}" if cur.note else ""))

    def end(self) -> None:
        self.base = replace(self.merged(self.last), in_flight=0)
        self.base.total -= self.ahead
        self.last, self.ahead = Progress(), 0


@dataclass
class AlignmentResult(JobResult):
    method: str = "dpo"
    prompts: int = 0
    stage_jobs: dict[str, int] = field(default_factory=dict)
    balance: dict[str, Any] | None = None  # KTO: desirable:undesirable report (see ``pairs.balance``)


class AlignmentRun:
    """One alignment job. Everything that can be checked without a call is checked in the constructor."""

    def __init__(self, config: AlignmentJob, *, home: str | Path | None = None, store: Store | None = None):
        self.config, self.home = config, home
        self.store = store or Store.open(home)
        self.candidates = CandidatesRun(config, self.store)
        self.judge_model = check_judge(config, home)
        self.prompts: list[Prompt] | None = None  # known now unless they are written from topics
        if config.source_job is not None:
            self.prompts = prompts_from_job(self.store, config.source_job, config.prompt_column, config.limit, home)
        elif config.input_file is not None:
            self.prompts = prompts_from_file(config.input_file, str(config.prompt_column), config.limit, home)
        else:
            from .sft import GenerationRun

            self.prompt_run = GenerationRun(prompt_job_config(config), home=home, store=self.store)

    def metadata(self) -> dict[str, Any]:
        c = self.config
        params: dict[str, Any] = {
            "candidates": c.candidates, "candidate_models": self.candidates.models,
            "slots": [{"model": self.candidates.model_id(i), "temperature": s.parameters.temperature}
                      for i, s in enumerate(self.candidates.slots)],
            "judge_model": self.judge_model, "judge_provider": judge_spec(c).provider, "scale": list(c.scale)}
        if c.method == "dpo":
            params.update(min_margin=c.min_margin, similarity_threshold=c.similarity_threshold)
        else:
            params.update(zip(("desirable_at", "undesirable_at"), c.kto_thresholds()), rebalance=c.rebalance,
                          seed=c.seed)
        return {"technique": c.method, "use_case": USE_CASE, "model_id": ", ".join(self.candidates.models),
                "inference_type": c.model.provider, "model_parameters": params, "num_per_topic": c.candidates,
                "topics": c.topics, "examples": [ex.model_dump() for ex in c.examples],
                "prompt_template": c.system_prompt}

    # -- the job -----------------------------------------------------------------------------------
    def run(self, *, resume: int | None = None, on_progress: Callable[[Progress], None] | None = None,
            cancel_event: threading.Event | None = None, wait: bool = False) -> AlignmentResult:
        meta = self.metadata()
        stages, stage_jobs, results = StageProgress(on_progress), {}, []

        def stage(name: str, label: str, runner: Callable[..., JobResult], ahead: int = 0, **kw: Any) -> JobResult:
            stages.begin(label, ahead)
            result = runner(on_progress=stages, cancel_event=cancel_event, **kw)
            stages.end()
            results.append(result)
            stage_jobs[name] = result.job_id
            return result

        prompts: list[Prompt] = []
        # the stages are this job's children: its tokens and cost are theirs, recomputed from their records
        with JobRunner(self.store, KIND, "alignment", self.config, resume=resume, fields=meta,
                       cancel_event=cancel_event, wait=wait, with_children=True) as job:
            prompts = self.prompts or []
            if self.prompts is None:
                written = stage("prompts", "writing prompts", self.prompt_run.run)
                if written.status == "cancelled":
                    return self._close(job, results, stage_jobs, prompts, cancelled=True)
                prompts = prompts_from_job(self.store, written.job_id, None, self.config.limit, self.home)
            total = len(prompts) * self.config.candidates
            self.store.update_job(KIND, job.job_id, requested=len(prompts) if self.config.method == "dpo" else total)
            cands = stage("candidates", "writing candidates", self.candidates.run, ahead=total,
                          prompts=prompts)
            if cands.status == "cancelled":
                return self._close(job, results, stage_jobs, prompts, cancelled=True)
            if cands.ok:
                from .evaluate import EvaluationRun

                judging = EvaluationRun(judge_config(self.config, cands.job_id), home=self.home, store=self.store)
                judged = stage("evaluation", "judging candidates", judging.run)
                if judged.status == "cancelled":
                    return self._close(job, results, stage_jobs, prompts, cancelled=True)
            meta["model_parameters"]["stage_jobs"] = stage_jobs
            self.store.update_job(KIND, job.job_id, model_parameters=meta["model_parameters"])
            self.write(job.job_id, self.select(prompts, stage_jobs), stage_jobs, {p.id: p.text for p in prompts})
            return self._close(job, results, stage_jobs, prompts)

    # -- selection ---------------------------------------------------------------------------------
    def gather(self, prompts: list[Prompt], candidates_job: int,
               evaluation_job: int | None) -> dict[str, list[pairs.Candidate]]:
        """Each prompt's candidates with their judgements, read back from the store by prompt id and
        candidate index (never by arrival order). A judgement counts only if it is about the same text."""
        judgements: dict[int, dict[str, Any]] = {}
        if evaluation_job is not None:
            for rec in self.store.records("evaluation", evaluation_job):
                source = (rec["provenance"] or {}).get("source_record_id")
                if rec["status"] != "filtered" and source is not None and (
                        int(source) not in judgements or rec["status"] == "ok"):
                    judgements[int(source)] = rec
        by_id = {p.id: p for p in prompts}
        found: dict[tuple[str, int], dict[str, Any]] = {}
        for rec in self.store.records(KIND, candidates_job):
            given = rec["input"] or {}
            key = (given.get("prompt_id"), given.get("candidate"))
            if key[0] in by_id and isinstance(key[1], int) and key[1] < self.config.candidates \
                    and rec["status"] != "filtered" and (key not in found or rec["status"] == "ok"):
                found[key] = rec  # type: ignore[index]
        groups: dict[str, list[pairs.Candidate]] = {p.id: [] for p in prompts}
        for (pid, index), rec in sorted(found.items()):
            text = (rec["output"] or {}).get("completion") if rec["status"] == "ok" else None
            verdict = judgements.get(rec["id"]) if text is not None else None
            score = why = error = None
            if text is None:
                error = f"the candidate failed: {rec['error']}"
            elif verdict is None:
                error = "no judgement"
            elif verdict["status"] != "ok" or (verdict["input"] or {}).get("completion") != text:
                error = f"the judgement failed: {verdict['error'] or 'it is about another text'}"
            else:
                score, why = int(verdict["output"]["score"]), verdict["output"]["justification"]
            given = rec["input"]
            groups[pid].append(pairs.Candidate(
                prompt_id=pid, prompt=by_id[pid].text, index=index, text=text, model=given.get("model"),
                temperature=given.get("temperature"), topic=by_id[pid].topic, record_id=rec["id"], score=score,
                justification=why, judgement_id=verdict["id"] if verdict and score is not None else None,
                error=error))
        return groups

    def select(self, prompts: list[Prompt], stage_jobs: dict[str, int]) -> list[pairs.Row]:
        c = self.config
        groups = self.gather(prompts, stage_jobs["candidates"], stage_jobs.get("evaluation"))
        if c.method == "dpo":
            return pairs.dpo_rows(groups, c.min_margin, c.similarity_threshold)
        rows = pairs.kto_rows(groups, *c.kto_thresholds())
        return pairs.rebalance(rows, c.rebalance, c.seed) if c.rebalance is not None else rows

    def write(self, job_id: int, rows: list[pairs.Row], stage_jobs: dict[str, int], texts: dict[str, str]) -> None:
        """Rows in place: new keys inserted, changed ones updated, keys no longer produced marked stale."""
        existing = {r["item_key"]: r for r in self.store.records(KIND, job_id)}
        new, changed = [], []
        for row in rows:
            prov = {**row.provenance, **{f"{k}_job": v for k, v in stage_jobs.items()}}
            given = {"prompt_id": row.prompt_id, "prompt": texts.get(row.prompt_id)}
            old = existing.get(row.key)
            if old is None:
                new.append(Record(job_kind=KIND, job_id=job_id, item_key=row.key, status=row.status, topic=row.topic,
                                  input=given, output=row.output, error=row.reason, provenance=prov))
                continue
            values = {"status": row.status, "input": given, "output": row.output, "error": row.reason,
                      "provenance": prov, "topic": row.topic}
            if any((_dumps(old[k]) != _dumps(v)) if k in _JSON_FIELDS else (old[k] != v) for k, v in values.items()):
                changed.append((old["id"], values))
        self.store.add_records(new)
        if changed:
            self.store.rewrite_records(changed)
        keys = {row.key for row in rows}
        self.store.set_record_status([r["id"] for k, r in existing.items() if k not in keys and r["error"] != STALE],
                                     "filtered", STALE)

    def _close(self, job: JobRunner, results: list[JobResult], stage_jobs: dict[str, int], prompts: list[Prompt], *,
               cancelled: bool = False) -> AlignmentResult:
        job.notes.extend(dict.fromkeys(n for r in results for n in r.notes if n.startswith("no price")))
        job.cancelled = job.cancelled or cancelled
        job.add_sends(sum(r.requests_sent for r in results), sum(r.attempts for r in results))  # its stages sent them
        base = job.finish()
        job_id = base.job_id
        result = AlignmentResult(**asdict(base), method=self.config.method, prompts=len(prompts),
                                 stage_jobs=dict(stage_jobs))
        if self.config.method == "kto" and base.status == "done":
            result.balance = balance(job_id, store=self.store)
        result.notes.extend(summary_notes(result, self.store))
        return result


_JSON_FIELDS = ("input", "output", "provenance")


def _dumps(value: Any) -> str | None:
    """As the store writes JSON fields: a row is rewritten only when its stored text would change."""
    return None if value is None else json.dumps(value, ensure_ascii=False, default=str)


def summary_notes(result: AlignmentResult, store: Store) -> list[str]:
    jobs = ", ".join(f"{name} job {jid}" for name, jid in result.stage_jobs.items())
    notes = [f"stages: {jobs}"] if jobs else []
    if result.status != "done":
        return notes
    reasons: dict[str, int] = {}
    for error in store.dropped_errors(KIND, result.job_id):
        phrase = (error or "unknown").split(":", 1)[0]
        reasons[phrase] = reasons.get(phrase, 0) + 1
    dropped = ", ".join(f"{n} {why}" for why, n in sorted(reasons.items()))
    what = "pairs" if result.method == "dpo" else "labelled completions"
    notes.append(f"{result.method}: {result.ok} {what} from {result.prompts} prompts" + (f"; not kept: {dropped}"
                                                                                        if dropped else ""))
    if result.balance is not None:
        b = result.balance
        notes.append(f"balance desirable:undesirable {b['desirable']}:{b['undesirable']}"
                     + (f" (ratio {b['ratio']:g})" if b["ratio"] is not None else ""))
    return notes


def align(config: AlignmentJob, *, home: str | Path | None = None, resume: int | None = None,
          on_progress: Callable[[Progress], None] | None = None,
          cancel_event: threading.Event | None = None) -> AlignmentResult:
    """Run (or resume) an alignment job to the end; the rows are in metadata.db (see ``rows``)."""
    return AlignmentRun(config, home=home).run(resume=resume, on_progress=on_progress, cancel_event=cancel_event)


# -- reading results ----------------------------------------------------------------------------------

DPO_COLUMNS = ["prompt", "chosen", "rejected", "chosen_score", "rejected_score", "margin", "similarity",
               "chosen_justification", "rejected_justification", "chosen_model", "rejected_model",
               "chosen_temperature", "rejected_temperature"]
KTO_COLUMNS = ["prompt", "completion", "label", "score", "justification", "model", "temperature"]


def _alignment_job(store: Store, job_id: int) -> dict[str, Any]:
    job = store.get_job(KIND, job_id)
    if job.get("technique") not in ("dpo", "kto"):
        raise ConfigError(f"generation job {job_id} is not an alignment job (technique {job.get('technique')})")
    return job


def rows(job_id: int, *, store: Store | None = None, include_dropped: bool = False):
    """The job's rows as a DataFrame: DPO pairs side by side with their scores, or KTO labelled
    completions; with ``include_dropped`` also the filtered and failed ones and why (``reason``)."""
    import pandas as pd

    store = store or Store.open()
    job = _alignment_job(store, job_id)
    columns = DPO_COLUMNS if job["technique"] == "dpo" else KTO_COLUMNS
    data = [{**{c: (rec["output"] or {}).get(c) for c in columns}, "prompt": (rec["input"] or {}).get("prompt"),
             "topic": rec["topic"], "status": rec["status"], "reason": rec["error"], "record_id": rec["id"]}
            for rec in store.records(KIND, job_id) if include_dropped or rec["status"] == "ok"]
    if not include_dropped:
        data = [{k: v for k, v in row.items() if k not in ("status", "reason")} for row in data]
    frame = pd.DataFrame(data, columns=[*columns, "topic", *(["status", "reason"] if include_dropped else []),
                                        "record_id"])
    return frame[frame["reason"].fillna("") != STALE].reset_index(drop=True) if include_dropped else frame


def fields(job: dict[str, Any], home: Any = None) -> Any:
    """DPO rows are (prompt, chosen, rejected), KTO rows (prompt, completion, label)."""
    from .fields import Fields

    return Fields("prompt", "chosen" if job.get("technique") == "dpo" else "completion")


def balance(job_id: int, *, store: Store | None = None) -> dict[str, Any]:
    """A KTO job's desirable:undesirable report: counts, ratio, share, and what was dropped and why."""
    store = store or Store.open()
    job = _alignment_job(store, job_id)
    if job["technique"] != "kto":
        raise ConfigError(f"generation job {job_id} holds DPO pairs; the desirable:undesirable balance is for KTO")
    params = job.get("model_parameters") or {}
    found = store.record_labels(KIND, job_id, except_error=STALE)
    return pairs.balance(found, (params.get("desirable_at"), params.get("undesirable_at")),
                         params.get("rebalance"))


__all__ = ["AlignmentPreview", "AlignmentResult", "AlignmentRun", "StageProgress", "align", "balance",
           "candidate_slots", "check_judge", "judge_config", "judge_spec", "preview", "prompt_job_config", "rows"]
