"""Every model-calling workflow through ``openai_compatible`` against llama-cpp-python's own server (a real
server nobody here wrote; tests/llama_server.py), driven by the real CLI in-process.

They prove wire compatibility, not quality: the 135M embedded model on 2 CPU cores writes what it can. So
generate asserts the rows the issue promises (>= 2 of 3 schema-valid with one item per call) and the
others only that the job finished, the server answered, and no request went out more than twice.
"""
from __future__ import annotations

import contextlib
import io
import json
import signal
import sqlite3
from collections import Counter
from pathlib import Path

import pytest

from sdstudio.cli import main

pytestmark = pytest.mark.slow

TOPICS = ["Binary search", "Reversing a string", "FizzBuzz"]
EXIT_OK, EXIT_FAILED_ITEMS = 0, 1


def model_flags(server) -> list[str]:
    # one request at a time (the server answers one at a time anyway) from its fixed seed: the same rows on
    # every run. Not temperature 0: a follow-up round would get the very same duplicates back.
    return ["--provider", "openai_compatible", "--base-url", server.base_url, "--model", "smollm2",
            "--concurrency", "1"]


def sdstudio(home: Path, *args: str) -> tuple[int, dict, str]:
    """``sdstudio ARGS --json --home HOME`` in-process: exit code, the JSON summary, stderr. The
    environment variable and the SIGTERM handler ``main`` sets are put back afterwards."""
    out, err = io.StringIO(), io.StringIO()
    handler = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            patch.setenv("SDSTUDIO_HOME", str(home))
            code = main([*args, "--json", "--home", str(home)])
    finally:
        signal.signal(signal.SIGTERM, handler)
    lines = out.getvalue().strip().splitlines()
    summary = json.loads(lines[-1]) if lines else {}
    return code, summary, err.getvalue()


def db_rows(home: Path, sql: str, *params) -> list[tuple]:
    with contextlib.closing(sqlite3.connect(home / "metadata.db")) as conn:
        return conn.execute(sql, params).fetchall()


def answered_rows(home: Path, where: str = "1", *params) -> int:
    """Records holding something the server wrote (tokens out, or the raw reply kept)."""
    return db_rows(home, f"SELECT COUNT(*) FROM records WHERE ({where}) AND (tokens_out > 0 OR "
                   "COALESCE(raw_text, '') != '')", *params)[0][0]


def wire_report(chats) -> str:
    return "\n".join(exchange.brief() for exchange in chats[-12:])


def longest_error_chain(chats) -> int:
    """The most times one request (the same body, whatever structured-output dialect it carried) went out in a
    row with every earlier send refused by the server: 2 is a refusal and one fallback; more is a retried
    deterministic error. A 200 ends a chain: a later identical body is a new round's request."""
    chain: Counter = Counter()
    longest = 0
    for exchange in chats:
        key = exchange.key()
        chain[key] += 1
        longest = max(longest, chain[key])
        if exchange.status == 200:
            chain[key] = 0
    return longest


def check_sends(summary: dict, chats, stderr: str) -> None:
    """What went over the wire: the server answered at least once, no refused request was sent more than
    twice, and the job made at most two attempts per request on average."""
    context = f"summary {summary}\nstderr {stderr[-2000:]}\nlast requests:\n{wire_report(chats)}"
    assert chats, f"no chat completions request reached the server\n{context}"
    assert any(exchange.status == 200 for exchange in chats), f"the server answered no request\n{context}"
    assert longest_error_chain(chats) <= 2, f"a refused request was sent again and again\n{context}"
    assert summary["attempts"] <= 2 * summary["requests_sent"], context


def wire_figures(summary: dict, chats) -> str:
    same = Counter(exchange.key() for exchange in chats).most_common(1)[0][1]
    return (f"{summary['requests_sent']} requests, {summary['attempts']} attempts, {len(chats)} on the wire "
            f"({sum(e.status != 200 for e in chats)} refused; one body sent at most {same}x)")


def dialect_named(summary: dict) -> bool:
    return "structured output: json_object" in " ".join(summary.get("notes") or [])


def generation(server, home: Path, topics: list[str], *flags: str) -> tuple[int, dict, str, list]:
    mark = len(server.exchanges)
    code, summary, stderr = sdstudio(home, "generate", *model_flags(server), "--use-case", "code_generation",
                                     "--topics", *topics, *flags)
    return code, summary, stderr, server.chats_since(mark)


def statuses(home: Path, job_id: int) -> dict[str, int]:
    """A generation job's records by status: 'ok' rows passed the use case's JSON schema and were kept."""
    return dict(db_rows(home, "SELECT status, COUNT(*) FROM records WHERE job_kind = 'generation' AND job_id = ? "
                        "GROUP BY status", job_id))


@pytest.fixture(scope="module")
def generated(llama_server, tmp_path_factory):
    """One item per call, three topics: the generation job the evaluation below judges."""
    home = tmp_path_factory.mktemp("llama-generate")
    return home, *generation(llama_server, home, TOPICS, "--per-topic", "1", "--batch-size", "1", "--max-tokens", "400")


def test_generate_one_item_per_call_saves_schema_valid_rows_and_names_the_dialect(generated):
    home, code, summary, stderr, chats = generated
    ok, asked = summary["ok"], len(TOPICS)
    print(f"\ngenerate, 1 item per call: {ok} ok of {asked} asked, records {statuses(home, summary['job_id'])}; "
          f"{wire_figures(summary, chats)}; notes {summary['notes']}")
    check_sends(summary, chats, stderr)
    assert code == EXIT_OK and ok >= 2, (summary, stderr, wire_report(chats))
    assert dialect_named(summary), summary["notes"]


def test_generate_three_items_per_call_saves_rows_and_names_the_dialect(llama_server, tmp_path):
    home = tmp_path  # one topic: three items in one call, and follow-up rounds only for what is missing
    code, summary, stderr, chats = generation(llama_server, home, TOPICS[:1], "--per-topic", "3", "--batch-size",
                                              "3", "--max-tokens", "500")
    ok, asked = summary["ok"], 3
    print(f"\ngenerate, 3 items per call: {ok} ok of {asked} asked, records {statuses(home, summary['job_id'])}; "
          f"{wire_figures(summary, chats)}; notes {summary['notes']}")
    check_sends(summary, chats, stderr)
    assert code in (EXIT_OK, EXIT_FAILED_ITEMS) and ok >= 1, (summary, stderr, wire_report(chats))
    assert dialect_named(summary), summary["notes"]


def test_evaluate_judges_the_generation_job_on_the_same_server(llama_server, generated):
    home, _, generation_summary, _, _ = generated
    mark = len(llama_server.exchanges)
    code, summary, stderr = sdstudio(home, "evaluate", *model_flags(llama_server), "--job",
                                     str(generation_summary["job_id"]), "--limit", "2", "--max-tokens", "200")
    chats = llama_server.chats_since(mark)
    check_sends(summary, chats, stderr)
    assert code in (EXIT_OK, EXIT_FAILED_ITEMS), (code, stderr)
    judged = answered_rows(home, "job_kind = 'evaluation' AND job_id = ?", summary["job_id"])
    assert judged >= 1, (summary, stderr, wire_report(chats))


def test_align_dpo_writes_prompts_candidates_and_judgements_on_the_server(llama_server, tmp_path):
    mark = len(llama_server.exchanges)
    code, summary, stderr = sdstudio(tmp_path, "align", *model_flags(llama_server), "--method", "dpo",
                                     "--topics", "Sorting a list", "--per-topic", "2", "-k", "2",
                                     "--max-tokens", "160")
    chats = llama_server.chats_since(mark)
    check_sends(summary, chats, stderr)
    assert code in (EXIT_OK, EXIT_FAILED_ITEMS), (code, stderr)
    answered = answered_rows(tmp_path)
    assert answered >= 1, (summary, stderr, wire_report(chats))


def test_a_two_step_workflow_runs_a_text_step_then_a_json_step_on_the_server(llama_server, tmp_path):
    data = tmp_path / "questions.csv"
    data.write_text("id,question\n1,What is a Python list?\n2,How do I reverse a string in Python?\n",
                    encoding="utf-8")
    config = tmp_path / "workflow.yaml"
    config.write_text(json.dumps({  # JSON is YAML
        "kind": "workflow", "input_file": str(data),
        "steps": [
            {"name": "answer", "template": "Answer in one or two sentences: {{ question }}"},
            {"name": "grade", "output_type": "json",
             "template": "Rate how difficult this question is, from 1 (easy) to 5 (hard): {{ question }}",
             "json_schema": {"type": "object", "required": ["difficulty"],
                             "properties": {"difficulty": {"type": "integer", "minimum": 1, "maximum": 5}}}},
        ]}), encoding="utf-8")
    mark = len(llama_server.exchanges)
    code, summary, stderr = sdstudio(tmp_path, "workflow", "--config", str(config), *model_flags(llama_server),
                                     "--max-tokens", "96")
    chats = llama_server.chats_since(mark)
    check_sends(summary, chats, stderr)
    assert code in (EXIT_OK, EXIT_FAILED_ITEMS), (code, stderr)
    assert summary["requests_sent"] >= 2, summary  # both steps ran at least once
    answered = answered_rows(tmp_path)
    assert answered >= 1, (summary, stderr, wire_report(chats))


def test_a_later_job_on_the_same_home_starts_with_the_dialect_that_worked(llama_server, generated):
    home = generated[0]
    code, summary, stderr, chats = generation(llama_server, home, ["Stacks"], "--per-topic", "1", "--batch-size",
                                              "1", "--max-tokens", "400")
    assert chats and chats[0].body["response_format"]["type"] == "json_object", wire_report(chats)
    assert all(exchange.status == 200 for exchange in chats), wire_report(chats)
    assert code in (EXIT_OK, EXIT_FAILED_ITEMS) and dialect_named(summary), (summary, stderr)


def test_a_dialect_the_server_refuses_stops_the_run_after_at_most_8_requests(llama_server, tmp_path):
    config = tmp_path / "forced.yaml"  # json_schema forced: llama-cpp-python refuses every request the same way
    config.write_text(json.dumps({"kind": "generation", "model": {"structured_output": "json_schema"}}),
                      encoding="utf-8")
    mark = len(llama_server.exchanges)
    code, summary, stderr = sdstudio(tmp_path, "generate", "--config", str(config), *model_flags(llama_server),
                                     "--use-case", "code_generation", "--topics", *TOPICS, "--per-topic", "4",
                                     "--batch-size", "1")
    chats = llama_server.chats_since(mark)
    print(f"\nforced json_schema: exit {code} after {len(chats)} requests on the wire")
    assert code == 2 and summary == {}, (code, summary, stderr)
    assert 1 <= len(chats) <= 8 and all(exchange.status != 200 for exchange in chats), wire_report(chats)
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "json_schema" in lines[0], stderr
