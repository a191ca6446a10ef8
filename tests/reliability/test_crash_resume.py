"""SIGKILL the CLI at three random points of one job, resuming after each, against a deterministic server:
the final dataset equals an uninterrupted run's, and no request for an already-saved row is sent again."""
from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.reliability.db import query

ROOT = Path(__file__).resolve().parents[2]
TOPICS = [f"Crash topic {i:03d}" for i in range(240)]
TOPIC = re.compile(r"<topic>(.*?)</topic>")


def command(server, home: Path, topics_file: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "sdstudio.cli", "generate", "--provider", "openai_compatible", "--model",
            "fake-model", "--base-url", server.url, "--topics-file", str(topics_file), "--per-topic", "2",
            "--batch-size", "2", "--concurrency", "4", "--home", str(home), "--json", *extra]


def saved_topics(home: Path) -> set[str]:
    return {t for (t,) in query(home, "SELECT DISTINCT topic FROM records WHERE status = 'ok'")}


def dataset(home: Path) -> set[tuple[str, str]]:
    return {(topic, output) for topic, output in query(
        home, "SELECT topic, output FROM records WHERE status = 'ok'")}


def asked(server, since: int) -> set[str]:
    return {TOPIC.search(b["messages"][-1]["content"]).group(1) for b in server.requests[since:]}


@pytest.mark.slow
def test_three_sigkills_and_resumes_end_with_the_uninterrupted_dataset(openai_server, tmp_path, rng):
    seed = f"(RELIABILITY_SEED={rng.seed_value})"
    openai_server.latency = 0.04
    topics_file = tmp_path / "topics.txt"
    topics_file.write_text("\n".join(TOPICS) + "\n")

    clean = tmp_path / "clean"
    out = subprocess.run(command(openai_server, clean, topics_file), cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    expected = dataset(clean)
    assert len(expected) == 480

    home = tmp_path / "killed"
    kills = []
    for attempt in range(3):
        before = saved_topics(home)
        gap = rng.randrange(0, 60)  # rows this run may save before it is killed (0: right after it starts)
        since = len(openai_server.requests)
        proc = subprocess.Popen(command(openai_server, home, topics_file, *(["--resume", "1"] if attempt else [])),
                                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while True:
            running = query(home, "SELECT status FROM generation_metadata WHERE id = 1") == [("running",)]
            if running and len(saved_topics(home)) * 2 >= len(before) * 2 + gap:
                break
            assert proc.poll() is None, f"run {attempt + 1} ended before its kill point {seed}: {proc.stderr.read()}"
            assert time.monotonic() < deadline, f"run {attempt + 1} made no progress {seed}"
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        proc.stderr.close()
        assert query(home, "PRAGMA integrity_check") == [("ok",)]
        now = saved_topics(home)
        assert before <= now  # a kill loses nothing that was saved
        resent = asked(openai_server, since) & before
        assert not resent, f"run {attempt + 1} asked again for saved rows {sorted(resent)[:5]} {seed}"
        kills.append(len(now) * 2)

    since = len(openai_server.requests)
    before = saved_topics(home)
    out = subprocess.run(command(openai_server, home, topics_file, "--resume", "1"), cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert (summary["status"], summary["ok"], summary["failed"]) == ("done", 480, 0)
    assert not asked(openai_server, since) & before, seed
    assert asked(openai_server, since) == set(TOPICS) - before  # exactly what was missing, once
    keys = [k for (k,) in query(home, "SELECT item_key FROM records")]
    assert len(keys) == len(set(keys)) == 480
    assert dataset(home) == expected, seed
    print(f"\nFIGURES crash-resume: rows saved at the 3 SIGKILLs={kills} of 480 {seed}; final rows=480, "
          f"requests after the last kill={len(openai_server.requests) - since}")
