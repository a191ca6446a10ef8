"""The custom workflow on Spark local[2] against the loopback fake server (issue 20): rows go to partitions and run
their chain of steps there; the records equal the local run's, a resume ships only the rows not done, and a Python
worker killed mid-partition does not ask again the steps it had already streamed. One SparkSession per module."""
from __future__ import annotations

import json
import os
import sys
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas:FutureWarning")
try:  # not skipped when missing: `make test` installs the dev extra (pyspark) and a JRE
    import pyspark  # noqa: F401
except ImportError:
    pytest.fail("pyspark is not installed; `make test` installs it (the dev extra), or pip install 'sdstudio[spark]'",
                pytrace=False)

from sdstudio.cli import main  # noqa: E402
from sdstudio.config import RunSettings  # noqa: E402
from sdstudio.executors.spark_session import with_task_retries  # noqa: E402
from sdstudio.executors.spark_worker import EXIT_HOOK_ENV  # noqa: E402
from sdstudio.store import Store  # noqa: E402
from sdstudio.workflows.custom import WorkflowRun  # noqa: E402
from tests.fakes.openai_server import FakeOpenAIServer  # noqa: E402
from tests.test_custom_workflow import chain, write_csv  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def spark():
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    session = (SparkSession.builder.master(with_task_retries("local[2]")).appName("sdstudio workflow tests")
               .config("spark.ui.port", "0").config("spark.ui.showConsoleProgress", "false").getOrCreate())
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def workflow_records(home: Path, job_id: int = 1) -> list[tuple]:
    """What a workflow row is: key, status, every column, the steps' request keys, error, tokens, cost."""
    rows = []
    for r in Store.open(home).records("generation", job_id):
        steps = (r["provenance"] or {}).get("steps") or {}
        rows.append((r["item_key"], r["request_key"], r["status"], json.dumps(r["output"], sort_keys=True),
                     json.dumps({name: info["key"] for name, info in steps.items()}, sort_keys=True), r["error"],
                     r["tokens_in"], r["tokens_out"], round(r["cost_usd"], 9)))
    return sorted(rows)


def row_3_fails_at_its_grade(body: dict) -> str:
    from tests.fakes.openai_server import default_reply

    return "no JSON here" if body["messages"][-1]["content"].startswith("S2 3:") else default_reply(body)


def sent_prompts(server: FakeOpenAIServer) -> Counter:
    return Counter(body["messages"][-1]["content"] for body in server.requests)


def run_chain(server, home: Path, csv: Path, **run) -> object:
    settings = RunSettings(**{"concurrency": 4, "backoff_base_s": 0.01, "backoff_max_s": 0.05, **run})
    return WorkflowRun(chain(server, csv, run=settings), home=home).run()


def test_the_example_workflow_on_a_parquet_input_yields_the_local_rows(spark, tmp_path, monkeypatch):
    """The issue's "done when": examples/workflow.yaml, a Parquet input, --executor spark --spark-master local[2]."""
    data = tmp_path / "questions.parquet"
    pd.read_csv(ROOT / "examples" / "data" / "questions.csv").to_parquet(data)
    results = {}
    with FakeOpenAIServer() as server:
        for executor in ("local", "spark"):
            home = tmp_path / executor
            monkeypatch.setenv("SDSTUDIO_HOME", str(home))
            extra = ["--spark-master", "local[2]"] if executor == "spark" else []
            code = main(["workflow", "--config", str(ROOT / "examples" / "workflow.yaml"), "--input", str(data),
                         "--provider", "openai_compatible", "--model", "fake-model", "--base-url", server.url,
                         "--executor", executor, *extra, "--home", str(home)])
            assert code == 0
            results[executor] = workflow_records(home)
    assert len(results["local"]) == 5 and {r[2] for r in results["local"]} == {"ok"}
    assert results["spark"] == results["local"]


def test_a_chain_with_failing_rows_on_spark_yields_the_local_records_and_sends_each_step_once(spark, tmp_path):
    results, sent, requests = {}, {}, {}
    for executor in ("local", "spark"):
        with FakeOpenAIServer(reply=row_3_fails_at_its_grade) as server:
            result = run_chain(server, tmp_path / executor, write_csv(tmp_path, 6), executor=executor)
            results[executor], sent[executor] = workflow_records(tmp_path / executor), sent_prompts(server)
        assert (result.ok, result.failed) == (5, 1)
        requests[executor] = result.requests_sent
    assert results["spark"] == results["local"]
    assert requests["spark"] == requests["local"] == 5 * 3 + 2
    assert sent["spark"] == sent["local"]
    assert sum(sent["local"].values()) == 5 * 3 + 1 + 2  # row 3: s1, s2 twice (an output retry), no s3


def test_a_resumed_workflow_on_spark_ships_only_the_rows_not_done(spark, tmp_path):
    home, csv = tmp_path / "home", write_csv(tmp_path, 6)
    with FakeOpenAIServer() as server:
        server.script.append("context_length")  # one row fails at its first step
        first = run_chain(server, home, csv, executor="spark", partitions=2)
        assert (first.ok, first.failed) == (5, 1)
        server.script.clear()
        server.requests.clear()
        second = WorkflowRun(chain(server, csv, run=RunSettings(executor="spark", concurrency=2)),
                             home=home).run(resume=1)
        assert second.ok == 6
        assert len(server.requests) == 3  # the failed row's three steps, nothing else
    assert Counter(r[2] for r in workflow_records(home)) == Counter({"ok": 6})


def test_a_python_worker_killed_mid_partition_resumes_its_rows_without_asking_a_streamed_step_again(
        spark, tmp_path, monkeypatch):
    home, marker = tmp_path / "home", tmp_path / "worker-exited"
    monkeypatch.setenv(EXIT_HOOK_ENV, f"4:{marker}")  # a partition's worker dies after streaming its 4th record
    with FakeOpenAIServer(latency=0.02) as server:
        result = run_chain(server, home, write_csv(tmp_path, 8), executor="spark", partitions=2, concurrency=2)
        sent = sent_prompts(server)
    assert marker.exists()
    assert (result.ok, result.failed) == (8, 0)
    assert len(sent) == 8 * 3
    # a step whose record reached the driver is never asked again; only those the dead worker had not streamed
    # are: the request in its one slot, and a reply that had arrived while the engine (which parses a reply after
    # its worker has sent the next request) had not yet handed it on
    assert sum(count - 1 for count in sent.values()) <= 2
    assert Counter(r[2] for r in workflow_records(home)) == Counter({"ok": 8})


def test_progress_moves_while_the_rows_run_on_spark(spark, tmp_path):
    seen = []
    with FakeOpenAIServer(latency=0.1) as server:
        job = chain(server, write_csv(tmp_path, 8), run=RunSettings(executor="spark", partitions=2, concurrency=2))
        result = WorkflowRun(job, home=tmp_path / "home").run(on_progress=lambda p: seen.append((p.done, p.total)))
    assert result.ok == 8
    assert any(0 < done < total for done, total in seen), seen
    assert seen[-1] == (24, 24)


def test_the_endpoints_credentials_reach_the_partitions_but_not_the_task_or_sparks_conf(spark, tmp_path, monkeypatch):
    """Set after Spark started: the partitions can only have the key and the URL's query secret from the driver's
    collector; neither is in what Spark ships (the task's closure) nor in its conf."""
    from sdstudio.executors.spark_rows import shippable
    from sdstudio.executors.spark_worker import pack

    canary, query = "canary-workflow-key-5e1d2c3b4a", "canary-workflow-query-9f8e7d"
    monkeypatch.setenv("WORKFLOW_CANARY_API_KEY", canary)
    with FakeOpenAIServer(api_key=canary, query={"sig": query}) as server:
        job = chain(server, write_csv(tmp_path, 3), run=RunSettings(executor="spark", concurrency=2))
        job = job.model_copy(update={"model": job.model.model_copy(update={
            "base_url": f"{server.url}?sig={query}", "api_key_env": "WORKFLOW_CANARY_API_KEY"})})
        job = type(job).model_validate(job.model_dump())  # as a config file would give it
        run = WorkflowRun(job, home=tmp_path / "home")
        result = run.run()
        assert result.ok == 3 and len(server.answered) == 9
    task = pack(shippable(run))
    conf = json.dumps(spark.sparkContext.getConf().getAll())
    for text in (task.decode("latin-1"), conf):
        assert canary not in text and query not in text
