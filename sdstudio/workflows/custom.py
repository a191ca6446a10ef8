"""Custom workflows: ordered prompt steps run over every selected row of a user dataset.

Each step's output becomes a column that later steps can use, and each step may use its own model.
Decisions:

* **Row-level pipelining.** A row's next step is asked as soon as its previous one came back: there is
  no barrier between steps, and later steps go first, so finished rows appear from the first seconds.
  Steps on the same model endpoint share one engine, so concurrency and rate limits hold per endpoint
  (``pipeline.QueueEngine``).
* **One record per output row** (``job_kind='generation'``, ``technique='workflow'``): ``input`` = the
  selected input columns, ``output`` = input columns + every step's output column so far,
  ``provenance`` = source row, copy number and, per finished step, its request key and usage. A row
  is ``ok`` when every step finished; ``failed`` when a step failed (its reason and raw reply are kept,
  later steps are skipped) or when the run stopped before the row was done ("unfinished"). Export,
  judging and review then see exactly the dataset the user expects: one row per input row.
* **Resume.** Finished steps are stored with their request keys; a re-run (or ``resume=JOB_ID``)
  rebuilds each row's requests and sends only the steps whose key is not stored yet: a finished job
  costs nothing, a killed one continues mid-chain. A row whose content changed gets a new key and its
  old record is marked filtered as stale.
* **Spark** (``run.executor: spark``): the unfinished rows go to partitions, each running this same row
  pipeline on its share of the limits (``executors/spark_rows.py``); the records are the local run's.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..config import WorkflowJob, load_config
from ..datasets import (
    column_types,
    plain,
    preview_dataset,
    read_dataset,
    save_upload,
    select_rows,
)
from ..engine import Progress, WorkItem, request_key, run_coroutine
from ..errors import ConfigError, SdstudioError
from ..pricing import price_for
from ..providers import Completion, get_provider
from ..store import Record, Store
from .custom_plan import (
    RowInput,
    StepPlan,
    StepPreview,
    WorkflowPlan,
    WorkflowPreview,
    preview,
)
from ..runner import JobRunner
from .jobs import JobResult
from .pipeline import MergedProgress, Outcome, QueueEngine, RecordSink, drive

KIND = "generation"
STALE = "stale: the input row changed or is no longer selected"
ACTIVE_ROWS_PER_SLOT = 2  # rows in flight per request slot: enough to keep every engine busy


@dataclass
class RowState:
    """A row on its way through the steps: outputs so far, and what the stored record says."""

    row: RowInput
    outputs: dict[str, Any] = field(default_factory=dict)
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)
    next_step: int = 0
    stored_status: str | None = None


class WorkflowRun:
    """One custom-workflow job: its plan, one provider per model endpoint, and the row pipeline."""

    def __init__(self, config: WorkflowJob, *, home: str | Path | None = None, store: Store | None = None,
                 frame: Any = None):
        self.home = home
        self.plan = WorkflowPlan.build(config, home, frame=frame)
        self.config = config
        self.store = store or Store.open(home)
        self.job_id = 0  # set by run()
        self.prices: dict[str, Any] = {}  # endpoint -> its price, set by the run
        self.providers: dict[str, Any] = {}
        self.model_ids: dict[str, str] = {}
        for sp in self.plan.steps:
            if sp.endpoint not in self.providers:
                provider = get_provider(sp.spec)
                model_id = provider.model_id
                if not model_id:
                    raise ConfigError(f"step {sp.name}: provider {sp.spec.provider} needs a model id; "
                                      f"`sdstudio models --provider {sp.spec.provider}` lists them")
                self.providers[sp.endpoint], self.model_ids[sp.endpoint] = provider, model_id

    # -- requests ----------------------------------------------------------------------------------
    def item(self, state: RowState, sp: StepPlan) -> WorkItem:
        request = self.plan.request(state.row, sp, state.outputs)
        key = request_key(sp.spec.provider, self.model_ids[sp.endpoint], request,
                          salt=f"workflow|{state.row.key}|{sp.name}")
        return WorkItem(key=key, request=request, input=state.row.values, meta={"step": sp.index})

    def handle(self, item: WorkItem, completion: Completion) -> Any:
        return self.plan.parse(self.plan.steps[item.meta["step"]], completion)

    def record(self, state: RowState, failed: tuple[StepPlan, Outcome] | None = None) -> Record:
        steps = self.plan.steps
        info = list(state.steps.values())
        tokens_in = sum(s["tokens_in"] for s in info)
        tokens_out = sum(s["tokens_out"] for s in info)
        cost = sum(s.get("cost_usd") or 0.0 for s in info)
        provenance: dict[str, Any] = {"row": state.row.index, "variation": state.row.variation,
                                      "input_file": self.config.input_file, "steps": state.steps}
        status, error, raw, request_key_ = "ok", None, None, info[-1]["key"] if info else None
        if failed is not None:
            sp, outcome = failed
            rest = [s.name for s in steps[sp.index + 1:]]
            error = f"step {sp.name} failed: {outcome.reason}" + (f"; skipped {', '.join(rest)}" if rest else "")
            status, raw = "failed", outcome.raw
            provenance.update(failed_step=sp.name, skipped=rest)
            if outcome.completion is not None:
                tokens_in += outcome.completion.usage.input_tokens
                tokens_out += outcome.completion.usage.output_tokens
                cost += self._cost(sp, outcome.completion.usage)
        elif state.next_step < len(steps):
            status = "failed"
            error = (f"unfinished: stopped before step {steps[state.next_step].name} "
                     f"({state.next_step}/{len(steps)} steps done); run the workflow again to finish it")
        return Record(job_kind=KIND, job_id=self.job_id, item_key=state.row.key, request_key=request_key_, status=status,
                      input=state.row.values, output={**state.row.values, **state.outputs}, provenance=provenance,
                      error=error, raw_text=raw, tokens_in=tokens_in, tokens_out=tokens_out, cost_usd=cost,
                      latency_ms=sum(s.get("latency_ms") or 0.0 for s in info) or None)

    def _cost(self, sp: StepPlan, usage: Any) -> float:
        price = self.prices.get(sp.endpoint)
        return price.cost(usage.input_tokens, usage.output_tokens) if price and usage else 0.0

    # -- resume ------------------------------------------------------------------------------------
    def restore(self, job_id: int) -> list[RowState]:
        """Each row with the steps an earlier run finished: all of an ok row's, and the leading steps of
        any other row whose stored request key is still the one this run would send."""
        stored = {r["item_key"]: r for r in self.store.records(KIND, job_id) if r["status"] != "filtered"}
        states = []
        for row in self.plan.rows:
            state, rec = RowState(row), stored.get(row.key)
            if rec is not None:
                self.resume_row(state, rec)
            states.append(state)
        return states

    def resume_row(self, state: RowState, rec: Any) -> None:
        """Take the steps a record of the row (stored, or streamed by a lost Spark attempt) finished."""
        state.stored_status = rec["status"]
        done = (rec["provenance"] or {}).get("steps") or {}
        output = rec["output"] or {}
        for sp in self.plan.steps:
            info = done.get(sp.name)
            if not info or sp.step.column not in output:
                break
            if rec["status"] != "ok" and self._key_or_none(state, sp) != info.get("key"):
                break
            state.outputs[sp.step.column], state.steps[sp.name] = output[sp.step.column], info
            state.next_step += 1

    def _key_or_none(self, state: RowState, sp: StepPlan) -> str | None:
        try:
            return self.item(state, sp).key
        except SdstudioError:
            return None

    def mark_stale(self, job_id: int) -> int:
        """Rows no longer asked for become filtered (stale); a stale row asked for again comes back."""
        keys = {row.key for row in self.plan.rows}
        rows = [(r["id"], r["item_key"], r["status"], r["error"]) for r in self.store.record_states(KIND, job_id)]
        stale = [rid for rid, key, status, _ in rows if status != "filtered" and key not in keys]
        revived = [rid for rid, key, status, error in rows if status == "filtered" and error == STALE and key in keys]
        if stale:
            self.store.set_record_status(stale, "filtered", STALE)
        if revived:  # checked step by step again by restore(); finished ones cost nothing
            self.store.set_record_status(revived, "failed", "unfinished: the input row is back")
        return len(stale)

    # -- the job -----------------------------------------------------------------------------------
    def run(self, *, resume: int | None = None, on_progress: Callable[[Progress], None] | None = None,
            cancel_event: threading.Event | None = None, wait: bool = False) -> JobResult:
        """Run (or resume) the job to the end; rows are in metadata.db as they finish."""
        with JobRunner(self.store, KIND, "workflow", self.config, resume=resume,
                       fields=self.plan.metadata(self.model_ids), cancel_event=cancel_event, wait=wait) as job:
            self.job_id = job.job_id
            stale = self.mark_stale(job.job_id)
            if stale:
                job.notes.append(f"{stale} earlier row(s) no longer match the input and are marked filtered (stale)")
            states = self.restore(job.job_id)
            steps = len(self.plan.steps)
            merged = MergedProgress(on_progress, total=len(states) * steps,
                                    cached=sum(s.next_step for s in states))
            self._price_endpoints(job.notes)
            if self.config.run.executor == "spark":  # rows go to partitions, each runs this pipeline on its share
                from ..executors.spark_rows import run_rows_on_spark

                job.cancelled = run_rows_on_spark(self, job, states, merged, cancel_event)
            else:
                try:
                    job.cancelled = run_coroutine(lambda: self._pipeline(job.job_id, states, merged, cancel_event,
                                                                         sink=RecordSink(self.store)))
                finally:
                    job.totals.end_round(merged.combined())
                    job.totals.sent = merged.sent
            result = job.finish()
        result.notes.extend(self._failure_notes(job.job_id))
        return result

    def _price_endpoints(self, notes: list[str]) -> None:
        """Each endpoint's price, read on the driver (a Spark partition gets them with the run)."""
        home = Path(self.store.path).parent
        for endpoint in self.providers:
            price = price_for(self.model_ids[endpoint], home)
            if not price.known:
                notes.append(f"no price known for {self.model_ids[endpoint]}: cost shown as 0")
            self.prices[endpoint] = price

    async def _pipeline(self, job_id: int, states: list[RowState], merged: MergedProgress,
                        cancel_event: threading.Event | None, *, sink: Any, settings: Any = None) -> bool:
        """The rows through their steps, one engine per endpoint with ``settings`` (default: the job's run
        settings; a Spark partition passes its share). ``sink`` takes each row's newest record: the store's
        ``RecordSink`` here, the driver's collector on a Spark partition (``executors/spark_rows.py``)."""
        engines: dict[str, QueueEngine] = {}
        for endpoint, provider in self.providers.items():
            engines[endpoint] = QueueEngine(provider, self.store, KIND, job_id, settings or self.config.run,
                                            price=self.prices[endpoint], on_progress=merged.part(endpoint),
                                            output_retries=1, cancel_event=cancel_event)
        return await drive(engines, self.handle, sink, states,
                           lambda state: self._advance(state, engines, sink, merged), per_slot=ACTIVE_ROWS_PER_SLOT, cancel_event=cancel_event)

    async def _advance(self, state: RowState, engines: dict[str, QueueEngine], sink: RecordSink,
                       merged: MergedProgress) -> None:
        """Take one row through its remaining steps, saving its state after each."""
        steps = self.plan.steps
        if state.next_step == len(steps) and state.stored_status != "ok":
            sink.put(self.record(state))  # every step was stored by an earlier run: only the status moves
        while state.next_step < len(steps):
            sp = steps[state.next_step]
            try:
                item = self.item(state, sp)
            except SdstudioError as exc:  # this row's values do not render (the first row's did)
                sink.put(self.record(state, failed=(sp, Outcome(False, reason=str(exc)))))
                merged.skip(len(steps) - sp.index)
                return
            outcome = await engines[sp.endpoint].ask(item, priority=-sp.index)
            if outcome.cancelled:
                return  # the stored record already says how far this row got
            if not outcome.ok:
                sink.put(self.record(state, failed=(sp, outcome)))
                merged.skip(len(steps) - sp.index - 1)
                return
            usage = outcome.completion.usage if outcome.completion else None
            state.outputs[sp.step.column] = outcome.value
            state.steps[sp.name] = {"key": item.key, "model": self.model_ids[sp.endpoint],
                                    "tokens_in": usage.input_tokens if usage else 0,
                                    "tokens_out": usage.output_tokens if usage else 0,
                                    "cost_usd": self._cost(sp, usage),
                                    "latency_ms": round(outcome.completion.latency_ms, 1) if outcome.completion else None}
            state.next_step += 1
            sink.put(self.record(state))

    def _failure_notes(self, job_id: int) -> list[str]:
        rows = self.store.failed_steps(KIND, job_id)
        return [f"{count} row(s) failed at step {step}, e.g. {error}" if step else
                f"{count} row(s) unfinished; run again (or --resume {job_id}) to finish them"
                for step, count, error in rows]


def fields(job: dict[str, Any], home: Any = None) -> Any:
    """A workflow job's prompt and completion are the columns its config names (export, judge, review)."""
    from .fields import Fields

    config = job.get("config") or {}
    return Fields(config.get("prompt_column"), config.get("completion_column"))


def run_workflow(config: WorkflowJob, *, home: str | Path | None = None, resume: int | None = None,
                 on_progress: Callable[[Progress], None] | None = None,
                 cancel_event: threading.Event | None = None, frame: Any = None) -> JobResult:
    """Run (or resume) a custom workflow to the end; ``results_frame(result.job_id)`` shows its rows."""
    return WorkflowRun(config, home=home, frame=frame).run(resume=resume, on_progress=on_progress,
                                                           cancel_event=cancel_event)


# -- results ---------------------------------------------------------------------------------------

def results_frame(job_id: int, *, home: str | Path | None = None, store: Store | None = None,
                  include_failed: bool = True) -> Any:
    """A workflow job's rows as a DataFrame: input columns, each step's output column, then ``row``
    (source row), ``variation`` (with several copies per row), ``status`` and ``error``. A name that an
    input or output column already uses gets an ``sdstudio_`` prefix."""
    import pandas as pd

    store = store or Store.open(home)
    job = store.get_job(KIND, job_id)
    if job.get("technique") != "workflow":
        raise ConfigError(f"generation job {job_id} is not a custom workflow (technique {job.get('technique')})")
    config = WorkflowJob.model_validate(job["config"])
    outputs = [step.column for step in config.steps]
    meta = ["row", *(["variation"] if config.variations > 1 else []), "status", "error"]
    records, inputs = [], {}
    for rec in store.records(KIND, job_id):
        if rec["status"] == "filtered" or (not include_failed and rec["status"] != "ok"):
            continue
        records.append(rec)
        inputs.update(dict.fromkeys(rec["input"] or {}))
    names = {m: f"sdstudio_{m}" if m in inputs or m in outputs else m for m in meta}
    lines = []
    for rec in records:
        prov, output = rec["provenance"] or {}, rec["output"] or {}
        line = {**{c: (rec["input"] or {}).get(c) for c in inputs}, **{c: output.get(c) for c in outputs}}
        values = {"row": prov.get("row"), "variation": prov.get("variation"), "status": rec["status"],
                  "error": rec["error"]}
        line.update({names[m]: values[m] for m in meta})
        lines.append(line)
    frame = pd.DataFrame(lines, columns=[*inputs, *outputs, *names.values()])
    sort = [names["row"], *([names["variation"]] if "variation" in names else [])]
    return frame.sort_values(sort, kind="stable").reset_index(drop=True) if len(frame) else frame


# -- workflow definitions as YAML -----------------------------------------------------------------

class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None  # templates stay readable (and diffable) in saved files
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def workflow_yaml(config: WorkflowJob) -> str:
    """The workflow as YAML, multi-line templates as literal blocks; ``load_workflow`` reads it back."""
    data = config.model_dump(mode="json", exclude_none=True)
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=120)


def save_workflow(config: WorkflowJob, path: str | Path) -> Path:
    target = Path(path).expanduser()
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(workflow_yaml(config), encoding="utf-8")
    return target


def load_workflow(source: str | Path | dict[str, Any]) -> WorkflowJob:
    """A workflow from a YAML file, YAML text or a dict (``kind: workflow`` may be left out)."""
    if isinstance(source, dict):
        data = {"kind": "workflow", **source}
        config = load_config(data)
    else:
        from ..config import _read_yaml

        data = _read_yaml(source)
        config = load_config({"kind": "workflow", **data})
    if not isinstance(config, WorkflowJob):
        raise ConfigError(f"{source if not isinstance(source, dict) else 'config'} is a {config.kind} config, "
                          "not a workflow")
    return config


__all__ = ["RowState", "StepPreview", "WorkflowPlan", "WorkflowPreview", "WorkflowRun", "column_types",
           "load_workflow", "plain", "preview", "preview_dataset", "read_dataset", "results_frame",
           "run_workflow", "save_upload", "save_workflow", "select_rows", "workflow_yaml"]
