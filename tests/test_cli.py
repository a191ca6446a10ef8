"""The `sdstudio` command end to end, as a subprocess, against the real fake OpenAI-compatible server."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def sdstudio(*args: str, home: Path, check_exit: int | None = 0, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "sdstudio.cli", *args, "--home", str(home)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120, **kw)
    if check_exit is not None:
        assert proc.returncode == check_exit, proc.stderr
    return proc


def fake(server) -> list[str]:
    return ["--provider", "openai_compatible", "--model", "fake-model", "--base-url", server.url]


def db_rows(home: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(home / "metadata.db") as conn:
        return conn.execute(sql).fetchall()


def saved_so_far(home: Path) -> int:
    """Records written so far by a run in another process (0 while its metadata.db is being created)."""
    try:
        return db_rows(home, "SELECT COUNT(*) FROM records")[0][0] if (home / "metadata.db").exists() else 0
    except sqlite3.OperationalError:  # the file exists but the first migration has not committed yet
        return 0


def test_generate_prints_one_json_summary_and_stores_the_rows(openai_server, tmp_path):
    out = sdstudio("generate", *fake(openai_server), "--topics", "Heaps", "Tries", "--per-topic", "2",
                   "--batch-size", "2", "--json", home=tmp_path)
    summary = json.loads(out.stdout)
    assert {"job_id", "status", "ok", "failed", "filtered", "tokens_in", "tokens_out", "cost_usd",
            "elapsed_s"} <= set(summary)
    assert summary["status"] == "done" and summary["ok"] == 4
    assert db_rows(tmp_path, "SELECT COUNT(*) FROM records WHERE status = 'ok'") == [(4,)]


def test_without_json_a_human_summary_goes_to_stderr(openai_server, tmp_path):
    out = sdstudio("generate", *fake(openai_server), "--topics", "Heaps", "--per-topic", "1", home=tmp_path)
    assert out.stdout == "" and "generation job 1 done: 1 ok" in out.stderr


def test_dry_run_renders_the_prompt_and_makes_no_call_and_writes_nothing(openai_server, tmp_path):
    home = tmp_path / "fresh"
    out = sdstudio("generate", *fake(openai_server), "--topics", "Tries", "--dry-run", home=home)
    assert "<topic>Tries</topic>" in out.stdout and "requests" in out.stderr
    assert openai_server.requests == [] and not (home / "metadata.db").exists()
    shown = json.loads(sdstudio("generate", *fake(openai_server), "--dry-run", "--json", home=home).stdout)
    assert shown["items"] == 25 and shown["requests"] == 5  # the use case's 5 topics x 5, 5 per call


@pytest.mark.parametrize("config, message", [
    ("kind: generation\nnum_per_topc: 3\n", "unknown key 'num_per_topc'"),
    ("kind: generation\nnum_per_topic: 0\n", "num_per_topic"),
    ("kind: evaluation\nsource_job: 1\nscale: [5, 1]\n", "scale 5-1 is empty"),
    ("kind: generation\nuse_case: nope\n", "unknown use case 'nope'"),
    ("kind: generation\ntopics: [1, [2]\n", "invalid YAML"),
])
def test_bad_configs_exit_2_with_one_line_naming_the_problem(tmp_path, config, message):
    path = tmp_path / "job.yaml"
    path.write_text(config)
    out = sdstudio("generate", "--config", str(path), "--dry-run", home=tmp_path, check_exit=2)
    assert message in out.stderr and len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr


def test_a_missing_config_or_topics_file_exits_2(tmp_path):
    out = sdstudio("generate", "--config", str(tmp_path / "none.yaml"), home=tmp_path, check_exit=2)
    assert "does not exist" in out.stderr
    out = sdstudio("generate", "--topics-file", str(tmp_path / "none.txt"), home=tmp_path, check_exit=2)
    assert "cannot read topics file" in out.stderr


def test_topics_come_from_a_file(openai_server, tmp_path):
    topics = tmp_path / "topics.txt"
    topics.write_text("# my topics\nBloom filters\n\nSkip lists\n")
    out = sdstudio("generate", *fake(openai_server), "--topics-file", str(topics), "--per-topic", "1",
                   "--json", home=tmp_path)
    assert json.loads(out.stdout)["ok"] == 2
    assert sorted(db_rows(tmp_path, "SELECT topic FROM records")) == [("Bloom filters",), ("Skip lists",)]


def test_failures_above_the_allowed_ratio_exit_1(openai_server, tmp_path):
    openai_server.fault_rates = {"context_length": 1.0}
    out = sdstudio("generate", *fake(openai_server), "--topics", "Heaps", "--per-topic", "2", "--json",
                   home=tmp_path, check_exit=1)
    assert json.loads(out.stdout)["failed"] >= 1


def test_resume_continues_a_killed_job_without_asking_again_for_saved_rows(openai_server, tmp_path):
    openai_server.latency = 0.05
    args = [sys.executable, "-m", "sdstudio.cli", "generate", *fake(openai_server), "--topics",
            *[f"Topic {i}" for i in range(60)], "--per-topic", "1", "--concurrency", "4",
            "--home", str(tmp_path), "--json"]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while saved_so_far(tmp_path) < 10:
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    saved = {row[0] for row in db_rows(tmp_path, "SELECT item_key FROM records WHERE status = 'ok'")}
    before = len(openai_server.requests)
    out = sdstudio("generate", *fake(openai_server), "--resume", "1", "--json", home=tmp_path)
    assert json.loads(out.stdout)["ok"] == 60
    resent = [b["messages"][-1]["content"] for b in openai_server.requests[before:]]
    assert len(resent) == 60 - len(saved)  # only what was not saved yet
    keys = [row[0] for row in db_rows(tmp_path, "SELECT item_key FROM records")]
    assert len(keys) == len(set(keys)) == 60


def test_ctrl_c_marks_the_job_cancelled_and_exits_130(openai_server, tmp_path):
    openai_server.latency = 0.2
    args = [sys.executable, "-m", "sdstudio.cli", "generate", *fake(openai_server), "--topics",
            *[f"T{i}" for i in range(40)], "--per-topic", "1", "--concurrency", "2", "--home", str(tmp_path)]
    # a Ctrl-C handler as in a terminal, even when this test runs where SIGINT is ignored (a background job of a
    # shell without job control): a child inherits "ignored", and Python then installs no handler of its own
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    while len(openai_server.answered) < 3:
        assert proc.poll() is None
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert db_rows(tmp_path, "SELECT status FROM generation_metadata") == [("cancelled",)]


def test_jobs_lists_and_shows_jobs(openai_server, tmp_path):
    sdstudio("generate", *fake(openai_server), "--topics", "Heaps", "--per-topic", "1", home=tmp_path)
    listing = json.loads(sdstudio("jobs", "--json", home=tmp_path).stdout)
    assert [(j["kind"], j["id"], j["status"]) for j in listing] == [("generation", 1, "done")]
    shown = json.loads(sdstudio("jobs", "show", "1", "--json", home=tmp_path).stdout)
    assert shown["records"] == {"ok": 1, "failed": 0, "filtered": 0} and shown["config"]["topics"] == ["Heaps"]
    assert "no job with id 9" in sdstudio("jobs", "show", "9", home=tmp_path, check_exit=2).stderr


def test_models_lists_what_the_provider_offers(openai_server, tmp_path):
    out = sdstudio("models", "--provider", "openai_compatible", "--base-url", openai_server.url, home=tmp_path)
    assert out.stdout.split() == ["fake-judge", "fake-model"]
    out = sdstudio("models", "--provider", "nope", home=tmp_path, check_exit=2)
    assert "unknown provider 'nope'" in out.stderr


GENERATION_EXAMPLES = sorted(p.name for p in (ROOT / "examples").glob("*.yaml")
                             if "kind: generation" in p.read_text())


@pytest.mark.parametrize("example", GENERATION_EXAMPLES)
def test_every_shipped_generation_example_runs(openai_server, tmp_path, example):
    if example.startswith("text2sql"):
        openai_server.reply = lambda body: json.dumps({"items": [
            {"question": f"How many customers are in country {i}?", "explanation": "filter and count",
             "sql": f"SELECT COUNT(*) FROM customers WHERE country = 'C{i}'"} for i in range(3)]})
    out = sdstudio("generate", "--config", str(ROOT / "examples" / example), *fake(openai_server), "--json",
                   home=tmp_path, env={**os.environ, "SDSTUDIO_DEBUG": ""})
    summary = json.loads(out.stdout)
    assert summary["status"] == "done" and summary["ok"] > 0 and summary["failed"] == 0


def test_the_console_script_leaves_its_output_whole_and_metadata_db_closed(openai_server, tmp_path):
    """``sdstudio`` skips the interpreter's teardown (cli.entry): its output is still flushed, its exit code kept,
    and metadata.db checkpointed and closed as a normal exit leaves it (no WAL holding rows)."""
    args = [sys.executable, "-m", "sdstudio.cli", "generate", *fake(openai_server), "--topics", "Heaps", "Tries",
            "--per-topic", "1", "--home", str(tmp_path), "--json"]
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1])["ok"] == 2
    wal = tmp_path / "metadata.db-wal"
    assert not wal.exists() or wal.stat().st_size == 0
    with sqlite3.connect(f"file:{tmp_path / 'metadata.db'}?mode=ro", uri=True) as conn:
        assert conn.execute("SELECT COUNT(*) FROM records WHERE status = 'ok'").fetchone()[0] == 2
    bad = subprocess.run(args[:4] + ["--use-case", "no-such-use-case", "--home", str(tmp_path)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "no-such-use-case" in bad.stderr


@pytest.mark.parametrize("command", ["generate", "documents", "workflow", "align", "evolve", "conversations"])
def test_resuming_a_job_with_another_kinds_command_is_one_line_naming_both_kinds(command, store, home, capsys):
    from tests.helpers import cli

    job = store.create_job("generation", kind="evaluation-like", status="done",
                           config={"kind": "export"}, config_hash="other")
    code = cli(command, "--resume", str(job), "--home", str(home))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert f"generation job {job} is of kind export, not " in err[0] and f"`sdstudio {command}` cannot" in err[0]
