"""metadata.db: migrations, concurrency, records, reviews, and the seed's own snippet."""
from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
import textwrap
import threading

import pandas as pd
import pytest

from sdstudio.errors import StoreError
from sdstudio.store import MIGRATIONS, SCHEMA_VERSION, Record, Store

EXPECTED_COLUMNS = {
    "generation_metadata": {
        "id", "created_at", "finished_at", "status", "technique", "use_case", "model_id", "inference_type",
        "model_parameters", "prompt_template", "topics", "examples", "num_per_topic", "requested", "ok",
        "failed", "filtered", "tokens_in", "tokens_out", "cost_usd", "config", "config_hash", "error",
        "kind", "parent_id", "requests", "attempts"},
    "evaluation_metadata": {
        "id", "created_at", "finished_at", "status", "source_generation_id", "model_id", "inference_type",
        "model_parameters", "criteria", "scale_min", "scale_max", "examples", "average_score",
        "score_distribution", "topic_stats", "requested", "ok", "failed", "filtered", "tokens_in",
        "tokens_out", "cost_usd", "config", "config_hash", "error", "kind", "parent_id", "requests", "attempts"},
    "export_metadata": {
        "id", "created_at", "status", "source_job_ids", "destination", "format", "style", "path", "repo_id",
        "revision", "row_count", "file_hashes", "filters", "config", "error", "kind", "parent_id", "files"},
    "jobs": {
        "id", "kind", "parent_id", "created_at", "started_at", "finished_at", "status", "requested", "ok",
        "failed", "filtered", "tokens_in", "tokens_out", "cost_usd", "config", "config_hash", "error",
        "lease_owner", "lease_heartbeat", "requests", "attempts", "notes", "output_uri", "dedup_mark"},
    "endpoints": {"provider", "endpoint", "model", "structured_output", "answered_at"},
    "generation_jobs": {
        "job_id", "technique", "use_case", "model_id", "prompt_template", "topics", "examples", "num_per_topic",
        "inference_type", "model_parameters"},
    "evaluation_jobs": {
        "job_id", "source_generation_id", "model_id", "criteria", "scale_min", "scale_max", "examples",
        "average_score", "score_distribution", "topic_stats", "inference_type", "model_parameters"},
    "export_jobs": {
        "job_id", "source_job_ids", "destination", "format", "style", "path", "repo_id", "revision", "row_count",
        "file_hashes", "filters", "files"},
    "records": {
        "id", "job_kind", "job_id", "item_key", "request_key", "topic", "provenance", "input", "output",
        "status", "error", "raw_text", "tokens_in", "tokens_out", "latency_ms", "created_at", "cost_usd",
        "reasoning"},
    "reviews": {"id", "record_id", "reviewer", "verdict", "edited_output", "note", "created_at"},
    "batches": {
        "id", "job_id", "part", "backend", "remote_id", "input_file_id", "output_file_id", "error_file_id",
        "requests", "state", "completed", "failed", "request_ids", "created_at", "updated_at", "collected_at",
        "error"},
}


def table_columns(path) -> dict[str, set[str]]:
    conn = sqlite3.connect(path)
    try:
        tables = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') AND name NOT LIKE 'sqlite_%'")]
        return {t: {r[1] for r in conn.execute(f"PRAGMA table_info({t})")} for t in tables}
    finally:
        conn.close()


@pytest.mark.parametrize("start_version", range(SCHEMA_VERSION + 1))
def test_migrating_from_every_earlier_version_gives_the_expected_columns(tmp_path, start_version):
    path = tmp_path / "metadata.db"
    conn = sqlite3.connect(path, isolation_level=None)
    for migration in MIGRATIONS[:start_version]:
        migration(conn)
    conn.execute(f"PRAGMA user_version={start_version}")
    conn.close()
    Store(path).close()
    assert table_columns(path) == EXPECTED_COLUMNS
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_store_uses_wal_and_foreign_keys(store):
    conn = store.connection()
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1


def test_database_from_a_newer_version_is_refused_not_downgraded(tmp_path):
    path = tmp_path / "metadata.db"
    Store(path).close()
    sqlite3.connect(path).execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}").connection.commit()
    with pytest.raises(StoreError, match="newer sdstudio"):
        Store(path)
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1


def test_a_file_that_is_not_sqlite_gives_an_error_naming_it(tmp_path):
    path = tmp_path / "metadata.db"
    path.write_bytes(b"this is certainly not a database" * 100)
    with pytest.raises(StoreError, match=re.escape(str(path))):
        Store(path)


def test_seed_snippet_reads_generation_metadata(store, home, monkeypatch):
    store.create_job("generation", use_case="code_generation", model_id="m", topics=["DFS"])
    monkeypatch.chdir(home)
    # The seed guide's snippet, as written
    conn = sqlite3.connect("metadata.db")
    query = "SELECT * FROM generation_metadata"
    df = pd.read_sql_query(query, conn)
    conn.close()
    df.head()
    assert df.loc[0, "model_id"] == "m" and df.loc[0, "topics"] == '["DFS"]'


def test_no_column_can_hold_a_secret(store):
    """No column is named like a credential. The only names containing key/token are counters of
    tokens and the item/request keys that identify rows; they are listed so a new one fails here."""
    not_secrets = {"tokens_in", "tokens_out", "item_key", "request_key"}
    secretish = re.compile(r"key|token|secret|password|credential|auth|bearer")
    for table, cols in table_columns(store.path).items():
        for col in cols - not_secrets:
            assert not secretish.search(col), f"{table}.{col} looks like it could store a secret"


def make_records(job_id, n, prefix="item", status="ok"):
    return [Record(job_kind="generation", job_id=job_id, item_key=f"{prefix}-{i}", status=status,
                   request_key=f"req-{i}", topic="t", input={"i": i}, output={"q": f"question {i}"},
                   raw_text="{}", tokens_in=3, tokens_out=5, latency_ms=1.5) for i in range(n)]


def test_records_round_trip_with_json_fields(store):
    job = store.create_job("generation", use_case="code_generation")
    store.add_records(make_records(job, 3))
    rows = list(store.records("generation", job))
    assert [r["output"] for r in rows] == [{"q": "question 0"}, {"q": "question 1"}, {"q": "question 2"}]
    assert rows[0]["input"] == {"i": 0} and rows[0]["tokens_out"] == 5
    assert store.count_records("generation", job) == {"ok": 3, "failed": 0, "filtered": 0}
    assert store.done_request_keys("generation", job) == {"req-0", "req-1", "req-2"}
    counts = store.refresh_counts("generation", job)
    assert counts["ok"] == 3 and store.get_job("generation", job)["tokens_in"] == 9


def test_an_ok_record_is_never_overwritten_but_a_failed_one_is_retried(store):
    job = store.create_job("generation")
    store.add_records([Record("generation", job, "a", "ok", output={"v": 1}),
                       Record("generation", job, "b", "failed", error="timeout")])
    store.add_records([Record("generation", job, "a", "failed", error="late duplicate"),
                       Record("generation", job, "b", "ok", output={"v": 2})])
    rows = {r["item_key"]: r for r in store.records("generation", job)}
    assert rows["a"]["status"] == "ok" and rows["a"]["output"] == {"v": 1}
    assert rows["b"]["status"] == "ok" and rows["b"]["error"] is None


def test_review_edit_is_stored_beside_the_untouched_original(store):
    job = store.create_job("generation")
    store.add_records(make_records(job, 1))
    rid = next(store.records("generation", job))["id"]
    store.add_review(rid, "ana", "accept", edited_output={"q": "better question"}, note="tightened")
    assert next(store.records("generation", job))["output"] == {"q": "question 0"}
    review = store.latest_reviews("generation", job)[rid]
    assert review["edited_output"] == {"q": "better question"} and review["reviewer"] == "ana"
    with pytest.raises(StoreError, match="verdict"):
        store.add_review(rid, "ana", "maybe")


def test_unknown_job_column_is_refused(store):
    with pytest.raises(StoreError, match="no column"):
        store.create_job("generation", api_key="x")


def test_job_lists_are_dataframes(store):
    gen = store.create_job("generation", model_id="gen-model")
    store.create_job("evaluation", source_generation_id=gen, model_id="judge")
    store.create_job("export", destination="files", style="raw", path="/tmp/x")
    overview = store.jobs()
    assert sorted(overview["kind"]) == ["evaluation", "export", "generation"]
    assert list(store.jobs("generation")["model_id"]) == ["gen-model"]


WRITER = textwrap.dedent("""
    import sys
    from sdstudio.store import Record, Store
    store = Store(sys.argv[1]); job = int(sys.argv[2])
    for batch in range(40):
        store.add_records([Record("generation", job, f"proc-{batch}-{i}", "ok") for i in range(25)])
        store.update_job("generation", job, status="running")
""")


def test_two_threads_and_a_second_process_write_concurrently_without_locking_errors(store):
    job = store.create_job("generation")
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(store.path), str(job)],
                            stderr=subprocess.PIPE, text=True)
    errors: list[BaseException] = []

    def write(tag: str) -> None:
        try:
            for batch in range(40):
                store.add_records([Record("generation", job, f"{tag}-{batch}-{i}", "ok") for i in range(25)])
                store.refresh_counts("generation", job)
        except BaseException as exc:  # noqa: BLE001 - surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(f"thread{n}",)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert errors == []
    assert store.count_records("generation", job)["ok"] == 3 * 40 * 25


# Statements reach metadata.db only through a connection or transaction, and run as SQL text: a module
# holding either belongs in sdstudio/store/. ``job.execute(provider, items, ...)`` (JobRunner, executors)
# runs work items, not SQL, so ``.execute(`` counts only with SQL text (a string, or a ``sql`` variable).
SQL_OUTSIDE_STORE = re.compile(
    r"\.connection\(\)|\.transaction\(\)|\.executemany\(|\.executescript\("
    r"|\.execute\(\s*(?:[rRfFbBuU]{0,2}[\"']|sql\b|query\b|statement\b)|\bsqlite3\b|\bread_sql")
SQL_ALLOWED = {"sqlcheck.py"}  # runs the user's generated SQL against an in-memory schema, not metadata.db


def test_no_sql_outside_the_store_package():
    from pathlib import Path

    import sdstudio

    assert SQL_OUTSIDE_STORE.search('store.connection().execute("SELECT 1")')
    assert SQL_OUTSIDE_STORE.search("conn.execute(f'UPDATE records SET x = 1')")
    assert not SQL_OUTSIDE_STORE.search("job.execute(self.provider, work, self.handle, settings=run)")
    package = Path(sdstudio.__file__).parent
    found = [f"{path.relative_to(package.parent)}:{number}: {line.strip()}"
             for path in sorted(package.rglob("*.py"))
             if "store" not in path.relative_to(package).parts[:1] and str(path.relative_to(package)) not in SQL_ALLOWED
             for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
             if SQL_OUTSIDE_STORE.search(line)]
    assert found == [], "SQL belongs in sdstudio/store/ (add a named Store method):\n" + "\n".join(found)


# -- a home this process cannot write (tests/reliability/test_read_only_home.py makes real read-only homes) ---

def test_a_read_only_store_reads_and_refuses_every_write_before_sqlite_is_asked(tmp_path):
    from sdstudio.store import ReadOnlyHome

    writer = Store(tmp_path / "metadata.db")
    job = writer.create_job("generation", status="done", use_case="mine")
    writer.close()
    before = (tmp_path / "metadata.db").read_bytes()
    reader = Store(tmp_path / "metadata.db", read_only="testing")
    assert reader.get_job("generation", job)["use_case"] == "mine"
    for write in (lambda: reader.create_job("generation"), lambda: reader.update_job(None, job, status="failed"),
                  lambda: reader.add_review(1, "ana", "accept")):
        with pytest.raises(ReadOnlyHome, match=rf"^SDSTUDIO_HOME {tmp_path} is read-only \(testing\): "):
            write()
    reader.keep_reserve()  # no ballast file written either
    assert not (tmp_path / "metadata.db-reserve").exists()
    assert (tmp_path / "metadata.db").read_bytes() == before


def test_a_read_only_store_of_a_missing_database_reads_as_an_empty_home(tmp_path):
    reader = Store(tmp_path / "metadata.db", read_only="cannot create it")
    assert reader.jobs().empty and reader.jobs("generation").empty
    with pytest.raises(StoreError, match="no job with id 1"):
        reader.job_family(1)
    reader.close()
    assert list(tmp_path.iterdir()) == []


def test_a_read_only_store_refuses_a_database_it_would_have_to_upgrade(tmp_path):
    import shutil
    from pathlib import Path

    legacy = tmp_path / "metadata.db"
    shutil.copy(Path(__file__).parent / "data" / "legacy_v1.db", legacy)
    with pytest.raises(StoreError, match=r"written by an older sdstudio \(schema 1, .*cannot be upgraded here"):
        Store(legacy, read_only="testing")


def test_a_running_job_of_a_dead_process_reads_interrupted_without_a_write_in_a_read_only_store(tmp_path):
    import socket

    writer = Store(tmp_path / "metadata.db")
    job, _ = writer.open_job("generation", kind="generation", config={}, config_hash="h",
                             owner=f"{socket.gethostname()}:999999999:0")  # a process that does not exist
    writer.close()
    reader = Store(tmp_path / "metadata.db", read_only="testing")
    assert reader.get_job("generation", job)["status"] == "interrupted"
    assert reader.jobs()["status"].tolist() == ["interrupted"]
    assert Store(tmp_path / "metadata.db").connection().execute("SELECT status FROM jobs").fetchone()[0] == "running"


def test_the_jobs_overview_says_what_each_kind_of_job_is(store):
    generation = store.create_job("generation", kind="generation", technique="sft", use_case="text2sql")
    store.create_job("evaluation", kind="evaluation", source_generation_id=generation)
    store.create_job("export", kind="export", destination="files", style="sft-messages")
    assert store.jobs()["what"].tolist() == ["files:sft-messages", f"judge of #{generation}", "sft:text2sql"]
