"""The first half of alignment data: the prompts, and K candidate responses to each.

Why candidates are a generation job of their own (technique ``candidates``, use case ``alignment``): its
records are ordinary prompt/completion rows, so the evaluation workflow judges them unchanged, export can
take them (best-of-N SFT), and DPO and KTO runs over the same prompts share them instead of paying twice.

* A prompt's id is a hash of its text, and each candidate record carries ``input = {prompt, prompt_id,
  candidate, model, temperature}``: the selection groups by what is stored, never by arrival order.
* Candidate ``i`` of every prompt uses slot ``i`` (a model and a temperature, see ``candidate_slots``);
  its request key is salted with the prompt id and ``i``, so two slots with the same model and temperature
  are still two requests, and a resumed run skips exactly the candidates already written.
* The job's identity is the slots plus a digest of the prompt list: the same prompts with the same
  settings find the same job again (zero calls); other prompts make a new job.
* The prompt is sent verbatim as the user turn (after an optional system prompt): the pairs teach how to
  answer exactly that prompt, so the candidates must answer exactly it, not a wrapped instruction.
"""
from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from ..config import AlignmentJob, GenerationJob, ModelSpec, RunSettings, StrictModel
from ..engine import InvalidOutput, Progress, WorkItem, request_key
from ..errors import ConfigError
from ..pricing import price_for
from ..providers import ChatRequest, Completion, get_provider, required_model_id
from ..store import Record, Store
from ..runner import JobRunner
from .jobs import Estimate, JobResult

KIND = "generation"
USE_CASE = "alignment"
TEMPERATURE_SPREAD = (0.2, 1.2)  # one model, no temperatures given: K evenly spaced values in this range


@dataclass(frozen=True)
class Prompt:
    id: str
    text: str
    topic: str | None = None
    provenance: dict[str, Any] = field(default_factory=dict)


def prompt_id(text: str) -> str:
    return "p" + hashlib.sha256(text.encode()).hexdigest()[:16]


def _text(value: Any) -> str:
    from .evaluate_inputs import _text as as_text  # the one rule for None / NaN / numpy values from tables

    return as_text(value).strip()


def unique_prompts(rows: list[tuple[Any, str | None, dict[str, Any]]], limit: int | None) -> list[Prompt]:
    """(text, topic, provenance) rows -> prompts: blanks skipped, repeats kept once, first ``limit``."""
    prompts: dict[str, Prompt] = {}
    for value, topic, provenance in rows:
        text = _text(value)
        if text and prompt_id(text) not in prompts:
            prompts[prompt_id(text)] = Prompt(prompt_id(text), text, topic, provenance)
        if limit is not None and len(prompts) >= limit:
            break
    return list(prompts.values())


def prompts_from_job(store: Store, job_id: int, prompt_field: str | None, limit: int | None = None,
                     home: str | Path | None = None) -> list[Prompt]:
    """The prompts of a generation job: each ok item's ``prompt_field`` (default: its use case's)."""
    from .fields import job_fields

    store.get_job(KIND, job_id)  # one line when it is not a generation-family job
    if prompt_field is None:
        prompt_field = job_fields(store, job_id, home).prompt or "prompt"
    rows, keys = [], set()
    for rec in store.records(KIND, job_id, "ok"):
        item = rec["output"] if isinstance(rec["output"], dict) else {}
        keys.update(item)
        if prompt_field in item:
            rows.append((item[prompt_field], rec["topic"], {"source_record_id": rec["id"], "source_job_id": job_id}))
    if not rows:
        if not keys:
            raise ConfigError(f"generation job {job_id} has no ok records to take prompts from")
        raise ConfigError(f"generation job {job_id} has no '{prompt_field}' field in its items (fields: "
                          f"{', '.join(sorted(keys))}); name the prompt field with prompt_column (--prompt-col)")
    prompts = unique_prompts(rows, limit)
    if not prompts:
        raise ConfigError(f"generation job {job_id}: every '{prompt_field}' is blank; there is no prompt to answer")
    return prompts


def prompts_from_file(path: str, column: str, limit: int | None = None, home: str | Path | None = None) -> list[Prompt]:
    from .evaluate_inputs import iter_rows

    try:  # streamed: with a limit, reading stops at the limit-th distinct prompt
        rows = ((values[0], None, {"row": i}) for i, values in iter_rows(path, [column], home))
        prompts = unique_prompts(rows, limit)
    except ConfigError as exc:
        if f"no column {column!r}" not in str(exc):
            raise
        raise ConfigError(str(exc).replace("has no column", "has no prompt column", 1)) from None
    if not prompts:
        raise ConfigError(f"input file {path}: column {column!r} holds no prompts")
    return prompts


def prompt_job_config(config: AlignmentJob) -> GenerationJob:
    """The generation job that writes the prompts when they come from topics."""
    return GenerationJob(use_case=config.use_case or USE_CASE, topics=config.topics,
                         num_per_topic=config.prompts_per_topic, model=config.model, run=config.run)


def judge_spec(config: AlignmentJob) -> ModelSpec:
    """The judge: ``judge``, else the candidate model at temperature 0 (the same row, the same score)."""
    if config.judge is not None:
        return config.judge
    params = config.model.parameters.model_copy(update={"temperature": 0.0})
    return config.model.model_copy(update={"parameters": params})


# -- slots: which model and temperature answer as candidate i ---------------------------------------

def candidate_slots(config: AlignmentJob) -> list[ModelSpec]:
    """K model specs, one per candidate index. Temperatures (outer) x models (inner), cycled to K, so the
    first slots already cover every model. No temperatures given: with one model, K values spread evenly
    over 0.2-1.2; with several, each model's own temperature."""
    models = config.candidate_models or [config.model]
    temps: list[float | None]
    if config.temperatures:
        temps = list(config.temperatures)
    elif len(models) == 1:
        low, high = TEMPERATURE_SPREAD
        k = config.candidates
        temps = [round(low + (high - low) * i / (k - 1), 2) for i in range(k)]
    else:
        temps = [None]
    combos = [(m, t) for t in temps for m in models]
    slots = []
    for i in range(config.candidates):
        spec, temp = combos[i % len(combos)]
        if temp is not None:
            spec = spec.model_copy(update={"parameters": spec.parameters.model_copy(update={"temperature": temp})})
        slots.append(spec)
    return slots


def _endpoint(spec: ModelSpec) -> tuple:
    """What makes two slots the same provider (one engine run each): everything but the parameters."""
    return spec.provider, spec.model, spec.base_url, spec.region, spec.api_key_env


class CandidateSet(StrictModel):
    """Identity of a candidates job (stored as its config): the prompts by digest, the slots, the system prompt."""

    kind: Literal["candidates"] = "candidates"
    prompts: int
    prompts_digest: str
    slots: list[ModelSpec]
    system_prompt: str | None = None
    run: RunSettings = Field(default_factory=RunSettings)


class CandidatesRun:
    """Writes K candidates per prompt into one generation job, one engine run per distinct model."""

    def __init__(self, config: AlignmentJob, store: Store):
        self.config, self.store = config, store
        self.slots = candidate_slots(config)
        self.providers: dict[tuple, Any] = {}
        self.model_ids: dict[tuple, str] = {}
        for spec in self.slots:  # built now: a missing model id or key fails before the first call
            key = _endpoint(spec)
            if key not in self.providers:
                self.providers[key] = get_provider(spec)
                self.model_ids[key] = required_model_id(self.providers[key], spec)

    def identity(self, prompts: list[Prompt]) -> CandidateSet:
        digest = hashlib.sha256(json.dumps([p.text for p in prompts]).encode()).hexdigest()[:32]
        return CandidateSet(prompts=len(prompts), prompts_digest=digest, slots=self.slots,
                            system_prompt=self.config.system_prompt, run=self.config.run)

    @property
    def models(self) -> list[str]:
        return list(dict.fromkeys(self.model_ids.values()))

    def model_id(self, index: int) -> str:
        return self.model_ids[_endpoint(self.slots[index])]

    def request(self, prompt: Prompt, index: int) -> ChatRequest:
        messages = [{"role": "system", "content": self.config.system_prompt}] if self.config.system_prompt else []
        return ChatRequest.of([*messages, {"role": "user", "content": prompt.text}], self.slots[index].parameters)

    def work(self, prompts: list[Prompt]) -> dict[tuple, list[WorkItem]]:
        """Work items grouped by provider, prompts in order and candidates by index within each."""
        groups: dict[tuple, list[WorkItem]] = {key: [] for key in self.providers}
        for prompt in prompts:
            for index, spec in enumerate(self.slots):
                request = self.request(prompt, index)
                key = request_key(spec.provider, self.model_id(index), request, salt=f"cand|{prompt.id}|{index}")
                groups[_endpoint(spec)].append(WorkItem(
                    key=key, request=request, topic=prompt.topic, provenance=prompt.provenance,
                    input={"prompt": prompt.text, "prompt_id": prompt.id, "candidate": index,
                           "model": self.model_id(index), "temperature": spec.parameters.temperature}))
        return groups

    @staticmethod
    def handle(item: WorkItem, completion: Completion) -> list[Record]:
        text = completion.text.strip()
        if not text:
            raise InvalidOutput("the reply is empty")
        return [Record(job_kind=KIND, job_id=0, item_key=item.key, status="ok", topic=item.topic,
                       input={**item.input, "finish_reason": completion.finish_reason}, provenance=item.provenance,
                       output={"prompt": item.input["prompt"], "completion": text},
                       tokens_in=completion.usage.input_tokens, tokens_out=completion.usage.output_tokens)]

    def metadata(self, prompts: list[Prompt]) -> dict[str, Any]:
        return {"technique": "candidates", "use_case": USE_CASE, "model_id": ", ".join(self.models),
                "inference_type": self.slots[0].provider, "num_per_topic": len(self.slots),
                "prompt_template": self.config.system_prompt, "requested": len(prompts) * len(self.slots),
                "model_parameters": {"slots": [{"model": self.model_id(i), "provider": s.provider,
                                                **s.parameters.model_dump(mode="json")}
                                               for i, s in enumerate(self.slots)]}}

    def run(self, prompts: list[Prompt], *, on_progress: Callable[[Progress], None] | None = None,
            cancel_event: threading.Event | None = None) -> JobResult:
        home = Path(self.store.path).parent
        groups = self.work(prompts)
        with JobRunner(self.store, KIND, "candidates", self.identity(prompts), fields=self.metadata(prompts),
                       on_progress=on_progress, cancel_event=cancel_event) as job:
            job.totals.planned(sum(len(items) for items in groups.values()))
            for key, items in groups.items():
                price = price_for(self.model_ids[key], home)
                job.note_price(price, self.model_ids[key])
                job.execute(self.providers[key], items, self.handle, settings=self.config.run, price=price,
                            output_retries=1, plan=False)
                if job.cancelled:
                    break
            return job.finish()


# -- dry run -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AlignmentPreview(Estimate):
    """What an alignment job will send and roughly cost, computed without a single call."""

    prompt: str           # the exact first request: the prompt-writing prompt (topics) or the first candidate's
    first_stage: str      # "prompts" or "candidates"
    prompt_tokens: int
    exact_tokens: bool
    prompts: int          # prompts to answer (from topics: how many are asked for)
    candidates: int       # K per prompt
    requests: int         # every call: writing prompts, K candidates per prompt, one judgement per candidate


def preview(config: AlignmentJob, *, home: str | Path | None = None) -> AlignmentPreview:
    """The first request, and a token/cost estimate for every stage; no call, nothing written."""
    from ..home import db_path
    from ..tokens import CHARS_PER_TOKEN, count_tokens

    where = Path(home).expanduser() if home else None
    slots, system = candidate_slots(config), config.system_prompt or ""
    requests = tokens_in = tokens_out = 0
    cost, known = 0.0, True
    if config.source_job is not None or config.input_file is not None:
        if config.source_job is not None:
            if not db_path(home).is_file():
                raise ConfigError(f"no generation job with id {config.source_job} (no metadata.db in "
                                  f"{db_path(home).parent}); `sdstudio jobs` lists them")
            prompts = prompts_from_job(Store.open(home), config.source_job, config.prompt_column, config.limit, home)
        else:
            prompts = prompts_from_file(config.input_file, str(config.prompt_column), config.limit, home)
        first = (f"[system] {system}\n\n" if system else "") + prompts[0].text
        first_tokens, exact = count_tokens(first, slots[0])
        stage, count, chars = "candidates", len(prompts), sum(len(p.text) for p in prompts)
    else:
        from .sft import preview as writing

        shown = writing(prompt_job_config(config), home=home)
        first, first_tokens, exact, stage = shown.prompt, shown.prompt_tokens, shown.exact_tokens, "prompts"
        count = min(shown.items, config.limit or shown.items)
        chars = count * 200  # a written prompt is a sentence or two
        requests, tokens_in, tokens_out = shown.requests, shown.est_tokens_in, shown.est_tokens_out
        cost, known = shown.est_cost_usd, shown.price_known
    for spec in slots:  # every prompt once per slot; a reply of up to ~300 tokens
        model = get_provider(spec).model_id  # builds no connection
        t_in, t_out = (chars + count * len(system)) // CHARS_PER_TOKEN, count * min(spec.parameters.max_tokens, 300)
        price = price_for(model, where)
        tokens_in, tokens_out, cost = tokens_in + t_in, tokens_out + t_out, cost + price.cost(t_in, t_out)
        known = known and price.known
    judge = judge_spec(config)
    judged = count * len(slots)  # the judge template, criteria, prompt and response in; a score and a sentence out
    t_in = judged * 250 + len(slots) * chars // CHARS_PER_TOKEN + count * len(slots) * 300
    t_out = judged * min(80, judge.parameters.max_tokens)
    price = price_for(get_provider(judge).model_id, where)
    return AlignmentPreview(prompt=first, first_stage=stage, prompt_tokens=first_tokens, exact_tokens=exact,
                            prompts=count, candidates=len(slots), requests=requests + 2 * judged,
                            est_tokens_in=tokens_in + t_in, est_tokens_out=tokens_out + t_out,
                            est_cost_usd=cost + price.cost(t_in, t_out), price_known=known and price.known)


__all__ = ["AlignmentPreview", "CandidateSet", "CandidatesRun", "Prompt", "candidate_slots", "judge_spec", "preview",
           "prompt_id", "prompt_job_config", "prompts_from_file", "prompts_from_job", "unique_prompts"]
