"""Evol-Instruct: a generation job's instructions rewritten harder or broader for R rounds, then answered again.

Two jobs, as alignment has stages, so the dataset stays one shape:

* the **evolutions** stage job (kind ``evolutions``, a child of the evolve job) holds one record per lineage and
  round: ``input = {root, round, method, instruction}`` (the instruction it rewrote), ``output = {instruction}``
  (the rewrite), ok when kept, ``filtered`` with the elimination's reason otherwise (``evolve_methods`` says
  which rules: copy, refusal, empty, template leak, and unanswerable once its answer shows it);
* the **evolve** job itself holds one record per kept rewrite: ``output = {prompt, completion}`` (the evolved
  instruction and its fresh answer), exported like any SFT job. Its provenance is the lineage: the ancestor
  record (``ancestor_record_id`` in ``source_job_id``), the evolution record, its parent evolution record, the
  round and the methods of every round so far. Unanswerable rewrites are ``filtered`` here too, with the reason.

A lineage whose rewrite is eliminated continues in the next round from its last kept instruction (the seed when
none), with that round's method draw: one bad rewrite does not end it. Every round's kept rewrites are part of
the dataset (WizardLM pools all rounds). Round r's requests depend only on stored rows of earlier rounds and on
a fixed method draw (``pick_method``), so a killed run rebuilds the very same requests and the engine skips those
already answered: resuming never pays twice. Near-duplicate evolved instructions of one round are filtered at
the end (``dedup_threshold``, see ``dedup_rounds``).
"""
from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from ..config import ModelSpec, RunSettings, StrictModel
from ..configs.evolve import EvolveJob
from ..engine import InvalidOutput, Progress, WorkItem, request_key
from ..pricing import price_for
from ..providers import ChatRequest, Completion, get_provider, required_model_id
from ..runner import JobRunner
from ..store import Record, Store
from .candidates import Prompt, prompts_from_job
from .evolve_methods import answer_problem, clean_rewrite, pick_method, prompt_for, rewrite_problem
from .jobs import Estimate, JobResult

KIND = "generation"
STAGE_KIND = "evolutions"


class EvolutionSet(StrictModel):
    """Identity of an evolutions stage job: the seeds by digest and how they are rewritten (not who answers)."""

    kind: Literal["evolutions"] = "evolutions"
    source_job: int
    prompts: int
    prompts_digest: str
    rounds: int
    methods: list[str]
    seed: int
    copy_threshold: float
    model: ModelSpec
    run: RunSettings = Field(default_factory=RunSettings)


@dataclass(frozen=True)
class Latest:
    """A lineage's last kept instruction before a round, and how it got there."""

    text: str
    record_id: int | None  # its evolution record (None: the seed itself)
    methods: tuple[str, ...]


class _Merged:
    """One progress figure from the two jobs' (rewrites and answers), so a bar shows one total."""

    def __init__(self, listener: Callable[[Progress], None] | None):
        self.listener, self.parts = listener, [Progress(), Progress()]

    def part(self, index: int) -> Callable[[Progress], None]:
        def report(progress: Progress) -> None:
            self.parts[index] = progress
            if self.listener is not None:
                a, b = self.parts
                self.listener(replace(a, **{k: getattr(a, k) + getattr(b, k) for k in (
                    "total", "done", "ok", "failed", "cached", "in_flight", "retries", "attempts", "tokens_in",
                    "tokens_out", "cost_usd", "elapsed_s")}, note=b.note or a.note))
        return report


class EvolveRun:
    """One Evol-Instruct job. Seeds, models and keys are checked in the constructor, before any call."""

    def __init__(self, config: EvolveJob, *, home: str | Path | None = None, store: Store | None = None):
        self.config, self.home = config, home
        self.store = store or Store.open(home)
        self.seeds: list[Prompt] = prompts_from_job(self.store, config.source_job, config.prompt_column,
                                                    config.limit, home)
        self.provider = get_provider(config.model)
        self.model_id = required_model_id(self.provider, config.model)
        answerer = config.answerer()
        self.answer_provider = self.provider if config.answer_model is None else get_provider(answerer)
        self.answer_model_id = required_model_id(self.answer_provider, answerer)

    # -- identity and metadata -------------------------------------------------------------------------
    def identity(self) -> EvolutionSet:
        c = self.config
        digest = hashlib.sha256(json.dumps([p.text for p in self.seeds]).encode()).hexdigest()[:32]
        return EvolutionSet(source_job=c.source_job, prompts=len(self.seeds), prompts_digest=digest, rounds=c.rounds,
                            methods=list(c.methods), seed=c.seed, copy_threshold=c.copy_threshold, model=c.model,
                            run=c.run)

    def metadata(self) -> dict[str, Any]:
        c = self.config
        source = self.store.get_job(KIND, c.source_job)
        models = list(dict.fromkeys([self.model_id, self.answer_model_id]))
        return {"technique": "evolve", "use_case": source.get("use_case"), "model_id": ", ".join(models),
                "inference_type": c.model.provider, "topics": source.get("topics"), "num_per_topic": c.rounds,
                "requested": len(self.seeds) * c.rounds, "prompt_template": c.system_prompt,
                "model_parameters": {"source_job": c.source_job, "rounds": c.rounds, "methods": list(c.methods),
                                     "seed": c.seed, "copy_threshold": c.copy_threshold,
                                     "dedup_threshold": c.dedup_threshold, "rewriter": self.model_id,
                                     "answerer": self.answer_model_id, "seeds": len(self.seeds)}}

    # -- rewrites ----------------------------------------------------------------------------------------
    def latest(self, stage_id: int, before_round: int) -> dict[str, Latest]:
        """Each lineage's last kept instruction before ``before_round`` (its seed when no rewrite was kept)."""
        state = {p.id: Latest(p.text, None, ()) for p in self.seeds}
        kept = [r for r in self.store.records(KIND, stage_id, "ok")
                if (r["input"] or {}).get("round", 0) < before_round and (r["input"] or {}).get("root") in state]
        for rec in sorted(kept, key=lambda r: (r["input"]["round"], r["id"])):
            given = rec["input"]
            state[given["root"]] = Latest(rec["output"]["instruction"], rec["id"],
                                          tuple((rec["provenance"] or {}).get("methods") or [given["method"]]))
        return state

    def evolution_items(self, stage_id: int, round_no: int) -> list[WorkItem]:
        """Round ``round_no``'s rewriting requests: one per lineage, from its last kept instruction."""
        state, c = self.latest(stage_id, round_no), self.config
        items = []
        for seed in self.seeds:
            last = state[seed.id]
            method = pick_method(list(c.methods), c.seed, seed.id, round_no)
            request = ChatRequest.of([{"role": "user", "content": prompt_for(method, last.text)}],
                                     c.model.parameters)
            key = request_key(c.model.provider, self.model_id, request, salt=f"evo|{seed.id}|{round_no}")
            provenance = {"source_job_id": c.source_job,
                          "ancestor_record_id": seed.provenance.get("source_record_id"),
                          "parent_record_id": last.record_id, "round": round_no, "method": method,
                          "methods": [*last.methods, method]}
            items.append(WorkItem(key=key, request=request, topic=seed.topic, provenance=provenance,
                                  input={"root": seed.id, "round": round_no, "method": method,
                                         "instruction": last.text, "ancestor": seed.text}))
        return items

    def handle_evolution(self, item: WorkItem, completion: Completion) -> list[Record]:
        rewrite = clean_rewrite(completion.text)
        problem = rewrite_problem(item.input["instruction"], rewrite, self.config.copy_threshold)
        return [Record(job_kind=KIND, job_id=0, item_key=item.key, status="filtered" if problem else "ok",
                       topic=item.topic, input=item.input, output={"instruction": rewrite}, error=problem,
                       provenance=item.provenance, raw_text=completion.text if problem else None,
                       tokens_in=completion.usage.input_tokens, tokens_out=completion.usage.output_tokens)]

    # -- answers -----------------------------------------------------------------------------------------
    def answer_items(self, stage_id: int, round_no: int) -> list[WorkItem]:
        """One answer request per rewrite of ``round_no`` still kept, the evolved instruction sent verbatim."""
        spec, items = self.config.answerer(), []
        system = [{"role": "system", "content": self.config.system_prompt}] if self.config.system_prompt else []
        for rec in self.store.records(KIND, stage_id, "ok"):
            given = rec["input"] or {}
            if given.get("round") != round_no:
                continue
            instruction = rec["output"]["instruction"]
            request = ChatRequest.of([*system, {"role": "user", "content": instruction}], spec.parameters)
            key = request_key(spec.provider, self.answer_model_id, request, salt=f"ans|{rec['item_key']}")
            provenance = {**(rec["provenance"] or {}), "evolution_record_id": rec["id"], "evolutions_job_id": stage_id}
            items.append(WorkItem(key=key, request=request, topic=rec["topic"], provenance=provenance,
                                  input={**given, "instruction": instruction, "evolved_from": given["instruction"]}))
        return items

    @staticmethod
    def handle_answer(item: WorkItem, completion: Completion) -> list[Record]:
        text = completion.text.strip()
        if not text:
            raise InvalidOutput("the reply is empty")
        problem = answer_problem(text)
        return [Record(job_kind=KIND, job_id=0, item_key=item.key, status="filtered" if problem else "ok",
                       topic=item.topic, input=item.input, provenance=item.provenance, error=problem,
                       output={"prompt": item.input["instruction"], "completion": text},
                       raw_text=completion.text if problem else None,
                       tokens_in=completion.usage.input_tokens, tokens_out=completion.usage.output_tokens)]

    def eliminate_unanswerable(self, job_id: int) -> None:
        """An unanswerable rewrite is eliminated in the stage too, so the next round builds on its parent.
        Idempotent: a resumed run applies it again before it plans a round."""
        reasons = [(int(rec["provenance"]["evolution_record_id"]), rec["error"])
                   for rec in self.store.records(KIND, job_id, "filtered")
                   if (rec["error"] or "").startswith("unanswerable") and (rec["provenance"] or {}).get(
                       "evolution_record_id")]
        if reasons:
            self.store.filter_if_ok(reasons)

    def dedup_rounds(self, job_id: int, threshold: float) -> None:
        """Near-duplicate evolved instructions filtered within each round (first wins, ``dedup``'s rule). Not
        across rounds: a lineage's round-2 rewrite adds 10-20 words to its round-1 one, so on a long instruction
        the two are alike by design, while within a round two alike rewrites come from two different seeds."""
        from ..dedup import find_duplicates

        by_round: dict[Any, list[dict[str, Any]]] = {}
        for rec in self.store.records(KIND, job_id, "ok"):
            by_round.setdefault((rec["input"] or {}).get("round"), []).append(rec)
        reasons = []
        for group in by_round.values():
            for dup in find_duplicates([str(r["output"]["prompt"]) for r in group], threshold):
                how = "exact" if dup.kind == "exact" else f"near, similarity {dup.similarity:.2f}"
                reasons.append((group[dup.index]["id"], f"duplicate of record #{group[dup.of]['id']} ({how})"))
        if reasons:
            self.store.filter_if_ok(reasons)

    # -- the job -----------------------------------------------------------------------------------------
    def run(self, *, resume: int | None = None, on_progress: Callable[[Progress], None] | None = None,
            cancel_event: threading.Event | None = None, wait: bool = False) -> JobResult:
        c, home = self.config, Path(self.store.path).parent
        merged, meta = _Merged(on_progress), self.metadata()
        with JobRunner(self.store, KIND, "evolve", c, resume=resume, fields=meta, on_progress=merged.part(1),
                       cancel_event=cancel_event, wait=wait, with_children=True) as job:
            price, answer_price = price_for(self.model_id, home), price_for(self.answer_model_id, home)
            job.note_price(price, self.model_id)
            job.note_price(answer_price, self.answer_model_id)
            stage_meta = {"technique": "evolutions", "use_case": meta["use_case"], "model_id": self.model_id,
                          "inference_type": c.model.provider, "requested": len(self.seeds) * c.rounds,
                          "num_per_topic": c.rounds, "model_parameters": {"methods": list(c.methods), "seed": c.seed}}
            with JobRunner(self.store, KIND, STAGE_KIND, self.identity(), fields=stage_meta,
                           on_progress=merged.part(0), cancel_event=cancel_event, wait=wait) as stage:
                self.eliminate_unanswerable(job.job_id)  # what a killed run answered but did not yet propagate
                for round_no in range(1, c.rounds + 1):
                    stage.execute(self.provider, self.evolution_items(stage.job_id, round_no),
                                  self.handle_evolution, settings=c.run, price=price, output_retries=1,
                                  phase=f"round {round_no}: rewriting")
                    if stage.cancelled:
                        break
                    job.execute(self.answer_provider, self.answer_items(stage.job_id, round_no), self.handle_answer,
                                settings=c.run, price=answer_price, output_retries=1,
                                phase=f"round {round_no}: answering")
                    self.eliminate_unanswerable(job.job_id)
                    if job.cancelled:
                        break
                stage_result = stage.finish()
            job.cancelled = job.cancelled or stage.cancelled
            if c.dedup_threshold is not None and not job.cancelled:
                self.dedup_rounds(job.job_id, c.dedup_threshold)
            meta["model_parameters"]["stage_jobs"] = {"evolutions": stage.job_id}
            self.store.update_job(KIND, job.job_id, model_parameters=meta["model_parameters"])
            job.add_sends(stage_result.requests_sent, stage_result.attempts)
            result = job.finish()
        result.notes.extend(summary_notes(self.store, result.job_id, stage.job_id))
        return result


def summary_notes(store: Store, job_id: int, stage_id: int) -> list[str]:
    """'evolutions job 7: 9 rewrites kept, 3 eliminated (2 copy, 1 refusal)'."""
    counts = store.count_records(KIND, stage_id)
    reasons: dict[str, int] = {}
    for rec in store.records(KIND, stage_id, "filtered"):
        phrase = (rec["error"] or "unknown").split(":", 1)[0]
        reasons[phrase] = reasons.get(phrase, 0) + 1
    why = ", ".join(f"{n} {k}" for k, n in sorted(reasons.items()))
    return [f"evolutions job {stage_id}: {counts['ok']} rewrites kept, {counts['filtered']} eliminated"
            + (f" ({why})" if why else "") + (f", {counts['failed']} failed" if counts["failed"] else "")]


def evolve(config: EvolveJob, *, home: str | Path | None = None, resume: int | None = None,
           on_progress: Callable[[Progress], None] | None = None,
           cancel_event: threading.Event | None = None) -> JobResult:
    """Run (or resume) an Evol-Instruct job to the end; its rows are in metadata.db (see ``rows``)."""
    return EvolveRun(config, home=home).run(resume=resume, on_progress=on_progress, cancel_event=cancel_event)


def fields(job: dict[str, Any], home: Any = None) -> Any:
    """An evolve job's items are (prompt: the evolved instruction, completion: its answer)."""
    from .fields import Fields

    return Fields("prompt", "completion")


# -- reading results ------------------------------------------------------------------------------------

COLUMNS = ["prompt", "completion", "round", "methods", "evolved_from", "ancestor", "ancestor_record_id", "topic",
           "record_id"]


def rows(job_id: int, *, store: Store | None = None, include_dropped: bool = False):
    """An evolve job's rows as a DataFrame: the evolved instruction and its answer with its lineage (round,
    methods, the instruction it was rewritten from, the ancestor and its record); with ``include_dropped`` the
    filtered and failed ones too, and why (``status``, ``reason``)."""
    import pandas as pd

    store = store or Store.open()
    data = []
    for rec in store.records(KIND, job_id):
        if rec["status"] != "ok" and not include_dropped:
            continue
        given, prov, out = rec["input"] or {}, rec["provenance"] or {}, rec["output"] or {}
        row = {"prompt": out.get("prompt", given.get("instruction")), "completion": out.get("completion"),
               "round": given.get("round"), "methods": ", ".join(prov.get("methods") or []),
               "evolved_from": given.get("evolved_from"), "ancestor": given.get("ancestor"),
               "ancestor_record_id": prov.get("ancestor_record_id"), "topic": rec["topic"], "record_id": rec["id"]}
        if include_dropped:
            row.update(status=rec["status"], reason=rec["error"])
        data.append(row)
    return pd.DataFrame(data, columns=COLUMNS + (["status", "reason"] if include_dropped else []))


# -- dry run ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class EvolvePreview(Estimate):
    """What an Evol-Instruct job will send and roughly cost, computed without a single call."""

    prompt: str          # the first rewriting request
    prompt_tokens: int
    exact_tokens: bool
    seeds: int
    rounds: int
    requests: int        # at most: one rewrite and one answer per lineage and round


def preview(config: EvolveJob, *, home: str | Path | None = None) -> EvolvePreview:
    """The first rewriting request and a token/cost estimate for every round; no call, nothing written."""
    from ..errors import ConfigError
    from ..home import db_path
    from ..tokens import CHARS_PER_TOKEN, count_tokens

    if not db_path(home).is_file():
        raise ConfigError(f"no generation job with id {config.source_job} (no metadata.db in {db_path(home).parent}); "
                          "`sdstudio jobs` lists them")
    seeds = prompts_from_job(Store.open(home), config.source_job, config.prompt_column, config.limit, home)
    first = prompt_for(pick_method(list(config.methods), config.seed, seeds[0].id, 1), seeds[0].text)
    first_tokens, exact = count_tokens(first, config.model)
    template = len(prompt_for("breadth", "")) // CHARS_PER_TOKEN
    per_seed = sum(len(p.text) for p in seeds) // CHARS_PER_TOKEN // len(seeds) + 20  # rewrites grow ~20 tokens
    rewrites = config.rounds * len(seeds)
    rewrite_in = rewrites * (template + per_seed)
    rewrite_out = rewrites * min(per_seed + 20, config.model.parameters.max_tokens)
    answer = config.answerer()
    answer_in, answer_out = rewrites * (per_seed + 20), rewrites * min(answer.parameters.max_tokens, 400)
    where = Path(home).expanduser() if home else None
    price = price_for(get_provider(config.model).model_id, where)  # builds no connection
    answer_price = price_for(get_provider(answer).model_id, where)
    return EvolvePreview(prompt=first, prompt_tokens=first_tokens, exact_tokens=exact, seeds=len(seeds),
                         rounds=config.rounds, requests=2 * rewrites, est_tokens_in=rewrite_in + answer_in,
                         est_tokens_out=rewrite_out + answer_out,
                         est_cost_usd=price.cost(rewrite_in, rewrite_out) + answer_price.cost(answer_in, answer_out),
                         price_known=price.known and answer_price.known)


__all__ = ["EvolutionSet", "EvolvePreview", "EvolveRun", "evolve", "fields", "preview", "rows"]
