"""Secret hygiene: with canary credentials in OPENAI_API_KEY, CDP_TOKEN, a named api_key_env, the AWS keys and
HF_TOKEN, run every remote provider path (and the Hub upload), good keys and refused ones, then look for the
canaries in metadata.db (and its WAL), the exports, stdout/stderr of the CLI (tracebacks on), log records at
DEBUG, exception texts, tracebacks and reprs. The embedded `local` provider reads no credential, and runs too.

Credentials written into URLs are canaries too: a password in ``--base-url http://user:pw@host/v1`` and a key in
``?api_key=`` against servers that require them (and echo what they refuse), and the same in a Bedrock endpoint
and a Hub endpoint, which are refused.
"""
from __future__ import annotations

import base64
import io
import json
import logging
import os
import pickle
import socket
import subprocess
import sys
import traceback
from pathlib import Path

import pytest

from sdstudio.config import ExportJob, GenerationJob, ModelParameters, ModelSpec
from sdstudio.errors import SdstudioError
from sdstudio.providers import ChatRequest, get_provider, run_sync
from sdstudio.store import Store
from sdstudio.workflows.sft import GenerationRun
from tests.conftest import AWS_ACCESS_KEY, AWS_CANARY_SECRET
from tests.fakes.bedrock_server import FakeBedrockServer
from tests.fakes.hub_server import FakeHubServer
from tests.fakes.openai_server import FakeOpenAIServer

ROOT = Path(__file__).resolve().parents[2]
CANARIES = {
    "OPENAI_API_KEY": "sk-canary-openai-7d41e0c2a9b84f6e",
    "CDP_TOKEN": "canary-cdp-token-2b9f6a1e5c3d8e7f",
    "MY_LLM_KEY": "canary-compatible-key-9e8d7c6b5a4f",
    "AWS_SESSION_TOKEN": "canary-aws-session-token-4c3b2a1f0e9d",
    "HF_TOKEN": "hf_canaryHubToken5e4d3c2b1a0f9e8d",
}
ITEM = json.dumps({"question": "How do you reverse a list in Python?", "solution": "items = [1, 2, 3]\nitems.reverse()",
                   "explanation": "list.reverse() reverses the list in place"})
WRONG = {name: value + "-wrong" for name, value in CANARIES.items()}  # refused keys are canaries too
URL_CANARIES = {"password": "canary-url-password-6e5d4c3b2a19", "query": "canary-url-query-key-0f1e2d3c4b5a",
                "hub": "canary-hub-url-password-7a8b9c0d", "bedrock": "canary-bedrock-url-secret-1b2c3d4e"}
URL_WRONG = {name: value + "-wrong" for name, value in URL_CANARIES.items()}
EVERY_CANARY = [*CANARIES.values(), *WRONG.values(), AWS_CANARY_SECRET, *URL_CANARIES.values(), *URL_WRONG.values(),
                *(base64.b64encode(f"alice:{p}".encode()).decode() for p in (URL_CANARIES["password"],
                                                                             URL_WRONG["password"]))]


class EchoingServer(FakeOpenAIServer):
    """Accepts the good canaries; a refused key is echoed in the error body, as some proxies do, so a
    message that passes the provider's text on unredacted would carry it."""

    def __init__(self, keys: set[str], **kw):
        super().__init__(**kw)
        self.keys = keys

    def _unauthorized(self, request):
        from tests.fakes.openai_server import _error

        offered = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if offered not in self.keys:
            return _error(401, "invalid_api_key", f"Incorrect API key provided: {offered}.", "invalid_request_error")
        return None


def leaks(text: str | bytes) -> list[str]:
    data = text if isinstance(text, bytes) else text.encode("utf-8", "replace")
    return [c for c in EVERY_CANARY if c.encode() in data]


@pytest.fixture
def canaries(monkeypatch, aws_env, tmp_path):
    for name, value in CANARIES.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    real_connect = socket.socket.connect

    def loopback_only(sock, address):  # a canary must not even try to leave the machine
        if sock.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in ("127.0.0.1", "::1", "localhost"):
            raise OSError(f"test tried to reach {address[0]} outside loopback")
        return real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", loopback_only)


@pytest.fixture
def servers():
    good = {CANARIES["OPENAI_API_KEY"], CANARIES["CDP_TOKEN"], CANARIES["MY_LLM_KEY"]}
    with EchoingServer(good) as openai, FakeBedrockServer(access_key=AWS_ACCESS_KEY, reply=lambda body: ITEM) as bedrock, \
            FakeHubServer(tokens={CANARIES["HF_TOKEN"]: "alice"}) as hub:
        yield openai, bedrock, hub


def specs(openai, bedrock) -> dict[str, ModelSpec]:
    return {
        "openai": ModelSpec(provider="openai", model="fake-model", base_url=openai.url),
        "caii": ModelSpec(provider="caii", model="fake-model", base_url=openai.url),
        "openai_compatible": ModelSpec(provider="openai_compatible", model="fake-model", base_url=openai.url,
                                       api_key_env="MY_LLM_KEY"),
        "bedrock": ModelSpec(provider="bedrock", model="anthropic.claude-3-haiku-20240307-v1:0",
                             base_url=bedrock.url, region="us-east-1"),
    }


@pytest.mark.slow
def test_no_canary_credential_reaches_the_db_exports_logs_errors_or_reprs(canaries, servers, home, monkeypatch):
    openai, bedrock, hub = servers
    seen: list[tuple[str, str]] = []  # (where, text) to search

    records = io.StringIO()
    handler = logging.StreamHandler(records)
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)  # every library's debug log: botocore, httpx, openai, urllib3, sdstudio
    try:
        store = Store.open(home)
        jobs = {}
        for name, spec in specs(openai, bedrock).items():
            provider = get_provider(spec)
            seen += [(f"repr {name}", repr(provider)), (f"spec {name}", spec.model_dump_json())]
            config = GenerationJob(topics=[f"Secrets via {name}"], num_per_topic=1, batch_size=1, model=spec)
            result = GenerationRun(config, store=store, provider=provider).run()
            assert result.ok == 1, (name, result)
            jobs[name] = result.job_id
            seen.append((f"result {name}", repr(result)))
        local = ModelSpec(provider="local", parameters=ModelParameters(max_tokens=48))
        result = GenerationRun(GenerationJob(topics=["Secrets via local"], num_per_topic=1, batch_size=1, max_rounds=0,
                                             model=local), store=store).run()
        assert result.ok + result.failed == 1  # the tiny model may not write a valid item; it must run
        seen.append(("result local", repr(result)))

        # refused credentials, in-process: the errors, their reprs, pickles and tracebacks
        for variable, value in WRONG.items():
            monkeypatch.setenv(variable, value)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_CANARY_SECRET + "-wrong")
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDWRONGKEY000000")
        for name, spec in specs(openai, bedrock).items():
            provider = get_provider(spec)
            for call in (lambda: run_sync(provider.complete(ChatRequest.of("hello"))),
                         lambda: GenerationRun(GenerationJob(topics=[f"refused {name}"], num_per_topic=1, batch_size=1,
                                                             model=spec), store=store, provider=provider).run()):
                with pytest.raises(SdstudioError) as caught:
                    call()
                exc = caught.value
                assert "refused" in str(exc) or "credentials" in str(exc) or "Unrecognized" in str(exc), str(exc)
                seen += [(f"error {name}", str(exc)), (f"repr error {name}", repr(exc)),
                         (f"pickled error {name}", repr(pickle.loads(pickle.dumps(exc)))),
                         (f"traceback {name}", "".join(traceback.format_exception(exc)))]
            seen.append((f"repr refused {name}", repr(provider)))
        for variable, value in CANARIES.items():
            monkeypatch.setenv(variable, value)

        # the Hub: one good upload, one with a refused token
        from sdstudio.export import export_dataset

        done = export_dataset(ExportJob(jobs=[jobs["openai"]], name="canary", hf_repo="alice/canary",
                                        hf_endpoint=hub.url), store=store)
        assert done.repo_id == "alice/canary"
        assert CANARIES["HF_TOKEN"] in " ".join(a or "" for a in hub.authorizations)  # it was really used
        monkeypatch.setenv("HF_TOKEN", WRONG["HF_TOKEN"])
        with pytest.raises(SdstudioError) as caught:
            export_dataset(ExportJob(jobs=[jobs["openai"]], name="canary-refused", hf_repo="alice/canary",
                                     hf_endpoint=hub.url), store=store)
        seen += [("hub error", str(caught.value)), ("hub traceback", "".join(traceback.format_exception(caught.value)))]
        monkeypatch.setenv("HF_TOKEN", CANARIES["HF_TOKEN"])
        store.close()
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    seen.append(("log records", records.getvalue()))
    assert "x-amz-security-token" in records.getvalue().lower()  # botocore's request dump was really logged

    # the CLI, as a batch job runs it: stdout, stderr, tracebacks on
    env = {**os.environ, "SDSTUDIO_DEBUG": "1", "PYTHONPATH": str(ROOT)}
    cli = [sys.executable, "-m", "sdstudio.cli"]
    runs = [
        [*cli, "generate", "--provider", "openai", "--model", "fake-model", "--base-url", openai.url, "--topics",
         "CLI topic", "--per-topic", "1", "--json"],
        [*cli, "evaluate", "--job", "1", "--provider", "caii", "--model", "fake-model", "--base-url", openai.url,
         "--json"],
        [*cli, "export", "--job", "1", "--name", "cli-canary", "--hf-repo", "alice/cli-canary", "--hf-endpoint",
         hub.url, "--json"],
        [*cli, "models", "--provider", "openai_compatible", "--base-url", openai.url, "--api-key-env", "MY_LLM_KEY"],
    ]
    for args in runs:
        out = subprocess.run([*args, "--home", str(home)], cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=120)
        assert out.returncode == 0, out.stderr
        seen.append((f"cli {args[3]}", out.stdout + out.stderr))
    refused_env = {**env, **WRONG}
    fresh = [["--topics", "CLI refused topic"], ["--scale", "1-10"], ["--name", "cli-refused"]]  # new jobs, not resumes
    for args, extra in zip(runs[:3], fresh):
        out = subprocess.run([*args, *extra, "--home", str(home)], cwd=ROOT, env=refused_env, capture_output=True,
                             text=True, timeout=120)
        assert out.returncode != 0 and "Traceback" in out.stderr  # SDSTUDIO_DEBUG=1: the traceback is searched too
        seen.append((f"cli refused {args[3]}", out.stdout + out.stderr))

    found = [(where, leaks(text)) for where, text in seen if leaks(text)]
    files = [p for p in home.rglob("*") if p.is_file()]
    assert any(p.name == "metadata.db" for p in files) and any("exports" in p.parts for p in files)
    found += [(str(p.relative_to(home)), leaks(p.read_bytes())) for p in files if leaks(p.read_bytes())]
    assert found == []
    print(f"\nFIGURES secrets: {len(EVERY_CANARY)} canaries, {len(seen)} texts and {len(files)} files searched, "
          f"0 hits")


def with_credentials(url: str, password: str | None = None, key: str | None = None) -> str:
    scheme, rest = url.split("://", 1)
    return f"{scheme}://{'alice:' + password + '@' if password else ''}{rest}{'?api_key=' + key if key else ''}"


@pytest.mark.slow
def test_no_url_credential_canary_reaches_the_db_exports_logs_errors_or_output(canaries, home, monkeypatch):
    """Every URL path: Basic auth (aiohttp), a query key (aiohttp, the openai client, CAII), both at once, refused
    ones (echoed back by the server), Bedrock and Hub endpoints with credentials (refused), in-process and CLI."""
    from sdstudio import urlsecrets
    from sdstudio.export import export_dataset

    password, key = URL_CANARIES["password"], URL_CANARIES["query"]
    seen: list[tuple[str, str]] = []
    records = io.StringIO()
    handler = logging.StreamHandler(records)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        with FakeOpenAIServer(basic_auth=("alice", password)) as basic, FakeOpenAIServer(query={"api_key": key}) as gated, \
                FakeOpenAIServer(basic_auth=("alice", password), query={"api_key": key}) as both, \
                FakeBedrockServer(access_key=AWS_ACCESS_KEY) as bedrock, \
                FakeHubServer(tokens={CANARIES["HF_TOKEN"]: "alice"}) as hub:
            store = Store.open(home)
            runs = {"compatible basic": ("openai_compatible", basic, password, None),
                    "compatible query": ("openai_compatible", gated, None, key),
                    "compatible both": ("openai_compatible", both, password, key),
                    "openai query": ("openai", gated, None, key), "caii query": ("caii", gated, None, key)}
            for name, (provider_name, server, secret, query) in runs.items():
                for good, (p, k) in ((True, (secret, query)),
                                     (False, (secret and URL_WRONG["password"], query and URL_WRONG["query"]))):
                    spec = ModelSpec(provider=provider_name, model="fake-model",
                                     base_url=with_credentials(server.url, p, k))
                    provider = get_provider(spec)
                    seen += [(f"repr {name}", repr(provider)), (f"spec {name}", spec.model_dump_json())]
                    config = GenerationJob(topics=[f"{name} {good}"], num_per_topic=1, batch_size=1, model=spec)
                    if good:
                        result = GenerationRun(config, store=store, provider=provider).run()
                        assert result.ok == 1, (name, result)
                        seen.append((f"result {name}", repr(result)))
                        continue
                    with pytest.raises(SdstudioError) as caught:
                        GenerationRun(config, store=store, provider=provider).run()
                    exc = caught.value
                    assert "refused the credentials (401)" in str(exc), str(exc)
                    seen += [(f"error {name}", str(exc)), (f"repr error {name}", repr(exc)),
                             (f"pickled error {name}", repr(pickle.loads(pickle.dumps(exc)))),
                             (f"traceback {name}", "".join(traceback.format_exception(exc)))]
            assert all(f"api_key={key}" in path for path in gated.seen + both.seen) and gated.answered
            refusals = [
                lambda: get_provider(ModelSpec(provider="openai", model="m",
                                               base_url=with_credentials(basic.url, password))),
                lambda: get_provider(ModelSpec(provider="bedrock", model="anthropic.claude-3-haiku-20240307-v1:0",
                                               region="us-east-1",
                                               base_url=with_credentials(bedrock.url, URL_CANARIES["bedrock"]))),
                lambda: get_provider(ModelSpec(provider="bedrock", model="anthropic.claude-3-haiku-20240307-v1:0",
                                               region="us-east-1",
                                               base_url=with_credentials(bedrock.url, key=URL_CANARIES["bedrock"]))),
                lambda: ExportJob(jobs=[1], hf_repo="alice/url", hf_endpoint=with_credentials(hub.url,
                                                                                              URL_CANARIES["hub"])),
            ]
            for number, refused in enumerate(refusals):
                with pytest.raises((SdstudioError, ValueError)) as caught:  # ConfigError, or a ValidationError
                    refused()
                seen += [(f"refusal {number}", str(caught.value)),
                         (f"refusal traceback {number}", "".join(traceback.format_exception(caught.value)))]
            monkeypatch.setenv("HF_ENDPOINT", with_credentials(hub.url, URL_WRONG["hub"]))
            with pytest.raises(SdstudioError) as caught:
                export_dataset(ExportJob(jobs=[1], hf_repo="alice/url"), store=store)
            seen.append(("hub env refusal", str(caught.value)))
            monkeypatch.delenv("HF_ENDPOINT")
            store.close()
            urlsecrets.forget_all()

            env = {**os.environ, "SDSTUDIO_DEBUG": "1", "PYTHONPATH": str(ROOT)}
            cli = [sys.executable, "-m", "sdstudio.cli"]
            model = ["--model", "fake-model", "--json", "--home", str(home)]
            runs_ok = [
                ["generate", "--provider", "openai_compatible", "--base-url", with_credentials(both.url, password, key),
                 "--topics", "CLI url topic", "--per-topic", "1", *model],
                ["evaluate", "--job", "1", "--provider", "caii", "--base-url", with_credentials(gated.url, key=key),
                 *model],
                ["models", "--provider", "openai", "--base-url", with_credentials(gated.url, key=key), "--json",
                 "--home", str(home)],
                ["jobs", "--json", "--home", str(home)], ["jobs", "show", "1", "--json", "--home", str(home)],
            ]
            runs_refused = [
                ["generate", "--provider", "openai_compatible", "--base-url",
                 with_credentials(both.url, URL_WRONG["password"], key), "--topics", "CLI refused", *model],
                ["export", "--job", "1", "--hf-repo", "alice/url", "--hf-endpoint",
                 with_credentials(hub.url, URL_CANARIES["hub"]), "--json", "--home", str(home)],
                ["generate", "--provider", "bedrock", "--region", "us-east-1", "--base-url",
                 with_credentials(bedrock.url, URL_CANARIES["bedrock"]), "--topics", "CLI bedrock",
                 "--model", "anthropic.claude-3-haiku-20240307-v1:0", "--json", "--home", str(home)],
            ]
            for ok, batch in ((True, runs_ok), (False, runs_refused)):
                for args in batch:
                    out = subprocess.run([*cli, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
                    assert (out.returncode == 0) == ok, out.stderr[-3000:]
                    seen.append((f"cli {' '.join(args[:3])}", out.stdout + out.stderr))
            assert hub.requests == [] and bedrock.requests == []
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    seen.append(("log records", records.getvalue()))
    assert "api_key=***" in records.getvalue()  # the request URLs were really logged (by httpx), masked

    found = [(where, leaks(text)) for where, text in seen if leaks(text)]
    files = [p for p in home.rglob("*") if p.is_file()]
    found += [(str(p.relative_to(home)), leaks(p.read_bytes())) for p in files if leaks(p.read_bytes())]
    assert found == []
    print(f"\nFIGURES url secrets: {len(URL_CANARIES) + len(URL_WRONG) + 2} URL canaries, {len(seen)} texts and "
          f"{len(files)} files searched, 0 hits")
