"""Upload an export to the Hugging Face Hub as a dataset repo: one commit with the data files and the card.

``HfApi`` is built with an explicit endpoint and token: huggingface_hub reads ``HF_ENDPOINT`` only when it is
first imported, so a notebook that sets it later (or a ``--hf-endpoint`` flag) would otherwise be ignored.
The token comes from ``HF_TOKEN`` at call time and is never stored, logged or put in an error message.

The calls are the documented high-level ones, ``create_repo(repo_type="dataset", exist_ok=True)`` then a
single ``create_commit``: one commit per export, so a failure leaves the repo as it was before.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from . import redact
from .errors import ConfigError, SdstudioError

DEFAULT_ENDPOINT = "https://huggingface.co"
_PART = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9_])?$")


class HubError(SdstudioError):
    """The Hub refused or failed an upload. Local files written before it stay where they are."""


@dataclass(frozen=True)
class HubCommit:
    repo_id: str
    revision: str  # the commit id
    commit_url: str
    url: str  # the dataset's page


def resolve_endpoint(option: str | None = None) -> str:
    """The option, else ``$HF_ENDPOINT``, else the public Hub; without a trailing slash. One carrying
    user:password or a query is refused (``ExportJob`` says why), shown masked."""
    from .urlsecrets import refuse_credentials, shown

    endpoint = (option or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).strip().rstrip("/")
    try:
        refuse_credentials(endpoint, "Hub endpoint" if option else "HF_ENDPOINT",
                           "put a Hub token in the HF_TOKEN environment variable")
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if not re.match(r"^https?://[^/\s]+", endpoint):
        raise ConfigError(f"Hub endpoint {shown(endpoint)!r} is not an http(s) URL; e.g. {DEFAULT_ENDPOINT}")
    return endpoint


def parse_repo_id(text: str) -> str:
    """``OWNER/NAME`` of a dataset repo from what a user pastes: the id, ``datasets/OWNER/NAME``,
    ``hf://datasets/OWNER/NAME`` or the dataset's URL. Model and space repos are refused by name."""
    raw = text.strip()
    path, is_url = raw, False
    if "://" in raw:
        is_url = True
        path = re.sub(r"^(hf://|https?://[^/]+/)", "", raw)
    parts = [p for p in path.split("?")[0].split("#")[0].strip("/").split("/") if p]
    kind = "dataset"
    if len(parts) >= 3 and parts[0] in ("datasets", "models", "spaces"):
        kind, parts = parts[0][:-1], parts[1:]
    elif is_url:
        kind = "model"  # a Hub URL without a type segment is a model's page
    if len(parts) > 2 and parts[2] in ("tree", "blob", "resolve", "commit"):
        parts = parts[:2]
    if kind != "dataset":
        raise ConfigError(f"hf_repo {text!r} names a {kind} repo; export uploads a dataset repo: give OWNER/NAME "
                          f"(or the URL with /datasets/)")
    if len(parts) != 2 or not all(_PART.match(p) for p in parts) or any(".." in p or "--" in p for p in parts):
        raise ConfigError(f"hf_repo {text!r} is not a dataset repo id; give OWNER/NAME (letters, digits, '-', '_', "
                          f"'.'; at most 96 characters each), e.g. my-org/code-sft")
    _check_with_hub_rules(text, "/".join(parts))
    return "/".join(parts)


def _check_with_hub_rules(text: str, repo_id: str) -> None:
    """huggingface_hub's own repo-id rules too (e.g. no trailing .git), so an id the Hub would refuse is one
    line before any file is written, not an upload error after."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        if repo_id.endswith(".git"):  # a clone URL's ending; the Hub would take it as part of the name
            raise ConfigError(f"hf_repo {text!r} is not a dataset repo id: it cannot end in .git (that is a clone "
                              f"URL's ending); give OWNER/NAME, e.g. {repo_id[:-4]}") from None
        raise ConfigError(f"hf_repo {text!r} is not a dataset repo id ({_one_line(str(exc))}); give OWNER/NAME, "
                          f"e.g. my-org/code-sft") from None


def hub_token() -> str:
    token = os.environ.get("HF_TOKEN", "").strip()
    if not token:
        raise ConfigError("uploading to the Hugging Face Hub needs a token with write access in the HF_TOKEN "
                          "environment variable (create one under Settings > Access Tokens)")
    redact.register(token)
    return token


def upload(folder: Path, files: list[str] | dict[str, str], *, repo_id: str, endpoint: str, token: str, private: bool,
           message: str, description: str = "") -> HubCommit:
    """Create the dataset repo if needed and commit ``files`` (names inside ``folder``, or a mapping of such a
    name to its path in the repo: a card kept beside a user's README.md is still the repo's README.md) in one
    commit."""
    from huggingface_hub import CommitOperationAdd, HfApi

    from . import __version__

    api = HfApi(endpoint=endpoint, token=token, library_name="sdstudio", library_version=__version__)
    step = "creating the dataset repo"
    try:
        repo_url = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        step = "uploading to"
        names = files if isinstance(files, dict) else {name: name for name in files}
        operations = [CommitOperationAdd(path_in_repo=in_repo, path_or_fileobj=str(folder / name))
                      for name, in_repo in names.items()]
        info = api.create_commit(repo_id, operations, commit_message=message, commit_description=description,
                                 repo_type="dataset")
    except Exception as exc:  # noqa: BLE001 - every failure becomes one line naming what to do
        raise HubError(redact.mask(_describe(exc, step, repo_id, endpoint).replace(token, "***"))) from None
    return HubCommit(repo_id=repo_id, revision=info.oid, commit_url=info.commit_url, url=str(repo_url))


def _describe(exc: Exception, step: str, repo_id: str, endpoint: str) -> str:
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    where = f"the Hub at {endpoint}"
    if isinstance(exc, HfHubHTTPError) and getattr(exc, "response", None) is not None:
        status = exc.response.status_code
        server = _one_line(getattr(exc, "server_message", None) or (str(exc).strip().splitlines() or [""])[-1])
        if status == 401 and "Invalid credentials" in (exc.response.headers.get("X-Error-Message") or server):
            return f"{where} rejected the token in HF_TOKEN (401 Unauthorized): check that it is valid and has write access"
        if isinstance(exc, RepositoryNotFoundError) or status == 404:
            return (f"dataset repo {repo_id} was not found on {endpoint} (HTTP {status}) while {step}: check the name; "
                    f"a model or space repo of that name is not a dataset repo, and a private repo needs a token "
                    f"that can see it")
        if status == 401:
            return f"{where} refused the token in HF_TOKEN (401 Unauthorized) while {step} {repo_id}: {server}"
        if status == 403:
            return (f"the token in HF_TOKEN may not write to {repo_id} on {endpoint} (403 Forbidden: {server}); "
                    f"use a token with write access to {repo_id.split('/')[0]} or your own namespace")
        if status >= 500:
            return (f"{where} failed while {step} {repo_id} (HTTP {status}: {server}); nothing was committed, "
                    f"re-run the export to retry")
        return f"{where} answered HTTP {status} while {step} {repo_id}: {server}"
    if isinstance(exc, ValueError) and "README.md" in str(exc):
        return f"{where} rejected the dataset card's metadata: {_one_line(str(exc))}"
    if isinstance(exc, (OSError, ConnectionError)) or type(exc).__module__.split(".")[0] in ("httpx", "httpx2",
                                                                                           "requests", "urllib3"):
        return (f"cannot reach {where} while {step} {repo_id} ({type(exc).__name__}: {_one_line(str(exc))}); check "
                f"the endpoint (--hf-endpoint or HF_ENDPOINT) and the network")
    return f"uploading to {repo_id} on {endpoint} failed while {step}: {type(exc).__name__}: {_one_line(str(exc))}"


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
