"""Data-lake inputs and outputs (issue 20) in Spark local[2] against the loopback fake server: a workflow, an
evaluation and an alignment read from a Parquet URI and from a Spark table give the rows they give from the local
file; --limit is pushed down to Spark; documents come through Spark's binaryFile source; a job with an output URI
writes its ok records as Parquet partitioned by job and export reads them back as it reads metadata.db.

S3 is not exercised: s3a needs the hadoop-aws jars and the AWS SDK bundle, a download this suite does not make
offline; an output URI is tested on the local file system (``file:``), through the same Spark writer.
One SparkSession for the module (starting Spark is most of the time)."""
from __future__ import annotations

import json
import os
import shutil
import sys
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas:FutureWarning")
try:  # not skipped when missing: `make test` installs pyspark and a JRE, so missing is a failure
    import pyspark  # noqa: F401
except ImportError:
    pytest.fail("pyspark is not installed; `make test` installs it (the dev extra), or pip install 'sdstudio[spark]'",
                pytrace=False)

from sdstudio import spark_io  # noqa: E402
from sdstudio.cli import main  # noqa: E402
from sdstudio.documents import load_corpus  # noqa: E402
from sdstudio.executors.spark_session import with_task_retries  # noqa: E402
from sdstudio.spark_output import output_location, read_output  # noqa: E402
from sdstudio.store import Store  # noqa: E402
from tests.fakes.openai_server import FakeOpenAIServer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
QUESTIONS = ROOT / "examples" / "data" / "questions.csv"


@pytest.fixture(scope="module")
def spark(tmp_path_factory):
    """local[2] with task retries, its UI on a free port (the limit test reads its REST API), a warehouse in a
    temporary folder, and a ``lake`` database holding the questions and the pairs as tables."""
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    warehouse = tmp_path_factory.mktemp("warehouse")
    session = (SparkSession.builder.master(with_task_retries("local[2]")).appName("sdstudio data tests")
               .config("spark.ui.port", "0").config("spark.ui.showConsoleProgress", "false")
               .config("spark.sql.warehouse.dir", str(warehouse)).getOrCreate())
    session.sparkContext.setLogLevel("ERROR")
    session.sql("CREATE DATABASE IF NOT EXISTS lake")
    yield session
    session.stop()


@pytest.fixture(scope="module")
def lake(spark, tmp_path_factory):
    """The example questions and a table of prompt/completion pairs, each as a local Parquet file, the same file
    as a ``file:`` URI, and a Spark table (written from the same rows, in the same order)."""
    import pandas as pd

    folder = tmp_path_factory.mktemp("lake")
    questions = pd.read_csv(QUESTIONS, dtype=object, keep_default_na=False)
    pairs = pd.DataFrame({"p": [f"What is {n} + {n}?" for n in range(12)], "c": [str(2 * n) for n in range(12)],
                          "t": ["sums" if n % 2 else "doubles" for n in range(12)]})
    found = {}
    for name, frame in (("questions", questions), ("pairs", pairs)):
        path = folder / f"{name}.parquet"
        frame.to_parquet(path, index=False)
        spark.createDataFrame(frame).coalesce(1).write.mode("overwrite").saveAsTable(f"lake.{name}")
        found[name] = {"local": str(path), "uri": path.as_uri(), "table": f"lake.{name}"}
    return found


def source_flags(source: dict[str, str], how: str) -> list[str]:
    return ["--input-table", source["table"]] if how == "table" else ["--input", source[how]]


def model_flags(server: FakeOpenAIServer) -> list[str]:
    return ["--provider", "openai_compatible", "--model", "fake-model", "--base-url", server.url]


def every_record(home: Path) -> list[tuple]:
    """Each job's records, sorted (runs write them in the order replies come): kind, job, key, status, input, output."""
    store = Store.open(home)
    jobs = [row[0] for row in store.connection().execute("SELECT id FROM jobs ORDER BY id")]
    return sorted((r["job_kind"], job, r["item_key"], r["status"], json.dumps(r["input"], sort_keys=True),
             json.dumps(r["output"], sort_keys=True))
            for job in jobs for family in ("generation", "evaluation") for r in store.records(family, job))


def run_each_way(tmp_path: Path, monkeypatch, source: dict[str, str], command: list[str]) -> dict[str, list]:
    results = {}
    for how in ("local", "uri", "table"):
        home = tmp_path / how
        monkeypatch.setenv("SDSTUDIO_HOME", str(home))
        with FakeOpenAIServer() as server:
            assert main([*command, *source_flags(source, how), *model_flags(server), "--home", str(home)]) == 0
        results[how] = every_record(home)
    return results


@pytest.mark.parametrize("selection", [["--limit", "3"], ["--limit", "3", "--sample", "--seed", "7"]])
def test_a_workflow_from_a_parquet_uri_or_a_table_runs_the_rows_of_the_local_file(spark, lake, tmp_path, monkeypatch,
                                                                                    selection):
    results = run_each_way(tmp_path, monkeypatch, lake["questions"],
                           ["workflow", "--config", str(ROOT / "examples" / "workflow.yaml"), *selection])
    assert len(results["local"]) == 3 and {r[3] for r in results["local"]} == {"ok"}
    assert results["uri"] == results["local"] and results["table"] == results["local"]


def test_an_evaluation_from_a_parquet_uri_or_a_table_judges_the_rows_of_the_local_file(spark, lake, tmp_path,
                                                                                       monkeypatch):
    results = run_each_way(tmp_path, monkeypatch, lake["pairs"],
                           ["evaluate", "--prompt-col", "p", "--completion-col", "c", "--topic-col", "t",
                            "--limit", "5"])
    assert len(results["local"]) == 5
    assert results["uri"] == results["local"] and results["table"] == results["local"]


def test_an_alignment_from_a_parquet_uri_or_a_table_answers_the_prompts_of_the_local_file(spark, lake, tmp_path,
                                                                                          monkeypatch):
    results = run_each_way(tmp_path, monkeypatch, lake["pairs"],
                           ["align", "--prompt-col", "p", "-k", "2", "--limit", "2"])
    assert results["local"] and results["uri"] == results["local"] and results["table"] == results["local"]


def test_spark_rows_are_the_local_readers_rows_for_csv_and_json_lines_too(spark, tmp_path):
    from sdstudio.datasets import read_selection

    data = [{"id": n, "text": f"row {n}, with a comma", "blank": "" if n % 2 else "x"} for n in range(20)]
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(row) + "\n" for row in data))
    (tmp_path / "rows.csv").write_text("id,text,blank\n" + "".join(f'{r["id"]},"{r["text"]}",{r["blank"]}\n'
                                                                    for r in data))
    for name in ("rows.jsonl", "rows.csv"):
        for selection in ({"limit": 4}, {"limit": 6, "sample": True, "seed": 3}, {}):
            local_columns, local = read_selection(str(tmp_path / name), **selection)
            columns, through_spark = spark_io.read_selection((tmp_path / name).as_uri(), **selection)
            assert columns == local_columns == ["id", "text", "blank"]
            assert through_spark.index.tolist() == local.index.tolist()
            assert spark_io.read_rows((tmp_path / name).as_uri(), **selection_args(selection)) == \
                spark_io.read_rows(str(tmp_path / name), **selection_args(selection))


def selection_args(selection: dict) -> dict:
    return {"limit": selection.get("limit"), "sample": selection.get("sample"), "seed": selection.get("seed", 42)}


def test_a_limit_is_pushed_down_so_spark_reads_a_few_rows_of_a_200k_row_parquet(spark, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = 200_000
    path = tmp_path / "big.parquet"
    pq.write_table(pa.table({"n": list(range(rows)), "text": [f"row {n}" for n in range(rows)]}), path,
                   row_group_size=20_000)
    sc = spark.sparkContext
    sc.setJobGroup("limit-pushdown", "a limited read")
    try:
        columns, frame = spark_io.read_frame(path.as_uri(), limit=10)
    finally:
        sc.setJobGroup("other", "")
    assert columns == ["n", "text"] and frame["n"].tolist() == list(range(10))
    jobs = sc.statusTracker().getJobIdsForGroup("limit-pushdown")
    stages = [stage for job in jobs for stage in sc.statusTracker().getJobInfo(job).stageIds]
    read = 0
    for stage in stages:
        with urllib.request.urlopen(f"{sc.uiWebUrl}/api/v1/applications/{sc.applicationId}/stages/{stage}") as reply:
            read += sum(attempt["inputRecords"] for attempt in json.load(reply))
    assert 10 <= read < rows // 5, f"Spark read {read} rows for a limit of 10"
    assert "CollectLimit" in spark.read.parquet(path.as_uri()).limit(10)._jdf.queryExecution().executedPlan().toString()


def test_documents_under_a_uri_come_through_binaryfile_with_the_local_provenance(spark, tmp_path, monkeypatch):
    folder = tmp_path / "docs"
    shutil.copytree(ROOT / "examples" / "docs", folder)
    (folder / ".hidden.txt").write_text("never read")
    (folder / "notes.csv").write_text("not,a,document\n")
    local, through_spark = load_corpus([str(folder)]), load_corpus([folder.as_uri()])
    assert [(d.name, d.sha256, d.text) for d in through_spark.documents] == \
        [(d.name, d.sha256, d.text) for d in local.documents]
    assert [c.provenance() | {"path": None} for c in through_spark.chunks] == \
        [c.provenance() | {"path": None} for c in local.chunks]
    assert all(c.path.startswith("file:") for c in through_spark.chunks)
    home = tmp_path / "home"
    monkeypatch.setenv("SDSTUDIO_HOME", str(home))
    with FakeOpenAIServer() as server:
        assert main(["documents", "--files", folder.as_uri(), "--per-chunk", "1", *model_flags(server),
                     "--home", str(home)]) == 0
    records = list(Store.open(home).records("generation", 1, "ok"))
    assert records and {r["provenance"]["sha256"] for r in records} <= {d.sha256 for d in local.documents}


def test_a_job_with_an_output_uri_writes_parquet_by_job_that_export_reads_as_it_reads_sqlite(spark, lake, tmp_path,
                                                                                             monkeypatch, capsys):
    home, out = tmp_path / "home", tmp_path / "lake-out"
    monkeypatch.setenv("SDSTUDIO_HOME", str(home))
    command = ["workflow", "--config", str(ROOT / "examples" / "workflow.yaml"), "--input", lake["questions"]["uri"],
               "--limit", "4", "--output-uri", str(out), "--home", str(home)]
    with FakeOpenAIServer() as server:
        assert main([*command, *model_flags(server)]) == 0
        store = Store.open(home)
        location = output_location(store, 1)
        assert location == out.as_uri() + "/job=1" and list((out / "job=1").glob("part-*.parquet"))
        assert read_output(location) == list(store.records("generation", 1, "ok"))
        assert {r[0] for r in spark.read.parquet(out.as_uri()).select("job").collect()} == {1}  # partitioned by job
        server.requests.clear()  # resumed: nothing sent again, the partition rewritten with the same rows
        assert main(["workflow", "--resume", "1", "--home", str(home), "--base-url", server.url]) == 0
        assert server.requests == [] and read_output(location) == list(store.records("generation", 1, "ok"))

    def export(folder: str) -> bytes:
        assert main(["export", "--job", "1", "--style", "raw", "--out", str(tmp_path / folder), "--home",
                     str(home)]) == 0
        return next((tmp_path / folder).rglob("*.jsonl")).read_bytes()

    from_parquet = export("from-parquet")
    shutil.rmtree(out / "job=1")  # export read the Parquet: without it, it says so in one line
    capsys.readouterr()
    assert main(["export", "--job", "1", "--style", "raw", "--out", str(tmp_path / "gone"), "--home", str(home)]) == 2
    assert "cannot be read" in capsys.readouterr().err
    store.update_job(None, 1, output_uri=None)
    assert export("from-sqlite") == from_parquet and len(from_parquet.splitlines()) == 4
