"""The executor seam: work items and records round-trip through JSON, and a job run through an executor
that ships them through JSON yields exactly the records of the local executor."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from sdstudio import executors
from sdstudio.cli import main
from sdstudio.config import ModelParameters
from sdstudio.engine import WorkItem
from sdstudio.providers import ChatRequest
from sdstudio.store import Record, Store
from tests.plugins.json_executor import NAME, JsonRoundTripExecutor

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def json_executor(monkeypatch):
    monkeypatch.setitem(executors.EXECUTORS, NAME, "tests.plugins.json_executor:JsonRoundTripExecutor")
    JsonRoundTripExecutor.shipped_items = 0
    return JsonRoundTripExecutor


def test_a_work_item_and_a_record_round_trip_through_json():
    item = WorkItem(key="k1", request=ChatRequest.of([{"role": "user", "content": "hi"}],
                                                     ModelParameters(temperature=0.1, max_tokens=77),
                                                     {"type": "object"}),
                    topic="t", input={"count": 2, "round": 0}, provenance={"file": "a.pdf", "pages": [1, 2]},
                    meta={"step": 1})
    assert WorkItem.from_json(json.loads(json.dumps(item.to_json()))) == item
    record = Record(job_kind="generation", job_id=3, item_key="k1:0", status="ok", output={"q": "?"}, tokens_in=5,
                    cost_usd=0.25)
    assert Record.from_json(json.loads(json.dumps(record.to_json()))) == record


def test_an_unknown_executor_is_one_config_error(openai_server, home, capsys):
    code = main(["generate", "--provider", "openai_compatible", "--model", "fake-model", "--base-url",
                 openai_server.url, "--topics", "Heaps", "--config", str(write_run(home, "nowhere"))])
    assert code == 2 and "unknown executor 'nowhere'" in capsys.readouterr().err


def write_run(home, executor: str):
    home.mkdir(parents=True, exist_ok=True)
    path = home / f"run-{executor}.yaml"
    path.write_text(f"kind: generation\nrun:\n  executor: {executor}\n")
    return path


def job_records(home) -> list[tuple]:
    """Every record's key, status, output, tokens and cost. A judgement's key names the generation record
    it judged by its row id, which depends on write order in any run: those are compared without it."""
    store = Store.open(home)
    rows = [(r["job_kind"], r["item_key"] if r["job_kind"] == "generation" else "", r["status"],
             json.dumps(r["output"], sort_keys=True), json.dumps((r["provenance"] or {}).get("grounding")),
             r["tokens_in"], r["tokens_out"], r["cost_usd"])
            for family in ("generation", "evaluation") for job in (1, 2) for r in store.records(family, job)]
    return sorted(rows)


@pytest.mark.parametrize("workflow", ["generate", "evaluate", "documents"])
def test_a_job_through_a_json_shipping_executor_yields_the_local_records(openai_server, tmp_path, json_executor,
                                                                           monkeypatch, workflow):
    model = ["--provider", "openai_compatible", "--model", "fake-model", "--base-url", openai_server.url]
    results = {}
    for executor in ("local", NAME):
        home = tmp_path / executor
        monkeypatch.setenv("SDSTUDIO_HOME", str(home))
        (home).mkdir()
        (home / "prices.yaml").write_text("fake-model: [1.0, 2.0]\n")
        config = str(write_run(home, executor))
        if workflow == "documents":  # generation rounds, then a grounding check stamped onto each item
            (home / "docs.yaml").write_text(f"kind: documents\nfiles: [{ROOT / 'examples' / 'docs'}]\n"
                                            f"grounding: true\nrun:\n  executor: {executor}\n")
            assert main(["documents", *model, "--config", str(home / "docs.yaml")]) == 0
            results[executor] = job_records(home)
            continue
        assert main(["generate", *model, "--topics", "Heaps", "Tries", "Graphs", "--per-topic", "3",
                     "--config", config]) == 0
        if workflow == "evaluate":
            (home / "eval.yaml").write_text(f"kind: evaluation\nsource_job: 1\nrun:\n  executor: {executor}\n")
            assert main(["evaluate", *model, "--config", str(home / "eval.yaml")]) == 0
        results[executor] = job_records(home)
    assert json_executor.shipped_items > 0
    assert results["local"] == results[NAME] and len(results["local"]) >= 4
