"""The Spark executor (issue 20) in Spark local[2] against the loopback fake server: the same records as the local
executor, resume, a Python worker killed mid-partition, progress while it runs, secrets kept out of Spark's conf,
UI, event log and logs. One SparkSession for the module (starting Spark is most of the time)."""
from __future__ import annotations

import json
import os
import sys
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

pytestmark = pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas:FutureWarning")
try:  # not skipped when missing: `make test` installs the dev extra (pyspark) and a JRE, so missing is a failure
    import pyspark  # noqa: F401
except ImportError:
    pytest.fail("pyspark is not installed; `make test` installs it (the dev extra), or pip install 'sdstudio[spark]'",
                pytrace=False)

from sdstudio.cli import main  # noqa: E402
from sdstudio.executors.spark_session import with_task_retries  # noqa: E402
from sdstudio.executors.spark_worker import EXIT_HOOK_ENV  # noqa: E402
from sdstudio.store import Store  # noqa: E402
from tests.fakes.openai_server import FakeOpenAIServer  # noqa: E402
from tests.test_executors import ROOT, job_records  # noqa: E402

TOPICS = ["Heaps", "Tries", "Graphs", "Queues", "Stacks", "Hashing", "Sorting", "Parsing"]
CANARY = "canary-spark-key-3f9a1c7e5b2d4086"
CANARY_QUERY = "canary-spark-query-8e7d6c5b4a39"


@pytest.fixture(scope="module")
def spark(tmp_path_factory):
    """local[2] with task retries, its UI on a free port, an event log, and the JVM's (and so the executors' and
    their Python workers') stdout/stderr in one file the secret test reads."""
    from pyspark.sql import SparkSession

    logs = tmp_path_factory.mktemp("spark-logs")
    (logs / "events").mkdir()
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    saved = os.dup(1), os.dup(2)
    with open(logs / "jvm.log", "wb") as out:
        os.dup2(out.fileno(), 1)
        os.dup2(out.fileno(), 2)
        try:
            session = (SparkSession.builder.master(with_task_retries("local[2]")).appName("sdstudio tests")
                       .config("spark.ui.port", "0").config("spark.ui.showConsoleProgress", "false")
                       .config("spark.eventLog.enabled", "true").config("spark.eventLog.dir", str(logs / "events"))
                       .getOrCreate())
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
    session.sparkContext.setLogLevel("WARN")
    session.logs = logs
    yield session
    session.stop()


def model_flags(server: FakeOpenAIServer, base_url: str | None = None) -> list[str]:
    return ["--provider", "openai_compatible", "--model", "fake-model", "--base-url", base_url or server.url]


def generate(home: Path, server: FakeOpenAIServer, *extra: str, topics: list[str] = TOPICS[:3]) -> int:
    home.mkdir(parents=True, exist_ok=True)
    (home / "prices.yaml").write_text("fake-model: [1.0, 2.0]\n")
    return main(["generate", *model_flags(server), "--topics", *topics, "--per-topic", "2", "--home", str(home),
                 *extra])


def sent_bodies(server: FakeOpenAIServer) -> Counter:
    return Counter(json.dumps(body["messages"], sort_keys=True) for body in server.requests)


def test_a_generation_job_on_spark_yields_the_local_records(spark, tmp_path, monkeypatch):
    results = {}
    for executor in ("local", "spark"):
        home = tmp_path / executor
        monkeypatch.setenv("SDSTUDIO_HOME", str(home))
        with FakeOpenAIServer() as server:
            assert generate(home, server, "--executor", executor, "--concurrency", "4") == 0
        results[executor] = job_records(home)
    assert len(results["local"]) == 6
    assert results["spark"] == results["local"]


def test_a_documents_job_with_its_grounding_check_on_spark_yields_the_local_records(spark, tmp_path, monkeypatch):
    """Two rounds through the executor and a check stamped onto each item: handlers and failure records shipped."""
    results = {}
    for executor in ("local", "spark"):
        home = tmp_path / executor
        home.mkdir()
        monkeypatch.setenv("SDSTUDIO_HOME", str(home))
        (home / "docs.yaml").write_text(f"kind: documents\nfiles: [{ROOT / 'examples' / 'docs'}]\n"
                                        f"grounding: true\nrun:\n  executor: {executor}\n")
        with FakeOpenAIServer() as server:
            assert main(["documents", *model_flags(server), "--config", str(home / "docs.yaml")]) == 0
        results[executor] = job_records(home)
    assert results["spark"] == results["local"] and len(results["local"]) >= 2


def test_a_resumed_spark_job_ships_only_the_items_not_ok(spark, home):
    with FakeOpenAIServer() as server:
        server.script.append("context_length")  # the first request fails for good (no follow-up round asks again)
        assert generate(home, server, "--executor", "spark", "--partitions", "1", "--concurrency", "1",
                        topics=TOPICS[:4]) == 0
        failed = [r for r in Store.open(home).records("generation", 1) if r["status"] == "failed"]
        assert failed, "the scripted errors should have failed an item"
        server.script.clear()
        server.requests.clear()
        assert main(["generate", "--home", str(home), "--resume", "1", "--executor", "spark",
                     "--partitions", "2", "--base-url", server.url]) == 0
        assert len(server.requests) == len({r["request_key"] for r in failed}) == 1
    statuses = Counter(r["status"] for r in Store.open(home).records("generation", 1))
    assert statuses == Counter({"ok": 8})


def test_a_python_worker_killed_mid_partition_is_retried_without_sending_an_item_twice(spark, home, tmp_path,
                                                                                       monkeypatch):
    marker = tmp_path / "worker-exited"
    monkeypatch.setenv(EXIT_HOOK_ENV, f"3:{marker}")  # a partition's worker dies as it starts its 3rd item
    with FakeOpenAIServer(latency=0.05) as server:
        # two partitions of four requests, one request at a time in each: nothing is in flight when it dies
        assert generate(home, server, "--executor", "spark", "--partitions", "2", "--concurrency", "2",
                        topics=TOPICS) == 0
        sent = sent_bodies(server)
    assert marker.exists()
    assert len(sent) == len(TOPICS) and set(sent.values()) == {1}
    statuses = Counter(r["status"] for r in Store.open(home).records("generation", 1))
    assert statuses == Counter({"ok": 2 * len(TOPICS)})


def test_progress_is_reported_while_the_spark_job_runs(spark, home):
    from sdstudio.config import parse_job
    from sdstudio.config import GenerationJob
    from sdstudio.workflows.sft import GenerationRun

    seen = []
    with FakeOpenAIServer(latency=0.2) as server:
        config = parse_job(GenerationJob, {
            "kind": "generation", "topics": TOPICS[:6], "num_per_topic": 2,
            "model": {"provider": "openai_compatible", "model": "fake-model", "base_url": server.url},
            "run": {"executor": "spark", "partitions": 2, "concurrency": 2}}, "test", home)
        result = GenerationRun(config, home=home).run(on_progress=lambda p: seen.append((p.done, p.total)))
    assert result.ok == 12
    assert any(0 < done < total for done, total in seen), seen


def test_provider_secrets_reach_the_executors_but_not_sparks_conf_ui_event_log_or_logs(spark, home, monkeypatch):
    """Set after Spark started, so the executors can only have the key from the driver's collector."""
    monkeypatch.setenv("SPARK_CANARY_API_KEY", CANARY)
    with FakeOpenAIServer(api_key=CANARY, query={"sig": CANARY_QUERY}) as server:
        home.mkdir(parents=True, exist_ok=True)
        code = main(["generate", *model_flags(server, f"{server.url}?sig={CANARY_QUERY}"), "--api-key-env",
                     "SPARK_CANARY_API_KEY", "--topics", "Heaps", "Tries", "--executor", "spark", "--home", str(home)])
        assert code == 0 and len(server.answered) == 2  # the executors authenticated with the canary
    sc = spark.sparkContext
    places = {"conf": json.dumps(sc.getConf().getAll())}
    with urllib.request.urlopen(f"{sc.uiWebUrl}/api/v1/applications/{sc.applicationId}/environment") as reply:
        places["ui environment"] = reply.read().decode()
    for path in spark.logs.rglob("*"):
        if path.is_file():
            places[str(path)] = path.read_text(errors="replace")
    places["job row"] = json.dumps(Store.open(home).get_job("generation", 1), default=str)
    assert len(places) >= 4
    for place, text in places.items():
        assert CANARY not in text and CANARY_QUERY not in text, f"a secret is in {place}"


def test_credentials_refused_on_the_executors_stop_the_spark_job_in_one_line(spark, home, monkeypatch, capsys):
    monkeypatch.setenv("SPARK_WRONG_API_KEY", "not-the-key")
    with FakeOpenAIServer(api_key="the-key") as server:
        code = main(["generate", *model_flags(server), "--api-key-env", "SPARK_WRONG_API_KEY", "--topics", *TOPICS,
                     "--executor", "spark", "--home", str(home)])
        assert code == 2 and len(server.received) <= 2 * 8  # stopped, not every item tried
    assert "stopped the job" in capsys.readouterr().err
    assert Store.open(home).get_job("generation", 1)["status"] == "failed"


def test_a_killed_driver_leaves_an_interrupted_job_that_resumes_like_a_local_one(home):
    """SIGKILL the whole `sdstudio generate --executor spark` process group (driver, JVM, Python workers) once some
    rows are saved: the job reads interrupted, and --resume finishes it without asking again for a saved row."""
    import signal
    import sqlite3
    import subprocess
    import time

    topics = [f"Topic {i}" for i in range(24)]

    def saved_topics() -> set[str]:
        try:
            with sqlite3.connect(home / "metadata.db") as conn:
                return {t for (t,) in conn.execute("SELECT topic FROM records WHERE status = 'ok'")}
        except sqlite3.OperationalError:  # not created or migrated yet
            return set()

    with FakeOpenAIServer(latency=0.2) as server:
        args = [sys.executable, "-m", "sdstudio.cli", "generate", *model_flags(server), "--topics", *topics,
                "--per-topic", "1", "--concurrency", "2", "--executor", "spark", "--spark-master", "local[2]",
                "--home", str(home), "--json"]
        proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        deadline = time.monotonic() + 120
        while len(saved_topics()) < 3:
            assert proc.poll() is None and time.monotonic() < deadline, "the Spark run ended before it was killed"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        kept = saved_topics()
        assert 3 <= len(kept) < len(topics)
        assert Store.open(home).jobs()["status"].tolist() == ["interrupted"]
        server.requests.clear()
        server.latency = 0.0
        assert main(["generate", "--home", str(home), "--resume", "1", "--executor", "spark",
                     "--base-url", server.url]) == 0
        asked_again = {topic for topic in topics if any(f"<topic>{topic}</topic>" in json.dumps(body)
                                                          for body in server.requests)}
    statuses = Counter(r["status"] for r in Store.open(home).records("generation", 1))
    assert statuses == Counter({"ok": len(topics)})
    assert asked_again == set(topics) - kept  # the resume asked for exactly the rows the killed run had not saved
