"""What runs inside one Spark partition: the local async engine over the partition's items, every outcome
streamed to the driver's collector (``spark_collector.py``) the moment it is done.

The partition gets a ``PartitionPlan`` (inside the task closure): the collector's address and run token, the
model spec *without* secrets, its share of the run settings, and the handler. It connects, says which keys it
holds, skips those already in (a retried attempt of a lost partition), and receives the secrets over that
connection, so they never pass through Spark's conf, environment page, event log or executor logs.
"""
from __future__ import annotations

import asyncio
import contextvars
import io
import json
import os
import pickle
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from ..engine import Engine, WorkItem
from .spark_collector import send_message

# tests only: "N:/path/marker" makes a partition's Python worker exit on its Nth item, once (the marker file
# says it happened), as a lost executor would; read on the driver and shipped in the plan
EXIT_HOOK_ENV = "SDSTUDIO_SPARK_TEST_EXIT_AT"
PING_INTERVAL_S = 0.5
_ITEM: contextvars.ContextVar[WorkItem] = contextvars.ContextVar("sdstudio_spark_item")


# -- shipping the handler -------------------------------------------------------------------------------

class Unshipped:
    """Stands in, on an executor, for what a handler's closure held that must stay on the driver (the store,
    the provider, locks, open connections). A pure handler never touches it; one that does gets this line."""

    def __init__(self, what: str):
        self._what = what

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        from ..errors import SdstudioError

        raise SdstudioError(f"the handler used the driver's {self._what} on a Spark executor; a handler must be a "
                            "pure function of (item, completion)")


def _driver_only(obj: Any) -> str | None:
    from ..providers.base import BaseProvider
    from ..store import DATABASE_HANDLES, Store

    if isinstance(obj, (Store, BaseProvider, socket.socket, io.IOBase, *DATABASE_HANDLES)):
        return type(obj).__name__
    if type(obj) in (type(threading.Lock()), type(threading.RLock())):
        return "lock"
    return None


def pack(obj: Any) -> bytes:
    """cloudpickle ``obj`` (a handler, often a bound method of a workflow object), leaving out what only the
    driver has (``Unshipped`` takes its place)."""
    from pyspark import cloudpickle

    class Packer(cloudpickle.Pickler):
        def persistent_id(self, value: Any) -> Any:  # noqa: D401 - pickle's hook
            return _driver_only(value)

    buffer = io.BytesIO()
    Packer(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
    return buffer.getvalue()


def unpack(data: bytes) -> Any:
    class Unpacker(pickle.Unpickler):
        def persistent_load(self, pid: Any) -> Any:
            return Unshipped(str(pid))

    return Unpacker(io.BytesIO(data)).load()


# -- the plan and the link to the driver --------------------------------------------------------------------

@dataclass(frozen=True)
class PartitionPlan:
    address: tuple[str, int, str]  # the collector's host, port and run token
    spec: dict[str, Any]  # ModelSpec JSON as stored (credentials in base_url masked; keys only named)
    settings: dict[str, Any]  # RunSettings JSON: this partition's share of concurrency and rate limits
    job_kind: str
    job_id: int
    price: tuple[float, float, bool]
    code: bytes  # pack({"handler": ..., "options": ...})
    dialect: str | None = None  # the structured-output dialect the driver's provider starts at
    proven: bool = False
    exit_hook: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Link:
    """One partition attempt's connection to the collector: hello (keys held) -> reply (secrets, keys to
    skip), then outcome messages only. Nothing is read after the reply, so a worker that dies closes
    cleanly and every outcome it wrote reaches the driver."""

    def __init__(self, address: tuple[str, int, str], partition: int, attempt: int, keys: list[str]):
        host, port, token = address
        self.sock = socket.create_connection((host, port), timeout=120)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._lock = threading.Lock()
        send_message(self.sock, {"token": token, "partition": partition, "attempt": attempt, "keys": keys})
        line = self.sock.makefile("rb").readline()
        if not line:
            raise ConnectionError("the sdstudio driver refused this partition (wrong run token, or the run ended)")
        self.reply: dict[str, Any] = json.loads(line)

    def send(self, message: dict[str, Any]) -> None:
        with self._lock:
            send_message(self.sock, message)

    def close(self) -> None:
        self.sock.close()


@contextmanager
def secret_environment(values: dict[str, str]) -> Iterator[None]:
    """The run's credentials in this worker's environment while the partition runs (providers read their
    keys from it), restored after: a reused Python worker keeps none of them."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# -- the engine of one partition ------------------------------------------------------------------------

class StreamingEngine(Engine):
    """The local engine with its sink replaced: each item's records go to the driver as one outcome message
    (with the partition's running counters) instead of into SQLite; the driver's store is never opened here."""

    def __init__(self, link: Link, *args: Any, exit_hook: str | None = None, **kwargs: Any):
        super().__init__(*args, skip_done=False, **kwargs)
        self.link = link
        self._last_ping = 0.0
        self._started_items = 0
        self._exit_at, _, self._exit_marker = (exit_hook or "").partition(":")

    async def _process(self, item: WorkItem, handler: Any) -> None:
        self._started_items += 1
        if self._exit_at and self._started_items == int(self._exit_at) and not os.path.exists(self._exit_marker):
            while self._handling:  # the replies already here are streamed first: the test kills between items
                await asyncio.gather(*self._handling, return_exceptions=True)
            open(self._exit_marker, "w").close()
            os._exit(3)  # the test's lost executor: the Python worker dies mid-partition
        token = _ITEM.set(item)
        try:
            await super()._process(item, handler)
        finally:
            _ITEM.reset(token)

    def _add(self, records: list, ok: bool) -> None:
        item = _ITEM.get()
        self._tally(records, ok)
        self.link.send({"outcome": {"key": item.key, "ok": ok, "records": [rec.to_json() for rec in records],
                                    "failure": self._failures.get(item.key), "permanent": item.key in self._permanent},
                        "counters": self.counters()})
        self._last_ping = time.monotonic()

    def _report(self, force: bool = False) -> None:
        if force or time.monotonic() - self._last_ping >= PING_INTERVAL_S:
            self._last_ping = time.monotonic()
            self.link.send({"counters": self.counters()})

    def counters(self) -> dict[str, Any]:
        """This attempt's running totals; the driver sums the latest of every attempt (a lost one's included:
        its calls were made and billed)."""
        p = self.progress
        data: dict[str, Any] = {"attempts": p.attempts, "retries": p.retries, "tokens_in": p.tokens_in,
                                "tokens_out": p.tokens_out, "in_flight": p.in_flight, "answered": self._answered,
                                "models": sorted(self._models)}
        if hasattr(self.provider, "negotiation"):
            n = self.provider.negotiation()
            data["negotiation"] = {"index": n.index, "confirmed": n.confirmed, "used": n.used,
                                   "refused": n.refused_calls, "rejected": [list(r) for r in n.rejected]}
        return data


def run_partition(plan: PartitionPlan, index: int, attempt: int, rows: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Run one partition's ``(key, item JSON)`` rows; outcomes go to the collector as they finish. Returns what
    the partition did (sent, skipped) for Spark to hand back."""
    from ..config import ModelSpec, RunSettings
    from ..errors import SdstudioError
    from ..pricing import Price
    from ..providers import get_provider
    from ..runner import one_line

    rows = list(rows)
    link = Link(plan.address, index, attempt, [key for key, _ in rows])
    try:
        skip = set(link.reply.get("skip", []))
        items = [WorkItem.from_json(json.loads(text)) for key, text in rows if key not in skip]
        if not items:
            link.send({"done": True})
            return {"partition": index, "sent": 0, "skipped": len(skip)}
        code = unpack(plan.code)
        with secret_environment(link.reply.get("env", {})):
            engine = None
            try:
                spec = dict(plan.spec)
                if link.reply.get("base_url"):
                    spec["base_url"] = link.reply["base_url"]  # with its credentials: kept in this worker's memory
                provider = get_provider(ModelSpec.model_validate(spec))
                if hasattr(provider, "negotiation"):
                    provider.negotiation().start_at(plan.dialect)
                provider.proven = plan.proven
                engine = StreamingEngine(link, provider, None, plan.job_kind, plan.job_id,
                                         RunSettings.model_validate(plan.settings), price=Price(*plan.price),
                                         exit_hook=plan.exit_hook, **code["options"])
                engine.run(items, code["handler"])
            except SdstudioError as exc:  # the provider cannot work (credentials, endpoint): the driver stops the run
                link.send({"abort": one_line(exc), "kind": type(exc).__name__})
            link.send({"done": True, **({"counters": engine.counters()} if engine is not None else {})})
        return {"partition": index, "sent": len(items), "skipped": len(skip)}
    finally:
        link.close()


def partition_function(plan: PartitionPlan):
    """The function Spark runs per partition (``RDD.mapPartitionsWithIndex``)."""

    def run(index: int, rows: Iterable[tuple[str, str]]) -> Iterator[dict[str, Any]]:
        from pyspark import TaskContext

        context = TaskContext.get()
        yield run_partition(plan, index, context.attemptNumber() if context else 0, rows)

    return run
