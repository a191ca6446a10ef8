"""Shared fixtures: a temporary SDSTUDIO_HOME per test and a store inside it; the loopback servers; Voilà and a
headless Chromium for the browser tests."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from sdstudio.store import Store
from tests.helpers import free_port, wait_for_http

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"  # Debian's: Playwright's browser download fails here
ARTIFACTS = Path(__file__).parent / "artifacts"  # screenshots for people to look at (not committed)
VIEWPORT = {"width": 1280, "height": 800}  # the size issue 19 judged every page at

AWS_ACCESS_KEY = "AKIDFAKEEXAMPLE12345"
AWS_CANARY_SECRET = "canary-secret-5f1e2d3c4b5a69788796a5b4c3d2e1f0"


@pytest.fixture
def home(tmp_path, monkeypatch):
    root = tmp_path / "home"
    monkeypatch.setenv("SDSTUDIO_HOME", str(root))
    return root


@pytest.fixture
def store(home):
    s = Store.open(home)
    yield s
    s.close()


@pytest.fixture
def openai_server():
    """A real OpenAI-compatible HTTP server on 127.0.0.1 (see tests/fakes/openai_server.py)."""
    from tests.fakes.openai_server import FakeOpenAIServer

    with FakeOpenAIServer() as server:
        yield server


@pytest.fixture
def aws_env(monkeypatch, tmp_path):
    """Fake credentials only; no real AWS config, no instance metadata lookups, no proxies."""
    for variable in list(os.environ):
        if variable.startswith("AWS_") or variable.lower().endswith("_proxy"):
            monkeypatch.delenv(variable)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", AWS_ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_CANARY_SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture(scope="session")
def llama_server():
    """llama-cpp-python's own OpenAI-compatible server with the embedded GGUF (tests/llama_server.py). Not
    skipped when its extra is missing: CI installs the dev extra, so a missing server is a failure."""
    from tests.llama_server import LlamaServer, LlamaServerError

    try:
        server = LlamaServer().__enter__()
    except LlamaServerError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def voila_server(home: Path, env: dict[str, str] | None = None, log: Path | None = None) -> Iterator[str]:
    """`sdstudio serve` (Voilà over notebooks/) on a free loopback port for ``home``; its kernels see ``env`` on top
    of this process's environment (SDSTUDIO_PROVIDER, SDSTUDIO_BASE_URL...). Yields the base URL; the server and
    its kernels stop on exit."""
    if not os.path.exists(CHROMIUM):
        pytest.fail("chromium is not installed; `make test` installs it (apt-get install chromium)")
    port = free_port()
    out = log.open("wb") if log is not None else subprocess.DEVNULL
    try:
        proc = subprocess.Popen([sys.executable, "-m", "sdstudio.cli", "serve", "--port", str(port), "--home",
                                 str(home)], stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "SDSTUDIO_AUTORUN": "", **(env or {})})
        try:
            wait_for_http(f"http://127.0.0.1:{port}/", timeout=90)
            yield f"http://127.0.0.1:{port}"
        finally:
            os.killpg(proc.pid, signal.SIGTERM)  # the server and the kernels it started
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
    finally:
        if log is not None:
            out.close()


@pytest.fixture
def page():
    """A page in a headless Chromium at 1280x800 that accepts downloads."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                                           "--disable-component-update", "--no-first-run"])
        try:
            yield browser.new_page(viewport=VIEWPORT, accept_downloads=True)
        finally:
            browser.close()


# -- provider batch APIs (test_batch_executor.py, test_batch_ui.py) ---------------------------------------------------
BATCH_PRICES = "fake-model: [1.0, 2.0, 0.5, 1.0]\n"  # on demand, then the batch prices


@pytest.fixture
def batch_server():
    """A fake OpenAI-compatible server with the Files and Batch APIs on 127.0.0.1."""
    from tests.fakes.openai_batches import FakeOpenAIBatchServer

    with FakeOpenAIBatchServer() as server:
        yield server


@pytest.fixture
def priced_home(home):
    """A home whose prices.yaml gives fake-model's on-demand and batch prices."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "prices.yaml").write_text(BATCH_PRICES)
    return home

