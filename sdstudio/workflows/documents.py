"""Document-based generation: files -> chunks -> grounded Q/A per chunk, each item with its chunk's provenance.

A document job is a generation job (``records.job_kind = 'generation'``, ``technique = 'documents'``) whose
"topics" are its chunks, so it reuses ``GenerationRun`` whole: rounds, shortfall refills, dedup, resume by
request key and config identity. What this module adds, through the run's own hooks:

* ``DocumentPlan`` shows each call its chunk (``{{ chunk }}`` and ``{{ source }}`` in generate.jinja);
* ``round_items`` asks each chunk for its own count (``total`` spread evenly gives counts that differ by
  one) and stamps every request with its chunk's provenance, which ``handle`` copies onto each record:
  file, path, sha256, pages, char offsets, chunk index, token count and the chunk text;
* the optional grounding check (``grounding.py``): each round's items are checked before the next round
  counts what each chunk has. An item is ``ok`` only with a supported verdict whose evidence quote is in
  its chunk, ``filtered`` with the reason when unsupported (that chunk is asked again), and ``failed`` while
  its check has not passed: the check is part of the item's one row, never a row of its own. A run that
  stops between generation and check, or a check that fails, leaves the item failed with its generation
  kept, and the next run checks it again before sending anything else.

The job's identity is its config plus ``file_hashes`` (path -> sha256 of every input), filled in when it
runs: re-running the same config on the same files resumes with zero calls; changing a file makes a new
job. PDF passwords are never stored: ``password_env`` names the variable, or pass ``password=``.
"""
from __future__ import annotations

import copy
import json
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..config import DocumentJob, GenerationJob
from ..documents import Chunk, Corpus, load_corpus, save_upload
from ..engine import Progress, WorkItem
from ..errors import ConfigError
from ..pricing import price_for
from ..providers import Completion, get_provider
from ..runner import JobRunner
from ..store import Record
from ..templates import variables
from .grounding import GroundingCheck
from .jobs import JobResult
from .plan import GenerationPlan
from .sft import KIND, GenerationPreview, GenerationRun

TECHNIQUE = "documents"
DEFAULT_PER_CHUNK = 3
CHUNK_VARIABLES = {"chunk": "", "source": ""}  # what generate.jinja gets per call, besides the usual
Upload = tuple[str, bytes] | Mapping[str, Any]  # (name, bytes), or an ipywidgets FileUpload value entry


def chunk_targets(chunk_ids: Sequence[str], per_chunk: int | None, total: int | None) -> dict[str, int]:
    """Items to ask of each chunk: ``per_chunk`` each (default 3), or ``total`` spread evenly, the extra
    ones on evenly spaced chunks; with fewer items than chunks, evenly spaced chunks get one and the others
    none (they are left out)."""
    if total is None:
        return {cid: per_chunk or DEFAULT_PER_CHUNK for cid in chunk_ids}
    count = len(chunk_ids)
    base, extra = divmod(total, count)
    extra_at = {int((i + 0.5) * count / extra) for i in range(extra)}
    targets = {cid: base + (index in extra_at) for index, cid in enumerate(chunk_ids)}
    return {cid: n for cid, n in targets.items() if n > 0}


@dataclass(frozen=True)
class DocumentPlan(GenerationPlan):
    """A generation plan whose topics are chunk ids; each prompt shows its chunk."""

    chunks: dict[str, Chunk] = field(default_factory=dict)
    targets: dict[str, int] = field(default_factory=dict)
    files: tuple[str, ...] = ()
    per_chunk: int | None = None

    @classmethod
    def for_corpus(cls, config: DocumentJob, corpus: Corpus, home: str | Path | None = None) -> DocumentPlan:
        targets = chunk_targets([c.id for c in corpus.chunks], config.per_chunk, config.total)
        base = cls.build(generation_job(config, list(targets), max(targets.values())), home)
        plan = replace(base, chunks={c.id: c for c in corpus.chunks if c.id in targets}, targets=targets,
                       files=tuple(d.name for d in corpus.documents),
                       per_chunk=None if config.total else config.per_chunk or DEFAULT_PER_CHUNK)
        if "chunk" not in variables(plan.template, f"{plan.use_case.name}/generate.jinja"):
            raise ConfigError(f"use case {plan.use_case.name}: generate.jinja never shows the chunk "
                              "({{ chunk }}), so nothing would come from the documents; use document_qa")
        plan._check_template()  # now with the first real chunk
        return plan

    def prompt(self, topic: str, count: int, avoid: list[str] | tuple[str, ...] = (),
               attributes: dict[str, str] | None = None) -> str:
        chunk = self.chunks.get(topic)
        plan = self if chunk is None else replace(self, inputs={**self.inputs, "chunk": chunk.text,
                                                                 "source": chunk.source})
        return GenerationPlan.prompt(plan, topic, count, avoid, attributes)

    def calls_per_chunk(self) -> list[tuple[str, int]]:
        return [(topic, count) for topic, needed in self.targets.items() for count in self.calls(needed)]

    def metadata(self) -> dict[str, Any]:
        return {**super().metadata(), "technique": TECHNIQUE, "topics": list(self.files),
                "num_per_topic": self.per_chunk, "requested": sum(self.targets.values())}


def generation_job(config: DocumentJob, topics: list[str], per_topic: int) -> GenerationJob:
    """The GenerationJob a document job runs as: chunk ids as topics. The chunk variables get empty
    placeholders so the plan's template check passes; each prompt fills in its own chunk."""
    return GenerationJob(use_case=config.use_case, topics=topics, num_per_topic=per_topic,
                         batch_size=config.batch_size, instruction=config.instruction,
                         requirements=config.requirements, examples=config.examples,
                         inputs={**(config.inputs or {}), **CHUNK_VARIABLES}, dedup_threshold=config.dedup_threshold,
                         avoid_limit=config.avoid_limit, max_rounds=config.max_rounds, model=config.model,
                         run=config.run)


def load_job_corpus(config: DocumentJob, password: str | None = None) -> Corpus:
    """Load and chunk a job's files, counting tokens the way its model does (exactly for the local model)."""
    if password is None and config.password_env:
        password = os.environ.get(config.password_env)
        if password is None:
            raise ConfigError(f"password_env names {config.password_env}, which is not set; export it first")
    from ..tokens import count_tokens, counts_exactly

    def exact(text: str) -> int:
        return count_tokens(text, config.model)[0]

    return load_corpus(config.files, chunk_tokens=config.chunk_tokens, chunk_overlap=config.chunk_overlap,
                       password=password, count=exact if counts_exactly(config.model) else None)


def with_file_hashes(config: DocumentJob, corpus: Corpus) -> DocumentJob:
    """The config as the job's identity: its files' hashes filled in, or checked when already there."""
    if config.file_hashes is None:
        return config.model_copy(update={"file_hashes": dict(corpus.file_hashes)})
    if config.file_hashes != corpus.file_hashes:
        changed = min(path for path, _ in set(config.file_hashes.items()) ^ set(corpus.file_hashes.items()))
        raise ConfigError(f"{changed} is not the file this job's config was saved with (sha256 differs, or it "
                          "was added or removed); drop file_hashes from the config to start a new job")
    return config


class DocumentRun(GenerationRun):
    """One document job: load and chunk the files, then generate (and optionally ground) per chunk."""

    JOB_KIND = "documents"

    def __init__(self, config: DocumentJob, *, home: str | Path | None = None, store: Any = None,
                 provider: Any = None, password: str | None = None, corpus: Corpus | None = None):
        self.corpus = corpus or load_job_corpus(config, password)
        resolved = with_file_hashes(config, self.corpus)
        plan = DocumentPlan.for_corpus(resolved, self.corpus, home)
        self.generation = generation_job(resolved, plan.topics, max(plan.targets.values()))
        super().__init__(self.generation, home=home, store=store, provider=provider)
        self.plan: DocumentPlan = plan
        self.config = resolved  # type: ignore[assignment]  # identity, stored config, run settings, rounds
        self.provenance = {cid: chunk.provenance() for cid, chunk in plan.chunks.items()}
        self.groups: dict[int, list[str]] = {}
        for topic in plan.topics:
            self.groups.setdefault(plan.targets[topic], []).append(topic)
        self.grounding: GroundingCheck | None = self._setup_judge(resolved) if resolved.grounding else None

    def _setup_judge(self, config: DocumentJob) -> GroundingCheck:
        spec = config.judge or config.model.model_copy(
            update={"parameters": config.model.parameters.model_copy(update={"temperature": 0.0})})
        same_endpoint = spec.model_dump(exclude={"parameters"}) == config.model.model_dump(exclude={"parameters"})
        self.judge = self.provider if same_endpoint else get_provider(spec)
        judge_model_id = self.judge.model_id
        if not judge_model_id:
            raise ConfigError(f"the grounding judge (provider {spec.provider}) needs a model id (judge.model)")
        self.judge_price = price_for(judge_model_id, Path(self.store.path).parent)
        first = next(iter(self.plan.chunks.values()))
        return GroundingCheck.build(spec.provider, judge_model_id, spec.parameters, self.plan.use_case, first.text,
                                    first.source)

    # -- the run's hooks ---------------------------------------------------------------------------
    def round_items(self, round_no: int, job_id: int) -> list[WorkItem]:
        """Each chunk's calls for this round; a call whose items wait for (or failed) their check is not
        sent again: its reply was paid, and the check is what is retried."""
        work: list[WorkItem] = []
        held = self.store.unchecked_request_keys(KIND, job_id) if self.grounding else set()
        for count, topics in self.groups.items():
            view = copy.copy(self)  # GenerationRun asks num_per_topic of every topic: one view per count
            view.plan = replace(self.plan, topics=topics)
            view.config = self.generation.model_copy(update={"num_per_topic": count})
            work.extend(item for item in GenerationRun.round_items(view, round_no, job_id) if item.key not in held)
        return work

    def _nothing_short(self, job_id: int) -> bool:
        return False  # chunks ask for different counts, and items waiting for their check count as held

    def item_provenance(self, topic: str, drawn: dict[str, str] | None) -> Any:
        return self.provenance[topic]  # the chunk's file, pages and text span

    def _kept_by_topic(self, job_id: int, before_round: int, needed: int) -> tuple[dict[str, int], dict[str, list[Any]]]:
        # an item waiting for its check counts as held: a check that failed makes it retryable, not a reason to
        # generate a new one
        return self.store.kept_by_topic(KIND, job_id, before_round, short_of=needed, held=self.grounding is not None)

    def supersede_failures(self, job_id: int, round_no: int, topics: set[str]) -> None:
        self.store.supersede_failed(KIND, job_id, round_no, topics, keep_unchecked=self.grounding is not None)

    def handle(self, item: WorkItem, completion: Completion) -> list[Record]:
        records = super().handle(item, completion)
        for record in records:
            record.provenance = item.provenance
        if self.grounding is not None:  # not ok until its check passes
            records = [self.grounding.pending(record) for record in records]
        return records

    def finish_items(self, job: JobRunner, *, retry_failed: bool = False) -> None:
        """The grounding check of every item written so far and not checked yet (``retry_failed``: also those
        whose check failed in an earlier run), through the job's executor, as the items' own outcome."""
        if self.grounding is None:
            return
        rows = self.store.unchecked_items(KIND, job.job_id, retry_failed=retry_failed)
        if not rows:
            return
        work = []
        for row in rows:
            chunk = self.plan.chunks.get(row["topic"])
            source = chunk.source if chunk else (row["provenance"] or {}).get("file", "")
            work.append(self.grounding.item(row, chunk.text if chunk else "", source))
        job.execute(self.judge, work, self.grounding.handle, settings=self.config.run, price=self.judge_price,
                    output_retries=1, failure_records=self.grounding.failed, phase="grounding check")

    def run(self, *, resume: int | None = None, on_progress: Callable[[Progress], None] | None = None,
            cancel_event: threading.Event | None = None, wait: bool = False) -> JobResult:
        if resume is not None and self.store.get_job(KIND, resume).get("technique") != TECHNIQUE:
            raise ConfigError(f"job {resume} is not a documents job; `sdstudio jobs` lists them")
        result = super().run(resume=resume, on_progress=on_progress, cancel_event=cancel_event, wait=wait)
        result.notes = [*self.corpus.messages(), *result.notes]
        return result


# -- notebook / CLI entry points ------------------------------------------------------------------

def document_job(files: Sequence[str | Path | Upload] = (), *, home: str | Path | None = None,
                 config: DocumentJob | None = None, **fields: Any) -> DocumentJob:
    """A DocumentJob for paths and uploads: uploads ((name, bytes) pairs or an ipywidgets FileUpload's
    value entries) are stored in SDSTUDIO_HOME/uploads under their hash and referenced by that path."""
    paths = [str(_stored(entry, home)) for entry in files]
    base = config.model_dump(mode="json", exclude_none=True) if config is not None else {"kind": "documents"}
    data = {**base, **fields}
    if paths:
        data["files"] = [*(base.get("files") or []), *paths]
    from ..config import parse_job

    return parse_job(DocumentJob, data, "documents job", home)


def _stored(entry: str | Path | Upload, home: str | Path | None) -> str | Path:
    if isinstance(entry, (str, Path)):
        return entry
    if isinstance(entry, Mapping):
        return save_upload(entry["content"], str(entry["name"]), home)
    name, data = entry
    return save_upload(data, name, home)


def generate_documents(config: DocumentJob | None = None, *, files: Sequence[str | Path | Upload] = (),
                       home: str | Path | None = None, resume: int | None = None, password: str | None = None,
                       on_progress: Callable[[Progress], None] | None = None,
                       cancel_event: threading.Event | None = None, **fields: Any) -> JobResult:
    """Run (or resume) a document job to the end; ``files``/``fields`` build or extend the config."""
    if files or fields or config is None:
        config = document_job(files, home=home, config=config, **fields)
    return DocumentRun(config, home=home, password=password).run(resume=resume, on_progress=on_progress,
                                                                  cancel_event=cancel_event)


@dataclass(frozen=True)
class DocumentPreview(GenerationPreview):
    """The generation preview plus what the documents gave: counts and per-file problems."""

    documents: int = 0
    chunks: int = 0
    grounding_requests: int = 0
    messages: tuple[str, ...] = ()


def preview(config: DocumentJob, *, home: str | Path | None = None, password: str | None = None,
            corpus: Corpus | None = None) -> DocumentPreview:
    """The first prompt and a token/cost estimate, without a call and without writing anything."""
    from ..tokens import count_tokens

    corpus = corpus or load_job_corpus(config, password)
    plan = DocumentPlan.for_corpus(with_file_hashes(config, corpus), corpus, home)
    model_id = get_provider(config.model).model_id  # builds no connection
    calls = plan.calls_per_chunk()
    first = plan.prompt(*calls[0])
    first_tokens, exact = count_tokens(first, config.model)
    tokens_in = sum(count_tokens(plan.prompt(topic, count), config.model)[0] for topic, count in calls)
    per_item = (sum(count_tokens(json.dumps(e, ensure_ascii=False), config.model)[0] for e in plan.examples)
                // max(len(plan.examples), 1)) or 100
    tokens_out = sum(min(per_item * count + 10, config.model.parameters.max_tokens) for _, count in calls)
    items = sum(plan.targets.values())
    checks = items if config.grounding else 0
    mean_chunk = sum(c.tokens for c in plan.chunks.values()) // max(len(plan.chunks), 1)
    check_in, check_out = checks * (mean_chunk + per_item + 150), checks * 40  # a chunk and an item in, a sentence out
    folder = Path(home).expanduser() if home else None
    price = price_for(model_id, folder)
    judge_price = price_for((config.judge.model if config.judge else None) or model_id, folder)
    cost = price.cost(tokens_in, tokens_out) + judge_price.cost(check_in, check_out)
    return DocumentPreview(prompt=first, prompt_tokens=first_tokens, exact_tokens=exact, model_id=model_id,
                           requests=len(calls), items=items, est_tokens_in=tokens_in + check_in,
                           est_tokens_out=tokens_out + check_out, est_cost_usd=cost,
                           price_known=price.known and (judge_price.known or not checks),
                           documents=len(corpus.documents), chunks=len(corpus.chunks), grounding_requests=checks,
                           messages=tuple(corpus.messages()))
