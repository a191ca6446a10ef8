"""Document-based generation: files -> chunks -> grounded Q/A per chunk, each item with its chunk's provenance.

A document job is a generation job (``records.job_kind = 'generation'``, ``technique = 'documents'``) whose
"topics" are its chunks, so it reuses ``GenerationRun`` whole: rounds, shortfall refills, dedup, resume by
request key and config identity. What this module adds, through the run's own hooks:

* ``DocumentPlan`` shows each call its chunk (``{{ chunk }}`` and ``{{ source }}`` in generate.jinja);
* ``round_items`` asks each chunk for its own count (``total`` spread evenly gives counts that differ by
  one) and stamps every request with its chunk's provenance, which ``handle`` copies onto each record:
  file, path, sha256, pages, char offsets, chunk index, token count and the chunk text;
* the optional grounding check: before each round's shortfall is computed, every ok item not yet checked
  goes to a judge ("is the answer supported by the chunk?"). Unsupported items become ``filtered`` with
  the reason, so the next round asks that chunk again; the verdict is stored in the record's provenance
  (``grounding``) and its tokens added to the record's, so a resumed job never checks an item twice. A
  check that fails (provider error, unusable reply) is a failed row keyed by the check; it is removed
  when a later run's check succeeds.

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

from ..config import DocumentJob, GenerationJob, ModelSpec
from ..documents import Chunk, Corpus, load_corpus, save_upload
from ..engine import InvalidOutput, Progress, WorkItem, request_key
from ..executors import executor_class
from ..errors import ConfigError
from ..parsing import parse_items
from ..pricing import price_for
from ..providers import ChatRequest, Completion, get_provider
from ..store import Record
from ..templates import render, variables
from ..usecases import SHIPPED_TEMPLATES
from ..runner import JobRunner
from .jobs import JobResult
from .plan import GenerationPlan
from .sft import KIND, GenerationPreview, GenerationRun

TECHNIQUE = "documents"
DEFAULT_PER_CHUNK = 3
CHUNK_VARIABLES = {"chunk": "", "source": ""}  # what generate.jinja gets per call, besides the usual
GROUND_VARIABLES = {"chunk", "source", "question", "answer"}
GROUND_SCHEMA = {"type": "object", "additionalProperties": False, "required": ["supported", "reason"],
                 "properties": {"supported": {"type": "boolean"}, "reason": {"type": "string"}}}
GROUND_MAX_TOKENS = 300
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

    def prompt(self, topic: str, count: int, avoid: list[str] | tuple[str, ...] = ()) -> str:
        chunk = self.chunks.get(topic)
        plan = self if chunk is None else replace(self, inputs={**self.inputs, "chunk": chunk.text,
                                                                 "source": chunk.source})
        return GenerationPlan.prompt(plan, topic, count, avoid)

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
    JOB_KIND = "documents"
    """One document job: load and chunk the files, then generate (and optionally ground) per chunk."""

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
        self.phases = _Phases(None)
        self.cancel_event: threading.Event | None = None
        self.checks_sent = 0
        if resolved.grounding:
            self._setup_judge(resolved)

    def _setup_judge(self, config: DocumentJob) -> None:
        spec = config.judge or config.model.model_copy(
            update={"parameters": config.model.parameters.model_copy(update={"temperature": 0.0})})
        same_endpoint = spec.model_dump(exclude={"parameters"}) == config.model.model_dump(exclude={"parameters"})
        self.judge_spec: ModelSpec = spec
        self.judge = self.provider if same_endpoint else get_provider(spec)
        self.judge_model_id = self.judge.model_id
        if not self.judge_model_id:
            raise ConfigError(f"the grounding judge (provider {spec.provider}) needs a model id (judge.model)")
        self.judge_parameters = spec.parameters.model_copy(
            update={"max_tokens": min(spec.parameters.max_tokens, GROUND_MAX_TOKENS)})
        self.judge_price = price_for(self.judge_model_id, Path(self.store.path).parent)
        own = self.plan.use_case.folder / "ground.jinja"
        self.ground_template = (own if own.is_file() else SHIPPED_TEMPLATES / "document_qa" / "ground.jinja").read_text(
            encoding="utf-8")
        unknown = sorted(variables(self.ground_template, "ground.jinja") - GROUND_VARIABLES)
        if unknown:
            raise ConfigError(f"ground.jinja uses {', '.join(unknown)}; it can use {', '.join(sorted(GROUND_VARIABLES))}")

    # -- the run's hooks ---------------------------------------------------------------------------
    def round_items(self, round_no: int, job_id: int) -> list[WorkItem]:
        """Check what earlier rounds wrote (unsupported items leave a shortfall), then each chunk's calls."""
        if self.config.grounding:
            self.ground(job_id)
        work: list[WorkItem] = []
        for count, topics in self.groups.items():
            view = copy.copy(self)  # GenerationRun asks num_per_topic of every topic: one view per count
            view.plan = replace(self.plan, topics=topics)
            view.config = self.generation.model_copy(update={"num_per_topic": count})
            work.extend(GenerationRun.round_items(view, round_no, job_id))
        return [replace(item, provenance=self.provenance[item.topic]) for item in work]

    def handle(self, item: WorkItem, completion: Completion) -> list[Record]:
        records = super().handle(item, completion)
        for record in records:
            record.provenance = item.provenance
        return records

    def run(self, *, resume: int | None = None, on_progress: Callable[[Progress], None] | None = None,
            cancel_event: threading.Event | None = None, wait: bool = False) -> JobResult:
        if resume is not None and self.store.get_job(KIND, resume).get("technique") != TECHNIQUE:
            raise ConfigError(f"job {resume} is not a documents job; `sdstudio jobs` lists them")
        self.phases, self.cancel_event, self.checks_sent = _Phases(on_progress), cancel_event, 0
        result = super().run(resume=resume, on_progress=self.phases.generation, cancel_event=cancel_event, wait=wait)
        if self.config.grounding and result.status == "done" and self._unchecked(result.job_id):
            # the last round's items (or a check cut short): check them before the job counts as done
            sent, resumed, notes = result.requests_sent, result.resumed, result.notes
            with JobRunner(self.store, KIND, self.JOB_KIND, self.config, resume=result.job_id,
                           cancel_event=cancel_event) as job:
                job.cancelled = self.ground(job.job_id)
                result = job.finish()
            result.requests_sent, result.resumed, result.notes = sent, resumed, notes
        result.requests_sent += self.checks_sent
        result.notes = [*self.corpus.messages(), *result.notes]
        return result

    # -- grounding ---------------------------------------------------------------------------------
    def _unchecked_rows(self, job_id: int) -> list[dict[str, Any]]:
        return self.store.ungrounded_records(KIND, job_id)

    def _unchecked(self, job_id: int) -> int:
        return len(self._unchecked_rows(job_id))

    def ground(self, job_id: int) -> bool:
        """Check every ok item not checked yet; returns True when cancelled."""
        rows = self._unchecked_rows(job_id)
        if not rows:
            return False
        work = [self._check_item(row) for row in rows]
        executor = executor_class(self.config.run.executor)(
            self.judge, self.store, KIND, job_id, self.config.run, price=self.judge_price,
            on_progress=self.phases.grounding, output_retries=1, cancel_event=self.cancel_event)
        result = executor.execute(work, self._verdict)
        self.phases.end_grounding(result.progress)
        self.checks_sent += result.progress.done - result.progress.cached
        return result.cancelled

    def _check_item(self, row: dict[str, Any]) -> WorkItem:
        output = row["output"] if row["output"] is not None else {}
        provenance = row["provenance"] if row["provenance"] is not None else {}
        chunk = self.plan.chunks.get(row["topic"])
        p_field, c_field = self.plan.use_case.prompt_field, self.plan.use_case.completion_field
        if isinstance(output, dict) and p_field in output and c_field in output:
            question, answer = str(output[p_field]), str(output[c_field])
        else:
            question, answer = "", json.dumps(output, ensure_ascii=False)
        context = {"chunk": provenance.get("text") or (chunk.text if chunk else ""), "question": question,
                   "answer": answer, "source": chunk.source if chunk else provenance.get("file", "")}
        prompt = render(self.ground_template, context, "ground.jinja").strip("\n")
        request = ChatRequest.of(prompt, self.judge_parameters, GROUND_SCHEMA)
        key = request_key(self.judge_spec.provider, self.judge_model_id, request, salt=f"ground|{row['item_key']}")
        return WorkItem(key=key, request=request, topic=row["topic"], input={"grounding_of": row["item_key"]},
                        provenance={k: v for k, v in provenance.items() if k != "text"})

    def _verdict(self, item: WorkItem, completion: Completion) -> list[Record]:
        """The verdict as a stamp on the checked record (unsupported -> filtered with the reason): pure, the
        run's writer applies it, and a check's earlier failed row goes with it."""
        value = completion.parsed
        if not (isinstance(value, dict) and isinstance(value.get("supported"), bool)):
            valid = parse_items(completion.text, GROUND_SCHEMA).valid
            value = valid[0] if valid else None
        if not (isinstance(value, dict) and isinstance(value.get("supported"), bool)):
            raise InvalidOutput('grounding check: the judge did not reply {"supported": true|false, "reason": ...}')
        supported = value["supported"]
        reason = " ".join(str(value.get("reason", "")).split())[:300]
        verdict = {"supported": supported, "reason": reason, "judge": self.judge_model_id}
        return [Record(job_kind=KIND, job_id=0, item_key=item.input["grounding_of"], request_key=item.key,
                       status="ok" if supported else "filtered", provenance={"grounding": verdict},
                       error=None if supported else f"not supported by its chunk: {reason}",
                       tokens_in=completion.usage.input_tokens, tokens_out=completion.usage.output_tokens, stamp=True)]


class _Phases:
    """Generation and grounding progress as one running figure, so a bar never goes backwards."""

    def __init__(self, listener: Callable[[Progress], None] | None):
        self.listener = listener
        self.last = Progress()
        self.checked = Progress()

    def generation(self, progress: Progress) -> None:
        self.last = progress
        self._emit(Progress())

    def grounding(self, progress: Progress) -> None:
        self._emit(replace(progress, note=f"grounding check; {progress.note}" if progress.note else "grounding check"))

    def end_grounding(self, progress: Progress) -> None:
        self.checked = _plus(self.checked, progress)

    def _emit(self, current: Progress) -> None:
        if self.listener is not None:
            self.listener(_plus(_plus(self.last, self.checked), current))


def _plus(a: Progress, b: Progress) -> Progress:
    return replace(a, total=a.total + b.total, done=a.done + b.done, ok=a.ok + b.ok, failed=a.failed + b.failed,
                   cached=a.cached + b.cached, in_flight=a.in_flight + b.in_flight, retries=a.retries + b.retries,
                   tokens_in=a.tokens_in + b.tokens_in, tokens_out=a.tokens_out + b.tokens_out,
                   cost_usd=a.cost_usd + b.cost_usd, elapsed_s=a.elapsed_s + b.elapsed_s, note=b.note or a.note)


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
