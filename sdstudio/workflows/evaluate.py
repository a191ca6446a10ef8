"""LLM-as-judge: score the prompt/completion pairs of a generation job or an uploaded file.

One judge request per pair, through the engine (concurrency, limits, retries, resume). Decisions:

* The judge answers strict JSON ``{score, justification}``; the request carries its JSON schema (an
  integer score with the scale as minimum/maximum, plus an enum so grammar-constrained models such as
  the embedded one cannot leave the scale). A reply that does not parse, or whose score is not an
  integer inside the scale, raises ``InvalidOutput``: the engine asks once more, then stores the
  judgement *failed* with the reason and the raw text. Failed judgements have no score: they are never
  counted as 0 and never enter averages, distributions or per-topic figures.
* The job's identity is its config with the defaults it ran with written in (use case, criteria,
  scale), so re-running the same evaluation finds the same job and the engine sends nothing for pairs
  already judged. A judgement whose source row is gone, or whose prompt changed (an edited template, a
  changed input file), is marked filtered as stale so every source row has one current judgement.
* Each evaluation record carries ``input = {prompt, completion}``, ``output = {score, justification}``
  and ``provenance = {source_record_id, source_job_id, row}``; export joins on ``source_record_id``
  (see ``latest_scores``).
* A second judge (another model) is its own evaluation job over the same rows (``second_judge_of``
  points back); the agreement figures land in the primary job's ``topic_stats`` JSON, which holds
  ``{"topics": {topic: {mean, min, max, count, failed}}, "agreement": {...}}``.

What to judge (``Pair``, ``pairs_from_job``, ``pairs_from_file``, ``read_table``) lives in
``evaluate_inputs.py``; reading results (statistics, ``latest_scores``, score tables, histogram, filtering,
human review) lives in ``sdstudio/reviews.py``. Both are re-exported here.
"""
from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from ..config import EvaluationJob
from ..diagnostics import explain
from ..engine import InvalidOutput, Progress, WorkItem, request_key
from ..errors import ConfigError
from ..parsing import ParseError, extract_json
from ..pricing import price_for
from ..providers import ChatRequest, Completion, get_provider, required_model_id
from ..reviews import (
    agreement,
    histogram,
    judgement_stats,
    latest_evaluation,
    latest_scores,
    review,
    scores,
    select,
    summary,
)
from ..store import Record, Store
from ..templates import render, variables
from ..usecases import UseCase, load_use_case
from ..runner import JobRunner, current_job_id
from .evaluate_inputs import Pair, file_prompt_sizes, pairs_from_file, pairs_from_job, read_table
from .jobs import Estimate, JobResult, ProgressTotals

KIND = "evaluation"
ENUM_LIMIT = 100  # scales up to this many values also get an enum (constrains grammar-based decoding)
# variables the evaluation workflow itself provides to every evaluate.jinja
PROVIDED = {"prompt", "completion", "criteria", "scale_min", "scale_max", "examples", "topic", "extras"}
STALE = "stale: the source row or the judge prompt changed since this judgement"
PREVIEW_ROWS = 200  # a dry run over an input file renders this many prompts and estimates the rest


# -- the plan: prompts and schema, decided before any call --------------------------------------

@dataclass(frozen=True)
class EvaluationPlan:
    config: EvaluationJob  # with the use case, criteria and scale it runs with written in
    use_case: UseCase
    pairs: list[Pair]
    template: str
    inputs: dict[str, str]

    @classmethod
    def build(cls, config: EvaluationJob, store: Store | None = None,
              home: str | Path | None = None) -> EvaluationPlan:
        inputs: dict[str, str] = {}
        if config.source_job is not None:
            store = store or Store.open(home)
            job = store.get_job("generation", config.source_job)
            use_case = load_use_case(config.use_case or job.get("use_case") or "custom", home)
            job_inputs = (job.get("config") or {}).get("inputs") or {}
            inputs = {**{k: str(v) for k, v in use_case.inputs.items()}, **job_inputs}
            pairs = pairs_from_job(store, config.source_job, use_case, home, config.limit)
        else:
            use_case = load_use_case(config.use_case or "custom", home)
            inputs = {k: str(v) for k, v in use_case.inputs.items()}
            pairs = pairs_from_file(config, home)
        criteria = config.criteria if config.criteria is not None else use_case.judge_criteria
        if not criteria.strip():
            raise ConfigError(f"no judge criteria: use case {use_case.name} defines none; give criteria "
                              "(--criteria-file on the CLI)")
        low, high = config.scale or use_case.judge_scale
        if low >= high:
            raise ConfigError(f"use case {use_case.name}: judge scale {low}-{high} is empty")
        for ex in config.examples:
            if not low <= ex.score <= high:
                raise ConfigError(f"judge example score {ex.score} is outside the scale {low}-{high}")
        resolved = config.model_copy(update={"use_case": use_case.name, "criteria": criteria, "scale": (low, high)})
        plan = cls(resolved, use_case, pairs, config.template or use_case.evaluate_template, inputs)
        plan._check_template()
        return plan

    @property
    def name(self) -> str:
        return f"{self.use_case.name}/evaluate.jinja" if self.config.template is None else "judge template"

    @property
    def scale(self) -> tuple[int, int]:
        return self.config.scale  # type: ignore[return-value]  # always set once resolved

    def _check_template(self) -> None:
        missing = sorted(variables(self.template, self.name) - PROVIDED - set(self.inputs))
        if missing:
            raise ConfigError(f"{self.name} uses {', '.join(missing)}, which sdstudio does not provide "
                              f"(available: {', '.join(sorted(PROVIDED | set(self.inputs)))})")
        self.prompt(self.pairs[0])

    def prompt(self, pair: Pair) -> str:
        low, high = self.scale
        context = {**self.inputs, "prompt": pair.prompt, "completion": pair.completion, "topic": pair.topic,
                   "extras": pair.extras, "criteria": self.config.criteria, "scale_min": low, "scale_max": high,
                   "examples": [ex.model_dump() for ex in self.config.examples]}
        return render(self.template, context, self.name).strip("\n")

    def judgement_schema(self) -> dict[str, Any]:
        low, high = self.scale
        score: dict[str, Any] = {"type": "integer", "minimum": low, "maximum": high}
        if high - low < ENUM_LIMIT:
            score["enum"] = list(range(low, high + 1))
        return {"type": "object", "additionalProperties": False, "required": ["score", "justification"],
                "properties": {"score": score, "justification": {"type": "string", "minLength": 1}}}

    def request(self, pair: Pair) -> ChatRequest:
        return ChatRequest.of(self.prompt(pair), self.config.model.parameters, self.judgement_schema())

    def metadata(self, model_id: str | None) -> dict[str, Any]:
        """The evaluation_metadata fields that describe what was asked."""
        spec, (low, high) = self.config.model, self.scale
        return {"source_generation_id": self.config.source_job, "model_id": model_id,
                "inference_type": spec.provider, "model_parameters": spec.parameters.model_dump(mode="json"),
                "criteria": self.config.criteria, "scale_min": low, "scale_max": high,
                "examples": [ex.model_dump() for ex in self.config.examples], "requested": len(self.pairs)}


# -- replies ----------------------------------------------------------------------------------

def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
        return int(value.strip())
    return None


def parse_judgement(completion: Completion, scale: tuple[int, int]) -> dict[str, Any]:
    """``{score, justification}`` from a reply, or InvalidOutput saying what is wrong with it."""
    value = completion.parsed
    if not isinstance(value, dict):
        try:
            value, _, _ = extract_json(completion.text)
        except ParseError as exc:  # "raise max_tokens" only when the provider says the reply hit it
            raise InvalidOutput(explain(str(exc), completion.finish_reason)) from None
    if not isinstance(value, dict):
        raise InvalidOutput("reply is not a JSON object with score and justification")
    if "score" not in value:
        raise InvalidOutput("reply has no score")
    score = _as_int(value["score"])
    if score is None:
        raise InvalidOutput(f"score {value['score']!r} is not an integer")
    low, high = scale
    if not low <= score <= high:
        raise InvalidOutput(f"score {score} is outside the scale {low}-{high}")
    justification = value.get("justification")
    if not isinstance(justification, str) or not justification.strip():
        raise InvalidOutput("reply has no justification")
    return {"score": score, "justification": justification.strip()}


def _save_stats(store: Store, job_id: int, scale: tuple[int, int], extra: dict[str, Any] | None = None) -> dict:
    stats = judgement_stats(store, job_id, scale)
    topic_stats = {"topics": stats["topics"], **(extra or {})}
    store.update_job(KIND, job_id, average_score=stats["average"], score_distribution=stats["distribution"],
                     topic_stats=topic_stats)
    return stats


# -- the job ----------------------------------------------------------------------------------

@dataclass
class EvaluationResult(JobResult):
    average_score: float | None = None
    agreement: dict[str, Any] | None = None


class EvaluationRun:
    """One evaluation job: its plan, its judge (and optional second judge), through the engine."""

    def __init__(self, config: EvaluationJob, *, home: str | Path | None = None, store: Store | None = None,
                 provider: Any = None, plan: EvaluationPlan | None = None):
        self.home = home
        self.store = store or Store.open(home)
        self.plan = plan or EvaluationPlan.build(config, self.store, home)
        self.config = self.plan.config
        self.provider = provider or get_provider(self.config.model)
        self.model_id = required_model_id(self.provider, self.config.model)
        # built now so a second judge's missing model or key fails before the first call
        self.second_provider = get_provider(self.config.second_judge) if self.config.second_judge else None
        if self.second_provider is not None:
            required_model_id(self.second_provider, self.config.second_judge)

    def work(self) -> list[WorkItem]:
        items = []
        for pair in self.plan.pairs:
            request = self.plan.request(pair)
            key = request_key(self.config.model.provider, self.model_id, request, salt=f"judge|{pair.source}")
            items.append(WorkItem(key=key, request=request, topic=pair.topic, provenance=pair.provenance,
                                  input={"prompt": pair.prompt, "completion": pair.completion}))
        return items

    def handle(self, item: WorkItem, completion: Completion) -> list[Record]:
        judgement = parse_judgement(completion, self.plan.scale)
        return [Record(job_kind=KIND, job_id=0, item_key=item.key, status="ok", topic=item.topic,
                       input=item.input, provenance=item.provenance, output=judgement, raw_text=completion.text,
                       tokens_in=completion.usage.input_tokens, tokens_out=completion.usage.output_tokens)]

    def _mark_stale(self, job_id: int, keys: set[str]) -> None:
        """Judgements of rows no longer asked about become filtered (stale); a stale one asked about
        again (its source row came back) is current again instead of being judged twice."""
        rows = [(r["id"], r["request_key"], r["status"], r["error"], r["has_output"])
                for r in self.store.record_states(KIND, job_id)]
        stale = [rid for rid, key, status, _, _ in rows if status != "filtered" and key not in keys]
        revived = [(rid, scored) for rid, key, status, error, scored in rows
                   if status == "filtered" and error == STALE and key in keys]
        if stale:
            self.store.set_record_status(stale, "filtered", STALE)
        if revived:
            self.store.set_record_status([rid for rid, scored in revived if scored], "ok")
            # a revived failure is asked again on this run, like any failed judgement
            self.store.set_record_status([rid for rid, scored in revived if not scored], "failed", "judged again")

    def run(self, *, resume: int | None = None, on_progress: Callable[[Progress], None] | None = None,
            cancel_event: threading.Event | None = None, wait: bool = False) -> EvaluationResult:
        extra: dict[str, Any] = {}
        parent = current_job_id() or self.config.second_judge_of or self.config.source_job  # what it judged
        with JobRunner(self.store, KIND, KIND, self.config, resume=resume, parent_id=parent,
                       fields=self.plan.metadata(self.model_id), on_progress=on_progress,
                       cancel_event=cancel_event, wait=wait) as job:
            price = price_for(self.model_id, Path(self.store.path).parent)
            job.note_price(price, self.model_id)
            work = self.work()
            self._mark_stale(job.job_id, {w.key for w in work})
            job.execute(self.provider, work, self.handle, settings=self.config.run, price=price, output_retries=1)
            second_cancelled = False
            if self.second_provider is not None and not job.cancelled:
                second = self._run_second(job.job_id, job.totals, on_progress, cancel_event)
                extra["agreement"] = agreement(self.store, job.job_id, second.job_id)
                second_cancelled = second.status == "cancelled"
            job.cancelled = job.cancelled or second_cancelled
            base = job.finish()
        notes = base.notes
        stats = _save_stats(self.store, base.job_id, self.plan.scale, extra)
        low, high = self.plan.scale
        if stats["average"] is not None:
            notes.append(f"average score {stats['average']:.2f} on {low}-{high} over {stats['count']} judged"
                         + (f" ({stats['failed']} failed, not counted)" if stats["failed"] else ""))
        if "agreement" in extra:
            agree = extra["agreement"]
            notes.append(f"second judge {agree['model_id']} (job {agree['second_judge_job']}): exact agreement "
                         f"{agree['exact_agreement']}, mean abs difference {agree['mean_abs_diff']} over "
                         f"{agree['compared']} rows")
        return EvaluationResult(**asdict(base), average_score=stats["average"], agreement=extra.get("agreement"))

    def _run_second(self, job_id: int, totals: ProgressTotals, on_progress: Callable[[Progress], None] | None,
                    cancel_event: threading.Event | None) -> EvaluationResult:
        """The second judge: its own evaluation job over the same pairs, pointing back at this one."""
        config = self.config.model_copy(update={"model": self.config.second_judge, "second_judge": None,
                                                "second_judge_of": job_id})

        def forward(progress: Progress) -> None:  # one progress figure for both judges
            if on_progress is not None:
                merged = totals.combined(progress)
                merged.total = totals.base.total + progress.total
                on_progress(merged)

        run = EvaluationRun(config, home=self.home, store=self.store, provider=self.second_provider,
                            plan=replace(self.plan, config=config))
        return run.run(on_progress=forward, cancel_event=cancel_event)


def evaluate(config: EvaluationJob, *, home: str | Path | None = None, resume: int | None = None,
             on_progress: Callable[[Progress], None] | None = None,
             cancel_event: threading.Event | None = None) -> EvaluationResult:
    """Run (or resume) an evaluation to the end; judgements are in metadata.db as they finish."""
    return EvaluationRun(config, home=home).run(resume=resume, on_progress=on_progress, cancel_event=cancel_event)


# -- dry run ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class EvaluationPreview(Estimate):
    """What an evaluation will send and roughly cost, computed without a single call."""

    prompt: str           # the exact prompt of the first judgement
    prompt_tokens: int
    exact_tokens: bool
    model_id: str | None
    requests: int         # one per pair (twice with a second judge)
    rows: int


def preview(config: EvaluationJob, *, home: str | Path | None = None) -> EvaluationPreview:
    """The first judge prompt, its token count and a token/cost estimate; no call, nothing written."""
    from ..home import db_path
    from ..tokens import count_tokens

    store = None
    if config.source_job is not None:
        if not db_path(home).is_file():
            raise ConfigError(f"no generation job with id {config.source_job} (no metadata.db in "
                              f"{db_path(home).parent}); `sdstudio jobs` lists them")
        store = Store.open(home)
    judges = [config.model, *([config.second_judge] if config.second_judge else [])]
    model_ids = [get_provider(spec).model_id for spec in judges]  # no connection yet
    if config.input_file is not None:  # streamed: the plan checks the first rows, the estimate walks the file
        plan = EvaluationPlan.build(config.model_copy(update={"limit": min(config.limit or PREVIEW_ROWS, PREVIEW_ROWS)}),
                                    store, home)
        rows, chars, first = file_prompt_sizes(config, plan.prompt, PREVIEW_ROWS, home)
    else:
        plan = EvaluationPlan.build(config, store, home)
        prompts = [plan.prompt(pair) for pair in plan.pairs]
        rows, chars, first = len(prompts), sum(len(p) for p in prompts), prompts[0]
    first_tokens, exact = count_tokens(first, config.model)
    per_char = first_tokens / max(len(first), 1)
    tokens_in = round(chars * per_char)
    tokens_out = rows * min(80, config.model.parameters.max_tokens)  # a score and a sentence or two
    prices = [price_for(m, Path(home).expanduser() if home else None) for m in model_ids]
    return EvaluationPreview(prompt=first, prompt_tokens=first_tokens, exact_tokens=exact, model_id=model_ids[0],
                             requests=rows * len(judges), rows=rows,
                             est_tokens_in=tokens_in * len(judges), est_tokens_out=tokens_out * len(judges),
                             est_cost_usd=sum(p.cost(tokens_in, tokens_out) for p in prices),
                             price_known=all(p.known for p in prices))


__all__ = ["EvaluationPlan", "EvaluationPreview", "EvaluationResult", "EvaluationRun", "Pair", "agreement", "evaluate",
           "histogram", "judgement_stats", "latest_evaluation", "latest_scores", "pairs_from_file", "pairs_from_job",
           "parse_judgement", "preview", "read_table", "review", "scores", "select", "summary"]
