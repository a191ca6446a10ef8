"""Alignment data: DPO pairs and KTO labels from judge-ranked candidates, on the real fake server, to TRL files."""
from __future__ import annotations

import asyncio
import json
import os
import random
import re
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from sdstudio.config import AlignmentJob, ExportJob, ModelParameters, ModelSpec, RunSettings, load_config
from sdstudio.errors import ConfigError
from sdstudio.export import export_dataset
from sdstudio.store import Record
from sdstudio.workflows import pairs
from sdstudio.workflows.alignment import AlignmentRun, balance, candidate_slots, rows
from sdstudio.workflows.pairs import Candidate
from tests.fakes.openai_server import FakeOpenAIServer, default_reply, digest
from tests.fakes.openai_server import requested_schema

ROOT = Path(__file__).resolve().parent.parent
FAST = RunSettings(backoff_base_s=0.01, backoff_max_s=0.05, concurrency=8)
TEMPS = [0.2, 0.7, 1.2]  # the default spread for K = 3 on one model
# one distinct sentence per quality, so different qualities are never near-identical texts
PHRASES = {5: "Correct and complete: the code runs, handles edge cases, and each step is explained.",
           4: "Mostly right with working code, though one corner case goes unmentioned here.",
           3: "Half an answer; a sketch of the idea without code or any checking at all.",
           2: "Vague hand-waving about the topic that never gets to a concrete method.",
           1: "no idea lol, try google or whatever"}


# -- the fake model and judge -------------------------------------------------------------------------

def answer(prompt: str, quality: int | str) -> str:
    return f"[{prompt}] {quality}" if isinstance(quality, str) else f"[{prompt}] Q={quality} {PHRASES[quality]}"


def scripted(plant: dict[str, list], by_model: dict[str, int] | None = None, default: list | None = None):
    """A fake-server reply: candidates answer with the planted quality of (prompt, temperature slot) or of
    their model; the judge scores ``Q=n`` as n, fails on ``UNJUDGEABLE``, and scores other texts 3."""
    def reply(body):
        schema = requested_schema(body) or {}
        if "score" in schema.get("properties", {}):
            response = re.findall(r"<response>(.*?)</response>", body["messages"][-1]["content"], re.S)[-1]
            if "UNJUDGEABLE" in response:
                return "I would rather not say."
            found = re.search(r"Q=(\d)", response)
            score = int(found.group(1)) if found else 3
            return json.dumps({"score": score, "justification": f"quality {score}"})
        if schema:  # writing prompts from topics
            return default_reply(body)
        prompt = body["messages"][-1]["content"]
        if by_model:
            return answer(prompt, by_model[body["model"]])
        qualities, temp = plant.get(prompt, default or [5, 3, 1]), body["temperature"]
        slot = TEMPS.index(temp) if temp in TEMPS else int(temp * 100)  # other spreads: any fixed mapping
        return answer(prompt, qualities[slot % len(qualities)])
    return reply


class ShuffledServer(FakeOpenAIServer):
    """Answers out of order: each request first waits 0-40 ms, derived from its body."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.sent: list[dict] = []  # in the order the client sent them (``requests`` is in answer order)

    async def _chat(self, request):
        body = await request.json()
        self.sent.append(body)
        await asyncio.sleep(int(digest(json.dumps(body, sort_keys=True)), 16) % 5 * 0.01)
        return await super()._chat(request)


@pytest.fixture
def shuffled():
    with ShuffledServer() as server:
        yield server


def spec(server, model: str = "fake-model") -> ModelSpec:
    return ModelSpec(provider="openai_compatible", model=model, base_url=server.url,
                     parameters=ModelParameters(max_tokens=200))


def prompts_file(tmp_path: Path, prompts: list[str], column: str = "question") -> str:
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({column: p, "other": 1}) + "\n" for p in prompts))
    return str(path)


def align(server, store, tmp_path, plant: dict[str, list], **fields):
    fields.setdefault("input_file", prompts_file(tmp_path, list(plant)))
    fields.setdefault("prompt_column", "question")
    fields.setdefault("candidates", 3)
    config = AlignmentJob(model=spec(server), judge=spec(server, "fake-judge"), run=FAST, **fields)
    return AlignmentRun(config, store=store).run()


def judge_requests(server) -> list[dict]:
    return [b for b in server.requests if "score" in json.dumps(requested_schema(b) or {})]


# -- config --------------------------------------------------------------------------------------------

def test_an_alignment_config_round_trips_through_yaml_with_its_kind():
    config = AlignmentJob(input_file="p.csv", prompt_column="q", method="kto", candidates=3, temperatures=[0.1, 1.0],
                          rebalance=1.5)
    again = load_config(config.to_yaml())
    assert again == config and again.kind == "alignment" and again.kto_thresholds() == (4, 2)
    assert AlignmentJob(judge=ModelSpec(provider="openai", model="m")).judge.parameters.temperature == 0
    assert AlignmentJob(scale=(1, 10)).kto_thresholds() == (8, 3)


@pytest.mark.parametrize("fields, message", [
    ({"input_file": "p.csv"}, "input_file needs prompt_column"),
    ({"input_file": "p.csv", "prompt_column": "q", "source_job": 1}, "give one prompt source"),
    ({"source_job": 1, "topics": ["Heaps"]}, "give one prompt source"),
    ({"candidates": 1}, "candidates"), ({"scale": [5, 1]}, "scale 5-1 is empty"),
    ({"desirable_at": 2, "undesirable_at": 3}, "KTO thresholds"), ({"min_margin": 9}, "wider than the scale"),
    ({"temperatures": [3.0]}, "temperatures"), ({"min_margn": 1}, "unknown key 'min_margn'")])
def test_bad_alignment_configs_are_refused_in_one_line(fields, message):
    with pytest.raises(ConfigError, match=message) as info:
        load_config({"kind": "alignment", **fields})
    assert "\n" not in str(info.value)


def test_candidate_slots_spread_temperatures_or_take_turns_between_models():
    one = candidate_slots(AlignmentJob(candidates=3))
    assert [s.parameters.temperature for s in one] == TEMPS
    strong, weak = ModelSpec(provider="openai", model="strong"), ModelSpec(provider="openai", model="weak")
    two = candidate_slots(AlignmentJob(candidates=4, candidate_models=[strong, weak]))
    assert [s.model for s in two] == ["strong", "weak", "strong", "weak"]
    mixed = candidate_slots(AlignmentJob(candidates=4, candidate_models=[strong, weak], temperatures=[0.0, 1.0]))
    assert [(s.model, s.parameters.temperature) for s in mixed] == [("strong", 0.0), ("weak", 0.0), ("strong", 1.0),
                                                                   ("weak", 1.0)]


# -- selection rules (pure) -------------------------------------------------------------------------------

def cand(index: int, score: int | None, text: str | None = None, pid: str = "p1") -> Candidate:
    return Candidate(prompt_id=pid, prompt=f"prompt {pid}", index=index, record_id=100 + index, score=score,
                     text=text if text is not None else answer(pid, score if score else 1) + f" #{index}",
                     justification=None if score is None else f"why {score}")


def test_dpo_chooses_the_best_and_rejects_the_worst_breaking_ties_by_candidate_index():
    group = [cand(0, 4), cand(1, 5), cand(2, 5), cand(3, 2), cand(4, 2)]
    for _ in range(5):
        random.shuffle(group)
        row = pairs.dpo_row("p1", group, 1.0, 0.9)
        assert row.status == "ok"
        assert (row.provenance["chosen_record_id"], row.provenance["rejected_record_id"]) == (101, 104)
        assert (row.output["chosen_score"], row.output["rejected_score"], row.output["margin"]) == (5, 2, 3)
        assert row.output["chosen_justification"] == "why 5" and row.output["prompt"] == "prompt p1"


def test_chosen_and_rejected_are_never_the_same_candidate_and_stay_with_their_prompt():
    rng = random.Random(7)
    groups = {f"p{i}": [cand(k, rng.choice([None, 1, 2, 3, 4, 5]), pid=f"p{i}") for k in range(rng.randint(0, 5))]
              for i in range(400)}
    for row in pairs.dpo_rows(groups, min_margin=0, threshold=1.0):
        judged = [c for c in groups[row.prompt_id] if c.score is not None]
        assert row.status == ("failed" if len(judged) < 2 else "filtered" if len({c.score for c in judged}) == 1
                              else "ok"), row
        if row.status == "ok":
            assert row.provenance["chosen_record_id"] != row.provenance["rejected_record_id"]
            assert row.output["prompt"] == f"prompt {row.prompt_id}" and row.key == f"dpo:{row.prompt_id}"
            assert f"[{row.prompt_id}]" in row.output["chosen"] and f"[{row.prompt_id}]" in row.output["rejected"]
            assert row.output["chosen_score"] == max(c.score for c in judged)
            assert row.output["rejected_score"] == min(c.score for c in judged)


def test_pairs_with_a_small_margin_or_identical_or_near_identical_texts_are_dropped():
    assert pairs.dpo_row("p1", [cand(0, 4), cand(1, 3)], 2, 0.9).reason.startswith("small margin: 4 vs 3")
    tie = [cand(0, 4), cand(1, 4, text=PHRASES[2])]
    assert pairs.dpo_row("p1", tie, 0, 0.9).reason.startswith("small margin: every judged candidate scored 4")
    same = pairs.dpo_row("p1", [cand(0, 5, "Use a heap."), cand(1, 1, "  use a HEAP")], 1, 0.9)
    assert (same.status, same.reason.split(":")[0]) == ("filtered", "identical")
    long = "Sort the list with quicksort: pick a pivot, partition around it, and recurse on both halves. "
    near = pairs.dpo_row("p1", [cand(0, 5, long + "Done now."), cand(1, 1, long + "Done too.")], 1, 0.9)
    assert near.reason.startswith("near-identical") and near.output["similarity"] >= 0.9
    assert pairs.dpo_row("p1", [cand(0, 5, long + "Done now."), cand(1, 1, long + "Done too.")], 1, 1.0).status == "ok"


def test_unjudged_candidates_are_left_out_never_scored_zero():
    row = pairs.dpo_row("p1", [cand(0, 5), cand(1, None), cand(2, 3)], 1, 0.9)
    assert (row.status, row.output["rejected_score"], row.provenance["rejected_record_id"]) == ("ok", 3, 102)
    lone = pairs.dpo_row("p1", [cand(0, 5), cand(1, None)], 1, 0.9)
    assert (lone.status, lone.output) == ("failed", None) and lone.reason.startswith("too few judged: 1 of 2")
    kto = pairs.kto_rows({"p1": [cand(0, None), cand(1, 1)]}, 4, 2)
    assert [(r.status, r.output and r.output["label"]) for r in kto] == [("failed", None), ("ok", False)]


def test_kto_labels_by_the_thresholds_and_drops_the_middle_band_and_repeats():
    group = [cand(0, 5), cand(1, 4), cand(2, 3), cand(3, 2), cand(4, 1), cand(5, 5, text=cand(0, 5).text)]
    got = [(r.status, r.output["label"], r.reason and r.reason.split(":")[0])
           for r in pairs.kto_rows({"p1": group}, 4, 2)]
    assert got == [("ok", True, None), ("ok", True, None), ("filtered", None, "middle band"), ("ok", False, None),
                   ("ok", False, None), ("filtered", True, "repeated text")]
    strict = pairs.kto_rows({"p1": group[:5]}, 5, 1)
    assert [r.status for r in strict] == ["ok", "filtered", "filtered", "filtered", "ok"]


def test_rebalancing_down_samples_the_larger_label_with_a_fixed_seed():
    groups = {f"p{i}": [cand(0, 5, pid=f"p{i}"), cand(1, 5 if i % 4 else 1, pid=f"p{i}")] for i in range(20)}
    labelled = pairs.kto_rows(groups, 4, 2)  # 35 desirable, 5 undesirable
    once, again = pairs.rebalance(labelled, 2.0, seed=3), pairs.rebalance(labelled, 2.0, seed=3)
    assert once == again
    kept = [r.output["label"] for r in once if r.status == "ok"]
    assert (kept.count(True), kept.count(False)) == (10, 5)
    report = pairs.balance([(r.status, r.output["label"], r.reason) for r in once], (4, 2), 2.0)
    assert (report["desirable"], report["undesirable"], report["ratio"], report["downsampled"]) == (10, 5, 2.0, 25)
    assert pairs.rebalance(labelled, 10.0) == labelled  # already within 10:1
    other = {r.key for r in pairs.rebalance(labelled, 2.0, seed=4) if r.status == "ok"}
    assert other != {r.key for r in once if r.status == "ok"}


# -- end to end on the fake server -------------------------------------------------------------------------

def test_dpo_pairs_are_right_and_each_belongs_to_its_own_prompt_when_replies_arrive_out_of_order(shuffled, store,
                                                                                                  tmp_path):
    rng = random.Random(11)
    plant = {f"Question {i}: how do I use data structure {i}?": rng.sample([5, 4, 2, 1], 3) for i in range(12)}
    shuffled.reply = scripted(plant)
    result = align(shuffled, store, tmp_path, plant)
    assert (result.status, result.ok, result.failed, result.prompts) == ("done", 12, 0, 12)
    got = rows(result.job_id, store=store)
    assert len(got) == 12 and got["prompt"].tolist() == list(plant)  # the prompts' order, whatever the arrivals
    for row in got.itertuples():
        qualities = plant[row.prompt]
        assert row.chosen == answer(row.prompt, max(qualities)) and row.rejected == answer(row.prompt, min(qualities))
        assert (row.chosen_score, row.rejected_score, row.margin) == (max(qualities), min(qualities),
                                                                      max(qualities) - min(qualities))
        assert row.chosen_temperature == TEMPS[qualities.index(max(qualities))]
        assert row.chosen_justification == f"quality {max(qualities)}" and row.chosen_model == "fake-model"
    cand_job = result.stage_jobs["candidates"]
    stored = [(r["input"]["prompt"], r["input"]["temperature"]) for r in store.records("generation", cand_job)]
    asked = [(b["messages"][-1]["content"], b["temperature"]) for b in shuffled.sent if requested_schema(b) is None]
    assert sorted(stored) == sorted(asked) and stored != asked  # they did arrive out of order
    assert len(judge_requests(shuffled)) == 36 and result.requests_sent == 72
    meta = store.get_job("generation", result.job_id)
    assert (meta["technique"], meta["use_case"], meta["model_id"], meta["status"]) == ("dpo", "alignment",
                                                                                       "fake-model", "done")
    # its stages' sends, as its own; one more call: the server (llama.cpp's dialect) refused json_schema once
    assert (meta["requests"], meta["attempts"], result.attempts) == (72, 73, 73)
    params = meta["model_parameters"]
    assert (params["judge_model"], params["min_margin"], params["candidates"]) == ("fake-judge", 1.0, 3)
    assert params["stage_jobs"] == result.stage_jobs and [s["temperature"] for s in params["slots"]] == TEMPS
    assert store.get_job("evaluation", result.stage_jobs["evaluation"])["source_generation_id"] == cand_job


def test_small_margins_and_identical_candidates_are_dropped_with_the_reason(openai_server, store, tmp_path):
    plant = {"Q wide?": [5, 3, 1], "Q narrow?": [4, 4, 3], "Q same?": ["same words", "same words", "same words"],
             "Q tie?": ["alpha beta gamma delta epsilon", "one two three four five six", "red orange yellow green"]}
    openai_server.reply = scripted(plant)  # texts without Q=n are all judged 3
    result = align(openai_server, store, tmp_path, plant, min_margin=2)
    assert (result.ok, result.filtered, result.failed) == (1, 3, 0)
    table = rows(result.job_id, store=store, include_dropped=True).set_index("prompt")
    assert table.loc["Q wide?", "status"] == "ok"
    assert table.loc["Q narrow?", "reason"].startswith("small margin: 4 vs 3 is a margin of 1, below 2")
    assert table.loc["Q same?", "reason"].startswith("identical")
    assert table.loc["Q tie?", "reason"].startswith("small margin: every judged candidate scored 3")
    assert any("1 identical, 2 small margin" in note for note in result.notes)
    default = align(openai_server, store, tmp_path, plant)
    assert default.ok == 2  # a margin of 1 passes the default; identical texts and ties never do


def test_a_failed_judgement_is_retried_then_its_candidate_left_out_not_scored_zero(openai_server, store, tmp_path):
    plant = {"Q three?": [5, "UNJUDGEABLE", 2], "Q lonely?": [4, "UNJUDGEABLE", "UNJUDGEABLE"]}
    openai_server.reply = scripted(plant)
    result = align(openai_server, store, tmp_path, plant)
    bad = [b for b in judge_requests(openai_server) if "UNJUDGEABLE" in b["messages"][-1]["content"]]
    assert len(bad) == 6  # three unjudgeable candidates, each asked twice
    table = rows(result.job_id, store=store, include_dropped=True).set_index("prompt")
    assert (table.loc["Q three?", "status"], table.loc["Q three?", "rejected_score"]) == ("ok", 2)
    assert table.loc["Q lonely?", "status"] == "failed"
    assert table.loc["Q lonely?", "reason"].startswith("too few judged: 1 of 3")
    assert "the judgement failed" in table.loc["Q lonely?", "reason"]
    assert (result.ok, result.failed) == (1, 1)


def test_kto_labels_completions_and_reports_the_balance(openai_server, store, tmp_path):
    plant = {f"Q{i}?": [5, 3, 1] if i % 3 else [5, 4, 5] for i in range(9)}
    openai_server.reply = scripted(plant)
    result = align(openai_server, store, tmp_path, plant, method="kto")
    table = rows(result.job_id, store=store)
    assert list(table.columns[:3]) == ["prompt", "completion", "label"]
    # [5, 3, 1]: one each way, the 3 dropped; [5, 4, 5]: two desirable, the second 5 repeats the first
    assert (table["label"].sum(), (~table["label"]).sum()) == (6 + 6, 6)
    assert all(f"[{p}]" in c for p, c in zip(table["prompt"], table["completion"]))
    report = balance(result.job_id, store=store)
    assert result.balance == report
    assert (report["desirable"], report["undesirable"], report["ratio"]) == (12, 6, 2.0)
    assert (report["middle_band"], report["repeated"], report["desirable_at"], report["undesirable_at"]) == (6, 3, 4, 2)
    evened = align(openai_server, store, tmp_path, plant, method="kto", rebalance=1.0, seed=5)
    assert (evened.balance["desirable"], evened.balance["undesirable"], evened.balance["downsampled"]) == (6, 6, 6)
    with pytest.raises(ConfigError, match="balance is for KTO"):
        balance(align(openai_server, store, tmp_path, plant).job_id, store=store)


def test_a_finished_job_reruns_with_no_call_and_kto_reuses_the_dpo_candidates_and_judgements(openai_server, store,
                                                                                              tmp_path):
    plant = {"Q one?": [5, 3, 1], "Q two?": [1, 4, 2]}
    openai_server.reply = scripted(plant)
    first = align(openai_server, store, tmp_path, plant)
    sent = len(openai_server.requests)
    again = align(openai_server, store, tmp_path, plant)
    kto = align(openai_server, store, tmp_path, plant, method="kto")
    assert len(openai_server.requests) == sent and again.requests_sent == kto.requests_sent == 0
    assert (again.job_id, again.resumed, again.ok) == (first.job_id, True, first.ok)
    assert kto.job_id != first.job_id and kto.stage_jobs == first.stage_jobs
    assert rows(again.job_id, store=store).equals(rows(first.job_id, store=store))


def test_a_cancelled_run_resumes_without_asking_anything_twice(shuffled, store, tmp_path):
    plant = {f"Q{i}?": [5, 3, 1] for i in range(20)}
    stop, seen = threading.Event(), []
    inner = scripted(plant)

    def reply(body):
        seen.append(body)
        if len(seen) == 15:
            stop.set()
        return inner(body)

    shuffled.reply = reply
    config = AlignmentJob(input_file=prompts_file(tmp_path, list(plant)), prompt_column="question", candidates=3,
                          model=spec(shuffled), judge=spec(shuffled, "fake-judge"), run=FAST)
    progress = []
    cut = AlignmentRun(config, store=store).run(cancel_event=stop, on_progress=progress.append)
    assert cut.status == "cancelled" and store.get_job("generation", cut.job_id)["status"] == "cancelled"
    assert progress and progress[-1].note.startswith("writing candidates")
    done = AlignmentRun(config, store=store).run(resume=cut.job_id)
    assert (done.status, done.job_id, done.ok) == ("done", cut.job_id, 20)
    bodies = [json.dumps([b["model"], b["messages"], b.get("temperature")]) for b in shuffled.requests]
    assert len(bodies) == len(set(bodies)) == 20 * 3 * 2  # every candidate and judgement asked exactly once


def test_prompts_come_from_a_generation_job_or_from_topics(openai_server, store, tmp_path):
    openai_server.reply = scripted({})
    source = store.create_job("generation", use_case="code_generation", status="done")
    store.add_records([Record("generation", source, f"k{i}", "ok", topic="Heaps",
                              output={"question": f"What is heap {i}?", "solution": "s", "explanation": "e"})
                       for i in range(3)])
    from_job = align(openai_server, store, tmp_path, {}, input_file=None, prompt_column=None, source_job=source)
    assert sorted(rows(from_job.job_id, store=store)["prompt"]) == [f"What is heap {i}?" for i in range(3)]
    assert set(rows(from_job.job_id, store=store)["topic"]) == {"Heaps"}
    with pytest.raises(ConfigError, match="no 'prompt' field in its items"):
        align(openai_server, store, tmp_path, {}, input_file=None, prompt_column="prompt", source_job=source)
    from_topics = align(openai_server, store, tmp_path, {}, input_file=None, prompt_column=None,
                        topics=["Tries", "Graphs"], prompts_per_topic=2)
    assert (from_topics.status, from_topics.prompts, from_topics.ok) == ("done", 4, 4)
    written = store.get_job("generation", from_topics.stage_jobs["prompts"])
    assert (written["use_case"], written["technique"]) == ("alignment", "sft")
    assert set(rows(from_topics.job_id, store=store)["topic"]) == {"Tries", "Graphs"}


def test_a_strong_and_a_weak_model_answer_in_turn_and_the_strong_one_is_chosen(openai_server, store, tmp_path):
    openai_server.reply = scripted({}, by_model={"fake-model": 5, "fake-judge": 2})
    plant = {"Q a?": [], "Q b?": []}
    result = align(openai_server, store, tmp_path, plant, candidates=2,
                   candidate_models=[spec(openai_server), spec(openai_server, "fake-judge")])
    table = rows(result.job_id, store=store)
    assert set(zip(table["chosen_model"], table["rejected_model"])) == {("fake-model", "fake-judge")}
    assert store.get_job("generation", result.job_id)["model_id"] == "fake-model, fake-judge"


@pytest.mark.parametrize("style, columns", [("dpo", ["prompt", "chosen", "rejected"]),
                                            ("kto", ["prompt", "completion", "label"])])
def test_the_export_loads_with_datasets_with_exactly_trls_columns(openai_server, store, tmp_path, monkeypatch,
                                                                  style, columns):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)  # local files only
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    plant = {f"Q{i}?": [5, 3, 1] for i in range(4)}
    openai_server.reply = scripted(plant)
    result = align(openai_server, store, tmp_path, plant, method=style)
    done = export_dataset(ExportJob(jobs=[result.job_id], style=style, format="jsonl"), store=store)
    data = datasets.load_dataset("json", data_files=done.paths[0], cache_dir=str(tmp_path / "cache"))["train"]
    assert data.column_names == columns and data.num_rows == result.ok
    if style == "kto":
        assert data.features["label"].dtype == "bool" and sorted(set(data["label"])) == [False, True]
    else:
        assert all(c != r for c, r in zip(data["chosen"], data["rejected"]))
    raw = export_dataset(ExportJob(jobs=[result.job_id], style="raw", format="jsonl"), store=store)
    first = json.loads(Path(raw.paths[0]).read_text().splitlines()[0])
    assert ("margin" if style == "dpo" else "justification") in first


# -- the command ------------------------------------------------------------------------------------------

def sdstudio(*args: str, home: Path, check_exit: int | None = 0) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "sdstudio.cli", *args, "--home", str(home)], capture_output=True,
                          text=True, cwd=ROOT, timeout=120, env={**os.environ, "SDSTUDIO_DEBUG": ""})
    if check_exit is not None:
        assert proc.returncode == check_exit, proc.stderr
    return proc


def fake(server) -> list[str]:
    return ["--provider", "openai_compatible", "--model", "fake-model", "--base-url", server.url]


def test_align_then_export_from_the_command_line(openai_server, tmp_path):
    plant = {"Q one?": [5, 3, 1], "Q two?": [2, 4, 5], "Q three?": [3, 3, 3]}
    openai_server.reply = scripted(plant)
    source = prompts_file(tmp_path, list(plant))
    out = sdstudio("align", "--input", source, "--prompt-col", "question", "--method", "dpo", "-k", "3",
                   "--judge-model", "fake-judge", *fake(openai_server), "--json", home=tmp_path / "h")
    summary = json.loads(out.stdout)
    assert {"job_id", "status", "ok", "failed", "filtered", "tokens_in", "tokens_out", "cost_usd",
            "elapsed_s"} <= set(summary)
    assert (summary["status"], summary["ok"], summary["filtered"], summary["method"]) == ("done", 2, 1, "dpo")
    assert {b["model"] for b in judge_requests(openai_server)} == {"fake-judge"}
    exported = sdstudio("export", "--job", str(summary["job_id"]), "--style", "dpo", "--json", home=tmp_path / "h")
    lines = Path(json.loads(exported.stdout)["paths"][0]).read_text().splitlines()
    assert [sorted(json.loads(line)) for line in lines] == [["chosen", "prompt", "rejected"]] * 2
    sent = len(openai_server.requests)
    again = sdstudio("align", "--resume", str(summary["job_id"]), *fake(openai_server), home=tmp_path / "h")
    assert len(openai_server.requests) == sent and "dpo: 2 pairs from 3 prompts" in again.stderr


@pytest.fixture
def cli(monkeypatch, capsys):
    """``sdstudio ...`` in this process (the same ``main`` as the console script, without a 2 s start-up):
    returns (exit code, stdout, stderr)."""
    from sdstudio.cli import main

    monkeypatch.setattr("sdstudio.cli.signal.signal", lambda *a: None)  # leave pytest's own handlers alone
    monkeypatch.delenv("SDSTUDIO_DEBUG", raising=False)
    monkeypatch.setenv("SDSTUDIO_HOME", "unset")  # main() sets it from --home; monkeypatch puts it back

    def run(*args: str, home: Path) -> tuple[int, str, str]:
        code = main([*args, "--home", str(home)])
        out = capsys.readouterr()
        return code, out.out, out.err
    return run


def test_align_dry_run_makes_no_call_and_writes_nothing(openai_server, tmp_path, cli):
    source = prompts_file(tmp_path, ["How do I merge two sorted lists?", "Why is my loop slow?"])
    home = tmp_path / "fresh"
    code, out, err = cli("align", "--input", source, "--prompt-col", "question", "-k", "4", *fake(openai_server),
                         "--system-prompt", "Be brief.", "--dry-run", home=home)
    assert code == 0 and out.startswith("[system] Be brief.") and "How do I merge two sorted lists?" in out
    assert "2 prompts x 4 candidates, 16 requests" in err
    code, out, _ = cli("align", "--topics", "Heaps", "--per-topic", "3", *fake(openai_server), "--dry-run", "--json",
                       home=home)
    shown = json.loads(out)
    assert (shown["first_stage"], shown["prompts"], shown["requests"]) == ("prompts", 3, 1 + 3 * 4 * 2)
    assert "<topic>Heaps</topic>" in shown["prompt"]
    assert openai_server.requests == [] and not home.exists()


@pytest.mark.parametrize("args, message", [
    (["--input", "missing.jsonl", "--prompt-col", "q"], "input file missing.jsonl does not exist"),
    (["--input", "PROMPTS"], "needs --prompt-col"),
    (["--input", "PROMPTS", "--prompt-col", "nope"], "has no prompt column 'nope'"),
    (["--input", "PROMPTS", "--prompt-col", "question", "-k", "1"], "candidates"),
    (["--input", "PROMPTS", "--prompt-col", "question", "--judge-provider", "nope"], "unknown provider 'nope'"),
    (["--job", "9"], "no generation job with id 9")])
def test_bad_align_input_exits_2_with_one_line(openai_server, tmp_path, cli, args, message):
    source = prompts_file(tmp_path, ["How?"])
    code, out, err = cli("align", *[source if a == "PROMPTS" else a for a in args], *fake(openai_server),
                         home=tmp_path / "h")
    assert (code, out) == (2, "") and message in err and len(err.strip().splitlines()) == 1
    assert openai_server.requests == []


def test_the_shipped_example_runs(openai_server, tmp_path):
    openai_server.reply = scripted({}, default=[5, 4, 2, 1])
    out = sdstudio("align", "--config", str(ROOT / "examples" / "align.yaml"), *fake(openai_server), "--json",
                   home=tmp_path)
    summary = json.loads(out.stdout)
    assert summary["status"] == "done" and summary["ok"] > 0 and summary["failed"] == 0
    with sqlite3.connect(tmp_path / "metadata.db") as conn:
        assert conn.execute("SELECT technique FROM generation_metadata WHERE id = ?",
                            (summary["job_id"],)).fetchone() == ("dpo",)
