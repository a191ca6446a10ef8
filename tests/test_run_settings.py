"""The pages' "Run settings" fold without a browser: every page that runs a job has it, its choices reach the job's
run settings and not its identity, and choosing Spark on the Generate page runs the job on Spark local[2] against
the loopback fake server (seen in Spark's own REST API) with the local executor's records."""
from __future__ import annotations

import json
import os
import sys
import urllib.request

import pytest

from sdstudio.ui import AlignmentApp, DocumentsApp, EvaluateApp, GenerateApp, WorkflowApp
from sdstudio.ui.run_settings import RunSettingsBox
from sdstudio.workflows.jobs import config_hash
from tests.fakes.openai_server import FakeOpenAIServer
from tests.test_executors import job_records

pytestmark = pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas:FutureWarning")


def generate_app(server, home) -> GenerateApp:
    app = GenerateApp(home=home, provider="openai_compatible", model="fake-model", base_url=server.url)
    app.topics.value = "Heaps\nTries"
    app.per_topic.value, app.batch_size.value = 2, 1
    return app


def test_spark_fields_show_only_when_spark_is_chosen_and_reach_the_run_settings():
    box = RunSettingsBox()
    assert box.selected_index is None and box.get_title(0) == "Run settings"  # folded: most runs need none of it
    assert box.spark_fields.layout.display == "none"
    assert box.values() == {"concurrency": 16, "executor": "local"}
    box.executor.value, box.master.value, box.partitions.value, box.concurrency.value = "spark", " yarn ", 8, 64
    assert box.spark_fields.layout.display is None and "Spark partitions" in box.note.value
    assert box.values() == {"concurrency": 64, "executor": "spark", "spark_master": "yarn", "partitions": 8}
    box.partitions.value, box.master.value = 0, ""  # blank: the running session / local[2], the task slots
    assert box.values()["spark_master"] is None and box.values()["partitions"] is None


@pytest.mark.parametrize("page", [GenerateApp, DocumentsApp, WorkflowApp, AlignmentApp, EvaluateApp])
def test_every_page_that_runs_a_job_has_the_fold_above_run_and_it_leaves_the_jobs_identity(page, openai_server,
                                                                                            home):
    kwargs = {"provider": "openai_compatible", "model": "fake-model", "base_url": openai_server.url}
    app = page(home=home, **kwargs)
    children = list(app.children)
    assert children.index(app.run_settings) == children.index(app.controls) - 1
    if page is not GenerateApp:
        return  # the other forms need inputs before they make a job; their config() goes through the same apply
    local = app.config()
    app.run_settings.executor.value, app.run_settings.partitions.value = "spark", 3
    spark = app.config()
    assert (local.run.executor, spark.run.executor, spark.run.partitions) == ("local", "spark", 3)
    assert config_hash(spark) == config_hash(local)  # the same job, however it runs


@pytest.fixture(scope="module")
def spark():
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        pytest.fail("pyspark is not installed; `make test` installs it (the dev extra)", pytrace=False)
    from sdstudio.executors.spark_session import with_task_retries

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    session = (SparkSession.builder.master(with_task_retries("local[2]")).appName("sdstudio run settings test")
               .config("spark.ui.enabled", "true").config("spark.ui.port", "0")
               .config("spark.ui.showConsoleProgress", "false").getOrCreate())
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def spark_jobs(spark) -> list[dict]:
    sc = spark.sparkContext
    with urllib.request.urlopen(f"{sc.uiWebUrl}/api/v1/applications/{sc.applicationId}/jobs") as reply:
        return json.loads(reply.read())


def test_choosing_spark_on_the_generate_page_runs_the_job_on_spark_with_the_local_records(spark, tmp_path,
                                                                                          monkeypatch):
    results = {}
    for executor in ("local", "spark"):
        home = tmp_path / executor
        monkeypatch.setenv("SDSTUDIO_HOME", str(home))
        with FakeOpenAIServer() as server:
            app = generate_app(server, home)
            app.run_settings.executor.value = executor
            app.run_settings.master.value = "local[2]" if executor == "spark" else ""
            app.run_settings.partitions.value = 2
            app.controls.run_button.click()
            result = app.controls.wait(180)
        assert result is not None and result.ok == 4, app.controls.status.value
        assert app.store.get_job("generation", result.job_id)["config"]["run"]["executor"] == executor
        results[executor] = job_records(home)
    # the same keys, and the same rows with the same statuses; of two items whose replies were identical, which one
    # dedup keeps follows the order the replies came back in, so a twin's key may be the other one's
    assert {row[1] for row in results["spark"]} == {row[1] for row in results["local"]}
    assert sorted(row[2:] for row in results["spark"]) == sorted(row[2:] for row in results["local"])
    ran = [job for job in spark_jobs(spark) if "sdstudio job 1" in job.get("description", "")]
    assert ran and ran[-1]["status"] == "SUCCEEDED" and ran[-1]["numTasks"] == 2
