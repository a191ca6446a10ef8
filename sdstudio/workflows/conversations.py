"""Multi-turn conversations: a simulated user and an assistant take turns, ``turns`` exchanges per chat.

Decisions:

* **One record per conversation** (``job_kind='generation'``, ``technique='conversation'``): ``output`` holds
  ``topic`` and ``messages`` (the system prompt first when there is one, then user and assistant in turn),
  so export's ``sft-messages`` is TRL's multi-turn ``messages`` as it is. ``provenance.turns`` keeps, per
  message, its request key, model, tokens, cost, latency and the model's reasoning when it returned any
  (kept out of ``messages``: an export adds it only with ``--with-reasoning``).
* **Each message is one keyed request** (conversations_plan.py): the key of message ``n`` depends on the
  topic, the copy and messages ``0..n-1`` only. The record is written after every message, so a killed run
  keeps every message it was answered; a re-run (or ``resume=JOB_ID``) rebuilds each conversation's keys and
  asks only for the messages not stored yet: no earlier turn is ever paid for twice.
* **A failed turn** (after the engine's retries) leaves the conversation ``failed`` with the messages it has,
  the reason, and the raw reply; its later turns are not asked. Running the job again asks that turn again.
* Conversations are pipelined like custom workflows' rows (``pipeline.QueueEngine``): each chat's next turn
  goes as soon as its last came back, later turns first, one engine per model endpoint (the user simulator
  may be another model), so limits hold per endpoint.
"""
from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..configs.conversations import ConversationJob
from ..engine import Progress, WorkItem, request_key
from ..errors import ConfigError
from ..loops import run_coroutine
from ..pricing import price_for
from ..providers import Completion, get_provider
from ..runner import JobRunner
from ..store import Record, Store
from .conversations_plan import ASSISTANT, USER, Chat, ConversationPlan, preview, role_of
from .jobs import JobResult
from .pipeline import MergedProgress, Outcome, QueueEngine, RecordSink, drive

KIND = "generation"
JOB_KIND = "conversations"
ACTIVE_CHATS_PER_SLOT = 2  # conversations in flight per request slot: enough to keep every engine busy


@dataclass
class ChatState:
    """A conversation on its way: the messages so far (no system prompt) and each one's bookkeeping."""

    chat: Chat
    messages: list[dict[str, str]] = field(default_factory=list)
    turns: list[dict[str, Any]] = field(default_factory=list)
    stored_status: str | None = None


class ConversationRun:
    """One conversations job: its plan, a provider per model endpoint, and the turn pipeline."""

    def __init__(self, config: ConversationJob, *, home: str | Path | None = None, store: Store | None = None):
        self.config, self.home = config, home
        self.plan = ConversationPlan.build(config)
        self.store = store or Store.open(home)
        self.job_id = 0
        self.endpoints: dict[str, str] = {}   # role -> its endpoint
        self.providers: dict[str, Any] = {}   # endpoint -> provider
        self.model_ids: dict[str, str] = {}   # role -> model id
        self.prices: dict[str, Any] = {}      # role -> price
        for role, spec in ((ASSISTANT, config.model), (USER, config.user_spec)):
            endpoint = json.dumps(spec.model_dump(mode="json", exclude={"parameters"}), sort_keys=True)
            if endpoint not in self.providers:
                self.providers[endpoint] = get_provider(spec)
            model_id = self.providers[endpoint].model_id
            if not model_id:
                raise ConfigError(f"the {role} model: provider {spec.provider} needs a model id; "
                                  f"`sdstudio models --provider {spec.provider}` lists them")
            self.endpoints[role], self.model_ids[role] = endpoint, model_id

    # -- requests and replies ----------------------------------------------------------------------
    def item(self, state: ChatState) -> WorkItem:
        index = len(state.messages)
        role = role_of(index)
        request = self.plan.request(state.chat, state.messages)
        key = request_key(self.plan.spec(index).provider, self.model_ids[role], request,
                          salt=f"conversation|{state.chat.key}|{index}")
        return WorkItem(key=key, request=request, topic=state.chat.topic, meta={"role": role})

    def handle(self, item: WorkItem, completion: Completion) -> str:
        return self.plan.parse(item.meta["role"], completion, item.request.parameters.max_tokens)

    def record(self, state: ChatState, failed: Outcome | None = None) -> Record:
        chat, total = state.chat, self.plan.messages_per_chat
        system = [{"role": "system", "content": self.config.system_prompt}] if self.config.system_prompt else []
        provenance: dict[str, Any] = {"copy": chat.copy, "turns": state.turns}
        tokens_in = sum(t["tokens_in"] for t in state.turns)
        tokens_out = sum(t["tokens_out"] for t in state.turns)
        cost = sum(t.get("cost_usd") or 0.0 for t in state.turns)
        status, error, raw = "ok", None, None
        done = len(state.messages)
        if failed is not None:
            role = role_of(done)
            status, raw = "failed", failed.raw
            error = (f"turn {done // 2 + 1} ({role}) failed: {failed.reason}; the conversation keeps its {done} "
                     f"of {total} messages")
            provenance["failed_message"] = done
            if failed.completion is not None:
                usage = failed.completion.usage
                tokens_in, tokens_out = tokens_in + usage.input_tokens, tokens_out + usage.output_tokens
                cost += self.prices[role].cost(usage.input_tokens, usage.output_tokens) if role in self.prices else 0
        elif done < total:
            status = "failed"
            error = (f"unfinished: stopped after {done} of {total} messages; run the job again (or --resume "
                     f"{self.job_id}) to finish it")
        return Record(job_kind=KIND, job_id=self.job_id, item_key=chat.key, status=status, topic=chat.topic,
                      request_key=state.turns[-1]["key"] if state.turns else None,
                      input={"topic": chat.topic, "copy": chat.copy},
                      output={"topic": chat.topic, "messages": system + state.messages}, provenance=provenance,
                      error=error, raw_text=raw, tokens_in=tokens_in, tokens_out=tokens_out, cost_usd=cost,
                      latency_ms=sum(t.get("latency_ms") or 0.0 for t in state.turns) or None)

    # -- resume ------------------------------------------------------------------------------------
    def restore(self, job_id: int) -> list[ChatState]:
        """Each conversation with the messages an earlier run got: all of an ok one's, and of any other the
        leading messages whose stored request key is still the one this run would send."""
        stored = {r["item_key"]: r for r in self.store.records(KIND, job_id) if r["status"] != "filtered"}
        states = []
        for chat in self.plan.chats:
            state, rec = ChatState(chat), stored.get(chat.key)
            if rec is not None:
                state.stored_status = rec["status"]
                messages = [m for m in (rec["output"] or {}).get("messages") or [] if m.get("role") != "system"]
                turns = (rec["provenance"] or {}).get("turns") or []
                for message, turn in zip(messages, turns):
                    if rec["status"] != "ok" and self.item(state).key != turn.get("key"):
                        break
                    state.messages.append(message)
                    state.turns.append(turn)
            states.append(state)
        return states

    # -- the job -----------------------------------------------------------------------------------
    def run(self, *, resume: int | None = None, on_progress: Callable[[Progress], None] | None = None,
            cancel_event: threading.Event | None = None, wait: bool = False) -> JobResult:
        """Run (or resume) the job to the end; conversations are in metadata.db as their turns come back."""
        with JobRunner(self.store, KIND, JOB_KIND, self.config, resume=resume,
                       fields=self.plan.metadata(self.model_ids), cancel_event=cancel_event, wait=wait) as job:
            self.job_id = job.job_id
            home = Path(self.store.path).parent
            for role in (ASSISTANT, USER):
                self.prices[role] = price_for(self.model_ids[role], home)
                if not self.prices[role].known and f"no price known for {self.model_ids[role]}" not in " ".join(job.notes):
                    job.notes.append(f"no price known for {self.model_ids[role]}: cost shown as 0")
            states = self.restore(job.job_id)
            merged = MergedProgress(on_progress, total=len(states) * self.plan.messages_per_chat,
                                    cached=sum(len(s.messages) for s in states))
            try:
                job.cancelled = run_coroutine(lambda: self._pipeline(job.job_id, states, merged, cancel_event))
            finally:
                job.totals.end_round(merged.combined())
                job.totals.sent = merged.sent
            return job.finish()

    async def _pipeline(self, job_id: int, states: list[ChatState], merged: MergedProgress,
                        cancel_event: threading.Event | None) -> bool:
        sink = RecordSink(self.store)
        engines = {endpoint: QueueEngine(provider, self.store, KIND, job_id, self.config.run,
                                         price=self.prices[ASSISTANT if endpoint == self.endpoints[ASSISTANT]
                                                           else USER],
                                         on_progress=merged.part(endpoint), output_retries=1,
                                         cancel_event=cancel_event)
                   for endpoint, provider in self.providers.items()}
        return await drive(engines, self.handle, sink, states,
                           lambda state: self._advance(state, engines, sink, merged), per_slot=ACTIVE_CHATS_PER_SLOT, cancel_event=cancel_event)

    async def _advance(self, state: ChatState, engines: dict[str, QueueEngine], sink: RecordSink,
                       merged: MergedProgress) -> None:
        """Take one conversation through its remaining turns, saving it after each message."""
        total = self.plan.messages_per_chat
        if len(state.messages) == total and state.stored_status != "ok":
            sink.put(self.record(state))  # every message was stored by an earlier run: only the status moves
        while len(state.messages) < total:
            index = len(state.messages)
            role = role_of(index)
            item = self.item(state)
            outcome = await engines[self.endpoints[role]].ask(item, priority=-index)
            if outcome.cancelled:
                return  # the stored record already says how far this conversation got
            if not outcome.ok:
                sink.put(self.record(state, failed=outcome))
                merged.skip(total - index - 1)
                return
            completion = outcome.completion
            usage = completion.usage if completion else None
            turn: dict[str, Any] = {
                "key": item.key, "role": role, "model": (completion.model if completion else None) or self.model_ids[role],
                "tokens_in": usage.input_tokens if usage else 0, "tokens_out": usage.output_tokens if usage else 0,
                "cost_usd": self.prices[role].cost(usage.input_tokens, usage.output_tokens) if usage else 0.0,
                "latency_ms": round(completion.latency_ms, 1) if completion else None}
            if completion is not None and completion.reasoning:
                turn["reasoning"] = completion.reasoning
            state.messages.append({"role": role, "content": outcome.value})
            state.turns.append(turn)
            sink.put(self.record(state))


def fields(job: dict[str, Any], home: Any = None) -> Any:
    """A conversation's items are a chat transcript (``messages``); there is no single prompt/completion pair."""
    from .fields import Fields

    return Fields(None, None, "messages")


def run_conversations(config: ConversationJob, *, home: str | Path | None = None, resume: int | None = None,
                      on_progress: Callable[[Progress], None] | None = None,
                      cancel_event: threading.Event | None = None) -> JobResult:
    """Run (or resume) a conversations job to the end."""
    return ConversationRun(config, home=home).run(resume=resume, on_progress=on_progress, cancel_event=cancel_event)


__all__ = ["ChatState", "ConversationRun", "fields", "preview", "run_conversations"]
