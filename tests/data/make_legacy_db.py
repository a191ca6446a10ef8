"""How tests/data/legacy_v1.db was built, by sdstudio at commit c1f5071; kept for the record, not run by tests.

legacy_v1.db is a ``metadata.db`` written by the schema of that commit (migration 001 only: separate
generation_metadata / evaluation_metadata / export_metadata tables, each with its own id sequence), so
the ids OVERLAP across the three job tables: generation #1/#2, evaluation #1/#2 and export #1/#2 all
exist. A migration test opens a copy of it with newer code and checks, against legacy_v1.json, that
every job, record and review survives.

What it holds (built through the public CLI against the fake OpenAI-compatible server):
  generation 1  generate, topics Heaps/Tries x 2, one item per call (ok + 'filtered' rows: a superseded
                failed call and a duplicate)
  generation 2  generate, topics Graphs/Queues x 2
  evaluation 1  evaluate --job 1
  evaluation 2  evaluate --job 2, one judge call refused (a 'failed' evaluation record)
  export 1      export --job 1 (sft-messages, jsonl);  export 2  export --job 2 (raw, csv)
  generation 3+ align --method dpo --topics ...: its prompts, candidates and DPO pairs are generation jobs
                (technique 'sft' use case 'alignment', 'candidates', 'dpo'), its judge evaluation 3
  reviews       Store.add_review on records of generation 1, generation 2 (two reviews, one an edit
                without verdict) and evaluation 1
The exact ids, counts and rows are in legacy_v1.json, written by this script from the DB with sqlite3.

To rebuild (sdstudio from a worktree at that commit; this script from wherever it lives):
    git -C /work/main worktree add --detach /tmp/legacy c1f5071
    cd /tmp/legacy && PYTHONPATH=/tmp/legacy /work/main/.venv/bin/python /work/main/tests/data/make_legacy_db.py
    git -C /work/main worktree remove --force /tmp/legacy
(--out DIR writes elsewhere than beside this script). Timestamps, export paths and config hashes differ
from one build to the next; ids, counts, item keys and outputs do not.
The script refuses to run against a sdstudio whose store has more than the one migration.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sqlite3
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
# PYTHONPATH (the c1f5071 checkout) comes first; this checkout's root is only a fallback for tests.fakes
sys.path.append(str(HERE.parent.parent))

from sdstudio import store as store_module  # noqa: E402
from sdstudio.cli import main  # noqa: E402
from sdstudio.store import Store  # noqa: E402
from tests.fakes.openai_server import FakeOpenAIServer, default_reply  # noqa: E402

DB_NAME, MANIFEST_NAME = "legacy_v1.db", "legacy_v1.json"


def cli(home: Path, *args: str, allowed: tuple[int, ...] = (0,)) -> dict:
    """``sdstudio ARGS --home HOME --json`` in this process; the JSON summary it prints."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([*args, "--home", str(home), "--json"])
    if code not in allowed:
        raise SystemExit(f"sdstudio {' '.join(args)} exited {code}:\n{err.getvalue()}")
    print(f"sdstudio {' '.join(args)} -> exit {code}", file=sys.stderr)
    return json.loads(out.getvalue()) if out.getvalue().strip() else {}


def build(home: Path, exports: Path) -> None:
    with FakeOpenAIServer() as server:
        fake = ["--provider", "openai_compatible", "--model", "fake-model", "--base-url", server.url]
        # generation 1: one call is refused for good (context length is not retried); the next round asks
        # again and the failed row is kept as 'filtered' ("asked again in round 1"), beside a duplicate
        server.script.extend(["ok", "context_length"])
        cli(home, "generate", *fake, "--topics", "Heaps", "Tries", "--per-topic", "2", "--batch-size", "1",
            "--concurrency", "1", "--max-failed-ratio", "0.5")
        # generation 2
        cli(home, "generate", *fake, "--topics", "Graphs", "Queues", "--per-topic", "2", "--batch-size", "2")
        # evaluation 1 judges generation 1; evaluation 2 judges generation 2 with one judge call refused
        # (evaluations are not asked again, so that row stays 'failed')
        cli(home, "evaluate", *fake, "--job", "1", "--model", "fake-judge", "--concurrency", "1")
        server.script.extend(["context_length"])
        cli(home, "evaluate", *fake, "--job", "2", "--model", "fake-judge", "--concurrency", "1",
            "--max-failed-ratio", "0.5", allowed=(0, 1))
        # exports 1 and 2
        cli(home, "export", "--job", "1", "--style", "sft-messages", "--format", "jsonl",
            "--out", str(exports / "one"), "--name", "legacy-one")
        cli(home, "export", "--job", "2", "--style", "raw", "--format", "csv",
            "--out", str(exports / "two"), "--name", "legacy-two")

        # an alignment run: today it stores its prompts, its candidates and its DPO pairs as generation jobs
        # (technique strings) and its judge as an evaluation job. The fake answers the same messages the
        # same way whatever the temperature, so free-text candidates get the temperature appended.
        def reply(body: dict) -> str:
            text = default_reply(body)
            return text if body.get("response_format") else f"{text} (at temperature {body.get('temperature')})"

        server.reply = reply
        cli(home, "align", *fake, "--topics", "Sorting", "Hashing", "--per-topic", "2", "--method", "dpo",
            "-k", "3", "--temperatures", "0.2", "0.7", "1.0", "--min-margin", "1", allowed=(0, 1))

    store = Store.open(home)
    try:
        first_ok = lambda kind, job: next(store.records(kind, job, "ok"))["id"]  # noqa: E731
        store.add_review(first_ok("generation", 1), "alice", "accept", note="fine as is")
        store.add_review(first_ok("generation", 2), "bob", "reject", note="too short")
        store.add_review(first_ok("generation", 2), "alice", None,
                         edited_output={"edited": True}, note="an edit, no verdict")
        store.add_review(first_ok("evaluation", 1), "carol", "accept", note="judge was right")
    finally:
        store.close()


JOB_COLUMNS = ("id", "status", "config_hash", "technique", "ok", "failed", "filtered",
               "tokens_in", "tokens_out", "cost_usd")


def manifest(db: Path) -> dict:
    conn = sqlite3.connect(db)
    try:
        def columns(table: str) -> list[str]:
            return [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]

        def rows(sql: str, names: list[str]) -> list[dict]:
            return [dict(zip(names, row)) for row in conn.execute(sql)]

        out: dict = {"built_by": "tests/data/make_legacy_db.py at sdstudio commit c1f5071",
                     "schema_version": conn.execute("PRAGMA user_version").fetchone()[0]}
        for table in ("generation_metadata", "evaluation_metadata"):
            names = [c for c in JOB_COLUMNS if c in columns(table)]
            out[table] = rows(f"SELECT {', '.join(names)} FROM {table} ORDER BY id", names)
        names = ["id", "status", "source_job_ids", "path", "row_count"]
        out["export_metadata"] = rows(f"SELECT {', '.join(names)} FROM export_metadata ORDER BY id", names)
        out["record_counts"] = rows(
            "SELECT job_kind, job_id, status, COUNT(*) FROM records GROUP BY job_kind, job_id, status "
            "ORDER BY job_kind, job_id, status", ["job_kind", "job_id", "status", "count"])
        out["records"] = rows(
            "SELECT job_kind, job_id, item_key, status, output FROM records ORDER BY job_kind, job_id, item_key",
            ["job_kind", "job_id", "item_key", "status", "output"])
        out["reviews"] = rows(
            "SELECT v.id, v.record_id, v.reviewer, v.verdict, r.job_kind, r.job_id, r.item_key "
            "FROM reviews v JOIN records r ON r.id = v.record_id ORDER BY v.id",
            ["id", "record_id", "reviewer", "verdict", "job_kind", "job_id", "item_key"])
        return out
    finally:
        conn.close()


def run(out_dir: Path) -> None:
    print(f"sdstudio from {store_module.__file__}", file=sys.stderr)
    if len(store_module.MIGRATIONS) != 1:
        raise SystemExit(f"this sdstudio ({store_module.__file__}) has {len(store_module.MIGRATIONS)} "
                         "migrations; build the legacy DB from commit c1f5071")
    with tempfile.TemporaryDirectory(prefix="sdstudio-legacy-") as tmp:
        home = Path(tmp) / "home"
        os.environ["SDSTUDIO_HOME"] = str(home)
        os.environ.pop("SDSTUDIO_DEBUG", None)
        build(home, Path(tmp) / "exports")
        source = home / "metadata.db"
        conn = sqlite3.connect(source)
        busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        conn.close()
        if busy:
            raise SystemExit("wal_checkpoint(TRUNCATE) was blocked by another connection")
        out_dir.mkdir(parents=True, exist_ok=True)
        target = out_dir / DB_NAME
        target.unlink(missing_ok=True)
        with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
            src.backup(dst)
        dst_conn = sqlite3.connect(target)
        dst_conn.execute("PRAGMA journal_mode=DELETE")  # one self-contained file: no -wal/-shm beside it
        dst_conn.execute("VACUUM")
        dst_conn.close()
        for suffix in ("-wal", "-shm", "-journal"):
            assert not Path(f"{target}{suffix}").exists(), f"{target}{suffix} left behind"
    (out_dir / MANIFEST_NAME).write_text(json.dumps(manifest(target), indent=1) + "\n")
    print(f"wrote {target} ({target.stat().st_size} bytes) and {out_dir / MANIFEST_NAME}", file=sys.stderr)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE, help="where to write legacy_v1.db/.json")
    run(parser.parse_args().out)
