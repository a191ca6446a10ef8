"""At home in Cloudera AI: the AMP file against the AMP specification 1.0, the Application launcher (real Voilà,
real Chromium, the proxy's user header), Cloudera AI Inference's endpoint listing and token paths against a
loopback fake of the platform, the Job script's exit codes and chaining, and the install from the lock."""
from __future__ import annotations

import copy
import importlib.util
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import jsonschema
import pytest
import yaml

from sdstudio.cli import main as cli
from sdstudio.config import ModelSpec
from sdstudio.errors import ConfigError
from sdstudio.providers import ChatRequest, ProviderError, get_provider, run_sync
from sdstudio.store import Store
from sdstudio.workflows import registry
from tests.conftest import ARTIFACTS, CHROMIUM
from tests.fakes.caii_platform import FakeCaiiPlatform, jwt
from tests.helpers import free_port, wait_for_http
from tests.test_browser import seed_judged_job

ROOT = Path(__file__).resolve().parent.parent
AMP = ROOT / ".project-metadata.yaml"
TOKEN = jwt(time.time() + 3600)

# --- the AMP specification 1.0 (docs.cloudera.com, "AMP Project Specification"), as a JSON schema -------------
_TEXT = {"type": "string"}
_RESOURCES = {"cpu": {"type": "number", "exclusiveMinimum": 0}, "memory": {"type": "number", "exclusiveMinimum": 0},
              "gpu": {"type": "integer", "minimum": 0}}
_SUMMARIES = {"short_summary": _TEXT, "long_summary": _TEXT}
_ENV_MAP = {"type": "object", "additionalProperties": {"type": ["string", "number", "boolean"]}}


def _task(kind: str, required: list[str], **fields: dict) -> dict:
    return {"if": {"properties": {"type": {"const": kind}}, "required": ["type"]},
            "then": {"type": "object", "required": ["type", *required], "additionalProperties": False,
                     "properties": {"type": {"const": kind}, **_SUMMARIES, **fields}}}


AMP_SCHEMA = {
    "type": "object",
    "required": ["name", "description", "author", "specification_version", "prototype_version"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 200},
        "description": {"type": "string", "minLength": 1, "maxLength": 2048},
        "author": {"type": "string", "minLength": 1, "maxLength": 64},
        "date": {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}$"},
        "specification_version": {"enum": [1.0, "1.0"]},
        "prototype_version": {"type": ["string", "number"]},
        "shared_memory_limit": {"type": "integer", "minimum": 0},
        "environment_variables": {"type": "object", "additionalProperties": {
            "type": "object", "required": ["default", "description"], "additionalProperties": False,
            "properties": {"default": {"type": ["string", "number", "boolean", "null"]}, "description": _TEXT,
                           "required": {"type": "boolean"}}}},
        "feature_dependencies": {"type": "array", "items": {"enum": ["model_metrics"]}},
        "engine_images": {"type": "array", "items": {"type": "object", "required": ["image"]}},
        "runtimes": {"type": "array", "minItems": 1, "items": {
            "type": "object", "required": ["editor", "kernel", "edition"], "additionalProperties": False,
            "properties": {"editor": _TEXT, "kernel": _TEXT, "edition": _TEXT, "version": _TEXT,
                           "addons": {"type": "array", "items": _TEXT}}}},
        "tasks": {"type": "array", "items": {
            "type": "object", "required": ["type"],
            "properties": {"type": {"enum": ["create_job", "run_job", "run_session", "start_application",
                                             "create_model", "build_model", "deploy_model"]}},
            "allOf": [
                _task("create_job", ["name", "entity_label", "script"], name=_TEXT, entity_label=_TEXT, script=_TEXT,
                      arguments=_TEXT, kernel=_TEXT, timeout={"type": "integer"}, environment=_ENV_MAP, **_RESOURCES),
                _task("run_job", ["entity_label"], entity_label=_TEXT, environment=_ENV_MAP),
                _task("run_session", ["script"], name=_TEXT, script=_TEXT, code=_TEXT, kernel=_TEXT, **_RESOURCES),
                _task("start_application", ["name", "subdomain", "script"], name=_TEXT, script=_TEXT,
                      subdomain={"type": "string", "pattern": "^[a-z0-9-]+$"}, kernel=_TEXT,
                      bypass_authentication={"type": "boolean"}, static_subdomain={"type": "boolean"},
                      environment_variables=_ENV_MAP, **_RESOURCES),
            ]}},
    },
}
SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|CREDENTIAL)", re.IGNORECASE)


def amp() -> dict:
    return yaml.safe_load(AMP.read_text())


def amp_problems(data: dict) -> list[str]:
    """What is wrong with an AMP file: the schema, plus what a schema cannot say (scripts that exist in the
    repository, run_job of a job it created, no secret in a default)."""
    problems = [f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}"
                for e in jsonschema.Draft202012Validator(AMP_SCHEMA).iter_errors(data)]
    created = set()
    for task in data.get("tasks") or []:
        script = task.get("script")
        if script and not (ROOT / script).is_file():
            problems.append(f"{task.get('name')}: script {script} does not exist")
        if task.get("type") == "create_job":
            created.add(task.get("entity_label"))
        if task.get("type") == "run_job" and task.get("entity_label") not in created:
            problems.append(f"run_job {task.get('entity_label')} runs a job no earlier task created")
    for name, spec in (data.get("environment_variables") or {}).items():
        if SECRET_NAME.search(name) and (spec or {}).get("default") not in (None, ""):
            problems.append(f"{name}: a secret has a default")
    return problems


def test_the_amp_file_follows_the_specification():
    data = amp()
    assert amp_problems(data) == []
    assert data["runtimes"] == [{"editor": "JupyterLab", "kernel": "Python 3.11", "edition": "Standard"}]
    types = [t["type"] for t in data["tasks"]]
    assert types.index("run_job") < types.index("start_application")  # installed before anything starts
    # every provider's settings are there, the secrets without a value
    env = data["environment_variables"]
    for variable in ("SDSTUDIO_HOME", "CAII_DOMAIN", "CDP_TOKEN", "OPENAI_API_KEY", "AWS_ACCESS_KEY_ID",
                     "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "HF_TOKEN"):
        assert env[variable]["description"]


def test_the_schema_catches_what_the_specification_forbids():
    good = amp()
    broken = copy.deepcopy(good)
    del broken["author"]
    broken["environment_variables"]["OPENAI_API_KEY"]["default"] = "sk-planted-secret"
    broken["tasks"].append({"type": "start_app", "name": "x"})
    broken["tasks"].append({"type": "create_job", "name": "j", "entity_label": "j", "script": "cml/nope.py"})
    broken["tasks"].append({"type": "run_job", "entity_label": "never_created"})
    problems = "\n".join(amp_problems(broken))
    for expected in ("'author' is a required property", "OPENAI_API_KEY: a secret has a default",
                     "'start_app' is not one of", "cml/nope.py does not exist", "never_created"):
        assert expected in problems


def test_there_is_a_job_template_for_every_workflow_and_each_runs_a_real_subcommand_and_config():
    parser_commands = set(_subcommands())
    templates = [t for t in amp()["tasks"] if t["type"] == "create_job" and t["script"] == "cml/job.py"]
    used = set()
    for task in templates:
        words = task["arguments"].split()
        assert words[0] in parser_commands, task
        used.add(words[0])
        if "--config" in words:
            assert (ROOT / words[words.index("--config") + 1]).is_file(), task
    # every registered workflow (its subcommand: the module's name) has one
    missing = {w.command.rsplit(".", 1)[1] for w in registry.WORKFLOWS} - used
    assert not missing, f"no Job template for {missing}: add a create_job running cml/job.py to {AMP.name}"


def _subcommands() -> list[str]:
    from sdstudio.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return list(sub.choices)


# --- the Application launcher -------------------------------------------------------------------------------
@contextmanager
def cdsw_application(home: Path, user_header: str | None = None) -> Iterator[tuple[str, subprocess.Popen]]:
    """`sdstudio serve --cdsw` as Cloudera AI starts an Application: CDSW_APP_PORT set, nothing else said."""
    if not os.path.exists(CHROMIUM):
        pytest.fail("chromium is not installed; `make test` installs it (apt-get install chromium)")
    port = free_port()
    cmd = [sys.executable, str(ROOT / "cml" / "app.py"), *(["--user-header", user_header] if user_header else [])]
    env = {**os.environ, "CDSW_APP_PORT": str(port), "SDSTUDIO_HOME": str(home), "SDSTUDIO_AUTORUN": "",
           "HTTP_REMOTE_USER": "planted-in-the-server-env",  # must not name anyone: only a request's header does
           "CDSW_DOMAIN": "ml-1234.example.cloudera.site"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/voila/tree", timeout=90)
        yield f"http://127.0.0.1:{port}", proc
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def test_the_application_serves_home_on_the_app_port_and_records_the_proxy_user_as_reviewer(home, page):
    first_id = seed_judged_job(home)
    with cdsw_application(home) as (base, proc):
        try:
            page.goto(base + "/", timeout=120_000)  # what the proxy opens: lands on the home dashboard
            assert page.url == f"{base}/voila/render/00_home.ipynb"
            page.get_by_text("planted-judge").first.wait_for(timeout=120_000)
            page.set_extra_http_headers({"Remote-User": "carol"})  # what Cloudera AI's proxy adds
            page.goto(f"{base}/voila/render/07_review.ipynb?reviewer=mallory", timeout=120_000)
            page.get_by_text("planted justification 0").wait_for(timeout=120_000)
            name = page.locator(".sds-reviewer-name input")
            page.wait_for_function("document.querySelector('.sds-reviewer-name input').value === 'carol'",
                                   timeout=30_000)
            assert name.is_disabled()  # the signed-in name, not the address's or the browser's
            page.get_by_role("button", name="Accept").first.click()
            page.get_by_text("saved accept of row").wait_for(timeout=30_000)
        except Exception:
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "cdsw-application-failure.png"), full_page=True)
            raise
    out = proc.stdout.read()
    assert f"serving {base}/voila/render/00_home.ipynb" in out
    with sqlite3.connect(home / "metadata.db") as conn:
        assert conn.execute("SELECT record_id, reviewer, verdict FROM reviews").fetchall() == [(first_id, "carol",
                                                                                                "accept")]


def test_without_the_header_a_reviewer_types_a_name_as_before(home):
    from sdstudio.ui.review import ReviewApp

    seed_judged_job(home)
    app = ReviewApp(home=home, reviewer="alice")
    assert not app.panel.reviewer.disabled and app.panel.record(int(app.panel.frame["record_id"][0]), "accept")


def test_a_signed_in_reviewer_cannot_record_a_verdict_under_another_name(home):
    from sdstudio.ui.review import ReviewApp

    seed_judged_job(home)
    app = ReviewApp(home=home, reviewer="mallory", signed_in="carol")
    panel = app.panel
    assert panel.reviewer.value == "carol" and panel.reviewer.disabled
    panel.reviewer.value = "mallory"  # what a crafted widget message could still send
    assert not panel.record(int(panel.frame["record_id"][0]), verdict="reject")
    assert "signed in as carol" in panel.status.value
    assert tuple(Store.open(home).connection().execute("SELECT COUNT(*) FROM reviews").fetchone()) == (0,)


def test_the_proxy_user_is_read_only_when_serve_cdsw_trusts_the_header(monkeypatch):
    from sdstudio.cloudera import proxy_user

    monkeypatch.setenv("HTTP_REMOTE_USER", "carol")
    monkeypatch.delenv("SDSTUDIO_USER_HEADER", raising=False)
    assert proxy_user() is None
    monkeypatch.setenv("SDSTUDIO_USER_HEADER", "Remote-User")
    assert proxy_user() == "carol"


def test_the_pages_accept_websockets_from_the_workspace_s_subdomains_only(monkeypatch):
    from jupyter_server.utils import origin_matches_pat  # how Jupyter server applies allow_origin_pat

    from sdstudio.cloudera import origin_pattern

    monkeypatch.delenv("CDSW_DOMAIN", raising=False)
    assert origin_pattern() is None
    monkeypatch.setenv("CDSW_DOMAIN", "ml-1234.example.cloudera.site")
    pattern = origin_pattern()
    assert origin_matches_pat(pattern, "https://sdstudio.ml-1234.example.cloudera.site")
    for foreign in ("https://evil.example", "https://ml-1234.example.cloudera.site.evil.example",
                    "https://sdstudio.ml-1234xexample.cloudera.site"):
        assert not origin_matches_pat(pattern, foreign)


def test_serve_cdsw_without_the_app_port_is_one_line_and_exit_2(monkeypatch, capsys, home):
    monkeypatch.delenv("CDSW_APP_PORT", raising=False)
    assert cli(["serve", "--cdsw"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "CDSW_APP_PORT is not set" in err[0]


# --- Cloudera AI Inference ----------------------------------------------------------------------------------
@pytest.fixture
def platform(monkeypatch, tmp_path):
    others = [{"name": "embedder", "url": "http://x/v1/embeddings", "task": "EMBED", "state": "Loaded",
               "api_standard": "openai", "model_name": "nv-embed"},
              {"name": "warming-up", "url": "http://x/v1/chat/completions", "task": "TEXT_GENERATION",
               "state": "Pending", "api_standard": "openai", "model_name": "m"}]
    with FakeCaiiPlatform(TOKEN, {"llama-8b": "meta/llama-3.1-8b-instruct", "mixtral": "mistralai/mixtral"},
                          others) as server:
        monkeypatch.setenv("CDP_TOKEN", TOKEN)
        monkeypatch.setenv("SDSTUDIO_CAII_JWT_FILE", str(tmp_path / "no-jwt"))
        monkeypatch.delenv("CAII_DOMAIN", raising=False)
        yield server


def call(provider, method: str, *args):
    """One provider call from sync code, its connections closed after (as providers.list_models does)."""
    async def once():
        try:
            return await getattr(provider, method)(*args)
        finally:
            await provider.aclose()

    return run_sync(once())


def test_models_lists_the_loaded_chat_endpoints_by_name(platform, capsys):
    assert cli(["models", "--provider", "caii", "--domain", platform.url, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == ["llama-8b", "mixtral"]
    path, body = platform.requests[0]
    assert path == "/api/v1alpha1/listEndpoints" and body == {"namespace": "serving-default"}


def test_the_model_picker_offers_the_endpoints_by_name_from_caii_domain(platform, monkeypatch):
    from sdstudio.ui.components import ModelPicker

    monkeypatch.setenv("CAII_DOMAIN", platform.url)
    picker = ModelPicker(provider="caii")
    assert picker.list_models() == ["llama-8b", "mixtral"]
    assert tuple(picker.model.options) == ("llama-8b", "mixtral") and picker.spec().base_url is None


def test_a_job_calls_an_endpoint_by_name_at_its_listed_url_with_its_served_model(platform, monkeypatch):
    monkeypatch.setenv("CAII_DOMAIN", platform.url)
    provider = get_provider(ModelSpec(provider="caii", model="mixtral"))
    assert provider.model_id == "mixtral"  # what the job records: the endpoint the user picked
    assert call(provider, "complete", ChatRequest.of("hi")).text == "mixtral answers as mistralai/mixtral"
    path, body = platform.requests[-1]
    assert path == "/namespaces/serving-default/endpoints/mixtral/v1/chat/completions"
    assert body["model"] == "mistralai/mixtral"


def test_an_unknown_endpoint_name_names_the_ones_there_are(platform, monkeypatch):
    monkeypatch.setenv("CAII_DOMAIN", platform.url)
    provider = get_provider(ModelSpec(provider="caii", model="gpt-9"))
    with pytest.raises(ProviderError) as info:
        call(provider, "complete", ChatRequest.of("hi"))
    assert info.value.kind == "bad_request" and "'gpt-9'" in str(info.value) and "llama-8b, mixtral" in str(info.value)


def test_an_expired_token_is_one_line_saying_how_to_refresh_it_before_anything_is_sent(platform, monkeypatch,
                                                                                       capsys):
    monkeypatch.setenv("CDP_TOKEN", jwt(time.time() - 60))
    assert cli(["models", "--provider", "caii", "--domain", platform.url]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "expired" in err[0] and "generate-workload-auth-token" in err[0]
    assert platform.requests == []


def test_a_token_the_platform_refuses_as_expired_says_how_to_refresh_it(platform, monkeypatch, tmp_path):
    stale = "opaque-token-the-platform-expired"
    platform.expired.add(stale)
    monkeypatch.delenv("CDP_TOKEN")
    jwt_file = tmp_path / "jwt"
    jwt_file.write_text(json.dumps({"access_token": stale}))  # the session's file, as Cloudera AI mounts it
    monkeypatch.setenv("SDSTUDIO_CAII_JWT_FILE", str(jwt_file))
    provider = get_provider(ModelSpec(provider="caii", base_url=platform.url))
    with pytest.raises(ProviderError) as info:
        call(provider, "list_models")
    message = str(info.value)
    assert info.value.kind == "auth" and "\n" not in message and stale not in message
    assert "Jwt is expired" in message and "/tmp/jwt" in message and "generate-workload-auth-token" in message


def test_without_a_domain_or_url_caii_says_where_to_find_the_domain(monkeypatch):
    monkeypatch.delenv("CAII_DOMAIN", raising=False)
    monkeypatch.setenv("CDP_TOKEN", TOKEN)
    with pytest.raises(ConfigError, match="CAII_DOMAIN"):
        get_provider(ModelSpec(provider="caii", model="llama-8b"))


# --- Jobs ---------------------------------------------------------------------------------------------------
def _cml(name: str):
    spec = importlib.util.spec_from_file_location(f"cml_{name}", ROOT / "cml" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_job_chains_on_the_newest_finished_job_and_exits_with_sdstudio_s_code(home, capsys, monkeypatch):
    monkeypatch.setenv("SDSTUDIO_TODAY", "")
    monkeypatch.delenv("SDSTUDIO_TODAY")  # unset now, and again after the test (cml/job.py sets it)
    job = _cml("job")
    assert job.main(["jobs", "show", "last:generation"]) == 2  # nothing finished yet: one line, exit 2
    assert "no finished generation job" in capsys.readouterr().err
    store = Store.open(home)
    older = store.create_job("generation", use_case="code_generation", model_id="m", status="done")
    newest = store.create_job("generation", use_case="code_generation", model_id="m", status="done")
    store.create_job("generation", use_case="code_generation", model_id="m", status="failed")
    store.close()
    assert older < newest
    assert job.main(["jobs show last:generation --home $SDSTUDIO_HOME"]) == 0  # one Arguments field, $VAR
    captured = capsys.readouterr()
    assert f"sdstudio jobs show {newest} --home {home}" in captured.err
    assert json.loads(captured.out)["id"] == newest
    assert re.fullmatch(r"20\d{6}", job.expand(["$SDSTUDIO_TODAY"])[0])  # --seed $SDSTUDIO_TODAY: a new job a night


# --- reproducible installs ----------------------------------------------------------------------------------
def test_the_install_task_is_make_install_from_the_lock_and_skips_a_second_build(tmp_path, monkeypatch, capsys):
    install = _cml("install")
    assert "-DLLAMA_BUILD_TESTS=OFF" in install.cmake_args()  # the Makefile's, not a copy
    assert install.command("")[-4:] == ["-c", str(ROOT / "constraints.txt"), "-e", "."]
    monkeypatch.setattr(install, "STAMP", tmp_path / "install.stamp")
    install.STAMP.write_text(install.fingerprint("") + "\n")
    assert install.main([]) == 0 and "already installed" in capsys.readouterr().out


def test_every_dependency_is_pinned_in_the_lock_and_every_install_uses_it():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"{line!r} is not pinned with =="
            pins[re.sub(r"[-_.]+", "-", name.lower())] = version
    assert "sdstudio" not in pins
    wanted = [*project["dependencies"], *project["optional-dependencies"]["dev"]]
    for requirement in wanted:
        name = re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9_.-]+", requirement).group(0).lower())
        assert name in pins, f"{name} is not in constraints.txt (`make lock` writes it)"
    makefile = (ROOT / "Makefile").read_text()
    assert makefile.count("-c $(LOCK)") >= 2 and "LOCK" in makefile and "lock:" in makefile
    assert "-c constraints.txt" in (ROOT / "environment.yml").read_text()
