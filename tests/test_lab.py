"""The notebooks as a JupyterLab workbench: each app hands its results to the next cell as a DataFrame, and the
widgets render in a real Lab (Debian's Chromium, 1280x800) against the loopback fake server."""
from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import free_port, wait_for_http

ROOT = Path(__file__).parent.parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).parent / "artifacts"


def generate_app(server, home, topics: str, per_topic: int):
    from sdstudio.ui import GenerateApp

    app = GenerateApp(home=home, provider="openai_compatible", model="fake-model", base_url=server.url)
    app.topics.value, app.per_topic.value, app.batch_size.value = topics, per_topic, 1
    return app


def test_generate_results_are_every_ok_row_as_a_dataframe_with_the_topic_first(openai_server, home):
    serial = itertools.count()

    def reply(body):  # distinct items, so deduplication filters none
        topic = body["messages"][-1]["content"].split("<topic>")[1].split("</topic>")[0]
        n = next(serial)
        return json.dumps({"question": f"How do {topic} behave in case {n} of {n * 7919}?",
                           "solution": f"use heapq.heappush(h, {n})", "explanation": f"because {n}"})

    openai_server.reply = reply
    app = generate_app(openai_server, home, "Heaps\nQueues", 12)
    assert app.results.empty  # nothing run yet: an empty frame, not None
    app.controls.run_button.click()
    result = app.controls.wait(120)
    frame = app.results
    assert result.ok == 24 and len(frame) == 24 > len(app.results_table.frame)  # every page, not the one shown
    assert list(frame.columns[:2]) == ["topic", "question"] and frame.columns[-1] == "record_id"
    assert "status" not in frame.columns and set(frame["topic"]) == {"Heaps", "Queues"}


def test_evaluate_and_export_results_are_the_judged_rows_and_the_files_written(openai_server, home):
    from sdstudio.ui import EvaluateApp, ExportApp

    generated = generate_app(openai_server, home, "Stacks", 2)
    generated.run()
    generated.controls.wait(60)
    evaluate = EvaluateApp(home=home, provider="openai_compatible", model="fake-judge", base_url=openai_server.url)
    assert evaluate.results.empty
    evaluate.controls.run_button.click()
    evaluate.controls.wait(60)
    judged = evaluate.results
    assert len(judged) == 2 and list(judged.columns[:4]) == ["topic", "prompt", "completion", "score"]
    assert judged["score"].between(1, 5).all() and "status" not in judged.columns

    export = ExportApp(home=home)
    assert export.results.empty
    export.style.value = "sft-prompt-completion"
    export.export_button.click()
    files = export.results
    assert list(files.columns) == ["path", "sha256"] and len(files) >= 1
    assert all(Path(p).exists() for p in files["path"])


def test_workflow_results_are_the_input_columns_then_each_steps_output(openai_server, home, tmp_path):
    from sdstudio.ui import WorkflowApp

    data = tmp_path / "q.csv"
    data.write_text("id,question\n1,What is a list?\n2,What is a dict?\n")
    app = WorkflowApp(home=home, provider="openai_compatible", model="fake-model", base_url=openai_server.url,
                      input_file=str(data))
    app.autorun(limit=2)
    frame = app.results
    assert list(frame.columns[:3]) == ["id", "question", "answer"] and len(frame) == 2
    assert "status" not in frame.columns and "error" not in frame.columns


# -- JupyterLab in a real browser ---------------------------------------------------------------------

@pytest.fixture
def lab(openai_server, home, tmp_path):
    """`jupyter lab` on a free loopback port over a copy of notebooks/ (Lab saves outputs into what it opens),
    its kernels reading the parameters cell's env vars so they talk to the fake server."""
    if not os.path.exists(CHROMIUM):
        pytest.fail("chromium is not installed; `make test` installs it (apt-get install chromium)")
    root = tmp_path / "notebooks"
    shutil.copytree(ROOT / "notebooks", root)
    jupyter = tmp_path / "jupyter"
    # a fresh Lab asks which kernel to start and whether to fetch news; answer both before it asks
    for plugin, settings in {"notebook-extension/tracker": '{"autoStartDefaultKernel": true}',
                             "apputils-extension/notification": '{"fetchNews": "false"}'}.items():
        path = jupyter / "settings" / "@jupyterlab" / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(settings)
    port, token = free_port(), "sdstudio-lab-test"
    env = {**os.environ, "SDSTUDIO_HOME": str(home), "SDSTUDIO_PROVIDER": "openai_compatible",
           "SDSTUDIO_BASE_URL": openai_server.url, "SDSTUDIO_MODEL": "fake-model", "SDSTUDIO_AUTORUN": "",
           "JUPYTER_CONFIG_DIR": str(jupyter / "config"), "JUPYTER_RUNTIME_DIR": str(jupyter / "runtime")}
    env.pop("SDSTUDIO_GENERATE_PROVIDER", None)
    log = (tmp_path / "lab.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
                             f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
                             f"--ServerApp.root_dir={root}", f"--LabApp.workspaces_dir={jupyter / 'workspaces'}",
                             f"--LabApp.user_settings_dir={jupyter / 'settings'}",
                             "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
                             "--ServerApp.terminals_enabled=False", *(["--allow-root"] if os.geteuid() == 0 else [])],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env, cwd=root)
    try:
        try:
            wait_for_http(f"http://127.0.0.1:{port}/api/status?token={token}", timeout=60)
        except AssertionError:
            log.flush()
            raise AssertionError(f"jupyter lab did not start:\n{(tmp_path / 'lab.log').read_text()[-3000:]}") from None
        yield f"http://127.0.0.1:{port}", token
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server and the kernels it started
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        log.close()


@pytest.mark.slow
def test_the_generate_notebook_runs_in_jupyterlab_and_its_widgets_render(lab):
    from playwright.sync_api import sync_playwright

    base, token = lab
    started = time.monotonic()
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                                           "--disable-component-update", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        try:
            page.goto(f"{base}/lab/tree/01_generate.ipynb?token={token}", timeout=60_000)
            page.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=60_000)
            page.get_by_text("Python 3 (ipykernel) | Idle").first.wait_for(timeout=60_000)
            outputs = page.locator(".jp-OutputArea-output")
            save = outputs.get_by_role("button", name="Save config as YAML")
            # Lab may swap the kernel it started first for the session's own; a Run All sent across the swap
            # loses its queued cells, so it is sent again until the app's cell has run
            for attempt in range(3):
                page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
                page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
                try:
                    save.wait_for(timeout=20_000)
                    break
                except Exception:
                    if attempt == 2:
                        raise
            outputs.get_by_text("Prompt preview").first.wait_for(timeout=15_000)
            # the preview cell asks the model nothing; the estimate it shows proves the kernel built the job
            outputs.get_by_text("First prompt:").first.wait_for(timeout=15_000)
            assert page.get_by_text("Error displaying widget").count() == 0
            assert page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']").count() == 0
            page.screenshot(path=str(ARTIFACTS / "lab_generate.png"))
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "lab_generate-failure.png"), full_page=True)
            raise
        finally:
            browser.close()
    assert time.monotonic() - started < 90
