"""Migration 002 (one job table, one id space) on a metadata.db written by the previous version.

tests/data/legacy_v1.db was written by sdstudio at commit c1f5071 (tests/data/make_legacy_db.py says how),
with generation, evaluation and export jobs whose ids overlap; tests/data/legacy_v1.json lists what it holds.
"""
from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pandas as pd
import pytest

from sdstudio.store import SCHEMA_VERSION, Store

DATA = Path(__file__).parent / "data"
MANIFEST = json.loads((DATA / "legacy_v1.json").read_text())


@pytest.fixture
def migrated(tmp_path):
    path = tmp_path / "metadata.db"
    shutil.copy(DATA / "legacy_v1.db", path)
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == 1
    store = Store(path)
    yield store
    store.close()


def new_ids(store: Store) -> dict[tuple[str, int], int]:
    """(family, old id) -> new id, matched by what identifies each old job (its config hash, or an export's
    path), never by assuming the numbering."""
    conn = store.connection()
    mapping = {}
    for family in ("generation", "evaluation"):
        for old in MANIFEST[f"{family}_metadata"]:
            rows = conn.execute(f"SELECT id FROM {family}_metadata WHERE config_hash = ?", (old["config_hash"],)).fetchall()
            assert len(rows) == 1, (family, old["id"])
            mapping[(family, old["id"])] = rows[0][0]
    for old in MANIFEST["export_metadata"]:
        (new,), = conn.execute("SELECT id FROM export_metadata WHERE path = ?", (old["path"],)).fetchall()
        mapping[("export", old["id"])] = new
    return mapping


def test_every_job_of_the_three_old_tables_gets_one_id_of_one_id_space(migrated):
    ids = new_ids(migrated)
    assert len(set(ids.values())) == len(ids) == 10
    assert [ids[("generation", i)] for i in range(1, 6)] == [1, 2, 3, 4, 5]  # generation ids are kept
    kinds = dict(migrated.connection().execute("SELECT id, kind FROM jobs").fetchall())
    assert [kinds[i] for i in range(1, 6)] == ["generation", "generation", "alignment", "generation", "candidates"]
    assert {kinds[ids[("evaluation", i)]] for i in (1, 2, 3)} == {"evaluation"}
    assert {kinds[ids[("export", i)]] for i in (1, 2)} == {"export"}
    assert migrated.connection().execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_each_job_keeps_its_status_config_hash_counts_and_tokens(migrated):
    ids = new_ids(migrated)
    for family in ("generation", "evaluation"):
        for old in MANIFEST[f"{family}_metadata"]:
            job = migrated.get_job(family, ids[(family, old["id"])])
            for column in ("status", "config_hash", "ok", "failed", "filtered", "tokens_in", "tokens_out", "cost_usd"):
                assert job[column] == old[column], (family, old["id"], column)
    for old in MANIFEST["export_metadata"]:
        job = migrated.get_job("export", ids[("export", old["id"])])
        assert (job["path"], job["row_count"], job["source_job_ids"]) == (
            old["path"], old["row_count"], json.loads(old["source_job_ids"]))


def test_every_record_follows_its_job_into_the_new_id_space(migrated):
    ids = new_ids(migrated)
    rows = migrated.connection().execute("SELECT job_kind, job_id, item_key, status, output FROM records").fetchall()
    now = {(kind, job, key): (status, output) for kind, job, key, status, output in rows}
    assert len(now) == len(rows) == len(MANIFEST["records"])
    for old in MANIFEST["records"]:
        new_key = (old["job_kind"], ids[(old["job_kind"], old["job_id"])], old["item_key"])
        assert now[new_key] == (old["status"], old["output"]), new_key


def test_every_review_still_points_at_its_record(migrated):
    ids = new_ids(migrated)
    for old in MANIFEST["reviews"]:
        (kind, job, key, reviewer, verdict), = migrated.connection().execute(
            "SELECT r.job_kind, r.job_id, r.item_key, v.reviewer, v.verdict FROM reviews v "
            "JOIN records r ON r.id = v.record_id WHERE v.id = ?", (old["id"],)).fetchall()
        assert (kind, job, key) == (old["job_kind"], ids[(old["job_kind"], old["job_id"])], old["item_key"])
        assert (reviewer, verdict) == (old["reviewer"], old["verdict"])


def test_parents_link_evaluations_to_what_they_judged_and_stages_to_their_alignment_job(migrated):
    ids = new_ids(migrated)
    parents = dict(migrated.connection().execute("SELECT id, parent_id FROM jobs").fetchall())
    assert parents[ids[("evaluation", 1)]] == 1 and parents[ids[("evaluation", 2)]] == 2
    stages = migrated.get_job("generation", 3)["model_parameters"]["stage_jobs"]
    assert stages["evaluation"] == ids[("evaluation", 3)]  # the alignment job names its judge by its new id
    assert {parents[stage] for stage in stages.values()} == {3}


def test_the_seed_snippet_reads_the_three_tables_with_the_seed_columns(migrated):
    conn = sqlite3.connect(migrated.path)
    generation = pd.read_sql_query("SELECT * FROM generation_metadata", conn)
    assert list(generation["id"]) == [1, 2, 3, 4, 5]
    assert {"technique", "use_case", "model_id", "topics", "num_per_topic", "status", "cost_usd"} <= set(generation)
    assert len(pd.read_sql_query("SELECT * FROM evaluation_metadata", conn)) == 3
    assert len(pd.read_sql_query("SELECT * FROM export_metadata", conn)) == 2


def test_a_migrated_job_recomputes_to_the_same_figures(migrated):
    """Costs and tokens are recomputed from records now: the migrated records must add up to each job."""
    for old in MANIFEST["generation_metadata"]:
        migrated.refresh_counts("generation", old["id"])
        job = migrated.get_job("generation", old["id"])
        assert (job["ok"], job["failed"], job["filtered"]) == (old["ok"], old["failed"], old["filtered"])
        assert job["cost_usd"] == pytest.approx(old["cost_usd"])


def test_a_migrated_job_cost_is_spread_over_its_records_and_adds_up_again(tmp_path):
    path = tmp_path / "metadata.db"
    shutil.copy(DATA / "legacy_v1.db", path)
    with sqlite3.connect(path) as conn:  # the old version's figures: a priced job
        conn.execute("UPDATE generation_metadata SET cost_usd = 0.5 WHERE id = 1")
        conn.execute("UPDATE evaluation_metadata SET cost_usd = 0.25 WHERE id = 2")
    store = Store(path)
    try:
        evaluation = new_ids(store)[("evaluation", 2)]
        for family, job, cost in (("generation", 1, 0.5), ("evaluation", evaluation, 0.25)):
            store.refresh_counts(family, job)
            row = store.get_job(family, job)
            assert row["cost_usd"] == pytest.approx(cost)
            old = next(j for j in MANIFEST[f"{family}_metadata"] if j["config_hash"] == row["config_hash"])
            assert (row["tokens_in"], row["tokens_out"]) == (old["tokens_in"], old["tokens_out"])
    finally:
        store.close()
