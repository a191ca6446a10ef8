"""What a job asks and what comes back: work items, progress, results.

The data every workflow, executor and UI shares with the engine, apart from the engine itself: a ``WorkItem``
(a stable ``request_key`` + a ChatRequest + what its records carry; it round-trips through JSON so executors
can ship it to other processes), the ``Progress`` and ``RunResult`` a run reports, ``InvalidOutput`` a handler
raises, and the default handler. Kept out of ``engine.py`` so that module is only the running of requests;
``engine`` re-exports every name here, so ``from sdstudio.engine import WorkItem`` keeps working.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from .providers.base import ChatRequest, Completion
from .store import Record


def request_key(provider: str, model: str | None, request: ChatRequest, salt: str = "") -> str:
    """Stable identity of a request: same provider, model, parameters, messages and schema -> same key."""
    payload = json.dumps({"p": provider, "m": model, "params": request.parameters.model_dump(mode="json"),
                          "msgs": request.messages, "schema": request.json_schema, "salt": salt},
                         sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def recipe_key(provider: str, model: str | None, recipe: str, variables: Any, salt: str = "") -> str:
    """Stable identity of a request known before its prompt is rendered: the same provider, model and recipe (a
    digest of everything every prompt of the job is made of: template, examples, parameters, schema...) and the
    same call's variables give the same request, because rendering is a pure function of the two. A 100k-item
    job finds its finished items by this key without rendering one prompt (``DeferredWorkItem``)."""
    payload = json.dumps({"p": provider, "m": model, "recipe": recipe, "vars": variables, "salt": salt},
                         sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class WorkItem:
    """One request of a job, and what its records should carry."""

    key: str
    request: ChatRequest
    topic: str | None = None
    input: Any = None
    provenance: Any = None
    meta: Any = None  # the workflow's own data for its handler: JSON-able (lists come back as lists)

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict: how an executor ships the item to another process (Spark, a batch file)."""
        request = self.request
        return {"key": self.key, "messages": list(request.messages),
                "parameters": request.parameters.model_dump(mode="json"), "json_schema": request.json_schema,
                "topic": self.topic, "input": self.input, "provenance": self.provenance, "meta": self.meta}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> WorkItem:
        from .config import ModelParameters

        request = ChatRequest.of(data["messages"], ModelParameters.model_validate(data["parameters"]),
                                 data.get("json_schema"))
        return cls(key=data["key"], request=request, topic=data.get("topic"), input=data.get("input"),
                   provenance=data.get("provenance"), meta=data.get("meta"))


class DeferredWorkItem(WorkItem):
    """A work item whose request is built when it is first needed (when the engine sends it), not when it is
    planned: a 100k-item job keeps no 100k rendered prompts in memory, its first request goes out at once, and
    a re-run finds its finished items by key (``recipe_key``) without rendering any. Otherwise a ``WorkItem``."""

    def __init__(self, key: str, request: ChatRequest | None = None, topic: str | None = None, input: Any = None,
                 provenance: Any = None, meta: Any = None, *, build: Callable[[], ChatRequest] | None = None):
        if (request is None) == (build is None):
            raise TypeError("DeferredWorkItem takes a request or a build function, not both or neither")
        for name, value in (("key", key), ("topic", topic), ("input", input), ("provenance", provenance),
                            ("meta", meta), ("_build", build)):
            object.__setattr__(self, name, value)
        if request is not None:  # dataclasses.replace() passes the built request back in
            object.__setattr__(self, "request", request)

    def __getattr__(self, name: str) -> Any:
        # only reached for attributes not set yet: ``request`` until it is first built
        if name != "request" or "_build" not in self.__dict__:
            raise AttributeError(name)
        request = self._build()
        object.__setattr__(self, "request", request)  # built once; the item lives while it is in flight
        return request


T = TypeVar("T")


class PlannedItems(Sequence[WorkItem], Generic[T]):
    """A run's items made as the engine takes them, from small plans (a topic and its call's place): its length is
    known up front (progress totals) while no more items than are in flight exist at once."""

    def __init__(self, plans: Sequence[T], make: Callable[[T], WorkItem]):
        self.plans, self.make = plans, make

    def __len__(self) -> int:
        return len(self.plans)

    def __iter__(self) -> Iterator[WorkItem]:
        return map(self.make, self.plans)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [self.make(plan) for plan in self.plans[index]]
        return self.make(self.plans[index])


class InvalidOutput(Exception):
    """Raised by a handler when a reply is unusable (unparseable, outside the scale...). The engine
    asks again while ``output_retries`` allow, then stores the item as failed with the raw text."""


Handler = Callable[[WorkItem, Completion], list[Record]]


@dataclass
class Progress:
    """A run's running figures. ``done - cached`` are the requests sent (each work item once, however often
    it was tried); ``attempts`` are the calls actually made to the provider (HTTP requests, or in-process
    calls): first tries, retries after errors or timeouts, and re-asks for unusable replies. Both are
    reported because a provider bills (and rate-limits) attempts, while a job plans requests."""

    total: int = 0
    done: int = 0
    ok: int = 0
    failed: int = 0
    cached: int = 0
    in_flight: int = 0
    retries: int = 0
    attempts: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    elapsed_s: float = 0.0
    note: str = ""

    @property
    def rate(self) -> float:
        """Requests finished per second (cached ones excluded: they cost no time)."""
        return (self.done - self.cached) / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def eta_s(self) -> float | None:
        remaining = self.total - self.done
        return remaining / self.rate if self.rate > 0 and self.total else None


@dataclass
class RunResult:
    progress: Progress
    cancelled: bool = False
    failures: dict[str, str] = field(default_factory=dict)  # request key -> reason
    # request keys whose failure a retry cannot fix (the server refused the request itself): follow-up rounds
    # do not ask them again
    permanent: set[str] = field(default_factory=set)
    answered: int = 0  # replies the provider sent in this run (whatever the handler made of them)
    models: set[str] = field(default_factory=set)  # the models the replies say answered


def estimate_tokens(request: ChatRequest) -> int:
    """Rough upper bound for TPM metering: ~4 characters a token plus the reply budget."""
    chars = sum(len(m.get("content") or "") for m in request.messages)
    return chars // 4 + request.parameters.max_tokens


def default_handler(item: WorkItem, completion: Completion) -> list[Record]:
    """One ok record per request holding the parsed JSON (when a schema was given) or the text."""
    output = completion.parsed if completion.parsed is not None else {"text": completion.text}
    if item.request.json_schema is not None and completion.parsed is None:
        raise InvalidOutput("reply is not valid JSON for the requested schema")
    return [Record(job_kind="", job_id=0, item_key=item.key, status="ok", topic=item.topic, input=item.input,
                   provenance=item.provenance, output=output, raw_text=completion.text,
                   tokens_in=completion.usage.input_tokens, tokens_out=completion.usage.output_tokens)]


def stamp_ok(records: list[Record], job_kind: str, job_id: int, item: WorkItem, completion: Completion) -> list[Record]:
    """A handler's records, made the job's: its kind and id, the request's key, the reply's latency and reasoning
    (each item of the reply keeps it) where the handler left them unset."""
    for rec in records:
        rec.job_kind, rec.job_id = job_kind, job_id
        rec.request_key = rec.request_key or item.key
        rec.latency_ms = rec.latency_ms if rec.latency_ms is not None else completion.latency_ms
        rec.reasoning = rec.reasoning or completion.reasoning
    return records


def stamp_failed(records: list[Record], job_kind: str, job_id: int, item: WorkItem,
                 completion: Completion | None) -> list[Record]:
    """A failed item's records, made the job's; the failed attempt's tokens are paid once, on the first record."""
    usage = completion.usage if completion else None
    for index, rec in enumerate(records):
        rec.job_kind, rec.job_id = job_kind, job_id
        rec.request_key = rec.request_key or item.key
        rec.tokens_in = usage.input_tokens if usage and index == 0 else 0
        rec.tokens_out = usage.output_tokens if usage and index == 0 else 0
        rec.latency_ms = completion.latency_ms if completion else None
    return records
