"""One answer to "which fields are the prompt and the completion", read by export, the judge and alignment:
a custom workflow's ``prompt_column``/``completion_column`` hold for all of them."""
from __future__ import annotations

import json
from pathlib import Path

from sdstudio.cli import main
from sdstudio.store import Store
from sdstudio.workflows.fields import Fields, job_fields

ROOT = Path(__file__).resolve().parents[1]


def model(server) -> list[str]:
    return ["--provider", "openai_compatible", "--model", "fake-model", "--base-url", server.url]


def run_workflow_job(server, home: Path) -> int:
    """examples/workflow.yaml: prompt_column harder_question, completion_column reasoning."""
    assert main(["workflow", "--config", str(ROOT / "examples" / "workflow.yaml"), "--input",
                 str(ROOT / "examples" / "data" / "questions.csv"), "--limit", "3", *model(server)]) == 0
    return 1


def test_each_kind_of_job_answers_its_own_fields(openai_server, home):
    job = run_workflow_job(openai_server, home)
    assert main(["generate", *model(openai_server), "--topics", "Heaps", "--per-topic", "1"]) == 0
    store = Store.open(home)
    assert job_fields(store, job) == Fields("harder_question", "reasoning")
    assert job_fields(store, 2) == Fields("question", "solution")  # code_generation's use case


def test_a_workflow_job_exports_its_declared_columns_as_the_sft_pair(openai_server, home, tmp_path):
    run_workflow_job(openai_server, home)
    out = tmp_path / "out"
    assert main(["export", "--job", "1", "--style", "sft-prompt-completion", "--out", str(out), "--json"]) == 0
    rows = [json.loads(line) for line in next(out.rglob("*.jsonl")).read_text().splitlines()]
    store = Store.open(home)
    items = [r["output"] for r in store.records("generation", 1, "ok")]
    assert sorted((r["prompt"], r["completion"]) for r in rows) == sorted(
        (i["harder_question"], i["reasoning"]) for i in items)


def test_the_judge_sees_a_workflow_jobs_declared_prompt_and_completion(openai_server, home):
    run_workflow_job(openai_server, home)
    before = len(openai_server.requests)
    assert main(["evaluate", "--job", "1", *model(openai_server)]) == 0
    items = [r["output"] for r in Store.open(home).records("generation", 1, "ok")]
    judged = " ".join(b["messages"][-1]["content"] for b in openai_server.requests[before:])
    assert all(i["harder_question"] in judged and i["reasoning"] in judged for i in items)
