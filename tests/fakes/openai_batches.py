"""The fake OpenAI server with OpenAI's Files and Batch API: ``/v1/files`` (upload with purpose=batch, content),
``/v1/batches`` (create, retrieve, cancel), enough for the official ``openai`` client and httpx.

Each batch moves one state per poll (a retrieve): validating -> in_progress -> finalizing -> its outcome, so tests
drive time by polling, never by sleeping. The outcome of the next created batches comes from ``outcomes`` (then
``completed``): ``completed``; ``failed`` (the whole batch refused at validation, no output); ``expired`` (only the
first ``expired_answers`` lines answered); ``hold`` (stays in_progress until released or cancelled). A cancel
makes it ``cancelling``, then ``cancelled`` at the next poll. Every line is answered exactly as the chat endpoint
answers the same body (the flavor's refusals included); ``line_faults`` (a deque, in line order) makes lines fail
(``server_error`` 500, ``bad_request`` 400) or garbles their output line (``malformed``). ``creates`` counts the
batches created, ``cancels`` the cancels.
"""
from __future__ import annotations

import json
from collections import deque
from typing import Any

from aiohttp import web

from tests.fakes.openai_server import HONOURS, FakeOpenAIServer, _completion, _error, digest, forced_tool

STEPS = ("validating", "in_progress", "finalizing")


class FakeOpenAIBatchServer(FakeOpenAIServer):
    def __init__(self, **kwargs: Any):
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.outcomes: deque[str] = deque()
        self.line_faults: deque[str] = deque()
        self.expired_answers = 1
        self.creates = 0
        self.cancels = 0
        self.batch_lines: list[dict[str, Any]] = []  # every line of every created batch's input file
        self.held = True  # batches with outcome "hold" stay in_progress while this is True
        super().__init__(**kwargs)

    def build_app(self) -> web.Application:
        app = super().build_app()
        app.router.add_post("/v1/files", self._upload)
        app.router.add_get("/v1/files/{id}/content", self._content)
        app.router.add_post("/v1/batches", self._create)
        app.router.add_get("/v1/batches/{id}", self._retrieve)
        app.router.add_post("/v1/batches/{id}/cancel", self._cancel)
        return app

    # -- files ---------------------------------------------------------------------------------
    async def _upload(self, request: web.Request) -> web.Response:
        if (denied := self._unauthorized(request)) is not None:
            return denied
        form = await request.post()
        upload, purpose = form.get("file"), form.get("purpose")
        if purpose != "batch" or upload is None or not hasattr(upload, "file"):
            return _error(400, "invalid_file", "a file with purpose=batch is required", "invalid_request_error")
        return web.json_response(self._file(upload.file.read(), upload.filename, "batch"))

    def _file(self, data: bytes, filename: str, purpose: str) -> dict[str, Any]:
        file_id = f"file-{len(self.files) + 1:04d}"
        self.files[file_id] = data
        return {"id": file_id, "object": "file", "bytes": len(data), "created_at": 0, "filename": filename,
                "purpose": purpose, "status": "processed"}

    async def _content(self, request: web.Request) -> web.Response:
        if (denied := self._unauthorized(request)) is not None:
            return denied
        data = self.files.get(request.match_info["id"])
        if data is None:
            return _error(404, "not_found", "No such file", "invalid_request_error")
        return web.Response(body=data, content_type="application/octet-stream")

    # -- batches -------------------------------------------------------------------------------
    async def _create(self, request: web.Request) -> web.Response:
        if (denied := self._unauthorized(request)) is not None:
            return denied
        body = await request.json()
        data = self.files.get(body.get("input_file_id") or "")
        if data is None or body.get("endpoint") != "/v1/chat/completions" or body.get("completion_window") != "24h":
            return _error(400, "invalid_request", "unknown input_file_id, endpoint or completion_window",
                          "invalid_request_error")
        lines = [json.loads(raw) for raw in data.decode().splitlines() if raw.strip()]
        self.batch_lines.extend(lines)
        self.creates += 1
        batch_id = f"batch_{self.creates:04d}"
        outcome = self.outcomes.popleft() if self.outcomes else "completed"
        ids = [line.get("custom_id") for line in lines]
        if len(set(ids)) != len(ids) or any(line.get("url") != "/v1/chat/completions" for line in lines):
            outcome = "invalid"
        self.batches[batch_id] = {
            "id": batch_id, "object": "batch", "endpoint": body["endpoint"], "errors": None,
            "input_file_id": body["input_file_id"], "completion_window": "24h", "status": "validating",
            "output_file_id": None, "error_file_id": None, "created_at": 0, "metadata": body.get("metadata"),
            "request_counts": {"total": len(lines), "completed": 0, "failed": 0},
            "_lines": lines, "_outcome": outcome, "_step": 0}
        return web.json_response(self._shown(self.batches[batch_id]))

    @staticmethod
    def _shown(batch: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in batch.items() if not k.startswith("_")}

    async def _retrieve(self, request: web.Request) -> web.Response:
        if (denied := self._unauthorized(request)) is not None:
            return denied
        batch = self.batches.get(request.match_info["id"])
        if batch is None:
            return _error(404, "not_found", "No such batch", "invalid_request_error")
        self._advance(batch)
        return web.json_response(self._shown(batch))

    async def _cancel(self, request: web.Request) -> web.Response:
        if (denied := self._unauthorized(request)) is not None:
            return denied
        batch = self.batches.get(request.match_info["id"])
        if batch is None:
            return _error(404, "not_found", "No such batch", "invalid_request_error")
        self.cancels += 1
        if batch["status"] in STEPS:
            batch["status"] = "cancelling"
        return web.json_response(self._shown(batch))

    def _advance(self, batch: dict[str, Any]) -> None:
        """One step per poll towards the batch's outcome."""
        status, outcome = batch["status"], batch["_outcome"]
        if status == "cancelling":
            self._finish(batch, "cancelled", answered=0)
        elif status == "validating" and outcome in ("failed", "invalid"):
            batch["status"] = "failed"
            batch["errors"] = {"object": "list", "data": [
                {"code": "invalid_request", "message": "the input file failed validation", "line": 1}]}
        elif status == "in_progress" and outcome == "hold" and self.held:
            return
        elif status in STEPS[:-1]:
            batch["status"] = STEPS[STEPS.index(status) + 1]
        elif status == "finalizing":
            if outcome == "expired":
                self._finish(batch, "expired", answered=self.expired_answers)
            else:
                self._finish(batch, "completed", answered=len(batch["_lines"]))

    def _finish(self, batch: dict[str, Any], status: str, answered: int) -> None:
        output, errors = [], []
        for line in batch["_lines"][:answered]:
            fault = self.line_faults.popleft() if self.line_faults else None
            result = self._answer_line(line, fault)
            (errors if result["response"]["status_code"] >= 400 else output).append(json.dumps(result))
            if fault == "malformed":
                output[-1] = output[-1][: len(output[-1]) // 2]  # cut mid-line: not JSON, its custom_id still in it
        batch["request_counts"] = {"total": len(batch["_lines"]), "completed": len(output), "failed": len(errors)}
        if output:
            batch["output_file_id"] = self._file(("\n".join(output) + "\n").encode(), "output.jsonl",
                                                 "batch_output")["id"]
        if errors:
            batch["error_file_id"] = self._file(("\n".join(errors) + "\n").encode(), "errors.jsonl",
                                                "batch_output")["id"]
        batch["status"] = status

    def _answer_line(self, line: dict[str, Any], fault: str | None) -> dict[str, Any]:
        """The chat endpoint's answer to this line's body, as a batch output (or error) line."""
        body = line.get("body") or {}
        status, reply = 200, None
        if fault == "server_error":
            status, reply = 500, {"error": {"message": "The server had an error", "type": "server_error"}}
        elif fault == "bad_request":
            status, reply = 400, {"error": {"message": "Invalid value for messages", "type": "invalid_request_error",
                                            "code": "invalid_value"}}
        elif body.get("model") not in self.models:
            status, reply = 404, {"error": {"message": f"The model `{body.get('model')}` does not exist",
                                            "code": "model_not_found"}}
        elif (refusal := self._refusal(body)) is not None:
            status, reply = refusal.status, json.loads(refusal.text)
        else:
            understood = self._understood(body)
            text = self.reply(understood)
            self.answered.append(body)
            tool = forced_tool(understood) if "tool" in HONOURS[self.flavor] else None
            reply = _completion(body, text, tool)
        return {"id": f"batch_req_{digest(json.dumps(line, sort_keys=True))}", "custom_id": line.get("custom_id"),
                "response": {"status_code": status, "request_id": "req", "body": reply}, "error": None}
