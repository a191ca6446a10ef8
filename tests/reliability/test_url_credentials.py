"""Credentials written into URLs (``--base-url http://user:pass@host/v1``, ``...?api_key=...``,
``--hf-endpoint http://u:p@host``): applied to every request by the real clients (aiohttp, ``openai``) against
loopback servers that REQUIRE them, never stored, shown or logged, and refused in one line where the client
cannot apply them (Bedrock signs with AWS keys; huggingface_hub has its token).

Each test failed before the fix: the config (and so metadata.db, `jobs show`, `--json`) held the URL as typed,
a query went in front of ``/chat/completions`` (a 404 reported as "does not know model"), and the Hub and
Bedrock endpoints took the credential along.
"""
from __future__ import annotations

import base64
import io
import json
import logging

import pytest

from sdstudio import cli, urlsecrets
from sdstudio.config import GenerationJob, ModelSpec, load_config
from sdstudio.errors import ConfigError
from sdstudio.providers import get_provider, list_models
from sdstudio.store import Store
from sdstudio.workflows.jobs import config_hash
from sdstudio.workflows.sft import GenerationRun
from tests.conftest import AWS_ACCESS_KEY
from tests.fakes.bedrock_server import FakeBedrockServer
from tests.fakes.hub_server import FakeHubServer
from tests.fakes.openai_server import FakeOpenAIServer

PASSWORD = "url-pass-9f8e7d6c"  # percent-decoded it is what the server checks; never stored or shown
QUERY_KEY = "url-query-key-5a4b3c2d"
SHORT_KEY = "k3y"  # under redact's 8 characters: masked only where a URL puts it


def with_credentials(url: str, userinfo: str | None = None, query: str | None = None) -> str:
    scheme, rest = url.split("://", 1)
    return f"{scheme}://{userinfo + '@' if userinfo else ''}{rest}{'?' + query if query else ''}"


def generation(spec: ModelSpec, topic: str = "Heaps") -> GenerationJob:
    return GenerationJob(topics=[topic], num_per_topic=1, batch_size=1, model=spec)


def db_bytes(home) -> bytes:
    return b"".join(p.read_bytes() for p in home.glob("metadata.db*"))


@pytest.fixture(autouse=True)
def fresh_vault():
    """Each test starts as a new process would: no URL remembered."""
    urlsecrets.forget_all()
    yield
    urlsecrets.forget_all()


# -- applied to every request -----------------------------------------------------------------------

def test_basic_auth_in_base_url_reaches_every_request_and_is_never_stored(home):
    with FakeOpenAIServer(basic_auth=("alice", PASSWORD)) as server:
        spec = ModelSpec(provider="openai_compatible", model="fake-model",
                         base_url=with_credentials(server.url, f"alice:{PASSWORD}"))
        store = Store.open(home)
        result = GenerationRun(generation(spec), store=store).run()
        assert result.ok == 1, result
        assert list_models(spec) == ["fake-judge", "fake-model"]
        stored = store.get_job("generation", result.job_id)["config"]["model"]["base_url"]
        store.close()
    assert stored == server.url.replace("http://", "http://***@")
    basic = base64.b64encode(f"alice:{PASSWORD}".encode())
    assert PASSWORD.encode() not in db_bytes(home) and basic not in db_bytes(home)


def test_a_percent_encoded_password_is_decoded_once_for_basic_auth(home):
    with FakeOpenAIServer(basic_auth=("bob", "p@ss/w#rd?")) as server:
        spec = ModelSpec(provider="openai_compatible", model="fake-model",
                         base_url=with_credentials(server.url, "bob:p%40ss%2Fw%23rd%3F"))
        assert list_models(spec) == ["fake-judge", "fake-model"]


@pytest.mark.parametrize("provider", ["openai", "caii", "openai_compatible"])
def test_a_query_key_in_base_url_goes_on_every_request_not_into_the_path(provider, home, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-not-checked-here")
    monkeypatch.setenv("CDP_TOKEN", "cdp-not-checked-here")
    with FakeOpenAIServer(query={"api_key": QUERY_KEY, "api-version": "2024-06-01"}) as server:
        spec = ModelSpec(provider=provider, model="fake-model",
                         base_url=with_credentials(server.url, query=f"api_key={QUERY_KEY}&api-version=2024-06-01"))
        result = GenerationRun(generation(spec), home=home).run()
        assert result.ok == 1, result
        list_models(spec)
    assert {path.split("?")[0] for path in server.seen} == {"/v1/chat/completions", "/v1/models"}
    assert all(f"api_key={QUERY_KEY}" in path for path in server.seen)
    assert QUERY_KEY.encode() not in db_bytes(home) and b"2024-06-01" not in db_bytes(home)


def test_two_runs_with_different_passwords_on_one_endpoint_are_the_same_job(home):
    with FakeOpenAIServer(basic_auth=("alice", "first-password")) as server:
        first = generation(ModelSpec(provider="openai_compatible", model="fake-model",
                                     base_url=with_credentials(server.url, "alice:first-password")))
        done = GenerationRun(first, home=home).run()
        server.basic_auth = ("alice", "second-password")  # the password was rotated
        second = generation(ModelSpec(provider="openai_compatible", model="fake-model",
                                      base_url=with_credentials(server.url, "alice:second-password")))
        again = GenerationRun(second, home=home).run()
    assert config_hash(first) == config_hash(second)
    assert (again.job_id, again.ok, again.requests_sent) == (done.job_id, 1, 0)


# -- what is kept, what is asked again, what is refused --------------------------------------------

def test_a_job_resumed_in_a_new_process_asks_for_the_url_credentials_again(home, capsys):
    with FakeOpenAIServer(basic_auth=("alice", PASSWORD)) as server:
        full = with_credentials(server.url, f"alice:{PASSWORD}")
        argv = ["generate", "--provider", "openai_compatible", "--model", "fake-model", "--topics", "Heaps",
                "--per-topic", "1", "--json", "--home", str(home)]
        assert cli.main([*argv, "--base-url", full]) == 0
        urlsecrets.forget_all()  # a new process: only the masked URL is in metadata.db
        capsys.readouterr()
        assert cli.main(["generate", "--resume", "1", "--json", "--home", str(home)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "has its credentials masked" in err and "--base-url" in err, err
        assert cli.main(["generate", "--resume", "1", "--base-url", full, "--json", "--home", str(home)]) == 0
        assert json.loads(capsys.readouterr().out)["job_id"] == 1
    assert PASSWORD not in err


def test_user_password_next_to_an_api_key_is_refused_in_one_line(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-canary-key-for-openai")
    for provider in ("openai", "caii"):
        monkeypatch.setenv("CDP_TOKEN", "cdp-canary-token")
        with pytest.raises(ConfigError) as caught:
            get_provider(ModelSpec(provider=provider, model="m", base_url=f"http://alice:{PASSWORD}@127.0.0.1:9/v1"))
        assert "Authorization header" in str(caught.value) and "http://***@127.0.0.1:9/v1" in str(caught.value)
        assert PASSWORD not in str(caught.value)


@pytest.mark.parametrize("url", [f"http://alice:{PASSWORD}@127.0.0.1:{{port}}", "http://127.0.0.1:{port}?X-Amz-Key=" + QUERY_KEY])
def test_a_bedrock_endpoint_with_credentials_is_refused_before_any_request(url, aws_env):
    with FakeBedrockServer(access_key=AWS_ACCESS_KEY) as bedrock:
        port = bedrock.url.rsplit(":", 1)[1]
        with pytest.raises(ConfigError) as caught:
            get_provider(ModelSpec(provider="bedrock", model="anthropic.claude-3-haiku-20240307-v1:0",
                                   region="us-east-1", base_url=url.format(port=port)))
        assert bedrock.requests == []
    message = str(caught.value)
    assert "AWS_PROFILE" in message and PASSWORD not in message and QUERY_KEY not in message


@pytest.mark.parametrize("how", ["flag", "HF_ENDPOINT"])
def test_a_hub_endpoint_with_credentials_is_refused_naming_hf_token(how, home, capsys, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_goodTokenForThisTest")
    with FakeOpenAIServer() as server, FakeHubServer(tokens={"hf_goodTokenForThisTest": "alice"}) as hub:
        cli.main(["generate", "--provider", "openai_compatible", "--model", "fake-model", "--base-url", server.url,
                  "--topics", "Heaps", "--per-topic", "1", "--json", "--home", str(home)])
        endpoint = with_credentials(hub.url, f"alice:{PASSWORD}")
        argv = ["export", "--job", "1", "--hf-repo", "alice/data", "--json", "--home", str(home)]
        if how == "flag":
            argv += ["--hf-endpoint", endpoint]
        else:
            monkeypatch.setenv("HF_ENDPOINT", endpoint)
        capsys.readouterr()
        assert cli.main(argv) == 2
        assert hub.requests == []
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "HF_TOKEN" in err and "***@127.0.0.1" in err, err
    assert PASSWORD not in err and PASSWORD.encode() not in db_bytes(home)
    assert not (home / "exports").exists() or not any((home / "exports").iterdir())


def test_a_malformed_url_with_credentials_is_refused_without_echoing_it():
    for url in (f"http://alice:{PASSWORD}/x@host/v1", f"http://alice:{PASSWORD}#x@host/v1"):
        with pytest.raises(ConfigError) as caught:
            load_config({"kind": "generation", "model": {"provider": "openai_compatible", "base_url": url}})
        assert "percent-encode" in str(caught.value) and PASSWORD not in str(caught.value)
        with pytest.raises(ValueError) as raw:  # built in Python (a notebook): pydantic's own text hides it too
            ModelSpec(base_url=url)
        assert PASSWORD not in str(raw.value)


# -- shown, printed, logged ----------------------------------------------------------------------

def test_errors_jobs_show_and_json_output_show_only_the_masked_url(home, capsys):
    wrong = "wrong-password-3c2b1a"
    with FakeOpenAIServer(basic_auth=("alice", PASSWORD), query={"api_key": QUERY_KEY}) as server:
        base = ["generate", "--provider", "openai_compatible", "--model", "fake-model", "--per-topic", "1", "--json",
                "--home", str(home)]
        ok = cli.main([*base, "--topics", "Heaps", "--base-url",
                       with_credentials(server.url, f"alice:{PASSWORD}", f"api_key={QUERY_KEY}")])
        refused = cli.main([*base, "--topics", "Tries", "--base-url",
                            with_credentials(server.url, f"alice:{wrong}", f"api_key={QUERY_KEY}")])
        out_err = capsys.readouterr()
        for args in (["jobs", "show", "2"], ["jobs", "show", "2", "--json"], ["jobs", "--json"],
                     ["jobs", "--kind", "generation", "--json"]):
            assert cli.main([*args, "--home", str(home)]) == 0
        shown = capsys.readouterr().out
    assert (ok, refused) == (0, 2)
    error = out_err.err.strip()
    # the server echoed the refused Authorization header: its base64 is masked too
    assert error.count("\n") == 0 and "refused the credentials (401)" in error and "***@127.0.0.1" in error, error
    masked = server.url.replace("http://", "http://***@") + "?api_key=***"
    assert masked in shown and json.loads(out_err.out.splitlines()[0])["ok"] == 1
    everything = out_err.out + error + shown
    secrets = [PASSWORD, wrong, QUERY_KEY, base64.b64encode(f"alice:{wrong}".encode()).decode()]
    assert [s for s in secrets if s in everything or s.encode() in db_bytes(home)] == []


def test_a_mistyped_flag_echoed_by_argparse_has_its_url_credentials_masked(capsys):
    with pytest.raises(SystemExit) as stopped:
        cli.main(["generate", "--base-urll", f"http://alice:{PASSWORD}@host/v1?api_key={QUERY_KEY}"])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert "unrecognized arguments" in err and PASSWORD not in err and QUERY_KEY not in err, err


def test_request_urls_logged_by_httpx_have_even_a_short_query_key_masked(home, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-not-checked-here")
    records = io.StringIO()
    handler = logging.StreamHandler(records)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        with FakeOpenAIServer(query={"api_key": SHORT_KEY}) as server:
            spec = ModelSpec(provider="openai", model="fake-model",
                             base_url=with_credentials(server.url, query=f"api_key={SHORT_KEY}"))
            assert GenerationRun(generation(spec), home=home).run().ok == 1
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    logged = records.getvalue()
    assert "/v1/chat/completions?api_key=***" in logged  # httpx logged the request URL, masked
    assert f"api_key={SHORT_KEY}" not in logged


def test_the_model_picker_shows_the_masked_url_and_still_reaches_the_server(home):
    from sdstudio.ui.components import ModelPicker

    with FakeOpenAIServer(basic_auth=("alice", PASSWORD)) as server:
        picker = ModelPicker("openai_compatible", base_url=with_credentials(server.url, f"alice:{PASSWORD}"))
        assert picker.base_url.value == server.url.replace("http://", "http://***@")  # saved widget state: no password
        assert picker.list_models() == ["fake-judge", "fake-model"]
        picker.base_url.value = with_credentials(server.url, f"alice:{PASSWORD}")  # typed into the field
        assert picker.list_models() == ["fake-judge", "fake-model"]
        assert picker.base_url.value == server.url.replace("http://", "http://***@")
        assert picker.list_models() == ["fake-judge", "fake-model"]  # the mask still finds the credential
        urlsecrets.forget_all()  # a restarted kernel
        assert picker.list_models() == [] and "give the URL with them again" in picker.status.value


def test_masked_forms():
    cases = {
        "http://u:p@h:8/v1": "http://***@h:8/v1",
        "https://u@h/v1?api_key=abc&v=1": "https://***@h/v1?api_key=***&v=***",
        "http://h/v1?flag": "http://h/v1?***",
        "http://h/v1": "http://h/v1",
        "u:p@localhost:8000": "***@localhost:8000",  # no scheme: masked, then refused as not http(s)
    }
    assert {url: urlsecrets.protect(url) for url in cases} == cases
    with pytest.raises(ValueError, match="mixes masked"):
        urlsecrets.protect("http://***@h/v1?api_key=real")
