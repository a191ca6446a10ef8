"""Two jobs in two processes writing one metadata.db while a notebook reads it: no "database is locked", no lost
rows, and the reader never sees a count go backwards."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sdstudio.store import Store

ROOT = Path(__file__).resolve().parents[2]

# What the home notebook does on Refresh, what the seed guide tells users to do with pandas, the paged table of
# a job's rows, and a reviewer's verdict (the review dashboard writes too), in a loop until told to stop.
NOTEBOOK_READER = textwrap.dedent("""
    import json, sqlite3, sys, time, traceback
    from pathlib import Path
    import pandas as pd
    from sdstudio.ui.home import HomeApp
    home, stop, report = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    while not (home / "metadata.db").exists():
        time.sleep(0.01)
    reads, reviews, errors, last, backwards = 0, 0, [], {}, []
    app = None
    while True:
        finished = stop.exists()
        try:
            app = app or HomeApp(home=home)
            app.refresh()
            with sqlite3.connect(home / "metadata.db") as conn:
                jobs = pd.read_sql_query("SELECT * FROM generation_metadata", conn)
                counts = dict(conn.execute("SELECT job_id, COUNT(*) FROM records GROUP BY job_id").fetchall())
            for job in jobs["id"]:
                page, _ = app.store.records_page("generation", int(job), offset=0, limit=20)
                if page:
                    app.store.add_review(page[reads % len(page)]["id"], "reviewer", "accept")
                    reviews += 1
            for job, n in counts.items():
                if n < last.get(job, 0):
                    backwards.append((job, last[job], n))
                last[job] = n
            reads += 1
        except Exception as exc:
            if "no such table" not in str(exc):  # the first writer is still creating the schema
                errors.append("".join(traceback.format_exception_only(type(exc), exc)).strip())
        if finished:
            break
    report.write_text(json.dumps({"reads": reads, "reviews": reviews, "errors": errors, "backwards": backwards}))
""")


def generate(server, home: Path, name: str, n: int) -> subprocess.Popen:
    topics = [f"{name} topic {i}" for i in range(n)]
    return subprocess.Popen(
        [sys.executable, "-m", "sdstudio.cli", "generate", "--provider", "openai_compatible", "--model", "fake-model",
         "--base-url", server.url, "--topics", *topics, "--per-topic", "1", "--batch-size", "1",
         "--concurrency", "32", "--home", str(home), "--json"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_two_writer_processes_and_a_notebook_reader_lose_nothing(openai_server, tmp_path):
    home, stop, report = tmp_path / "home", tmp_path / "stop", tmp_path / "reader.json"
    reader = subprocess.Popen([sys.executable, "-c", NOTEBOOK_READER, str(home), str(stop), str(report)], cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)}, stderr=subprocess.PIPE, text=True)
    writers = {name: generate(openai_server, home, name, 600) for name in ("alpha", "beta")}  # a fresh home: both migrate
    outcomes = {name: proc.communicate(timeout=300) + (proc.returncode,) for name, proc in writers.items()}
    stop.touch()
    _, reader_err = reader.communicate(timeout=120)

    for name, (out, err, code) in outcomes.items():
        assert code == 0, f"{name}: {err}"
        assert "locked" not in err
        summary = json.loads(out)
        assert (summary["status"], summary["ok"], summary["failed"]) == ("done", 600, 0), summary
    seen = json.loads(report.read_text())
    assert reader.returncode == 0, reader_err
    assert seen["errors"] == [] and seen["backwards"] == []
    assert seen["reads"] > 5
    store = Store.open(home)
    jobs = store.jobs("generation")
    assert sorted(jobs["ok"]) == [600, 600]
    for job_id in jobs["id"]:
        topics = {r["topic"] for r in store.records("generation", int(job_id), "ok")}
        assert len(topics) == 600  # every row of each job, none swapped between jobs
    assert len(openai_server.answered) == 1200
    (reviews,) = store.connection().execute("SELECT COUNT(*) FROM reviews").fetchone()
    assert reviews == seen["reviews"] > 0  # the reviewer's writes were not lost either
    print(f"\nFIGURES concurrent writers: 2 processes x 600 rows, reader passes={seen['reads']}, "
          f"reviews written={seen['reviews']}, errors={len(seen['errors'])}")


# Imports done, each process waits for the go file, then opens the store at the same instant as the others.
OPENER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from sdstudio.store import Store
    home, go = sys.argv[1], Path(sys.argv[2])
    print("ready", flush=True)
    while not go.exists():
        time.sleep(0.0005)
    print(Store.open(home).create_job("generation", status="done"), flush=True)
""")


def test_processes_opening_a_fresh_home_at_once_all_migrate_it(tmp_path):
    """The first open of a home creates metadata.db and switches it to WAL; racing processes must wait for
    that, not fail with "database is locked" (they did, about one race in two, before store.py retried)."""
    for attempt in range(5):
        home, go = tmp_path / f"race{attempt}", tmp_path / f"go{attempt}"
        procs = [subprocess.Popen([sys.executable, "-c", OPENER, str(home), str(go)], cwd=ROOT,
                                  env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(6)]
        for proc in procs:
            assert proc.stdout.readline().strip() == "ready"
        go.touch()
        results = [p.communicate(timeout=120) + (p.returncode,) for p in procs]
        assert all(code == 0 for _, _, code in results), [err for _, err, code in results if code]
        assert sorted(int(out) for out, _, _ in results) == [1, 2, 3, 4, 5, 6]
