"""OpenAI's Batch API (and any OpenAI-compatible server with ``/v1/files`` + ``/v1/batches``: vLLM's batch runner
reads the same files) as a ``BatchBackend`` (executors/batch.py).

A part is one JSONL file uploaded with ``purpose=batch``, one batch created on ``/v1/chat/completions`` with a 24 h
completion window; results come back as an output file (answered lines) and an error file (failed lines), each
line naming its request by ``custom_id`` (the work item's key). The request body and the reply parse are the
provider's own (``request_body``, ``completion_from``), so a batch reply gives the record an on-demand reply gives.

The transport is the provider's: the official ``openai`` client for ``openai`` (its files and batches API, sync),
``httpx`` with the provider's own credentials (Bearer key, or the URL's Basic auth and query key) for
OpenAI-compatible servers, whose chat path uses aiohttp only for its per-request speed: a batch makes a handful
of calls, not thousands.
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from ..providers.base import ChatRequest, Completion, ProviderError
from .batch_backend import BatchState

STATES = {"validating": "validating", "in_progress": "in_progress", "finalizing": "finalizing",
          "completed": "completed", "failed": "failed", "expired": "expired", "cancelling": "cancelling",
          "cancelled": "cancelled"}
_CUSTOM_ID = re.compile(r'"custom_id"\s*:\s*"([^"]+)"')
_ANY_SCHEMA = ChatRequest(messages=(), json_schema={})  # the backend parses text as JSON; the executor re-checks


class OpenAIBatch:
    name = "openai"
    max_requests = 50_000
    max_bytes = 200 * 1024 * 1024
    completion_window_s = 24 * 3600.0

    def __init__(self, provider: Any, settings: Any):
        from ..providers.openai_compat import OpenAIProvider

        self.provider, self.settings = provider, settings
        self.transport = SdkTransport(provider) if isinstance(provider, OpenAIProvider) else HttpTransport(provider)

    def _dialect(self, request: ChatRequest) -> str | None:
        return self.provider.negotiation().dialect if request.json_schema is not None else None

    # -- the protocol ------------------------------------------------------------------------------
    def line(self, key: str, request: ChatRequest) -> dict:
        return {"custom_id": key, "method": "POST", "url": "/v1/chat/completions",
                "body": self.provider.request_body(request, self._dialect(request))}

    def submit(self, lines: list[dict], *, job_id: int, part: int) -> str:
        data = b"".join(json.dumps(line, ensure_ascii=False).encode() + b"\n" for line in lines)
        file_id = self.transport.upload(data, f"sdstudio-job{job_id}-part{part}.jsonl")
        batch = self.transport.create({"input_file_id": file_id, "endpoint": "/v1/chat/completions",
                                       "completion_window": "24h",
                                       "metadata": {"sdstudio_job": str(job_id), "part": str(part)}})
        return batch["id"]

    def poll(self, batch_id: str) -> BatchState:
        batch = self.transport.retrieve(batch_id)
        counts = batch.get("request_counts") or {}
        errors = ((batch.get("errors") or {}).get("data") or [])
        error = "; ".join(str(e.get("message") or e.get("code")) for e in errors[:3]) or None
        return BatchState(state=STATES.get(batch.get("status") or "", "in_progress"),
                          completed=int(counts.get("completed") or 0), failed=int(counts.get("failed") or 0),
                          total=int(counts.get("total") or 0), error=error,
                          files={"input": batch.get("input_file_id"), "output": batch.get("output_file_id"),
                                 "error": batch.get("error_file_id")})

    def results(self, batch_id: str) -> Iterator[tuple[str, Completion | ProviderError]]:
        batch = self.transport.retrieve(batch_id)
        for which in ("output_file_id", "error_file_id"):
            file_id = batch.get(which)
            if not file_id:
                continue
            text = self.transport.content(file_id).decode("utf-8", "replace")
            for number, raw in enumerate(text.splitlines(), 1):
                if raw.strip():
                    outcome = self._outcome(raw, f"line {number} of batch {batch_id}'s {which[:-8]} file")
                    if outcome is not None:
                        yield outcome

    def cancel(self, batch_id: str) -> None:
        self.transport.cancel(batch_id)

    def close(self) -> None:
        """The transport's connections (the executor calls it when the run ends)."""
        self.transport.client.close()

    # -- one result line ---------------------------------------------------------------------------
    def _outcome(self, raw: str, where: str) -> tuple[str, Completion | ProviderError] | None:
        """(custom_id, the reply's Completion or the line's error); None for a line naming no request."""
        try:
            line = json.loads(raw)
            key = line["custom_id"]
        except (ValueError, KeyError, TypeError):
            found = _CUSTOM_ID.search(raw)
            if found is None:
                return None  # its request stays unanswered and is asked again
            return found.group(1), self.malformed(where, "not JSON")
        response = line.get("response") or {}
        status = int(response.get("status_code") or (500 if line.get("error") else 200))
        body = response.get("body")
        if line.get("error") or status >= 400:
            detail = line.get("error") or (body or {}).get("error") or body or {}
            message = detail.get("message") if isinstance(detail, dict) else str(detail)
            code = detail.get("code") if isinstance(detail, dict) else None
            text = f"{message} [{code}]" if code else str(message)
            return key, self.provider.classify(status if status >= 400 else 500, f"{text} ({where})")
        try:
            return key, self.provider.completion_from(body, _ANY_SCHEMA, None)
        except ProviderError:
            return key, self.malformed(where, "no choices in its response body")

    def malformed(self, where: str, why: str) -> ProviderError:
        return self.provider.error("bad_request", f"malformed result: {where} ({why}); the item is failed, "
                                                  "not asked again")


class SdkTransport:
    """Files and batches through the official client (sync), with the provider's key, base URL and query."""

    def __init__(self, provider: Any):
        from openai import OpenAI

        from ..providers.openai_compat import CLIENT_TIMEOUT_S

        self.provider = provider
        self.client = OpenAI(api_key=provider._api_key, base_url=provider.base_url, max_retries=2,
                             timeout=CLIENT_TIMEOUT_S, default_query=provider.url.query_params() or None)

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        import openai

        try:
            return fn(*args, **kwargs)
        except openai.APIError as exc:
            raise self.provider.map_error(exc) from None

    def upload(self, data: bytes, filename: str) -> str:
        return self._call(self.client.files.create, file=(filename, data, "application/jsonl"), purpose="batch").id

    def create(self, body: dict) -> dict:
        return self._call(self.client.batches.create, **body).model_dump()

    def retrieve(self, batch_id: str) -> dict:
        return self._call(self.client.batches.retrieve, batch_id).model_dump()

    def cancel(self, batch_id: str) -> dict:
        return self._call(self.client.batches.cancel, batch_id).model_dump()

    def content(self, file_id: str) -> bytes:
        return self._call(self.client.files.content, file_id).content


class HttpTransport:
    """Files and batches over httpx with the provider's credentials (an OpenAI-compatible server)."""

    def __init__(self, provider: Any):
        import httpx

        from ..providers.openai_compat import CLIENT_TIMEOUT_S, CONNECT_TIMEOUT_S

        self.provider = provider
        key = provider._api_key
        authorization = f"Bearer {key}" if key else provider.url.basic_authorization()
        self.client = httpx.Client(base_url=provider.base_url, params=provider.url.query_params() or None,
                                   headers={"Authorization": authorization} if authorization else {},
                                   timeout=httpx.Timeout(CLIENT_TIMEOUT_S, connect=CONNECT_TIMEOUT_S))

    def _send(self, method: str, path: str, **kwargs: Any) -> bytes:
        import httpx

        from ..providers.openai_compat import _detail_from_body

        try:
            response = self.client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise self.provider.error("transient", f"connection to {self.provider.where} failed "
                                                   f"({type(exc).__name__})") from None
        if response.status_code >= 400:
            raise self.provider.classify(response.status_code, _detail_from_body(response.content), response.headers)
        return response.content

    def _json(self, method: str, path: str, **kwargs: Any) -> dict:
        raw = self._send(method, path, **kwargs)
        try:
            return json.loads(raw)
        except ValueError:
            raise self.provider.error("transient", f"malformed response from {self.provider.where} "
                                                   f"({path}: not JSON)") from None

    def upload(self, data: bytes, filename: str) -> str:
        return self._json("POST", "/files", files={"file": (filename, data, "application/jsonl")},
                          data={"purpose": "batch"})["id"]

    def create(self, body: dict) -> dict:
        return self._json("POST", "/batches", json=body)

    def retrieve(self, batch_id: str) -> dict:
        return self._json("GET", f"/batches/{batch_id}")

    def cancel(self, batch_id: str) -> dict:
        return self._json("POST", f"/batches/{batch_id}/cancel")

    def content(self, file_id: str) -> bytes:
        return self._send("GET", f"/files/{file_id}/content")


__all__ = ["HttpTransport", "OpenAIBatch", "SdkTransport"]
