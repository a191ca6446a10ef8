"""SFT and freeform generation from topics: topics x N items, k items per call, through the engine.

Round 0 asks for every topic's N items, ``batch_size`` per call. Each later round asks only for the
shortfall (items that failed validation, were cut off, or were removed as duplicates), showing the model
a bounded list of what the topic already has so it does not repeat itself. A round's prompts depend only
on the rows of earlier rounds, listed in a fixed order, so a killed run rebuilds the very same requests
and the engine skips those already answered: resuming never pays twice.

Counts are in items: a request for k items that fails leaves k failed rows, a reply with fewer items than
asked leaves failed rows for the missing ones. When a later round asks a topic again, that topic's failed
rows from earlier rounds become ``filtered`` ("asked again in round r: <reason>"), so ``failed`` counts
only items that ended failed (the exit code's failed ratio), the reasons stay readable, and a resumed run
never re-sends an earlier round's request (filtered rows count as answered).
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Any

from ..config import GenerationJob
from ..diagnostics import explain
from ..engine import InvalidOutput, Progress, WorkItem, request_key
from ..parsing import parse_items
from ..pricing import price_for
from ..providers import Completion, get_provider, load_clients, required_model_id
from ..sqlcheck import check_sql
from ..store import Record, Store
from ..work import DeferredWorkItem, PlannedItems, recipe_key
from ..runner import JobRunner
from .jobs import Estimate, JobResult
from .plan import LIST_KEY, GenerationPlan

KIND = "generation"


@dataclass(frozen=True, slots=True)
class Call:
    """One request of a round before its prompt exists: enough for its key, and to render it when it is sent."""

    topic: str
    part: int
    count: int
    avoid: tuple[str, ...] = ()


class EveryTopic(Sequence[Call]):
    """Round 0's calls, every topic with the same counts, made as they are taken instead of listed: a 100k-topic
    job plans its first round at once and holds no 100k calls."""

    def __init__(self, topics: list[str], counts: list[int]):
        self.topics, self.counts = topics, counts

    def __len__(self) -> int:
        return len(self.topics) * len(self.counts)

    def __iter__(self):
        counts = list(enumerate(self.counts))
        return (Call(topic, part, count) for topic in self.topics for part, count in counts)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return list(islice(self, *index.indices(len(self))))
        topic, part = divmod(range(len(self))[index], len(self.counts))
        return Call(self.topics[topic], part, self.counts[part])


@dataclass(frozen=True)
class CallMeta:
    topic: str
    round: int
    part: int
    count: int


class GenerationRun:
    """One generation job: its plan, its provider, and the rounds that fill every topic."""

    JOB_KIND = "generation"  # what ``jobs.kind`` says (the documents workflow runs the same rounds)

    def __init__(self, config: GenerationJob, *, home: str | Path | None = None, store: Store | None = None,
                 provider: Any = None):
        self.config = config
        self.home = home
        self.plan = GenerationPlan.build(config, home)
        self.store = store or Store.open(home)
        self.provider = provider or get_provider(config.model)
        self.model_id = required_model_id(self.provider, config.model)
        self.keys_from_prompts = False  # a job begun before recipe keys (see _keyed_by_prompt)

    # -- requests ----------------------------------------------------------------------------------
    def round_items(self, round_no: int, job_id: int) -> Sequence[WorkItem]:
        """The calls of one round, made as they are sent (a call's prompt is rendered then, not here). Round 0 is
        fixed by the config; round r > 0 is fixed by the ok rows of rounds before r (the shortfall per topic, and
        the avoid list in item-key order)."""
        needed = self.config.num_per_topic
        if round_no == 0:
            calls: Sequence[Call] = EveryTopic(self.plan.topics, self.plan.calls(needed))
        else:
            held, kept = self._kept_by_topic(job_id, round_no, needed)
            limit = self.config.avoid_limit
            calls = []
            for topic in self.plan.topics:
                shortfall = needed - held.get(topic, 0)
                if shortfall <= 0:
                    continue
                avoid = tuple(self.plan.summarise(v) for v in kept.get(topic, [])[-limit:]) if limit else ()
                calls.extend(Call(topic, part, count, avoid) for part, count in enumerate(self.plan.calls(shortfall)))
        return PlannedItems(calls, partial(self._item, round_no))

    def _item(self, round_no: int, call: Call) -> WorkItem:
        """One call's work item: its key from the job's recipe and the call's variables, its prompt rendered when
        the engine first asks for it (a finished item is found by its key and never rendered)."""
        drawn = self.plan.draw(call.topic, round_no, call.part)  # None without attributes
        salt = f"gen|{call.topic}|{round_no}|{call.part}"
        build = partial(self.plan.request, call.topic, call.count, list(call.avoid), drawn)
        fields = {"topic": call.topic,  # input is all the handler needs
                  "input": {"topic": call.topic, "round": round_no, "part": call.part, "count": call.count},
                  "provenance": self.item_provenance(call.topic, drawn)}
        provider = self.config.model.provider
        if self.keys_from_prompts:
            request = build()
            return WorkItem(key=request_key(provider, self.model_id, request, salt=salt), request=request, **fields)
        key = recipe_key(provider, self.model_id, self.plan.recipe, [call.count, list(call.avoid), drawn], salt)
        return DeferredWorkItem(key, build=build, **fields)

    def item_provenance(self, topic: str, drawn: dict[str, str] | None) -> Any:
        """What a call's records carry as provenance: its attributes' draw, if any."""
        return {"attributes": drawn} if drawn else None

    def _kept_by_topic(self, job_id: int, before_round: int, needed: int) -> tuple[dict[str, int], dict[str, list[Any]]]:
        return self.store.kept_by_topic(KIND, job_id, before_round, short_of=needed)

    def _nothing_short(self, job_id: int) -> bool:
        """Has every topic its items (ok, of any round)? Then a later round has nothing to ask: a finished 100k-item
        job learns it from one count instead of reading its rows per topic. (A topic never holds more than it asked
        for: a reply's extra items are dropped and a round asks only a shortfall.)"""
        wanted = self.config.num_per_topic
        return self.store.topics_with_items(KIND, job_id, wanted) >= len(self.plan.topics)

    def _keyed_by_prompt(self, job_id: int) -> bool:
        """Was this job begun by an sdstudio that keyed each request by its rendered prompt (before requests were
        keyed by the job's recipe)? Then it keeps being keyed so, or its finished requests would be sent again.
        Its first calls tell: rows under their prompt keys and none under their recipe keys."""
        first = list(self.round_items(0, job_id)[:8])
        if self.store.present_request_keys(KIND, job_id, [item.key for item in first]):
            return False  # keyed by recipe: found without rendering a prompt
        prompt_keys = [request_key(self.config.model.provider, self.model_id, item.request,
                                   salt=f"gen|{item.topic}|0|{item.input['part']}") for item in first]
        return bool(self.store.present_request_keys(KIND, job_id, prompt_keys))

    # -- replies -----------------------------------------------------------------------------------
    def handle(self, item: WorkItem, completion: Completion) -> list[Record]:
        """Reply -> one record per item asked: valid ones ok, invalid or missing ones failed with the reason
        and raw text."""
        meta = CallMeta(**item.input)
        result = parse_items(completion.text, self.plan.item_schema, list_key=LIST_KEY)
        max_tokens = item.request.parameters.max_tokens
        if result.error is not None:  # "raise max_tokens" only when the provider says the reply hit it
            raise InvalidOutput(explain(result.error, completion.finish_reason, max_tokens))
        if not result.items:  # a forced tool call cut off at max_tokens comes back as no items at all
            raise InvalidOutput(explain("the reply holds no items", completion.finish_reason, max_tokens))
        records = []  # each keeps the request's provenance: its attributes' draw, if any
        for index, parsed in enumerate(result.items[:meta.count]):
            error = parsed.error or self._check(parsed.value)
            first = index == 0
            records.append(Record(
                job_kind=KIND, job_id=0, item_key=f"{item.key}:{index}", status="failed" if error else "ok",
                topic=meta.topic, input=item.input, output=parsed.value, error=error, provenance=item.provenance,
                raw_text=completion.text if (error or first) else None,
                tokens_in=completion.usage.input_tokens if first else 0,
                tokens_out=completion.usage.output_tokens if first else 0))
        missing = explain(f"the reply held {len(records)} of the {meta.count} items asked", completion.finish_reason,
                          max_tokens)
        records.extend(Record(job_kind=KIND, job_id=0, item_key=f"{item.key}:{index}", status="failed",
                              topic=meta.topic, input=item.input, error=missing, provenance=item.provenance)
                       for index in range(len(records), meta.count))
        return records

    @staticmethod
    def failure_keys(item: WorkItem) -> list[str]:
        """A failed request fails every item it asked for (the keys its items would have had)."""
        return [f"{item.key}:{index}" for index in range(item.input["count"])]

    def supersede_failures(self, job_id: int, round_no: int, topics: set[str]) -> None:
        """This round asks these topics again: their failed rows of earlier rounds become filtered."""
        self.store.supersede_failed(KIND, job_id, round_no, topics)

    def finish_items(self, job: JobRunner, *, retry_failed: bool = False) -> None:
        """Later steps of the items written so far, before a round counts what each topic has: none here
        (documents runs its grounding check). ``retry_failed``: this run resumes an earlier one."""

    def _check(self, value: Any) -> str | None:
        """Use-case validators beyond the schema (text2sql: the SQL must run against the schema)."""
        for name in self.plan.use_case.validators:
            if name == "sql" and isinstance(value, dict):
                error = check_sql(str(value.get("sql", "")), self.plan.inputs.get("db_schema", ""))
                if error:
                    return error
        return None

    # -- the job -----------------------------------------------------------------------------------
    def run(self, *, resume: int | None = None, on_progress: Callable[[Progress], None] | None = None,
            cancel_event: threading.Event | None = None, wait: bool = False) -> JobResult:
        from ..dedup import JobDedup
        from ..engine import Engine
        from ..executors import executor_class

        load_clients(self.provider)  # before the job's clock starts: its first request waits for no import
        fields = {"model_id": self.model_id, **self.plan.metadata()}
        with JobRunner(self.store, KIND, self.JOB_KIND, self.config, resume=resume, fields=fields,
                       on_progress=on_progress, cancel_event=cancel_event, wait=wait) as job:
            price = price_for(self.model_id, Path(self.store.path).parent)
            job.note_price(price, self.model_id)
            if job.resumed:
                self.keys_from_prompts = self._keyed_by_prompt(job.job_id)
                self.finish_items(job, retry_failed=True)  # what an earlier run left half done: its replies are paid
            refused: set[str] = set()  # topics the server refused outright: asking again cannot help
            dedup = options = None
            if self.config.dedup_threshold is not None:
                dedup = JobDedup(self.store, KIND, job.job_id, threshold=self.config.dedup_threshold,
                                 fields=[self.plan.summary_field] if self.plan.summary_field else None)
                # the local engine dedups each batch of rows as it is written, while requests are in flight; the
                # pass after the round then has only the last rows left
                in_process = executor_class(self.config.run.executor) is Engine
                options = {"after_write": dedup.after_write, "warm_up": dedup.warm_up} if in_process else None
            for round_no in range(self.config.max_rounds + 1):
                if job.cancelled or (round_no and self._nothing_short(job.job_id)):
                    break
                work = self.round_items(round_no, job.job_id)
                if refused:
                    work = [w for w in work if w.topic not in refused]
                if not work:
                    break
                if round_no:
                    self.supersede_failures(job.job_id, round_no, {w.topic for w in work})
                result = job.execute(self.provider, work, self.handle, settings=self.config.run, price=price,
                                     output_retries=1, failure_keys=self.failure_keys, **(options or {}))
                if result.permanent:
                    refused |= {w.topic for w in work if w.key in result.permanent}
                if job.cancelled:
                    break
                self.finish_items(job)
                if job.cancelled:
                    break
                if dedup is not None and not dedup.settled():
                    dedup.run()
            return job.finish()


def generate(config: GenerationJob, *, home: str | Path | None = None, resume: int | None = None,
             on_progress: Callable[[Progress], None] | None = None,
             cancel_event: threading.Event | None = None) -> JobResult:
    """Run (or resume) a generation job to the end; the rows are in metadata.db as they finish."""
    return GenerationRun(config, home=home).run(resume=resume, on_progress=on_progress, cancel_event=cancel_event)


@dataclass(frozen=True)
class GenerationPreview(Estimate):
    """What a job will send and roughly cost, computed without a single call."""

    prompt: str            # the exact prompt of the first call (first topic)
    prompt_tokens: int
    exact_tokens: bool     # counted by the model's own tokenizer (local) or estimated (~4 chars/token)
    model_id: str | None
    requests: int          # calls of the first round; follow-up rounds only fill shortfalls
    items: int
    attributes: str = ""   # the attributes' values and chances, one line each (samplers.describe)


def preview(config: GenerationJob, *, home: str | Path | None = None) -> GenerationPreview:
    """The first prompt, its token count, and a token/cost estimate for the whole job."""
    import json

    from ..tokens import count_tokens

    plan = GenerationPlan.build(config, home)
    model_id = get_provider(config.model).model_id  # builds no connection
    calls = [(topic, count, plan.draw(topic, 0, part)) for topic in plan.topics
             for part, count in enumerate(plan.calls(config.num_per_topic))]
    first = plan.prompt(calls[0][0], calls[0][1], attributes=calls[0][2])
    first_tokens, exact = count_tokens(first, config.model)
    tokens_in = sum(count_tokens(plan.prompt(topic, count, attributes=drawn), config.model)[0]
                    for topic, count, drawn in calls)
    per_item = (sum(count_tokens(json.dumps(e, ensure_ascii=False), config.model)[0] for e in plan.examples)
                // max(len(plan.examples), 1)) or 100
    max_out = config.model.parameters.max_tokens
    tokens_out = sum(min(per_item * count + 10, max_out) for _, count, _ in calls)
    price = price_for(model_id, Path(home).expanduser() if home else None)
    return GenerationPreview(prompt=first, prompt_tokens=first_tokens, exact_tokens=exact, model_id=model_id,
                             requests=len(calls), items=len(plan.topics) * config.num_per_topic,
                             attributes=plan.sampler.describe() if plan.sampler else "",
                             est_tokens_in=tokens_in, est_tokens_out=tokens_out,
                             est_cost_usd=price.cost(tokens_in, tokens_out), price_known=price.known)
