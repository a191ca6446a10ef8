"""A real Hugging Face Hub look-alike on 127.0.0.1, enough for the real ``huggingface_hub`` client to
create a dataset repo and commit files to it.

What ``HfApi.create_repo`` + ``HfApi.create_commit`` call (read from huggingface_hub 2.x's source):
  POST /api/repos/create                                   {name, organization, visibility, type}
  POST /api/validate-yaml                                  {content, repoType}   (when README.md is added)
  POST /api/{type}s/{namespace}/{name}/preupload/{rev}     {files: [{path, sample, size}]}
  POST /api/{type}s/{namespace}/{name}/commit/{rev}        NDJSON: header, then one line per file
  GET  /api/{type}s/{namespace}/{name}[/revision/{rev}]    repo_info (create_repo(exist_ok) after 401/403,
                                                           and create_commit when nothing changed)
Preupload answers ``uploadMode: regular`` for every file, so the client sends contents base64-encoded
inside the commit itself: no LFS batch, no Xet negotiation, nothing outside loopback.

Tokens are checked as the Hub does (``Authorization: Bearer``; a bad one gets 401 with the
``Invalid credentials in Authorization header`` message the client recognises). Committed files are kept in
memory per repo so tests can read them back, and ``fail`` injects an HTTP error at a named step
(``create``, ``validate``, ``preupload``, ``commit``) to simulate a failure mid-upload.
"""
from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import yaml
from aiohttp import web

from tests.fakes.loopback import LoopbackServer

REPO_TYPES = ("model", "dataset", "space")
KNOWN_TASK_CATEGORIES = {"text-generation", "question-answering", "text-classification", "summarization",
                         "translation", "table-question-answering", "text2text-generation", "other"}
SIZE_CATEGORIES = {"n<1K", "1K<n<10K", "10K<n<100K", "100K<n<1M", "1M<n<10M", "10M<n<100M", "100M<n<1B",
                   "1B<n<10B", "10B<n<100B", "100B<n<1T", "n>1T"}


def git_blob_oid(content: bytes) -> str:
    """The git SHA-1 of a blob: what the Hub reports as a regular file's oid."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass
class FakeRepo:
    repo_id: str
    repo_type: str
    private: bool
    files: dict[str, bytes] = field(default_factory=dict)
    commits: list[dict[str, Any]] = field(default_factory=list)

    @property
    def sha(self) -> str:
        return self.commits[-1]["oid"] if self.commits else "0" * 40

    def text(self, path: str) -> str:
        return self.files[path].decode("utf-8")


class FakeHubServer(LoopbackServer):
    """Start with ``with FakeHubServer(tokens={"hf_good": "alice"}) as hub:``; ``hub.url`` is the endpoint."""

    label = "fake Hub server"

    def __init__(self, *, tokens: dict[str, str] | None = None, orgs: dict[str, list[str]] | None = None,
                 port: int = 0):
        self.tokens = tokens if tokens is not None else {"hf_fake_token": "fake-user"}
        self.orgs = orgs or {}  # user -> organisations the user may write to
        self.repos: dict[tuple[str, str], FakeRepo] = {}  # (repo_type, repo_id) -> repo
        self.requests: list[tuple[str, str]] = []  # (method, path) in arrival order
        self.authorizations: list[str | None] = []  # Authorization headers received (tests check secrets)
        self.fail: dict[str, int] = {}  # step -> HTTP status to answer once
        super().__init__(port)

    # -- test helpers --------------------------------------------------------------------------
    def repo(self, repo_id: str, repo_type: str = "dataset") -> FakeRepo:
        return self.repos[(repo_type, repo_id)]

    def add_repo(self, repo_id: str, repo_type: str = "dataset", private: bool = False) -> FakeRepo:
        repo = FakeRepo(repo_id, repo_type, private)
        self.repos[(repo_type, repo_id)] = repo
        return repo

    # -- lifecycle (LoopbackServer does the rest) -----------------------------------------------
    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=1024 ** 3, middlewares=[self._log])
        app.router.add_post("/api/repos/create", self._create)
        app.router.add_post("/api/validate-yaml", self._validate_yaml)
        base = "/api/{kind:models|datasets|spaces}/{namespace}/{name}"
        app.router.add_post(base + "/preupload/{revision}", self._preupload)
        app.router.add_post(base + "/commit/{revision}", self._commit)
        app.router.add_get(base, self._info)
        app.router.add_get(base + "/revision/{revision}", self._info)
        return app

    # -- plumbing ------------------------------------------------------------------------------
    @web.middleware
    async def _log(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests.append((request.method, request.path))
        self.authorizations.append(request.headers.get("Authorization"))
        return await handler(request)

    def _user(self, request: web.Request) -> tuple[str | None, web.Response | None]:
        """(user, None) for a good token; (None, 401) for a bad one; (None, None) when none was sent."""
        header = request.headers.get("Authorization", "")
        if not header:
            return None, None
        token = header.removeprefix("Bearer ").strip()
        if token not in self.tokens:
            message = "Invalid credentials in Authorization header"
            return None, web.json_response({"error": message}, status=401, headers={"X-Error-Message": message})
        return self.tokens[token], None

    def _injected(self, step: str) -> web.Response | None:
        status = self.fail.pop(step, None)
        if status is None:
            return None
        return web.json_response({"error": f"Internal Error - injected failure at {step}"}, status=status)

    def _may_write(self, user: str, namespace: str) -> bool:
        return namespace == user or namespace in self.orgs.get(user, [])

    def _find(self, request: web.Request, user: str | None) -> tuple[FakeRepo | None, web.Response | None]:
        kind = request.match_info["kind"][:-1]
        repo_id = f"{request.match_info['namespace']}/{request.match_info['name']}"
        repo = self.repos.get((kind, repo_id))
        if repo is None or (repo.private and (user is None or not self._may_write(user, repo.repo_id.split("/")[0]))):
            return None, web.json_response({"error": "Repository not found"}, status=404,
                                           headers={"X-Error-Code": "RepoNotFound",
                                                    "X-Error-Message": "Repository not found"})
        return repo, None

    def _url(self, repo: FakeRepo) -> str:
        prefix = "" if repo.repo_type == "model" else f"{repo.repo_type}s/"
        return f"{self.url}/{prefix}{repo.repo_id}"

    # -- handlers ------------------------------------------------------------------------------
    async def _create(self, request: web.Request) -> web.Response:
        user, denied = self._user(request)
        if denied is not None:
            return denied
        if user is None:
            return web.json_response({"error": "You must be authenticated to create a repo"}, status=401)
        if (failed := self._injected("create")) is not None:
            return failed
        body = await request.json()
        kind = body.get("type") or "model"
        if kind not in REPO_TYPES:
            return web.json_response({"error": f"Invalid repo type {kind!r}"}, status=400)
        namespace = body.get("organization") or user
        if not self._may_write(user, namespace):
            return web.json_response({"error": f"You don't have the rights to create a {kind} under the namespace "
                                               f"\"{namespace}\""}, status=403)
        repo_id = f"{namespace}/{body['name']}"
        existing = self.repos.get((kind, repo_id))
        if existing is not None:
            return web.json_response({"error": f"You already created this {kind} repo", "url": self._url(existing)},
                                     status=409)
        repo = self.add_repo(repo_id, kind, private=body.get("visibility", "public") != "public")
        return web.json_response({"url": self._url(repo), "name": repo_id, "id": repo_id})

    async def _validate_yaml(self, request: web.Request) -> web.Response:
        _, denied = self._user(request)
        if denied is not None:
            return denied
        if (failed := self._injected("validate")) is not None:
            return failed
        body = await request.json()
        errors = validate_card(body.get("content", ""), body.get("repoType", "model"))
        return web.json_response({"errors": [{"message": e} for e in errors], "warnings": []},
                                 status=400 if errors else 200)

    async def _info(self, request: web.Request) -> web.Response:
        user, denied = self._user(request)
        if denied is not None:
            return denied
        repo, missing = self._find(request, user)
        if missing is not None:
            return missing
        return web.json_response({"_id": repo.repo_id, "id": repo.repo_id, "sha": repo.sha, "private": repo.private,
                                  "author": repo.repo_id.split("/")[0], "tags": [], "downloads": 0, "likes": 0,
                                  "siblings": [{"rfilename": path} for path in sorted(repo.files)]})

    async def _writable(self, request: web.Request) -> tuple[FakeRepo | None, web.Response | None]:
        user, denied = self._user(request)
        if denied is not None:
            return None, denied
        repo, missing = self._find(request, user)
        if missing is not None:
            return None, missing
        if user is None or not self._may_write(user, repo.repo_id.split("/")[0]):
            return None, web.json_response({"error": "You don't have write access to this repo"}, status=403)
        return repo, None

    async def _preupload(self, request: web.Request) -> web.Response:
        repo, refused = await self._writable(request)
        if refused is not None:
            return refused
        if (failed := self._injected("preupload")) is not None:
            return failed
        body = await request.json()
        files = []
        for entry in body.get("files", []):
            stored = repo.files.get(entry["path"])
            files.append({"path": entry["path"], "uploadMode": "regular", "shouldIgnore": False,
                          "oid": git_blob_oid(stored) if stored is not None else None})
        return web.json_response({"files": files, "commitOid": repo.sha})

    async def _commit(self, request: web.Request) -> web.Response:
        repo, refused = await self._writable(request)
        if refused is not None:
            return refused
        if request.content_type != "application/x-ndjson":
            return web.json_response({"error": "expected application/x-ndjson"}, status=400)
        lines = [json.loads(line) for line in (await request.read()).splitlines() if line.strip()]
        if (failed := self._injected("commit")) is not None:
            return failed
        if not lines or lines[0].get("key") != "header":
            return web.json_response({"error": "the first line must be the commit header"}, status=400)
        header, changes = lines[0]["value"], {}
        for line in lines[1:]:
            key, value = line["key"], line["value"]
            if key == "file":
                if value.get("encoding") != "base64":
                    return web.json_response({"error": "only base64 file contents are supported"}, status=400)
                changes[value["path"]] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                changes[value["path"]] = None
            else:  # lfsFile and friends: preupload never offered LFS, so a client sending one is wrong
                return web.json_response({"error": f"unexpected commit operation {key!r}"}, status=400)
        for path, content in changes.items():
            if content is None:
                repo.files.pop(path, None)
            else:
                repo.files[path] = content
        oid = hashlib.sha1(f"{repo.sha}:{len(repo.commits)}:{header.get('summary')}".encode()).hexdigest()
        repo.commits.append({"oid": oid, "summary": header.get("summary"), "description": header.get("description"),
                             "paths": sorted(changes)})
        return web.json_response({"commitUrl": f"{self._url(repo)}/commit/{oid}", "commitOid": oid,
                                  "pullRequestUrl": None, "success": True})


def validate_card(content: str, repo_type: str) -> list[str]:
    """The README.md metadata checks that matter for a dataset card (a small part of the Hub's)."""
    if not content.startswith("---\n"):
        return []
    try:
        header = content.split("---\n", 2)[1]
        meta = yaml.safe_load(header)
    except (IndexError, yaml.YAMLError) as exc:
        return [f"YAML metadata is not valid: {exc}"]
    if not isinstance(meta, dict):
        return ["YAML metadata must be a mapping"]
    errors = []
    if "license" in meta and not isinstance(meta["license"], str):
        errors.append('"license" must be a string')
    if repo_type == "dataset":
        for category in meta.get("task_categories") or []:
            if category not in KNOWN_TASK_CATEGORIES:
                errors.append(f'"task_categories" has an unknown value {category!r}')
        for size in meta.get("size_categories") or []:
            if size not in SIZE_CATEGORIES:
                errors.append(f'"size_categories" has an unknown value {size!r}')
        for config in meta.get("configs") or []:
            if not isinstance(config, dict) or "config_name" not in config or "data_files" not in config:
                errors.append('"configs" entries need config_name and data_files')
    return errors
