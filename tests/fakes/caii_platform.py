"""A loopback Cloudera AI Inference service: the endpoint listing (``POST /api/v1alpha1/listEndpoints``, the
shape docs.cloudera.com shows: ``{"endpoints": [{"namespace", "name", "url", "state", "task", "api_standard",
"model_name"}]}``) and each listed endpoint's OpenAI-compatible chat at
``/namespaces/NS/endpoints/NAME/v1/chat/completions``, all behind a CDP JWT (``Authorization: Bearer``).

A token in ``expired`` gets the gateway's 401 ("Jwt is expired"), as a real token past its ``exp`` does;
``requests`` records (path, body) of every call so tests see what the client asked.
"""
from __future__ import annotations

import base64
import json
import time
from typing import Any

from aiohttp import web

from tests.fakes.loopback import LoopbackServer

NAMESPACE = "serving-default"


def jwt(exp: float, subject: str = "reviewer@example.com") -> str:
    """An unsigned JWT with ``exp`` (the client only reads the claim; the platform verifies signatures)."""
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    return f"{part({'alg': 'RS256', 'typ': 'JWT'})}.{part({'sub': subject, 'exp': int(exp)})}.c2lnbmF0dXJl"


class FakeCaiiPlatform(LoopbackServer):
    """``endpoints``: name -> served model id (text generation, Loaded); ``others``: extra listing entries as
    they are (an embedding endpoint, one still loading)."""

    label = "fake Cloudera AI Inference"

    def __init__(self, token: str, endpoints: dict[str, str], others: list[dict[str, Any]] | None = None):
        self.token = token
        self.expired: set[str] = set()
        self.endpoint_models = endpoints
        self.others = others or []
        self.requests: list[tuple[str, Any]] = []
        super().__init__()

    def build_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/api/v1alpha1/listEndpoints", self._list)
        app.router.add_post("/namespaces/{namespace}/endpoints/{name}/v1/chat/completions", self._chat)
        return app

    def endpoint_url(self, name: str) -> str:
        return f"{self.url}/namespaces/{NAMESPACE}/endpoints/{name}/v1/chat/completions"

    def _refused(self, request: web.Request) -> web.Response | None:
        offered = request.headers.get("Authorization", "")
        if offered.removeprefix("Bearer ") in self.expired:
            return web.Response(status=401, text="Jwt is expired")
        if offered != f"Bearer {self.token}":
            return web.Response(status=401, text="Jwt verification fails")
        return None

    async def _list(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append((request.path, body))
        if (refused := self._refused(request)) is not None:
            return refused
        listed = [{"namespace": NAMESPACE, "name": name, "url": self.endpoint_url(name), "state": "Loaded",
                   "task": "TEXT_GENERATION", "api_standard": "openai", "model_name": model}
                  for name, model in self.endpoint_models.items()]
        return web.json_response({"endpoints": listed + self.others})

    async def _chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append((request.path, body))
        if (refused := self._refused(request)) is not None:
            return refused
        name = request.match_info["name"]
        if self.endpoint_models.get(name) != body.get("model"):
            return web.json_response({"error": {"message": f"model {body.get('model')!r} is not served here"}},
                                     status=404)
        text = f"{name} answers as {body['model']}"
        return web.json_response({"id": "chatcmpl-caii", "object": "chat.completion", "created": int(time.time()),
                                  "model": body["model"], "choices": [{"index": 0, "finish_reason": "stop",
                                  "message": {"role": "assistant", "content": text}}],
                                  "usage": {"prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11}})
