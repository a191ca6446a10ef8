"""Evol-Instruct: a generation job's instructions rewritten for R rounds on the loopback fake server, the failed
rewrites eliminated with their reason, the kept ones answered again with their lineage, resumed without repaying,
and exported in TRL's columns."""
from __future__ import annotations

import json
import re
import threading

import pytest

from sdstudio.cli import main
from sdstudio.config import ExportJob, ModelParameters, ModelSpec, RunSettings, load_config
from sdstudio.configs.evolve import EvolveJob
from sdstudio.errors import ConfigError
from sdstudio.export import export_dataset
from sdstudio.store import Record
from sdstudio.workflows.evolve import EvolveRun, rows
from sdstudio.workflows.evolve_methods import (answer_problem, clean_rewrite, pick_method, prompt_for,
                                               rewrite_problem)

FAST = RunSettings(backoff_base_s=0.01, backoff_max_s=0.05, concurrency=4)
GIVEN = re.compile(r"#Given Prompt#:\n(.*?)\n\n#(?:Rewritten|Created) Prompt#", re.S)


def spec(server, model: str = "fake-model") -> ModelSpec:
    return ModelSpec(provider="openai_compatible", model=model, base_url=server.url,
                     parameters=ModelParameters(max_tokens=200))


def source_job(store, questions: list[str]) -> int:
    job = store.create_job("generation", use_case="code_generation", status="done")
    store.add_records([Record("generation", job, f"k{i}", "ok", topic="Heaps",
                              output={"question": q, "solution": "s", "explanation": "e"})
                       for i, q in enumerate(questions)])
    store.refresh_counts("generation", job)
    return job


def evolver(plan: dict[str, str] | None = None):
    """The fake model: a rewrite adds a clause to its input ("... Also handle a harder case ..."), unless ``plan`` maps a
    word of the instruction to a planted failure; answers are a sentence, or an apology for "IMPOSSIBLE"."""
    plan = plan or {}

    def reply(body):
        text = body["messages"][-1]["content"]
        found = GIVEN.search(text)
        if found is None:  # answering an evolved instruction
            if "IMPOSSIBLE" in text:
                return "I'm sorry, but that cannot be done."
            return f"Here is a full answer to: {text}. It explains every step with an example and a check."
        given = found.group(1)
        for word, failure in plan.items():
            if word in given:
                return {"copy": given, "refuse": "I'm sorry, I can't help with rewriting that.",
                        "leak": f"{given}, with more detail than #Given Prompt# had", "impossible": f"{given} IMPOSSIBLE"}[failure]
        kind = "harder" if "Prompt Rewriter" in text else "rarer"
        return f"#Rewritten Prompt#: {given} Also handle a {kind} case with {len(given)} distinct items."
    return reply


def run(server, store, source: int, **fields):
    fields.setdefault("methods", ["deepen", "constraints"])
    config = EvolveJob(source_job=source, model=spec(server), run=FAST, **fields)
    return EvolveRun(config, store=store).run()


# -- rules, no model ------------------------------------------------------------------------------------

def test_an_evolve_config_round_trips_through_yaml_and_takes_methods_as_text():
    config = EvolveJob(source_job=3, rounds=2, methods="deepen,breadth,deepen")
    assert config.methods == ["deepen", "breadth"]
    assert load_config(config.to_yaml()) == config
    with pytest.raises(ConfigError, match="methods"):
        load_config({"kind": "evolve", "source_job": 3, "methods": ["harder"]})
    with pytest.raises(ConfigError, match="rounds"):
        load_config({"kind": "evolve", "source_job": 3, "rounds": 0})


def test_rewrites_that_copy_refuse_or_leak_the_template_are_eliminated_with_the_rule_named():
    parent = "Write a function that reverses a linked list."
    assert rewrite_problem(parent, "write a function that reverses a linked list", 0.9).startswith("copy")
    assert rewrite_problem(parent, "I'm sorry, but I can't do that.", 0.9).startswith("refusal")
    assert rewrite_problem(parent, "#Given Prompt# asks for a list.", 0.9).startswith("template leak")
    assert rewrite_problem(parent, "", 0.9).startswith("empty")
    harder = "Write a function that reverses a doubly linked list in place, in O(1) extra memory."
    assert rewrite_problem(parent, harder, 0.9) is None
    assert clean_rewrite('#Rewritten Prompt#: "Do X."') == "Do X."
    assert answer_problem("Sorry, I cannot answer this.").startswith("unanswerable")
    assert answer_problem("...").startswith("unanswerable")
    assert answer_problem("Sorry for the long wait: " + "word " * 100) is None


def test_the_method_draw_is_fixed_by_seed_lineage_and_round_and_uses_every_method():
    methods = ["deepen", "concretize", "constraints", "reasoning", "breadth"]
    draws = [pick_method(methods, 0, f"p{i}", 1) for i in range(200)]
    assert draws == [pick_method(methods, 0, f"p{i}", 1) for i in range(200)]
    assert set(draws) == set(methods)
    assert draws != [pick_method(methods, 1, f"p{i}", 1) for i in range(200)]
    assert "Prompt Creator" in prompt_for("breadth", "x") and "one more constraint" in prompt_for("constraints", "x")


# -- the workflow on the fake server ------------------------------------------------------------------------

def test_two_rounds_evolve_answer_and_keep_the_lineage_to_the_ancestor(openai_server, store):
    openai_server.reply = evolver()
    source = source_job(store, ["What is a heap?", "How do you insert into a heap?"])
    result = run(openai_server, store, source, rounds=2)
    assert (result.status, result.ok, result.filtered, result.failed) == ("done", 4, 0, 0)
    assert len(openai_server.requests) == 8  # 2 instructions x 2 rounds x (rewrite + answer)
    table = rows(result.job_id, store=store)
    assert sorted(table["round"]) == [1, 1, 2, 2]
    ancestors = {r["id"]: r["output"]["question"] for r in store.records("generation", source)}
    for row in table.itertuples():
        assert row.prompt.startswith(ancestors[row.ancestor_record_id])  # the rewrite grew from its ancestor
        assert row.ancestor == ancestors[row.ancestor_record_id] and len(row.methods.split(", ")) == row.round
        assert row.completion.startswith("Here is a full answer to: " + row.prompt)
    second = table[table["round"] == 2].iloc[0]
    first = table[(table["round"] == 1) & (table["ancestor_record_id"] == second.ancestor_record_id)].iloc[0]
    assert second.evolved_from == first.prompt  # round 2 rewrote round 1's rewrite
    record = store.record(int(second.record_id))
    assert record["provenance"]["source_job_id"] == source
    stage = store.record(record["provenance"]["evolution_record_id"])
    assert stage["provenance"]["parent_record_id"] == record["provenance"]["parent_record_id"] is not None
    job = store.get_job("generation", result.job_id)
    assert job["kind"] == "evolve" and job["model_parameters"]["stage_jobs"]["evolutions"] == stage["job_id"]
    assert store.get_job(None, stage["job_id"])["parent_id"] == result.job_id
    assert any(n.startswith(f"evolutions job {stage['job_id']}: 4 rewrites kept") for n in result.notes)
    from sdstudio.ui.job import top_level_jobs

    assert stage["job_id"] not in set(top_level_jobs(store.jobs("generation"))["id"])  # a stage, not your data


def test_failed_evolutions_are_filtered_with_the_reason_and_the_lineage_continues_from_its_parent(openai_server,
                                                                                                  store):
    openai_server.reply = evolver({"copyme": "copy", "refuseme": "refuse", "leakme": "leak",
                                   "hardme": "impossible"})
    questions = ["Explain heaps copyme", "Explain tries refuseme", "Explain graphs leakme", "Explain sorting hardme",
                 "Explain hashing"]
    source = source_job(store, questions)
    result = run(openai_server, store, source, rounds=1)
    assert (result.ok, result.filtered) == (1, 1)  # hashing kept; the unanswerable one filtered here too
    stage_id = store.get_job("generation", result.job_id)["model_parameters"]["stage_jobs"]["evolutions"]
    reasons = {r["input"]["instruction"]: r["error"] for r in store.records("generation", stage_id, "filtered")}
    assert reasons["Explain heaps copyme"].startswith("copy: the rewrite repeats its input (similarity 1.00)")
    assert reasons["Explain tries refuseme"].startswith("refusal")
    assert reasons["Explain graphs leakme"].startswith("template leak")
    assert reasons["Explain sorting hardme"].startswith("unanswerable: the answer is a short refusal")
    dropped = rows(result.job_id, store=store, include_dropped=True)
    assert dropped[dropped["status"] == "filtered"]["reason"].str.startswith("unanswerable").all()
    assert any("4 eliminated (1 copy, 1 refusal, 1 template leak, 1 unanswerable)" in n for n in result.notes)
    # round 2 of a copied lineage starts again from the seed, not from the eliminated rewrite
    again = run(openai_server, store, source, rounds=2)
    stage2 = store.get_job("generation", again.job_id)["model_parameters"]["stage_jobs"]["evolutions"]
    second = [r for r in store.records("generation", stage2) if r["input"]["round"] == 2]
    assert {r["input"]["instruction"] for r in second if "copyme" in r["input"]["instruction"]} == {questions[0]}


def test_a_cancelled_run_resumes_mid_round_without_repaying_a_request(openai_server, store):
    stop, seen, inner = threading.Event(), [], evolver()

    def reply(body):
        seen.append(body)
        if len(seen) == 5:
            stop.set()
        return inner(body)

    openai_server.reply = reply
    source = source_job(store, ["What is a heap?", "Explain tries to a child.", "Why do graphs have cycles?",
                                "How does quicksort partition?", "When is hashing slow?", "Describe B-trees briefly."])
    config = EvolveJob(source_job=source, rounds=2, methods=["deepen"], model=spec(openai_server),
                       run=RunSettings(backoff_base_s=0.01, backoff_max_s=0.05, concurrency=1))
    cut = EvolveRun(config, store=store).run(cancel_event=stop)
    assert cut.status == "cancelled"
    done = EvolveRun(config, store=store).run(resume=cut.job_id)
    assert (done.status, done.job_id, done.ok) == ("done", cut.job_id, 12)
    bodies = [json.dumps(b["messages"]) for b in openai_server.requests]
    assert len(bodies) == len(set(bodies)) == 6 * 2 * 2  # every rewrite and answer asked exactly once
    rerun = EvolveRun(config, store=store).run()
    assert rerun.job_id == cut.job_id and len(openai_server.requests) == 24  # a finished job costs nothing


def test_a_failing_answer_leaves_the_item_failed_and_a_resume_asks_only_for_it(openai_server, store):
    openai_server.reply = evolver()
    source = source_job(store, ["What is a stack?", "What is a queue?"])
    openai_server.script.extend(["ok", "ok", "invalid_request"])  # two rewrites, then the first answer refused
    first = run(openai_server, store, source, rounds=1)
    assert (first.ok, first.failed) == (1, 1)
    before = len(openai_server.requests)
    second = run(openai_server, store, source, rounds=1)
    assert (second.job_id, second.ok, second.failed) == (first.job_id, 2, 0)
    assert len(openai_server.requests) == before + 1


def test_the_cli_previews_runs_and_exports_in_trl_columns(openai_server, store, home, tmp_path, capsys):
    openai_server.reply = evolver()
    source = source_job(store, ["What is a heap?", "What is a trie?"])
    flags = ["evolve", "--job", str(source), "--rounds", "2", "--methods", "deepen,concretize", "--provider",
             "openai_compatible", "--model", "fake-model", "--base-url", openai_server.url, "--json"]
    assert main([*flags, "--dry-run"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["seeds"], shown["rounds"], shown["requests"]) == (2, 2, 8) and "#Given Prompt#" in shown["prompt"]
    assert openai_server.requests == []
    assert main(flags) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["kind"], result["ok"], result["requests_sent"]) == ("evolve", 4, 8)
    out = export_dataset(ExportJob(jobs=[result["job_id"]], style="sft-prompt-completion", out=str(tmp_path / "x")),
                         store=store)
    lines = [json.loads(line) for line in open(out.paths[0])]
    assert len(lines) == 4 and all(set(line) == {"prompt", "completion"} for line in lines)
    assert main(["evolve", "--rounds", "1"]) == 2
    assert main(["evolve", "--job", str(source), "--methods", "harder", "--model", "m"]) == 2


def test_the_evolve_page_previews_runs_and_shows_the_lineage_and_the_eliminated(openai_server, store, home):
    from sdstudio.ui.evolve import EvolveApp

    openai_server.reply = evolver({"copyme": "copy"})
    source = source_job(store, ["Explain heaps copyme", "What is a trie?"])
    app = EvolveApp(home=home, provider="openai_compatible", model="fake-model", base_url=openai_server.url)
    assert app.source.value == source and "#Given Prompt#" in app.preview.value
    assert "2 instructions × 1 round(s) · up to 4 requests" in app.estimate.value
    app.methods.value = ("breadth",)
    assert "Prompt Creator" in app.preview.value and openai_server.requests == []
    app.run()
    app.controls.wait(60)
    table = app.results
    assert list(table["prompt"]) == ["What is a trie? Also handle a rarer case with 15 distinct items."]
    assert list(table["methods"]) == ["breadth"] and list(table["ancestor"]) == ["What is a trie?"]
    assert app.outcomes.tabs.titles[2] == "Filtered (1)"  # the copied rewrite, from the evolutions stage job
    assert app.outcomes.filtered.frame.to_string().count("copy: the rewrite repeats its input") == 1
