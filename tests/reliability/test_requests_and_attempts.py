"""A job reports both what it planned and what the provider saw: ``requests`` (one per work item, however often it was
tried) and ``attempts`` (every HTTP request: retries after 429/500/broken bodies and re-asks for unusable replies).
Checked against the fake server's own count of the HTTP requests it received, under injected faults, in the job row,
``jobs show``, ``--json``, the summary line and the progress the notebooks show."""
from __future__ import annotations

import json
import sqlite3

from sdstudio.cli import main
from sdstudio.config import DocumentJob, ModelParameters, ModelSpec, RunSettings
from sdstudio.ui.components import ProgressPanel
from sdstudio.workflows.documents import DocumentRun
from tests.fakes.openai_server import default_reply
from tests.fakes.openai_server import requested_schema

FAULTS = {"rate_limit": 0.10, "server_error": 0.05, "bad_json": 0.10, "truncated": 0.05, "malformed_body": 0.03}
RUN = "run:\n  concurrency: 16\n  max_attempts: 5\n  backoff_base_s: 0.01\n  backoff_max_s: 0.1\n"


def faulty(server) -> None:
    server.fault_rates = dict(FAULTS)
    server.retry_after = 0.02


def model_flags(server) -> list[str]:
    return ["--provider", "openai_compatible", "--model", "fake-model", "--base-url", server.url]


def test_attempts_are_the_http_requests_the_server_received_everywhere_they_are_shown(counting_server, home, capsys):
    faulty(counting_server)
    home.mkdir(parents=True)
    config = home / "job.yaml"
    config.write_text("kind: generation\ntopics: [" + ", ".join(f"Topic {i:03d}" for i in range(200))
                      + "]\nnum_per_topic: 1\nbatch_size: 1\nmax_rounds: 1\n" + RUN)
    assert main(["generate", *model_flags(counting_server), "--config", str(config), "--json"]) in (0, 1)
    summary = json.loads(capsys.readouterr().out)
    http = len(counting_server.received)
    assert summary["attempts"] == http
    assert 200 <= summary["requests_sent"] < summary["attempts"]  # retries are attempts, not requests
    assert set(FAULTS) <= set(counting_server.injected)

    main(["jobs", "show", str(summary["job_id"]), "--json"])
    shown = json.loads(capsys.readouterr().out)
    assert (shown["requests"], shown["attempts"]) == (summary["requests_sent"], http)
    with sqlite3.connect(home / "metadata.db") as conn:
        row = conn.execute("SELECT requests, attempts FROM generation_metadata WHERE id = ?",
                           (summary["job_id"],)).fetchone()
    assert row == (summary["requests_sent"], http)

    # a second run of the same job adds its own sends to the row and reports its own in the summary line
    counting_server.fault_rates = {}
    main(["generate", *model_flags(counting_server), "--config", str(config)])
    line = next(x for x in capsys.readouterr().err.splitlines() if x.startswith("sdstudio: generation job"))
    again = len(counting_server.received) - http
    assert f"; {again} request{'s' * (again != 1)}, {again} attempt{'s' * (again != 1)};" in line, line
    main(["jobs", "show", str(summary["job_id"]), "--json"])
    shown = json.loads(capsys.readouterr().out)
    assert (shown["requests"], shown["attempts"]) == (summary["requests_sent"] + again, http + again)
    print(f"\nFIGURES attempts: items=200 requests={summary['requests_sent']} attempts={summary['attempts']} "
          f"http_requests={http} injected={dict(sorted(counting_server.injected.items()))}")


def test_a_grounded_documents_job_counts_its_checks_attempts_too(counting_server, store, tmp_path):
    faulty(counting_server)

    def reply(body: dict) -> str:  # a judge that quotes its passage; the generator is the fake's own
        if "supported" not in json.dumps(requested_schema(body) or {}):
            return default_reply(body)
        passage = body["messages"][-1]["content"].split("<passage>")[1]
        return json.dumps({"supported": True, "reason": "ok", "evidence": " ".join(passage.split()[:6])})

    counting_server.reply = reply
    notes = tmp_path / "notes.md"
    notes.write_text(" ".join(f"Sentence {i} says the X200 pump runs at {1000 + i} rpm." for i in range(300)))
    config = DocumentJob(files=[str(notes)], chunk_tokens=128, chunk_overlap=0, per_chunk=2, grounding=True,
                         model=ModelSpec(provider="openai_compatible", model="fake-model", base_url=counting_server.url,
                                         parameters=ModelParameters(max_tokens=800)),
                         run=RunSettings(concurrency=16, max_attempts=5, backoff_base_s=0.01, backoff_max_s=0.1))
    seen = []
    result = DocumentRun(config, store=store).run(on_progress=seen.append)
    http = len(counting_server.received)
    assert result.attempts == seen[-1].attempts == http > result.requests_sent
    panel = ProgressPanel()  # what a notebook shows while the job runs
    panel.update(seen[-1])
    assert f"{http:,} attempts" in panel.label.value
    job = store.get_job("generation", result.job_id)
    assert (job["requests"], job["attempts"]) == (result.requests_sent, http)
    print(f"\nFIGURES attempts-documents: items ok={result.ok} failed={result.failed} filtered={result.filtered} "
          f"requests={result.requests_sent} attempts={result.attempts} http_requests={http}")


def test_a_custom_workflow_counts_every_steps_attempts(counting_server, home, capsys):
    faulty(counting_server)
    home.mkdir(parents=True)
    rows = home / "rows.csv"
    rows.write_text("question\n" + "".join(f"What is structure {i}?\n" for i in range(60)))
    steps = json.dumps([{"name": "rewrite", "template": "Rewrite {{ question }}"},
                        {"name": "answer", "template": "Answer {{ rewrite }}"}])
    config = home / "wf.yaml"
    config.write_text(f"kind: workflow\ninput_file: {rows}\nsteps: {steps}\n" + RUN)
    assert main(["workflow", *model_flags(counting_server), "--config", str(config), "--json"]) in (0, 1)
    summary = json.loads(capsys.readouterr().out)
    assert summary["attempts"] == len(counting_server.received) > summary["requests_sent"] >= 60
    print(f"\nFIGURES attempts-workflow: rows=60 steps=2 requests={summary['requests_sent']} "
          f"attempts={summary['attempts']} http_requests={len(counting_server.received)}")
