"""Model output is data, never markup: in headless Chromium, the generate and evaluate pages served by Voilà show
a model's `<script>` and `<img onerror>` as text and run neither (the review page is tests/test_browser.py)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from tests.fakes.openai_server import FakeOpenAIServer
from tests.helpers import free_port, wait_for_http
from tests.test_browser import CHROMIUM, page, screenshot_on_failure  # noqa: F401 - `page` is a fixture
from tests.fakes.openai_server import requested_schema

SCRIPT, IMAGE = "<script>window.pwned=1</script>", '<img src="x" onerror="window.pwnedImg=1">'
ITEM = {"question": f"{SCRIPT}What is a binary heap?", "solution": f"{IMAGE}import heapq",
        "explanation": "<b>bold?</b> heapq keeps the smallest first"}
JUDGEMENT = {"score": 4, "justification": f"{SCRIPT}{IMAGE}planted judgement"}


def hostile(body: dict) -> str:
    """Valid replies for the generate and judge schemas, every text field carrying markup."""
    schema = requested_schema(body)
    properties = schema.get("properties", {})
    if "score" in properties:
        return json.dumps(JUDGEMENT)
    if "items" in properties:
        return json.dumps({"items": [ITEM] * properties["items"].get("minItems", 1)})
    return json.dumps(ITEM)


@pytest.fixture
def voila_autorun(home):
    if not os.path.exists(CHROMIUM):
        pytest.fail("chromium is not installed; `make test` installs it (apt-get install chromium)")
    with FakeOpenAIServer(reply=hostile) as server:
        port = free_port()
        env = {**os.environ, "SDSTUDIO_AUTORUN": "1", "SDSTUDIO_PROVIDER": "openai_compatible",
               "SDSTUDIO_GENERATE_PROVIDER": "", "SDSTUDIO_BASE_URL": server.url, "SDSTUDIO_MODEL": "fake-model"}
        proc = subprocess.Popen([sys.executable, "-m", "sdstudio.cli", "serve", "--port", str(port), "--home",
                                 str(home)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True, env=env)
        try:
            wait_for_http(f"http://127.0.0.1:{port}/", timeout=90)
            yield f"http://127.0.0.1:{port}", server
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(30)


def assert_shown_not_run(page) -> None:  # noqa: F811
    text = page.inner_text("body")
    assert SCRIPT in text and "onerror" in text  # shown, as text
    assert page.evaluate("window.pwned") is None and page.evaluate("window.pwnedImg") is None  # not run
    assert page.locator("img[src='x']").count() == 0
    assert not page.evaluate("[...document.scripts].some(s => s.textContent.includes('pwned'))")


@pytest.mark.slow
def test_markup_in_model_output_is_text_in_the_generate_and_evaluate_tables(voila_autorun, page):  # noqa: F811
    base, server = voila_autorun
    try:
        page.goto(f"{base}/voila/render/01_generate.ipynb", timeout=120_000)
        page.get_by_text("What is a binary heap?").first.wait_for(timeout=120_000)
        assert_shown_not_run(page)
        page.goto(f"{base}/voila/render/05_evaluate.ipynb", timeout=120_000)
        page.get_by_text("planted judgement").first.wait_for(timeout=120_000)
        assert_shown_not_run(page)
    except Exception:
        screenshot_on_failure(page, "hostile-output")
        raise
    assert any("score" in json.dumps(b.get("response_format")) for b in server.requests)  # the judge really ran
