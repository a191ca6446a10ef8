"""The questions workflows, reviews, dedup and export ask of metadata.db, each named for what it answers,
so their SQL lives in the store with the schema it depends on (records' JSON columns are read with
``json_extract``; a schema change is then checked here, not hunted through the package).

Records carry ``job_kind`` (the family: generation or evaluation) and ``job_id``; callers pass both, as
they do to ``Store.records``.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any


class QueriesMixin:
    """The query half of ``Store`` (connections and transactions come from the store itself)."""

    # -- generation rounds (sft, documents) --------------------------------------------------------
    def kept_by_topic(self, job_kind: str, job_id: int, before_round: int, *, short_of: int,
                      held: bool = False) -> tuple[dict[str, int], dict[str, list[Any]]]:
        """How many items each topic kept (ok) in rounds before ``before_round``, and the kept outputs of the topics
        that have some but fewer than ``short_of``, in item-key order: the next round asks only for each topic's
        shortfall and shows the model what it must not repeat. Counted first, so a finished 100k-item job learns
        it has nothing to ask without reading one output. ``held``: items still waiting for their grounding check
        count as kept (a check that failed makes its item retryable, not a reason to generate a new one)."""
        kept = f"(status = 'ok' OR ({self._UNCHECKED}))" if held else "status = 'ok'"
        where = (f"job_kind = ? AND job_id = ? AND {kept} AND CAST(json_extract(input, '$.round') AS INTEGER) < ?")
        args = (job_kind, job_id, before_round)
        conn = self.connection()
        counts = dict(conn.execute(f"SELECT topic, COUNT(*) FROM records WHERE {where} GROUP BY topic", args).fetchall())
        short = {topic for topic, count in counts.items() if count < short_of}
        outputs: dict[str, list[Any]] = {}
        if short:
            for topic, output in conn.execute(f"SELECT topic, output FROM records WHERE {where} ORDER BY item_key", args):
                if topic in short:
                    outputs.setdefault(topic, []).append(json.loads(output))
        return counts, outputs

    def topics_with_items(self, job_kind: str, job_id: int, at_least: int) -> int:
        """How many of the job's topics have at least ``at_least`` ok items, whatever round made them."""
        return self.connection().execute(
            "SELECT COUNT(*) FROM (SELECT topic FROM records WHERE job_kind = ? AND job_id = ? AND status = 'ok' "
            "GROUP BY topic HAVING COUNT(*) >= ?)", (job_kind, job_id, at_least)).fetchone()[0]

    def present_request_keys(self, job_kind: str, job_id: int, keys: Iterable[str]) -> set[str]:
        """Which of ``keys`` have a record in the job, whatever its status."""
        keys = list(keys)
        marks = ", ".join("?" * len(keys))
        rows = self.connection().execute(
            f"SELECT DISTINCT request_key FROM records WHERE job_kind = ? AND job_id = ? AND request_key IN ({marks})",
            (job_kind, job_id, *keys)).fetchall()
        return {row[0] for row in rows}

    # -- dedup (dedup.JobDedup: a job's ok rows checked as they arrive) --------------------------------
    def ok_outputs_after(self, job_kind: str, job_id: int, after_id: int) -> list[tuple[int, Any]]:
        """(id, output) of the job's ok records with an id above ``after_id``, in id order."""
        rows = self.connection().execute(
            "SELECT id, output FROM records WHERE job_kind = ? AND job_id = ? AND status = 'ok' AND id > ? "
            "ORDER BY id", (job_kind, job_id, after_id)).fetchall()
        return [(rid, None if output is None else json.loads(output)) for rid, output in rows]

    def count_ok_through(self, job_kind: str, job_id: int, through_id: int) -> int:
        """How many of the job's records up to id ``through_id`` are ok."""
        return self.connection().execute(
            "SELECT COUNT(*) FROM records WHERE job_kind = ? AND job_id = ? AND status = 'ok' AND id <= ?",
            (job_kind, job_id, through_id)).fetchone()[0]

    def ok_after(self, job_kind: str, job_id: int, after_id: int) -> bool:
        """Has the job an ok record with an id above ``after_id``?"""
        return self.connection().execute(
            "SELECT 1 FROM records WHERE job_kind = ? AND job_id = ? AND status = 'ok' AND id > ? LIMIT 1",
            (job_kind, job_id, after_id)).fetchone() is not None

    def dedup_mark(self, job_id: int) -> dict[str, Any] | None:
        """Where the job's last complete dedup pass ended (``set_dedup_mark``), None before its first."""
        row = self.connection().execute("SELECT dedup_mark FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return json.loads(row[0]) if row and row[0] else None

    def set_dedup_mark(self, job_id: int, mark: dict[str, Any]) -> None:
        with self.transaction() as conn:
            conn.execute("UPDATE jobs SET dedup_mark = ? WHERE id = ?", (json.dumps(mark, sort_keys=True), job_id))

    def supersede_failed(self, job_kind: str, job_id: int, round_no: int, topics: Iterable[str], *,
                         keep_unchecked: bool = False) -> None:
        """Round ``round_no`` asks these topics again: their failed rows of earlier rounds become filtered
        ("asked again in round N: <their error>"), in one transaction, so only the new attempt counts.
        ``keep_unchecked`` leaves items waiting for their grounding check alone: they were not asked again."""
        unchecked = f" AND NOT COALESCE({self._UNCHECKED}, 0)" if keep_unchecked else ""
        with self.transaction() as conn:
            conn.executemany(
                "UPDATE records SET status = 'filtered', error = ? || COALESCE(error, 'failed') "
                "WHERE job_kind = ? AND job_id = ? AND topic = ? AND status = 'failed' "
                f"AND CAST(json_extract(input, '$.round') AS INTEGER) < ?{unchecked}",
                [(f"asked again in round {round_no}: ", job_kind, job_id, topic, round_no) for topic in sorted(topics)])

    # -- steps after generation (the documents grounding check) -------------------------------------
    # An item whose reply came back but whose grounding check has not passed yet is a ``failed`` row with
    # ``provenance.grounding.pending`` true (and the check's error once a check failed); the verdict, or the
    # check's failure, is a stamp onto that row (``apply_stamps``): one item, one row, whatever it took.
    _UNCHECKED = "status = 'failed' AND json_extract(provenance, '$.grounding.pending')"

    def apply_stamps(self, stamps: Iterable[Any]) -> int:
        """Merge each stamp (a ``Record`` with ``stamp=True``) into the row with its item key, in one
        transaction, while that row is ``failed`` (waiting for a later step, or that step failed): the
        stamp's provenance keys replace the row's, its tokens and cost are added, its status and error set.
        An ok row is final and a filtered one was superseded or deduplicated: both are left alone."""
        updates = []
        for stamp in stamps:
            if stamp.status not in ("ok", "failed", "filtered"):
                from ..errors import StoreError

                raise StoreError(f"record status must be ok, failed or filtered, got {stamp.status!r}")
            provenance = stamp.provenance or {}
            paths = "".join(", ?, json(?)" for _ in provenance)
            values = [v for key, value in provenance.items() for v in (f'$."{key}"', json.dumps(value, default=str))]
            updates.append((f"UPDATE records SET provenance = json_set(COALESCE(provenance, '{{}}'){paths}), "
                            "tokens_in = tokens_in + ?, tokens_out = tokens_out + ?, cost_usd = cost_usd + ?, "
                            "status = ?, error = ? WHERE job_kind = ? AND job_id = ? AND item_key = ? "
                            "AND status = 'failed'",
                            (*values, stamp.tokens_in, stamp.tokens_out, stamp.cost_usd, stamp.status, stamp.error,
                             stamp.job_kind, stamp.job_id, stamp.item_key)))
        if not updates:
            return 0
        with self.transaction() as conn:
            return sum(conn.execute(sql, params).rowcount for sql, params in updates)

    def unchecked_items(self, job_kind: str, job_id: int, *, retry_failed: bool) -> list[dict[str, Any]]:
        """Items whose grounding check is still to pass (id, item_key, request_key, topic, output, provenance;
        JSON decoded), in item-key order: those never checked, and with ``retry_failed`` also those whose
        check failed (a later run tries them again instead of paying for their generation twice)."""
        retry = "" if retry_failed else " AND json_extract(provenance, '$.grounding.error') IS NULL"
        rows = self.connection().execute(
            "SELECT id, item_key, request_key, topic, output, provenance FROM records WHERE job_kind = ? "
            f"AND job_id = ? AND {self._UNCHECKED}{retry} ORDER BY item_key", (job_kind, job_id)).fetchall()
        return [{**dict(row), "output": _loads(row["output"]), "provenance": _loads(row["provenance"])}
                for row in rows]  # an empty column reads as None too

    def unchecked_request_keys(self, job_kind: str, job_id: int) -> set[str]:
        """Requests with an item still waiting for (or failed at) its check: their reply was paid and kept,
        so they are not sent again; the check is what a later run retries."""
        rows = self.connection().execute(
            f"SELECT DISTINCT request_key FROM records WHERE job_kind = ? AND job_id = ? AND {self._UNCHECKED} "
            "AND request_key IS NOT NULL", (job_kind, job_id)).fetchall()
        return {row[0] for row in rows}

    # -- stale rows (evaluate, custom workflows) ----------------------------------------------------
    def record_states(self, job_kind: str, job_id: int) -> list[dict[str, Any]]:
        """id, item_key, request_key, status, error and has_output of every record of a job (no JSON
        loaded, so it stays cheap on 100k-row jobs): what a re-run needs to mark rows stale or revive them."""
        rows = self.connection().execute(
            "SELECT id, item_key, request_key, status, error, output IS NOT NULL AS has_output FROM records "
            "WHERE job_kind = ? AND job_id = ? ORDER BY id", (job_kind, job_id)).fetchall()
        return [dict(row) for row in rows]

    def failed_steps(self, job_kind: str, job_id: int) -> list[tuple[Any, int, str | None]]:
        """(step, failed rows, one error) per step at which a custom workflow's rows failed, by step; rows
        with no ``failed_step`` (unfinished) come first, under step None."""
        rows = self.connection().execute(
            "SELECT json_extract(provenance, '$.failed_step') AS step, COUNT(*), MIN(error) FROM records "
            "WHERE job_kind = ? AND job_id = ? AND status = 'failed' GROUP BY step ORDER BY step",
            (job_kind, job_id)).fetchall()
        return [tuple(row) for row in rows]

    # -- what a run did not keep (every workflow page's Failed and Filtered tabs) ----------------------
    def _tree_where(self, job_id: int, status: str) -> tuple[str, list[Any]]:
        ids = self._job_tree(job_id)  # a job's stage jobs (alignment's candidates and judge) count as its own
        return f"job_id IN ({', '.join('?' * len(ids))}) AND status = ?", [*ids, status]

    def outcome_page(self, job_id: int, status: str, offset: int = 0, limit: int = 10) -> tuple[list[dict], int]:
        """One page of a job's (and its stage jobs') records of one status, newest last, and their count:
        id, job_id, topic, error, raw_text, input. Outputs are left out: a failed row has none worth loading."""
        where, params = self._tree_where(job_id, status)
        conn = self.connection()
        total = conn.execute(f"SELECT COUNT(*) FROM records WHERE {where}", params).fetchone()[0]
        rows = conn.execute(f"SELECT id, job_id, topic, error, raw_text, input FROM records WHERE {where} "
                            "ORDER BY id LIMIT ? OFFSET ?", (*params, limit, offset)).fetchall()
        return [dict(row) for row in rows], int(total)

    def outcome_reasons(self, job_id: int, status: str, top: int = 3) -> list[tuple[str, int]]:
        """The most frequent reasons (first line, first 160 characters) a job and its stages gave for rows of
        ``status``: what a run that kept nothing says it was stopped by."""
        where, params = self._tree_where(job_id, status)
        rows = self.connection().execute(
            f"SELECT substr(COALESCE(error, 'no reason recorded'), 1, 160) AS reason, COUNT(*) AS n FROM records "
            f"WHERE {where} GROUP BY reason ORDER BY n DESC, reason LIMIT ?", (*params, top)).fetchall()
        return [(str(reason).splitlines()[0] if reason else "", int(n)) for reason, n in rows]

    # -- alignment -----------------------------------------------------------------------------------
    def dropped_errors(self, job_kind: str, job_id: int) -> list[str | None]:
        """The error of every record of a job that is not ok (failed or filtered): why rows were not kept."""
        rows = self.connection().execute("SELECT error FROM records WHERE job_kind = ? AND job_id = ? AND "
                                         "status != 'ok'", (job_kind, job_id)).fetchall()
        return [error for (error,) in rows]

    def record_labels(self, job_kind: str, job_id: int, *, except_error: str) -> list[tuple[str, Any, str | None]]:
        """(status, output's label, error) of a job's records, leaving out those whose error is
        ``except_error`` (stale ones): what a KTO job's desirable:undesirable balance counts."""
        rows = self.connection().execute(
            "SELECT status, json_extract(output, '$.label'), error FROM records WHERE job_kind = ? AND job_id = ? "
            "AND COALESCE(error, '') != ?", (job_kind, job_id, except_error)).fetchall()
        return [tuple(row) for row in rows]

    # -- judgements (reviews, export) ---------------------------------------------------------------
    def current_judgements(self, job_id: int) -> list[tuple[str | None, str, Any, Any]]:
        """(topic, status, score as stored, provenance decoded) of an evaluation job's judgements that are
        not filtered (stale), in record order: what its statistics and agreement are computed from."""
        rows = self.connection().execute(
            "SELECT topic, status, json_extract(output, '$.score'), provenance FROM records "
            "WHERE job_kind = ? AND job_id = ? AND status != 'filtered' ORDER BY id", ("evaluation", job_id)).fetchall()
        return [(t, s, v, json.loads(p) if p else None) for t, s, v, p in rows]

    def judge_scores(self, evaluation_job_id: int) -> dict[int, tuple[Any, Any]]:
        """Generation record id -> (score, justification) of an evaluation job's ok judgements."""
        scores: dict[int, tuple[Any, Any]] = {}
        for rid, score, why in self.connection().execute(
                "SELECT json_extract(provenance, '$.source_record_id'), json_extract(output, '$.score'), "
                "json_extract(output, '$.justification') FROM records "
                "WHERE job_kind = 'evaluation' AND job_id = ? AND status = 'ok'", (evaluation_job_id,)):
            if rid is not None:
                scores[int(rid)] = (score, why)
        return scores

    def newest_done_evaluation(self, generation_job_id: int) -> dict[str, Any] | None:
        """The finished evaluation of a generation job with the highest id (any judge, second ones too), as
        stored in evaluation_metadata (JSON columns left as text): the judge run an export reports."""
        row = self.connection().execute(
            "SELECT * FROM evaluation_metadata WHERE source_generation_id = ? AND status = 'done' ORDER BY id DESC LIMIT 1",
            (generation_job_id,)).fetchone()
        return None if row is None else dict(row)

    def latest_primary_evaluation(self, generation_job_id: int) -> int | None:
        """The id of the most recently finished evaluation of a generation job that is not a second judge."""
        row = self.connection().execute(
            "SELECT id FROM evaluation_metadata WHERE source_generation_id = ? AND status = 'done' "
            "AND json_extract(config, '$.second_judge_of') IS NULL "
            "ORDER BY COALESCE(finished_at, created_at) DESC, id DESC LIMIT 1", (generation_job_id,)).fetchone()
        return None if row is None else int(row[0])

    def newest_second_judge(self, evaluation_job_id: int) -> int | None:
        """The id of the newest second-judge job that double-checked evaluation ``evaluation_job_id``."""
        row = self.connection().execute(
            "SELECT id FROM evaluation_metadata WHERE json_extract(config, '$.second_judge_of') = ? "
            "ORDER BY id DESC LIMIT 1", (evaluation_job_id,)).fetchone()
        return None if row is None else int(row[0])

    # -- exports -------------------------------------------------------------------------------------
    def export_wrote(self, directory: str, name: str, sha256: str) -> int | None:
        """The newest export that recorded writing file ``name`` into ``directory`` with this sha256, or None:
        a file no export wrote (or one changed since) is the user's, and an export never replaces it."""
        row = self.connection().execute(
            "SELECT job_id FROM export_jobs WHERE path = ? AND json_extract(file_hashes, ?) = ? "
            "ORDER BY job_id DESC LIMIT 1", (directory, '$."' + name.replace('"', '') + '"', sha256)).fetchone()
        return None if row is None else int(row[0])

    # -- output location (spark_output.py) -----------------------------------------------------------
    def output_uri(self, job_id: int) -> str | None:
        """Where the job's ok records were written as Parquet (``<output-uri>/job=<id>``), or None."""
        row = self.connection().execute("SELECT output_uri FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else row[0]

    def ok_record_batches(self, job_kind: str, job_id: int, size: int) -> Iterator[tuple[list[str], list[tuple]]]:
        """(the records table's columns, up to ``size`` ok records as stored: JSON fields still text), in id
        order: what a Parquet copy of the job holds, without decoding and re-encoding every row. A job without
        ok records yields one empty batch (its columns still say the Parquet's schema)."""
        columns = [row[1] for row in self.connection().execute("PRAGMA table_info(records)")]
        cursor = self.connection().execute(
            f"SELECT {', '.join(columns)} FROM records WHERE job_kind = ? AND job_id = ? AND status = 'ok' "
            "ORDER BY id", (job_kind, job_id))
        rows = cursor.fetchmany(size)
        yield columns, [tuple(row) for row in rows]
        while rows := cursor.fetchmany(size):
            yield columns, [tuple(row) for row in rows]


def _loads(text: str | None) -> Any:
    return json.loads(text) if text else None
