"""The schema of metadata.db as numbered, append-only migrations. Never edit an old one: add a new one.

Each migration takes a connection inside the store's open write transaction; ``PRAGMA user_version``
records how many have run.
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Callable
from typing import Any


def config_digest(config: dict[str, Any]) -> str:
    """Identity of a job config (a JSON-able dict without its ``run`` settings). It lives here because a
    migration that rewrites a config must re-hash it exactly as a new job would be hashed."""
    data = {k: v for k, v in config.items() if k != "run"}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:32]


_JOB_STATUS_CHECK = "CHECK (status IN ('queued','running','done','failed','cancelled'))"
_RUN_COLUMNS = f"""
    created_at TEXT NOT NULL, finished_at TEXT,
    status TEXT NOT NULL DEFAULT 'queued' {_JOB_STATUS_CHECK},
    inference_type TEXT, model_parameters TEXT,
    requested INTEGER NOT NULL DEFAULT 0, ok INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0, filtered INTEGER NOT NULL DEFAULT 0,
    tokens_in INTEGER NOT NULL DEFAULT 0, tokens_out INTEGER NOT NULL DEFAULT 0,
    cost_usd REAL NOT NULL DEFAULT 0, config TEXT, config_hash TEXT, error TEXT
"""


def _run_script(conn: sqlite3.Connection, script: str) -> None:
    """Run ';'-separated DDL inside the caller's transaction (``executescript`` would COMMIT it)."""
    for statement in script.split(";"):
        if statement.strip():
            conn.execute(statement)


def _m001_initial(conn: sqlite3.Connection) -> None:
    _run_script(conn, f"""
    CREATE TABLE generation_metadata (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        technique TEXT NOT NULL DEFAULT 'sft', use_case TEXT, model_id TEXT,
        prompt_template TEXT, topics TEXT, examples TEXT, num_per_topic INTEGER,
        {_RUN_COLUMNS}
    );
    CREATE INDEX generation_config_hash ON generation_metadata(config_hash);
    CREATE TABLE evaluation_metadata (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        source_generation_id INTEGER REFERENCES generation_metadata(id) ON DELETE SET NULL,
        model_id TEXT, criteria TEXT, scale_min INTEGER, scale_max INTEGER, examples TEXT,
        average_score REAL, score_distribution TEXT, topic_stats TEXT,
        {_RUN_COLUMNS}
    );
    CREATE INDEX evaluation_config_hash ON evaluation_metadata(config_hash);
    CREATE TABLE export_metadata (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        created_at TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'done' {_JOB_STATUS_CHECK},
        source_job_ids TEXT, destination TEXT NOT NULL CHECK (destination IN ('files','huggingface')),
        format TEXT, style TEXT, path TEXT, repo_id TEXT, revision TEXT,
        row_count INTEGER NOT NULL DEFAULT 0, file_hashes TEXT, filters TEXT, config TEXT, error TEXT
    );
    CREATE TABLE records (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        job_kind TEXT NOT NULL CHECK (job_kind IN ('generation','evaluation')),
        job_id INTEGER NOT NULL,
        item_key TEXT NOT NULL,
        request_key TEXT,
        topic TEXT, provenance TEXT, input TEXT, output TEXT,
        status TEXT NOT NULL CHECK (status IN ('ok','failed','filtered')),
        error TEXT, raw_text TEXT,
        tokens_in INTEGER NOT NULL DEFAULT 0, tokens_out INTEGER NOT NULL DEFAULT 0,
        latency_ms REAL, created_at TEXT NOT NULL,
        UNIQUE (job_kind, job_id, item_key)
    );
    CREATE INDEX records_by_status ON records(job_kind, job_id, status);
    CREATE INDEX records_by_request ON records(job_kind, job_id, request_key);
    CREATE TABLE reviews (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        record_id INTEGER NOT NULL REFERENCES records(id) ON DELETE CASCADE,
        reviewer TEXT NOT NULL,
        verdict TEXT CHECK (verdict IN ('accept','reject')),
        edited_output TEXT, note TEXT, created_at TEXT NOT NULL
    );
    CREATE INDEX reviews_by_record ON reviews(record_id);
    """)



# --------------------------------------------------------------------------------------------------
# 002: one job table, one id space. Before it, generation #4, evaluation #4 and export #4 were three
# different jobs in three tables; alignment, documents and workflow jobs were generation rows told apart
# by ``technique``. Now every job is a row of ``jobs`` (kind, parent, status, config and hash, counts,
# tokens, cost, lease); what only one family of jobs has lives in ``<family>_jobs`` keyed by the job id,
# and the seed's three tables are views with the seed's columns, so the seed's
# ``SELECT * FROM generation_metadata`` keeps working.

JOB_STATUSES = ("queued", "running", "interrupted", "done", "failed", "cancelled")
_COMMON_COLUMNS = ("created_at", "finished_at", "status", "requested", "ok", "failed", "filtered",
                   "tokens_in", "tokens_out", "cost_usd", "config", "config_hash", "error")
# the kind of a job written before 002, from its technique (alignment stages keep their own kinds)
_LEGACY_KIND_SQL = ("CASE technique WHEN 'documents' THEN 'documents' WHEN 'workflow' THEN 'workflow' "
                    "WHEN 'dpo' THEN 'alignment' WHEN 'kto' THEN 'alignment' WHEN 'candidates' THEN 'candidates' "
                    "ELSE 'generation' END")
FAMILY_DETAILS = {
    "generation": ("technique", "use_case", "model_id", "prompt_template", "topics", "examples",
                   "num_per_topic", "inference_type", "model_parameters"),
    "evaluation": ("source_generation_id", "model_id", "criteria", "scale_min", "scale_max", "examples",
                   "average_score", "score_distribution", "topic_stats", "inference_type", "model_parameters"),
    "export": ("source_job_ids", "destination", "format", "style", "path", "repo_id", "revision", "row_count",
               "file_hashes", "filters"),
}
# the seed's column order of each view (the seed's snippet reads these)
_VIEW_COLUMNS = {
    "generation": ("id", "technique", "use_case", "model_id", "prompt_template", "topics", "examples",
                   "num_per_topic", "created_at", "finished_at", "status", "inference_type", "model_parameters",
                   "requested", "ok", "failed", "filtered", "tokens_in", "tokens_out", "cost_usd", "config",
                   "config_hash", "error", "kind", "parent_id"),
    "evaluation": ("id", "source_generation_id", "model_id", "criteria", "scale_min", "scale_max", "examples",
                   "average_score", "score_distribution", "topic_stats", "created_at", "finished_at", "status",
                   "inference_type", "model_parameters", "requested", "ok", "failed", "filtered", "tokens_in",
                   "tokens_out", "cost_usd", "config", "config_hash", "error", "kind", "parent_id"),
    "export": ("id", "created_at", "status", "source_job_ids", "destination", "format", "style", "path",
               "repo_id", "revision", "row_count", "file_hashes", "filters", "config", "error", "kind",
               "parent_id"),
}
VIEWS = {"generation": "generation_metadata", "evaluation": "evaluation_metadata", "export": "export_metadata"}


def _m002_one_job_table(conn: sqlite3.Connection) -> None:
    statuses = ",".join(f"'{s}'" for s in JOB_STATUSES)
    _run_script(conn, f"""
    CREATE TABLE jobs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL,
        parent_id INTEGER REFERENCES jobs(id) ON DELETE SET NULL,
        created_at TEXT NOT NULL, started_at TEXT, finished_at TEXT,
        status TEXT NOT NULL DEFAULT 'queued' CHECK (status IN ({statuses})),
        requested INTEGER NOT NULL DEFAULT 0, ok INTEGER NOT NULL DEFAULT 0,
        failed INTEGER NOT NULL DEFAULT 0, filtered INTEGER NOT NULL DEFAULT 0,
        tokens_in INTEGER NOT NULL DEFAULT 0, tokens_out INTEGER NOT NULL DEFAULT 0,
        cost_usd REAL NOT NULL DEFAULT 0, config TEXT, config_hash TEXT, error TEXT,
        lease_owner TEXT, lease_heartbeat REAL
    );
    CREATE INDEX jobs_by_hash ON jobs(config_hash);
    CREATE INDEX jobs_by_parent ON jobs(parent_id);
    CREATE TABLE generation_jobs (
        job_id INTEGER PRIMARY KEY REFERENCES jobs(id) ON DELETE CASCADE,
        technique TEXT NOT NULL DEFAULT 'sft', use_case TEXT, model_id TEXT, prompt_template TEXT, topics TEXT,
        examples TEXT, num_per_topic INTEGER, inference_type TEXT, model_parameters TEXT
    );
    CREATE TABLE evaluation_jobs (
        job_id INTEGER PRIMARY KEY REFERENCES jobs(id) ON DELETE CASCADE,
        source_generation_id INTEGER REFERENCES jobs(id) ON DELETE SET NULL,
        model_id TEXT, criteria TEXT, scale_min INTEGER, scale_max INTEGER, examples TEXT,
        average_score REAL, score_distribution TEXT, topic_stats TEXT, inference_type TEXT, model_parameters TEXT
    );
    CREATE TABLE export_jobs (
        job_id INTEGER PRIMARY KEY REFERENCES jobs(id) ON DELETE CASCADE,
        source_job_ids TEXT, destination TEXT NOT NULL CHECK (destination IN ('files','huggingface')),
        format TEXT, style TEXT, path TEXT, repo_id TEXT, revision TEXT,
        row_count INTEGER NOT NULL DEFAULT 0, file_hashes TEXT, filters TEXT
    );
    ALTER TABLE records ADD COLUMN cost_usd REAL NOT NULL DEFAULT 0
    """)
    common = ", ".join(_COMMON_COLUMNS)
    # generation jobs keep their ids (evaluations, exports and configs point at them); evaluations and
    # exports are numbered after them, in their old order
    conn.execute(f"INSERT INTO jobs (id, kind, {common}) SELECT id, {_LEGACY_KIND_SQL}, {common} "
                 "FROM generation_metadata ORDER BY id")
    details = ", ".join(FAMILY_DETAILS["generation"])
    conn.execute(f"INSERT INTO generation_jobs (job_id, {details}) SELECT id, {details} FROM generation_metadata")
    eval_ids = _renumber(conn, "evaluation_metadata", "evaluation", common)
    details = ", ".join(FAMILY_DETAILS["evaluation"])
    conn.execute("CREATE TEMP TABLE eval_ids (old INTEGER PRIMARY KEY, new INTEGER)")
    conn.executemany("INSERT INTO eval_ids VALUES (?, ?)", eval_ids.items())
    conn.execute(f"INSERT INTO evaluation_jobs (job_id, {details}) SELECT m.new, {details} "
                 "FROM evaluation_metadata e JOIN eval_ids m ON m.old = e.id")
    export_common = "created_at, status, config, error, row_count, row_count"
    export_ids = _renumber(conn, "export_metadata", "export", export_common,
                           target="created_at, status, config, error, requested, ok")
    details = ", ".join(FAMILY_DETAILS["export"])
    conn.execute("CREATE TEMP TABLE export_ids (old INTEGER PRIMARY KEY, new INTEGER)")
    conn.executemany("INSERT INTO export_ids VALUES (?, ?)", export_ids.items())
    conn.execute(f"INSERT INTO export_jobs (job_id, {details}) SELECT m.new, {details} "
                 "FROM export_metadata x JOIN export_ids m ON m.old = x.id")
    # evaluation records follow their job (negated first: a shifted id may still be taken mid-update)
    conn.execute("UPDATE records SET job_id = -job_id WHERE job_kind = 'evaluation'")
    conn.execute("UPDATE records SET job_id = (SELECT new FROM eval_ids WHERE old = -records.job_id) "
                 "WHERE job_kind = 'evaluation'")
    _relink(conn, eval_ids)
    _backfill_record_costs(conn)
    _run_script(conn, """
    DROP TABLE evaluation_metadata; DROP TABLE export_metadata; DROP TABLE generation_metadata;
    DROP TABLE temp.eval_ids; DROP TABLE temp.export_ids
    """)
    for family, view in VIEWS.items():
        columns = ", ".join(f"d.{c}" if c in FAMILY_DETAILS[family] else f"j.{c}" for c in _VIEW_COLUMNS[family])
        conn.execute(f"CREATE VIEW {view} AS SELECT {columns} FROM jobs j JOIN {family}_jobs d ON d.job_id = j.id")


def _renumber(conn: sqlite3.Connection, table: str, kind: str, columns: str, target: str | None = None) -> dict[int, int]:
    """Copy a legacy job table into ``jobs`` under new ids after the existing ones; old id -> new id."""
    ids = {}
    for (old,) in conn.execute(f"SELECT id FROM {table} ORDER BY id").fetchall():
        cur = conn.execute(f"INSERT INTO jobs (kind, {target or columns}) SELECT ?, {columns} FROM {table} WHERE id = ?",
                           (kind, old))
        ids[old] = int(cur.lastrowid)
    return ids


def _relink(conn: sqlite3.Connection, eval_ids: dict[int, int]) -> None:
    """Parents, and the evaluation ids that configs and alignment stages carry, in the new id space."""
    conn.execute("UPDATE jobs SET parent_id = (SELECT source_generation_id FROM evaluation_jobs WHERE job_id = jobs.id) "
                 "WHERE kind = 'evaluation'")
    for job_id, config in conn.execute("SELECT id, config FROM jobs WHERE kind = 'evaluation'").fetchall():
        data = json.loads(config) if config else None
        if isinstance(data, dict) and data.get("second_judge_of") in eval_ids:
            data["second_judge_of"] = eval_ids[data["second_judge_of"]]
            conn.execute("UPDATE jobs SET config = ?, config_hash = ? WHERE id = ?",
                         (json.dumps(data), config_digest(data), job_id))
    rows = conn.execute("SELECT job_id, model_parameters FROM generation_jobs "
                        "WHERE json_extract(model_parameters, '$.stage_jobs') IS NOT NULL").fetchall()
    for job_id, params in rows:
        data = json.loads(params)
        stages = data["stage_jobs"]
        if stages.get("evaluation") in eval_ids:
            stages["evaluation"] = eval_ids[stages["evaluation"]]
        conn.execute("UPDATE generation_jobs SET model_parameters = ? WHERE job_id = ?", (json.dumps(data), job_id))
        conn.executemany("UPDATE jobs SET parent_id = ? WHERE id = ?",
                         [(job_id, stage) for stage in stages.values() if isinstance(stage, int)])


def _backfill_record_costs(conn: sqlite3.Connection) -> None:
    """Spread each job's recorded cost over its records by tokens, so costs recomputed from records
    (what every job does from now on) match what the old version reported."""
    totals = conn.execute("SELECT r.job_id, SUM(r.tokens_in + r.tokens_out), j.cost_usd FROM records r "
                          "JOIN jobs j ON j.id = r.job_id GROUP BY r.job_id").fetchall()
    conn.executemany("UPDATE records SET cost_usd = ? * (tokens_in + tokens_out) / ? WHERE job_id = ?",
                     [(cost, total, job_id) for job_id, total, cost in totals if total and cost])


# --------------------------------------------------------------------------------------------------
# 003: an export row lists every file it wrote (name, sha256, rows, bytes), so any export can be checked
# against the disk later; ``file_hashes`` keeps the seed's name -> sha256 form. The view gains the column
# at its end (the seed's columns stay first, in their order).

_EXPORT_FILES = ("files",)


def _create_view(conn: sqlite3.Connection, family: str, columns: tuple[str, ...], details: tuple[str, ...]) -> None:
    """The seed's table of ``family`` as a view: ``columns`` in order, each from the detail table when it is
    one of ``details``, else from ``jobs``."""
    shown = ", ".join(f"d.{c}" if c in details else f"j.{c}" for c in columns)
    conn.execute(f"CREATE VIEW {VIEWS[family]} AS SELECT {shown} FROM jobs j JOIN {family}_jobs d ON d.job_id = j.id")


def _m003_export_files(conn: sqlite3.Connection) -> None:
    conn.execute("ALTER TABLE export_jobs ADD COLUMN files TEXT")
    conn.execute("DROP VIEW export_metadata")
    _create_view(conn, "export", (*_VIEW_COLUMNS["export"], *_EXPORT_FILES), (*FAMILY_DETAILS["export"], *_EXPORT_FILES))


# Each family's detail columns as of the newest migration (FAMILY_DETAILS is frozen at 002: 002 copies
# exactly those columns from the legacy tables).
FAMILY_COLUMNS: dict[str, tuple[str, ...]] = {**FAMILY_DETAILS, "export": (*FAMILY_DETAILS["export"], *_EXPORT_FILES)}

# --------------------------------------------------------------------------------------------------
# 004: requests and attempts. A job used to report only the requests it sent (one per work item), not the
# calls the provider actually got: 659 "requests" against 880 HTTP requests when retries ran. Both are kept
# now, summed over every run of the job (a resumed run adds its own), and the generation and evaluation
# views show them after their seed columns.

SEND_COLUMNS = ("requests", "attempts")


def _m004_requests_and_attempts(conn: sqlite3.Connection) -> None:
    for column in SEND_COLUMNS:
        conn.execute(f"ALTER TABLE jobs ADD COLUMN {column} INTEGER NOT NULL DEFAULT 0")
    for family in ("generation", "evaluation"):
        conn.execute(f"DROP VIEW {VIEWS[family]}")
        _create_view(conn, family, (*_VIEW_COLUMNS[family], *SEND_COLUMNS), FAMILY_COLUMNS[family])


# --------------------------------------------------------------------------------------------------
# 005: notes and endpoints. A job's notes (which structured-output dialect it used, prices it did not know, stale
# rows...) were printed once and lost; they are kept on its row now. ``endpoints`` remembers, per provider,
# endpoint and model, the structured-output dialect that worked and when the endpoint last answered, so a later
# job starts with what works instead of finding out again (providers/structured.py).

def _m005_notes_and_endpoints(conn: sqlite3.Connection) -> None:
    conn.execute("ALTER TABLE jobs ADD COLUMN notes TEXT")
    conn.execute("CREATE TABLE endpoints (provider TEXT NOT NULL, endpoint TEXT NOT NULL, model TEXT NOT NULL, "
                 "structured_output TEXT, answered_at TEXT NOT NULL, PRIMARY KEY (provider, endpoint, model))")


# --------------------------------------------------------------------------------------------------
# 006: output location. A job run with an output URI keeps its ok records as Parquet under it as well
# (spark_output.py); the job row says where, so export reads them from there.

def _m006_output_uri(conn: sqlite3.Connection) -> None:
    conn.execute("ALTER TABLE jobs ADD COLUMN output_uri TEXT")


# --------------------------------------------------------------------------------------------------
# 007: provider batches. A job run by the batch executor (executors/batch.py) hands its requests to a provider's
# batch API (OpenAI Batch, Bedrock batch inference), which answers within a day. Each submitted batch is a row,
# written the moment it is created, with the request keys it carries (request_ids): a process that dies after submitting
# (or a re-run days later) picks the batch up instead of paying for it again; ``collected_at`` says its results
# are in ``records``. ``jobs show`` lists them.

def _m007_batches(conn: sqlite3.Connection) -> None:
    _run_script(conn, """
    CREATE TABLE batches (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        job_id INTEGER NOT NULL, part INTEGER NOT NULL, backend TEXT NOT NULL,
        remote_id TEXT, input_file_id TEXT, output_file_id TEXT, error_file_id TEXT,
        requests INTEGER NOT NULL DEFAULT 0, state TEXT NOT NULL,
        completed INTEGER NOT NULL DEFAULT 0, failed INTEGER NOT NULL DEFAULT 0,
        request_ids TEXT NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
        collected_at TEXT, error TEXT,
        UNIQUE (job_id, part)
    );
    CREATE INDEX batches_by_job ON batches(job_id)""")


# --------------------------------------------------------------------------------------------------
# 008: reasoning. A thinking model returns what it reasoned apart from its answer (``reasoning_content``,
# Bedrock's ``reasoningContent``); it is kept beside the record's output, not in it, so the dataset stays the
# answers and an export adds the reasoning only when asked (``--with-reasoning``).

def _m008_record_reasoning(conn: sqlite3.Connection) -> None:
    conn.execute("ALTER TABLE records ADD COLUMN reasoning TEXT")


# --------------------------------------------------------------------------------------------------
# 009: dedup mark. A generation job dedups its rows as they arrive, but a new process knows nothing of what an
# earlier one checked: re-running a finished 100k-item job hashed every row again to find nothing. The job's row
# keeps where its last complete pass ended (the last record id checked, the ok rows it kept, its fields and
# threshold): while the job's ok rows are still exactly those, there is nothing to check (dedup.JobDedup.settled).

def _m009_dedup_mark(conn: sqlite3.Connection) -> None:
    conn.execute("ALTER TABLE jobs ADD COLUMN dedup_mark TEXT")


MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_m001_initial, _m002_one_job_table, _m003_export_files,
                                                         _m004_requests_and_attempts, _m005_notes_and_endpoints,
                                                         _m006_output_uri, _m007_batches, _m008_record_reasoning,
                                                         _m009_dedup_mark]
SCHEMA_VERSION = len(MIGRATIONS)
