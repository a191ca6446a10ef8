"""Cloudera AI Inference: OpenAI-compatible model endpoints, found by name through the platform's listing.

Each endpoint has its own URL (``https://DOMAIN/namespaces/serving-default/endpoints/NAME/v1``) and serves one
model under its own model id, so asking a user for URLs is asking them to copy three things from another page.
With the service's domain (``CAII_DOMAIN``, or a ``base_url`` that is just ``https://DOMAIN``) the provider lists
the endpoints the user may call (``POST /api/v1alpha1/listEndpoints``) and ``model`` is the endpoint's *name*;
the URL and the served model id are looked up before the first request. A full endpoint URL as ``base_url``
still works as before (``model`` is then the served model id).

The credential is a CDP workload JWT: ``CDP_TOKEN`` or the file Cloudera AI mounts in every session and job
(``/tmp/jwt``, ``{"access_token": ...}``). Such tokens expire; an expired one (read from its ``exp`` claim before
anything is sent, or a 401 from the platform) is one line saying how to get a fresh one.
"""
from __future__ import annotations

import base64
import binascii
import json
import os
import time
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

from ..config import ModelSpec
from ..errors import ConfigError
from ..urlsecrets import reveal
from .base import ChatRequest, Completion, ProviderError
from .openai_compat import OpenAICompatibleProvider, checked_url

DOMAIN_ENV = "CAII_DOMAIN"
NAMESPACE_ENV = "CAII_NAMESPACE"
DEFAULT_NAMESPACE = "serving-default"
LIST_PATH = "/api/v1alpha1/listEndpoints"
# the CDP CLI call that mints a workload token (docs.cloudera.com: "Authenticating Cloudera AI Inference service")
REFRESH = ("refresh it: in a Cloudera AI session or job the platform renews /tmp/jwt (start a new session or run "
           "the job again); elsewhere export CDP_TOKEN=$(cdp iam generate-workload-auth-token --workload-name DE "
           "| jq -r .token)")


def token_expiry(token: str) -> float | None:
    """The ``exp`` claim (epoch seconds) of a JWT, unverified (the platform verifies it; we only want to say
    "expired" before sending a thousand requests); None when ``token`` is not a JWT or has no ``exp``."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
        return float(payload["exp"])
    except (binascii.Error, ValueError, KeyError, TypeError):
        return None


def service_root(value: str) -> str:
    """``https://DOMAIN`` from a bare domain (``ml-1234.example.cloudera.site``) or a URL (scheme kept)."""
    value = value.strip().rstrip("/")
    return value if "://" in value else f"https://{value}"


def is_service_root(url: str | None) -> bool:
    """A URL with no path names the AI Inference service (list its endpoints), not one endpoint."""
    return bool(url) and urlsplit(url if "://" in url else f"https://{url}").path.strip("/") == ""


def endpoint_base(url: str) -> str:
    """An endpoint's listed URL (``.../endpoints/NAME/v1/chat/completions``) as a ``base_url`` (``.../v1``)."""
    for suffix in ("/chat/completions", "/completions"):
        if url.endswith(suffix):
            return url[: -len(suffix)]
    return url.rstrip("/")


def is_chat_endpoint(endpoint: dict[str, Any]) -> bool:
    """Loaded, OpenAI-protocol text generation: what a workflow can call (fields absent: assume so)."""
    task = str(endpoint.get("task") or "TEXT_GENERATION").upper()
    standard = str(endpoint.get("api_standard") or "openai").lower()
    state = str(endpoint.get("state") or "Loaded").lower()
    return task in ("TEXT_GENERATION", "TEXT_TO_TEXT_GENERATION") and standard == "openai" and state == "loaded"


class CaiiProvider(OpenAICompatibleProvider):
    """Cloudera AI Inference: endpoints listed by name from the service's domain (``CAII_DOMAIN``) or one
    endpoint URL; token from ``CDP_TOKEN`` or the session's ``/tmp/jwt`` file."""

    name: ClassVar[str] = "caii"
    # NVIDIA NIM takes response_format on recent releases and nvext.guided_json on every one
    structured_chain: ClassVar[tuple[str, ...]] = ("json_schema", "nvext", "json_object", "prompt")
    jwt_path: ClassVar[str] = "/tmp/jwt"
    batch_backend: ClassVar[str | None] = None  # AI Inference serves chat, not /v1/batches
    key_env: ClassVar[str | None] = "CDP_TOKEN"
    needs_key: ClassVar[bool] = True

    def __init__(self, spec: ModelSpec):
        self.root: str | None = None  # the service, when endpoints are found by name
        self.endpoint_name: str | None = None
        super().__init__(spec)

    @classmethod
    def jwt_file(cls) -> Path:
        return Path(os.environ.get("SDSTUDIO_CAII_JWT_FILE", cls.jwt_path))

    @classmethod
    def status(cls) -> str:
        token = (f"{cls.key_env} set" if os.environ.get(cls.key_env or "")
                 else f"{cls.jwt_file()} present" if cls.jwt_file().is_file() else "")
        domain = os.environ.get(DOMAIN_ENV)
        return f"{token}; endpoints of {domain}" if token and domain else token

    # -- where and who ---------------------------------------------------------------------------
    def endpoint(self) -> str | None:
        if self.spec.base_url and not is_service_root(self.spec.base_url):
            return self.reveal_url()  # one endpoint's URL: used as it is
        domain = self.spec.base_url or os.environ.get(DOMAIN_ENV)
        if not domain:
            raise ConfigError(f"provider caii needs the AI Inference service's domain ({DOMAIN_ENV}, e.g. "
                              f"ml-1234abcd.example.cloudera.site, from `cdp ml list-ml-serving-apps`) or an "
                              f"endpoint URL as base_url")
        self.root = checked_url(service_root(domain))
        self.endpoint_name = self.spec.model
        return None  # the endpoint's URL comes from the listing, before the first request

    @property
    def where(self) -> str:
        return self.url.shown.rstrip("/") or self.root or "Cloudera AI Inference"

    def default_model(self) -> str:
        return ""

    def credential(self) -> str:
        token = self.secret_from_env(self.spec.api_key_env or self.key_env or "")
        source = self.spec.api_key_env or self.key_env
        if not token:
            path = source = self.jwt_file()
            try:
                token = json.loads(path.read_text())["access_token"]
            except FileNotFoundError:
                raise ConfigError(f"no Cloudera AI token: set CDP_TOKEN or run inside a Cloudera AI session "
                                  f"(which provides {path})") from None
            except (OSError, ValueError, KeyError, TypeError):
                raise ConfigError(f"{path} does not hold a JSON object with an access_token") from None
            self.add_secret(token)
        expiry = token_expiry(token)
        if expiry is not None and expiry <= time.time():
            ago = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(expiry))
            raise ConfigError(f"the Cloudera AI token in {source} expired at {ago}; {REFRESH}")
        return token

    # -- the endpoint listing --------------------------------------------------------------------
    async def endpoints(self) -> list[dict[str, Any]]:
        """The service's endpoints this token may call, as the platform lists them (chat ones only)."""
        if self.root is None:
            raise ConfigError("provider caii lists endpoints by name only with the service's domain "
                              f"({DOMAIN_ENV}); base_url {self.where} is one endpoint")
        namespace = os.environ.get(NAMESPACE_ENV) or DEFAULT_NAMESPACE
        url, self.base_url = self.base_url, self.root  # _call's URL is base_url + path
        try:
            data = await self._call("POST", LIST_PATH, {"namespace": namespace})
        finally:
            self.base_url = url
        try:
            listed = [e for e in data.get("endpoints") or [] if isinstance(e, dict) and e.get("name")]
        except AttributeError:
            raise self.error("transient", f"malformed endpoint list from {self.root}") from None
        return sorted((e for e in listed if is_chat_endpoint(e)), key=lambda e: str(e["name"]))

    async def list_models(self) -> list[str]:
        if self.root is None:
            return await super().list_models()
        return [str(e["name"]) for e in await self.endpoints()]

    async def resolve(self) -> None:
        """Find the named endpoint's URL and served model id (once) when endpoints are found by name."""
        if self.root is None or self.base_url:
            return
        if not self.endpoint_name:
            raise self.error("bad_request", "no endpoint name; set model (`sdstudio models --provider caii "
                                            "--domain DOMAIN` lists them)")
        listed = {str(e["name"]): e for e in await self.endpoints()}
        found = listed.get(self.endpoint_name)
        if found is None or not found.get("url"):
            offered = ", ".join(listed) or "none"
            raise self.error("bad_request", f"{self.root} has no loaded chat endpoint named {self.endpoint_name!r} "
                                            f"(yours: {offered})")
        self.url = reveal(endpoint_base(str(found["url"])))
        self.base_url = checked_url(self.url.url, self.url.shown)
        self.model = str(found.get("model_name") or found.get("model") or self.endpoint_name)

    @property
    def model_id(self) -> str | None:
        return self.endpoint_name or super().model_id  # jobs record the endpoint a user picked, by its name

    async def complete(self, request: ChatRequest) -> Completion:
        await self.resolve()
        return await super().complete(request)

    def endpoint_key(self) -> str:
        # by name, the same before and after the URL is looked up: metadata.db remembers the dialect under one key
        return f"{self.root}#{self.endpoint_name}" if self.root else self.where

    # -- errors ----------------------------------------------------------------------------------
    def classify(self, status: int, detail: str, headers: Any = None) -> ProviderError:
        error = super().classify(status, detail, headers)
        if status == 401:  # an expired or revoked JWT: say how to get a new one, in the same line
            return self.error("auth", f"{self.where} refused the credentials (401): {detail}; if the Cloudera AI "
                                      f"token expired, {REFRESH}", status=status)
        return error
