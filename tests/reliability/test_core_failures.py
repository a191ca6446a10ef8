"""The failures that lived between side-by-side workflows, each through the real CLI in its own process
against the loopback server: a full disk, two processes on one job, a SIGKILL then resume (its cost), a
database deleted or replaced mid-run, a store error in any workflow, a run started from a running loop."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.helpers import mount_tmpfs, privileged, unmount
from tests.reliability.db import query

from sdstudio.errors import StoreError
from sdstudio.store import Store

ROOT = Path(__file__).resolve().parents[2]
PRICES = "fake-model: [2.0, 8.0]\n"  # a known price, so costs are not all 0


def generate(server, home: Path, topics_file: Path, *extra: str, per_topic: int = 2, concurrency: int = 4) -> list[str]:
    return [sys.executable, "-m", "sdstudio.cli", "generate", "--provider", "openai_compatible", "--model",
            "fake-model", "--base-url", server.url, "--topics-file", str(topics_file), "--per-topic", str(per_topic),
            "--batch-size", "2", "--concurrency", str(concurrency), "--home", str(home), "--json", *extra]


def topics(tmp_path: Path, count: int) -> Path:
    path = tmp_path / "topics.txt"
    path.write_text("".join(f"Core topic {i:04d}\n" for i in range(count)))
    return path


def saved(home: Path) -> int:
    return (query(home, "SELECT COUNT(*) FROM records WHERE status = 'ok'") or [(0,)])[0][0]


def wait_for(condition, proc: subprocess.Popen, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"the run ended before {what}: {proc.stderr.read() if proc.stderr else ''}"
        assert time.monotonic() < deadline, f"no {what} within {timeout:.0f}s"
        time.sleep(0.01)


def new_home(tmp_path: Path, name: str) -> Path:
    home = tmp_path / name
    home.mkdir()
    (home / "prices.yaml").write_text(PRICES)
    return home


# -- SIGKILL: the job reads interrupted, and resuming it costs what an uninterrupted run costs ----------

@pytest.mark.slow
def test_a_sigkilled_job_reads_interrupted_and_resumes_to_the_uninterrupted_cost(openai_server, tmp_path):
    openai_server.latency = 0.03
    topic_file = topics(tmp_path, 150)
    clean = new_home(tmp_path, "clean")
    out = subprocess.run(generate(openai_server, clean, topic_file), cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    expected = json.loads(out.stdout)
    assert expected["ok"] == 300 and expected["cost_usd"] > 0

    home = new_home(tmp_path, "killed")
    proc = subprocess.Popen(generate(openai_server, home, topic_file), cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    wait_for(lambda: saved(home) >= 100, proc, "100 saved rows")
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    proc.stderr.close()
    assert query(home, "SELECT status FROM jobs WHERE id = 1") == [("running",)]  # what the dead process left
    listed = subprocess.run([sys.executable, "-m", "sdstudio.cli", "jobs", "--home", str(home), "--json"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert [job["status"] for job in json.loads(listed.stdout)] == ["interrupted"]

    out = subprocess.run(generate(openai_server, home, topic_file), cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    resumed = json.loads(out.stdout)
    assert resumed["resumed"] and resumed["job_id"] == 1 and resumed["ok"] == 300
    for figure in ("tokens_in", "tokens_out", "cost_usd"):
        assert resumed[figure] == pytest.approx(expected[figure]), figure
    assert query(home, "SELECT status, lease_owner FROM jobs") == [("done", None)]


# -- two processes on one job ------------------------------------------------------------------------

@pytest.mark.slow
def test_two_processes_started_on_one_job_send_each_request_once(openai_server, tmp_path):
    openai_server.latency = 0.05
    topic_file = topics(tmp_path, 60)  # 60 requests of 2 items
    home = new_home(tmp_path, "home")
    procs = [subprocess.Popen(generate(openai_server, home, topic_file), cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outcomes = [(proc.wait(300), proc.stdout.read(), proc.stderr.read()) for proc in procs]
    for proc in procs:
        proc.stdout.close()
        proc.stderr.close()
    bodies = [json.dumps(r["messages"], sort_keys=True) for r in openai_server.answered]
    assert len(bodies) == len(set(bodies)) == 60  # every request once, whichever process sent it
    codes = sorted(code for code, _, _ in outcomes)
    refused = [err for code, _, err in outcomes if code == 2]
    assert codes == [0, 2], outcomes
    assert "job 1 is already running in process" in refused[0] and len(refused[0].strip().splitlines()) == 1
    assert query(home, "SELECT id, status FROM jobs") == [(1, "done")]
    assert saved(home) == 120


@pytest.mark.slow
def test_a_second_process_with_wait_waits_for_the_first_and_then_sends_nothing(openai_server, tmp_path):
    openai_server.latency = 0.05
    topic_file = topics(tmp_path, 40)
    home = new_home(tmp_path, "home")
    first = subprocess.Popen(generate(openai_server, home, topic_file), cwd=ROOT, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    wait_for(lambda: query(home, "SELECT status FROM jobs") == [("running",)], first, "the first run to start")
    second = subprocess.run(generate(openai_server, home, topic_file, "--wait"), cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert first.wait(300) == 0
    first.stderr.close()
    assert second.returncode == 0, second.stderr
    summary = json.loads(second.stdout)
    assert summary["resumed"] and summary["requests_sent"] == 0 and summary["ok"] == 80
    assert len(openai_server.answered) == 40 and len(openai_server.rejected) == 1  # json_schema refused once


# -- a full disk ---------------------------------------------------------------------------------------

@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A 2 MB tmpfs (root can mount one; CI runs as root)."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    mount_tmpfs(mount, "2m")
    try:
        yield mount
    finally:
        unmount(mount)


@pytest.mark.slow
def test_a_full_disk_stops_the_run_within_one_flush_with_the_job_failed(openai_server, tmp_path, tiny_tmpfs):
    home = tiny_tmpfs / "home"
    home.mkdir()
    (home / "prices.yaml").write_text(PRICES)
    topic_file = topics(tmp_path, 800)  # 800 topics x 5 items = 4,000 items, far more than 2 MB holds
    concurrency = 16
    command = generate(openai_server, home, topic_file, per_topic=5, concurrency=concurrency)
    command[command.index("--batch-size") + 1] = "5"  # the default: one request per topic
    out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stderr
    lines = [line for line in out.stderr.splitlines() if line.startswith("sdstudio: error:")]
    assert len(lines) == 1 and "full" in lines[0], out.stderr
    assert "Traceback" not in out.stderr and "never retrieved" not in out.stderr
    items_saved = saved(home)
    requests = len(openai_server.requests)
    assert 0 < items_saved < 4000
    assert requests <= items_saved + concurrency, (requests, items_saved)
    # and paid replies lost with the failed write are bounded by what the writer may hold plus what was in flight
    from sdstudio.engine import MAX_BUFFERED_ROWS

    answered = query(home, "SELECT COUNT(DISTINCT request_key) FROM records")[0][0]
    assert requests - answered <= MAX_BUFFERED_ROWS + 2 * concurrency, (requests, answered)
    status, error = query(home, "SELECT status, error FROM jobs WHERE id = 1")[0]
    assert status in ("failed", "interrupted") and (status == "interrupted" or "full" in error)
    print(f"\nFIGURES disk-full: {requests} requests, {items_saved} items saved, job {status}")


# -- metadata.db deleted or replaced mid-run -------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_a_database_deleted_or_replaced_mid_run_fails_the_run_instead_of_reporting_success(
        openai_server, tmp_path, how):
    openai_server.latency = 0.03
    topic_file = topics(tmp_path, 300)
    home = new_home(tmp_path, "home")
    proc = subprocess.Popen(generate(openai_server, home, topic_file), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    wait_for(lambda: saved(home) >= 20, proc, "20 saved rows")
    db = home / "metadata.db"
    if how == "deleted":
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
    else:
        copy = home / "copy.db"
        shutil.copy(db, copy)
        os.replace(copy, db)
    code = proc.wait(300)
    stdout, stderr = proc.stdout.read(), proc.stderr.read()
    proc.stdout.close()
    proc.stderr.close()
    assert code == 2, (stdout, stderr)
    assert "deleted or replaced" in stderr and stdout == ""
    assert len(openai_server.requests) < 300  # it stopped sending


# -- any workflow: a store error mid-run leaves no job running -------------------------------------------

@pytest.mark.parametrize("workflow", ["generate", "evaluate", "align", "workflow", "documents"])
def test_a_store_error_mid_run_fails_the_job_in_every_workflow(openai_server, home, monkeypatch, workflow, tmp_path):
    from sdstudio.cli import main

    model = ["--provider", "openai_compatible", "--model", "fake-model", "--base-url", openai_server.url]
    if workflow != "generate":
        assert main(["generate", *model, "--topics", "Heaps", "Tries", "--per-topic", "2", "--json"]) == 0
    real = Store.add_records
    calls = {"n": 0}

    def failing(self, records, **kw):
        calls["n"] += 1
        raise StoreError(f"cannot write {self.path}: database or disk is full (injected)")

    monkeypatch.setattr(Store, "add_records", failing)
    args = {"generate": ["generate", "--topics", "Graphs", "--per-topic", "2"],
            "evaluate": ["evaluate", "--job", "1"],
            "align": ["align", "--method", "dpo", "--topics", "Sorting", "--candidates", "2"],
            "workflow": ["workflow", "--config", str(ROOT / "examples" / "workflow.yaml"),
                         "--input", str(ROOT / "examples" / "data" / "questions.csv")],
            "documents": ["documents", "--files", str(ROOT / "examples" / "docs")]}[workflow]
    assert main([*args, *model, "--json"]) == 2
    monkeypatch.setattr(Store, "add_records", real)
    assert calls["n"] >= 1
    store = Store.open(home)
    statuses = dict(store.connection().execute("SELECT id, status FROM jobs").fetchall())
    assert "running" not in statuses.values() and "failed" in statuses.values(), statuses
    failed = store.connection().execute("SELECT error FROM jobs WHERE status = 'failed'").fetchall()
    assert all("disk is full" in e and "\n" not in e for (e,) in failed)


# -- a run started where an event loop already runs (a notebook cell) -------------------------------------

def test_run_workflow_called_inside_a_running_event_loop_runs_the_job(openai_server, home, tmp_path):
    import asyncio

    from sdstudio.config import WorkflowJob
    from sdstudio.workflows.custom import run_workflow

    data = tmp_path / f"rows-{uuid.uuid4().hex[:6]}.csv"
    data.write_text("text\nfirst row\nsecond row\n")
    config = WorkflowJob.model_validate({
        "kind": "workflow", "input_file": str(data),
        "steps": [{"name": "rewritten", "template": "Rewrite: {{ text }}"}],
        "model": {"provider": "openai_compatible", "model": "fake-model", "base_url": openai_server.url}})

    async def cell():  # what a notebook cell is: code running inside the kernel's loop
        return run_workflow(config, home=home)

    result = asyncio.run(cell())
    assert (result.status, result.ok) == ("done", 2)


# -- a read-only home --------------------------------------------------------------------------------------

@pytest.fixture
def read_only_mount(tmp_path):
    """A tmpfs holding a home with one finished job, then remounted read-only (CI runs as root)."""
    mount = tmp_path / "ro"
    mount.mkdir()
    mount_tmpfs(mount, "8m")
    try:
        yield mount
    finally:
        unmount(mount)


@pytest.mark.parametrize("which", ["existing", "new"])
def test_a_read_only_home_is_one_line_and_exit_2(openai_server, read_only_mount, which):
    args = ["generate", "--provider", "openai_compatible", "--model", "fake-model", "--base-url", openai_server.url,
            "--topics", "Heaps", "--per-topic", "1"]
    home = read_only_mount / "home"
    first = subprocess.run([sys.executable, "-m", "sdstudio.cli", *args, "--home", str(home)], cwd=ROOT,
                           capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    privileged("mount", "-o", "remount,ro", str(read_only_mount))
    target = home if which == "existing" else read_only_mount / "other"
    before = len(openai_server.requests)
    out = subprocess.run([sys.executable, "-m", "sdstudio.cli", *args, "--topics", "Tries", "--home", str(target)],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "read-only" in out.stderr.lower() or "Read-only" in out.stderr
    assert len(openai_server.requests) == before  # nothing sent for a job that could not be recorded


def test_an_unexpected_error_mid_run_fails_the_job_and_exits_2_with_one_line(openai_server, home, monkeypatch,
                                                                               capsys):
    from sdstudio.cli import main
    from sdstudio.workflows import sft

    def broken(self, item, completion):
        raise RuntimeError("handler bug\nsecond line")

    monkeypatch.setattr(sft.GenerationRun, "handle", broken)
    code = main(["generate", "--provider", "openai_compatible", "--model", "fake-model", "--base-url",
                 openai_server.url, "--topics", "Heaps"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("sdstudio: error: unexpected RuntimeError: handler bug (")
    status, error = Store.open(home).connection().execute("SELECT status, error FROM jobs").fetchone()
    assert (status, error) == ("failed", "handler bug")
