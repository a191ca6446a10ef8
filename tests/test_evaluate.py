"""LLM-as-judge: scale and reply validation, statistics, filtering, review, second judge, CLI, embedded model."""
from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from sdstudio.config import EvaluationJob, JudgeExample, ModelParameters, ModelSpec, RunSettings, load_config
from sdstudio.engine import InvalidOutput
from sdstudio.errors import ConfigError, SdstudioError
from sdstudio.providers import Completion
from sdstudio.store import Record
from sdstudio.workflows.evaluate import (
    EvaluationPlan,
    EvaluationRun,
    histogram,
    latest_scores,
    parse_judgement,
    preview,
    review,
    scores,
    select,
    summary,
)
from tests.fakes.openai_server import requested_schema

ROOT = Path(__file__).resolve().parent.parent
FAST = RunSettings(backoff_base_s=0.01, backoff_max_s=0.05, concurrency=8)


# -- helpers --------------------------------------------------------------------------------------

def spec(server, model: str = "fake-model") -> ModelSpec:
    return ModelSpec(provider="openai_compatible", model=model, base_url=server.url,
                     parameters=ModelParameters(max_tokens=200))


def planted_job(store, items: list[tuple[str, dict]], use_case: str = "code_generation") -> tuple[int, list[int]]:
    """A finished generation job holding ``items`` as (topic, output) ok records; returns (job id, record ids)."""
    job_id = store.create_job("generation", use_case=use_case, status="done", config={"use_case": use_case})
    store.add_records([Record(job_kind="generation", job_id=job_id, item_key=f"k{i}", status="ok", topic=topic,
                              output=output) for i, (topic, output) in enumerate(items)])
    return job_id, [r["id"] for r in store.records("generation", job_id)]


def qa(question: str, solution: str = "def f(): return 1", explanation: str = "returns one") -> dict:
    return {"question": question, "solution": solution, "explanation": explanation}


def judge(score_of):
    """A fake-server reply: ``score_of(prompt_text, body)`` gives the score (or a raw str reply)."""
    def reply(body):
        got = score_of(body["messages"][-1]["content"], body)
        return got if isinstance(got, str) else json.dumps({"score": got, "justification": f"scored {got}"})
    return reply


def question_in(prompt: str) -> str:
    return re.search(r"<question>(.*?)</question>", prompt.split("<topic>")[-1], re.DOTALL).group(1)


def evaluate(server, store, **fields):
    fields.setdefault("model", spec(server))
    return EvaluationRun(EvaluationJob(run=FAST, **fields), store=store).run()


def asked(server, text: str) -> int:
    return sum(text in b["messages"][-1]["content"] for b in server.requests)


# -- scale and replies ----------------------------------------------------------------------------

@pytest.mark.parametrize("scale, message", [([5, 1], "scale 5-1 is empty"), ([3, 3], "scale 3-3 is empty"),
                                            (["a", 5], "scale"), ([1, 2, 3], "scale")])
def test_a_bad_scale_is_refused_with_one_line(scale, message):
    with pytest.raises(ConfigError, match=message) as info:
        load_config({"kind": "evaluation", "source_job": 1, "scale": scale})
    assert "\n" not in str(info.value)


def test_any_integer_range_is_a_scale_and_examples_must_fit_it():
    assert load_config({"kind": "evaluation", "source_job": 1, "scale": [0, 100]}).scale == (0, 100)
    assert load_config({"kind": "evaluation", "source_job": 1, "scale": [-2, 2]}).scale == (-2, 2)
    example = {"prompt": "p", "completion": "c", "score": 7, "justification": "j"}
    with pytest.raises(ConfigError, match="judge example score 7 is outside the scale 1-5"):
        load_config({"kind": "evaluation", "source_job": 1, "scale": [1, 5], "examples": [example]})


def test_a_judge_runs_at_temperature_zero_unless_told_otherwise():
    assert EvaluationJob(source_job=1).model.parameters.temperature == 0
    assert EvaluationJob(source_job=1, model=ModelSpec(provider="openai", model="m")).model.parameters.temperature == 0
    told = EvaluationJob(source_job=1, model={"parameters": {"temperature": 0.4}})
    assert told.model.parameters.temperature == 0.4


@pytest.mark.parametrize("text, expected", [
    ('{"score": 4, "justification": "fine"}', 4), ('{"score": "5", "justification": "ok"}', 5),
    ('Sure! ```json\n{"score": 2.0, "justification": "weak"}\n```', 2), ("{'score': 1, 'justification': 'bad',}", 1)])
def test_sloppy_but_valid_judgements_parse(text, expected):
    assert parse_judgement(Completion(text=text), (1, 5))["score"] == expected


@pytest.mark.parametrize("text, reason", [
    ('{"score": 0, "justification": "x"}', "score 0 is outside the scale 1-5"),
    ('{"score": 6, "justification": "x"}', "score 6 is outside the scale 1-5"),
    ('{"score": 3.5, "justification": "x"}', "not an integer"),
    ('{"score": true, "justification": "x"}', "not an integer"),
    ('{"score": 3}', "no justification"), ('{"justification": "x"}', "no score"),
    ("I would give this a four.", "no JSON"), ('{"score": 4, "justification": "cut o', "ends before its JSON closes")])
def test_unusable_judgements_raise_invalid_output(text, reason):
    with pytest.raises(InvalidOutput, match=reason):
        parse_judgement(Completion(text=text), (1, 5))


def test_the_judge_request_carries_a_schema_bounded_by_the_scale(store):
    job_id, _ = planted_job(store, [("Heaps", qa("What is a heap?"))])
    plan = EvaluationPlan.build(EvaluationJob(source_job=job_id, scale=(1, 10)), store)
    score = plan.judgement_schema()["properties"]["score"]
    assert (score["type"], score["minimum"], score["maximum"]) == ("integer", 1, 10)
    assert plan.judgement_schema()["required"] == ["score", "justification"]
    assert "from 1 (worst) to 10 (best)" in plan.prompt(plan.pairs[0])


# -- runs on the fake server ----------------------------------------------------------------------

def test_a_job_is_judged_end_to_end_with_records_in_the_agreed_shape(openai_server, store):
    job_id, ids = planted_job(store, [("Heaps", qa("What is a heap?", explanation="a tree")),
                                      ("Tries", qa("What is a trie?"))])
    result = evaluate(openai_server, store, source_job=job_id)
    assert (result.status, result.ok, result.failed) == ("done", 2, 0)
    body = openai_server.requests[0]
    assert requested_schema(body)["properties"]["score"]["maximum"] == 5
    assert body["temperature"] == 0
    prompts = [b["messages"][-1]["content"] for b in openai_server.requests]
    prompt = next(p for p in prompts if "heap?" in p)
    assert "<question>What is a heap?</question>" in prompt and "<explanation>a tree</explanation>" in prompt
    assert "The explanation is accurate" in prompt  # the use case's default criteria
    rows = {r["provenance"]["source_record_id"]: r for r in store.records("evaluation", result.job_id)}
    heap = rows[ids[0]]
    assert heap["topic"] == "Heaps"
    assert heap["input"] == {"prompt": "What is a heap?", "completion": "def f(): return 1"}
    assert heap["provenance"] == {"source_record_id": ids[0], "source_job_id": job_id, "row": None}
    assert set(heap["output"]) == {"score", "justification"} and 1 <= heap["output"]["score"] <= 5
    meta = store.get_job("evaluation", result.job_id)
    assert meta["source_generation_id"] == job_id and meta["model_id"] == "fake-model"
    assert (meta["scale_min"], meta["scale_max"], meta["inference_type"]) == (1, 5, "openai_compatible")
    assert meta["model_parameters"]["temperature"] == 0 and meta["criteria"].startswith("- The question")
    assert meta["average_score"] == result.average_score == sum(r["output"]["score"] for r in rows.values()) / 2


def test_out_of_scale_and_unparseable_judgements_are_retried_once_then_failed_and_not_averaged(openai_server, store):
    planted = {"Q one?": 5, "Q two?": 3, "Q nine?": 9, "Q prose?": "It is a fine answer, I'd say 4."}
    job_id, _ = planted_job(store, [("T", qa(q)) for q in planted])
    openai_server.reply = judge(lambda prompt, body: planted[question_in(prompt)])
    result = evaluate(openai_server, store, source_job=job_id)
    assert (result.ok, result.failed) == (2, 2)
    assert asked(openai_server, "Q nine?") == asked(openai_server, "Q prose?") == 2  # retried once
    assert asked(openai_server, "Q one?") == 1
    failed = {r["input"]["prompt"]: r for r in store.records("evaluation", result.job_id, "failed")}
    assert "score 9 is outside the scale 1-5" in failed["Q nine?"]["error"] and failed["Q nine?"]["raw_text"]
    assert "no JSON" in failed["Q prose?"]["error"] and failed["Q prose?"]["output"] is None
    meta = store.get_job("evaluation", result.job_id)
    assert meta["average_score"] == 4.0  # (5 + 3) / 2: failed judgements are not zeros
    assert meta["failed"] == 2 and sum(meta["score_distribution"].values()) == 2
    assert meta["topic_stats"]["topics"]["T"] == {"mean": 4.0, "min": 3, "max": 5, "count": 2, "failed": 2}
    frame = scores(result.job_id, store)
    assert frame["score"].isna().sum() == 2 and frame["score"].mean() == 4.0


def test_a_judgement_that_comes_right_on_the_retry_is_kept(openai_server, store):
    job_id, _ = planted_job(store, [("T", qa("Q flaky?"))])
    replies = iter(["no idea", json.dumps({"score": 4, "justification": "good"})])
    openai_server.reply = lambda body: next(replies)
    result = evaluate(openai_server, store, source_job=job_id)
    assert (result.ok, result.failed, len(openai_server.requests)) == (1, 0, 2)


def test_per_topic_statistics_on_a_planted_dataset(openai_server, store):
    planted = {("Graphs", "G1?"): 5, ("Graphs", "G2?"): 4, ("Graphs", "G3?"): 3, ("Sorting", "S1?"): 1,
               ("Sorting", "S2?"): 2, ("Hashing", "H1?"): 77}
    job_id, _ = planted_job(store, [(topic, qa(q)) for topic, q in planted])
    by_question = {q: s for (_, q), s in planted.items()}
    openai_server.reply = judge(lambda prompt, body: by_question[question_in(prompt)])
    result = evaluate(openai_server, store, source_job=job_id)
    meta = store.get_job("evaluation", result.job_id)
    assert meta["topic_stats"]["topics"] == {
        "Graphs": {"mean": 4.0, "min": 3, "max": 5, "count": 3, "failed": 0},
        "Sorting": {"mean": 1.5, "min": 1, "max": 2, "count": 2, "failed": 0},
        "Hashing": {"mean": None, "min": None, "max": None, "count": 0, "failed": 1}}
    assert meta["score_distribution"] == {"1": 1, "2": 1, "3": 1, "4": 1, "5": 1}
    assert meta["average_score"] == 3.0 and (meta["ok"], meta["failed"]) == (5, 1)
    shown = summary(result.job_id, store)
    assert shown["topics"] == meta["topic_stats"]["topics"] and shown["average_score"] == 3.0
    assert (shown["judged"], shown["failed"], shown["scale"]) == (5, 1, [1, 5])


def test_criteria_scale_and_few_shot_examples_reach_the_prompt_and_the_metadata(openai_server, store):
    job_id, _ = planted_job(store, [("T", qa("Q?"))])
    example = JudgeExample(prompt="What is 2+2?", completion="5", score=1, justification="Wrong sum.")
    openai_server.reply = judge(lambda prompt, body: 8)
    result = evaluate(openai_server, store, source_job=job_id, criteria="- Be kind to beginners", scale=(1, 10),
                      examples=[example])
    prompt = openai_server.requests[0]["messages"][-1]["content"]
    assert "- Be kind to beginners" in prompt and "from 1 (worst) to 10 (best)" in prompt
    assert '<question>What is 2+2?</question>' in prompt and '{"score": 1, "justification": "Wrong sum."}' in prompt
    meta = store.get_job("evaluation", result.job_id)
    assert (meta["criteria"], meta["scale_min"], meta["scale_max"]) == ("- Be kind to beginners", 1, 10)
    assert meta["examples"] == [example.model_dump()] and meta["average_score"] == 8


def test_a_freeform_row_is_judged_whole_as_json(openai_server, store):
    job_id, _ = planted_job(store, [("Garden", {"product": "Rake", "price_usd": 12.5})], use_case="freeform")
    result = evaluate(openai_server, store, source_job=job_id)
    (row,) = store.records("evaluation", result.job_id)
    assert row["input"]["prompt"] == "" and json.loads(row["input"]["completion"]) == {"product": "Rake",
                                                                                        "price_usd": 12.5}
    assert '<row>{"product": "Rake", "price_usd": 12.5}</row>' in openai_server.requests[0]["messages"][-1]["content"]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_an_uploaded_file_is_judged_with_the_named_columns(openai_server, store, tmp_path, suffix):
    frame = pd.DataFrame({"ask": ["Q a?", "Q b?", "Q c?"], "reply": ["A a", "A b", "A c"],
                          "area": ["x", "x", "y"], "other": [1, 2, 3]})
    path = tmp_path / f"pairs{suffix}"
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    elif suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True)
    else:
        frame.to_parquet(path)
    scores_by_q = {"Q a?": 2, "Q b?": 4, "Q c?": 5}
    openai_server.reply = judge(lambda prompt, body: scores_by_q[question_in(prompt)])
    result = evaluate(openai_server, store, input_file=str(path), prompt_column="ask", completion_column="reply",
                      topic_column="area")
    rows = sorted(store.records("evaluation", result.job_id), key=lambda r: r["provenance"]["row"])
    assert [r["input"] for r in rows] == [{"prompt": f"Q {c}?", "completion": f"A {c}"} for c in "abc"]
    assert [r["provenance"] for r in rows] == [{"source_record_id": None, "source_job_id": None, "row": i}
                                               for i in range(3)]
    meta = store.get_job("evaluation", result.job_id)
    assert meta["source_generation_id"] is None and meta["topic_stats"]["topics"]["x"]["mean"] == 3.0


def test_a_missing_file_or_column_is_a_one_line_config_error(openai_server, store, tmp_path):
    with pytest.raises(ConfigError, match="input file .*nope.csv does not exist"):
        evaluate(openai_server, store, input_file=str(tmp_path / "nope.csv"), prompt_column="p", completion_column="c")
    path = tmp_path / "pairs.csv"
    path.write_text("prompt,answer\nhi,there\n")
    with pytest.raises(ConfigError, match="has no completion column 'completion' \\(columns: prompt, answer\\)"):
        evaluate(openai_server, store, input_file=str(path), prompt_column="prompt", completion_column="completion")
    with pytest.raises(SdstudioError, match="no generation job with id 42"):
        evaluate(openai_server, store, source_job=42)
    assert openai_server.requests == []


def test_reevaluating_a_finished_evaluation_makes_zero_calls(openai_server, store):
    job_id, _ = planted_job(store, [("T", qa(f"Question {i}?")) for i in range(5)])
    first = evaluate(openai_server, store, source_job=job_id)
    sent = len(openai_server.requests)
    again = evaluate(openai_server, store, source_job=job_id)
    assert len(openai_server.requests) == sent == 5
    assert (again.job_id, again.resumed, again.requests_sent, again.ok) == (first.job_id, True, 0, 5)
    assert again.average_score == first.average_score


def test_a_judgement_whose_source_row_was_filtered_goes_stale_and_comes_back_with_it(openai_server, store):
    job_id, ids = planted_job(store, [("T", qa("Keep?")), ("T", qa("Drop?"))])
    first = evaluate(openai_server, store, source_job=job_id)
    store.set_record_status([ids[1]], "filtered", "duplicate")
    again = evaluate(openai_server, store, source_job=job_id)
    assert len(openai_server.requests) == 2 and (again.ok, again.filtered) == (1, 1)
    assert list(scores(first.job_id, store)["prompt"]) == ["Keep?"] and set(latest_scores(store, job_id)) == {ids[0]}
    store.set_record_status([ids[1]], "ok")
    back = evaluate(openai_server, store, source_job=job_id)
    assert len(openai_server.requests) == 2 and (back.ok, back.filtered) == (2, 0)


def test_a_cancelled_evaluation_resumes_where_it_stopped(openai_server, store):
    import threading

    job_id, _ = planted_job(store, [("T", qa(f"Question {i}?")) for i in range(3)])
    stop = threading.Event()
    stop.set()
    config = EvaluationJob(source_job=job_id, model=spec(openai_server), run=FAST,
                           second_judge=spec(openai_server, "fake-judge"))
    cancelled = EvaluationRun(config, store=store).run(cancel_event=stop)
    assert cancelled.status == "cancelled" and openai_server.requests == []  # and no second judge started
    done = EvaluationRun(config, store=store).run()
    assert (done.job_id, done.status, done.ok, len(openai_server.requests)) == (cancelled.job_id, "done", 3, 6)


def test_the_threshold_filter_and_latest_scores(openai_server, store):
    planted = {"Q1?": 1, "Q2?": 3, "Q3?": 4, "Q4?": 5, "Q5?": 42}
    job_id, ids = planted_job(store, [("T", qa(q)) for q in planted])
    openai_server.reply = judge(lambda prompt, body: planted[question_in(prompt)])
    result = evaluate(openai_server, store, source_job=job_id)
    assert list(select(result.job_id, min_score=4, store=store)["prompt"]) == ["Q3?", "Q4?"]
    assert len(select(result.job_id, store=store)) == 4  # failed judgements never pass a filter
    frame = scores(result.job_id, store)
    review(int(frame.loc[frame["prompt"] == "Q4?", "record_id"].iloc[0]), "ana", "reject", store=store)
    review(ids[1], "ana", "accept", store=store)  # a generation record id works too
    assert list(select(result.job_id, min_score=4, store=store)["prompt"]) == ["Q3?"]
    assert list(select(result.job_id, accepted_only=True, store=store)["prompt"]) == ["Q2?"]
    assert list(select(result.job_id, min_score=4, drop_rejected=False, store=store)["prompt"]) == ["Q3?", "Q4?"]
    assert latest_scores(store, job_id) == {ids[0]: 1, ids[1]: 3, ids[2]: 4, ids[3]: 5}
    assert latest_scores(store, job_id + 1) == {}


def test_a_review_round_trip_keeps_the_edit_beside_the_original(openai_server, store):
    original = qa("What does len() return?", solution="len('abc') -> 3", explanation="counts items")
    job_id, (rid,) = planted_job(store, [("Builtins", original)])
    result = evaluate(openai_server, store, source_job=job_id)
    eval_id = int(scores(result.job_id, store)["record_id"].iloc[0])
    review(eval_id, "ana", edited_output={"explanation": "the number of items"}, note="clearer", store=store)
    review(eval_id, "ben", "accept", store=store)
    (gen,) = store.records("generation", job_id)
    assert gen["output"] == original  # never overwritten
    history = store.reviews(rid)
    assert [(h["reviewer"], h["verdict"]) for h in history] == [("ana", None), ("ben", "accept")]
    assert history[-1]["edited_output"] == {**original, "explanation": "the number of items"}  # the edit carries on
    row = scores(result.job_id, store).iloc[0]
    assert (row["verdict"], row["reviewer"]) == ("accept", "ben")
    assert row["edited"]["explanation"] == "the number of items"
    assert summary(result.job_id, store)["reviews"] == {"accepted": 1, "rejected": 0, "edited": 1}
    with pytest.raises(ConfigError, match="verdict must be 'accept' or 'reject'"):
        review(eval_id, "ana", "maybe", store=store)
    with pytest.raises(ConfigError, match="no field\\(s\\) answer"):
        review(eval_id, "ana", edited_output={"answer": "x"}, store=store)
    with pytest.raises(ConfigError, match="no record with id 999"):
        review(999, "ana", "accept", store=store)


def test_a_reviewed_file_row_keeps_its_edit_on_the_evaluation_record(openai_server, store, tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps({"p": "Hi?", "c": "Hello"}) + "\n")
    result = evaluate(openai_server, store, input_file=str(path), prompt_column="p", completion_column="c")
    eval_id = int(scores(result.job_id, store)["record_id"].iloc[0])
    review(eval_id, "ana", "accept", edited_output={"completion": "Hello there!"}, store=store)
    assert store.reviews(eval_id)[0]["edited_output"] == {"prompt": "Hi?", "completion": "Hello there!"}
    assert next(store.records("evaluation", result.job_id))["input"]["completion"] == "Hello"


def test_a_second_judge_gives_agreement_figures_and_never_replaces_the_first(openai_server, store):
    planted = {"A?": 5, "B?": 4, "C?": 2, "D?": 1}
    job_id, ids = planted_job(store, [("T", qa(q)) for q in planted])

    def score(prompt, body):
        first = planted[question_in(prompt)]
        return first if body["model"] == "fake-model" or question_in(prompt) in ("A?", "B?") else first + 2

    openai_server.reply = judge(score)
    result = evaluate(openai_server, store, source_job=job_id, second_judge=spec(openai_server, "fake-judge"))
    assert len(openai_server.requests) == 8
    expected = {"second_judge_job": result.job_id + 1, "model_id": "fake-judge", "compared": 4,
                "exact_agreement": 0.5, "within_one": 0.5, "mean_abs_diff": 1.0}
    assert result.agreement == expected
    assert store.get_job("evaluation", result.job_id)["topic_stats"]["agreement"] == expected
    assert summary(result.job_id, store)["agreement"] == expected
    assert list(scores(result.job_id, store)["second_score"]) == [5, 4, 4, 3]
    assert latest_scores(store, job_id) == dict(zip(ids, [5, 4, 2, 1]))  # the primary judge's
    again = evaluate(openai_server, store, source_job=job_id, second_judge=spec(openai_server, "fake-judge"))
    assert len(openai_server.requests) == 8 and again.agreement == expected


def test_the_histogram_is_a_matplotlib_figure_of_the_scores(openai_server, store):
    job_id, _ = planted_job(store, [("T", qa(f"Q{i}?")) for i in range(4)])
    result = evaluate(openai_server, store, source_job=job_id)
    fig = histogram(result.job_id, store)
    (ax,) = fig.axes
    assert sum(p.get_height() for p in ax.patches) == 4 and ax.get_xlabel() == "score (1-5)"
    assert fig._repr_png_().startswith(b"\x89PNG")


def test_preview_shows_the_first_judge_prompt_without_a_call(openai_server, store):
    job_id, _ = planted_job(store, [("T", qa("First question?")), ("T", qa("Second question?"))])
    shown = preview(EvaluationJob(source_job=job_id, model=spec(openai_server)))
    assert "<question>First question?</question>" in shown.prompt and (shown.rows, shown.requests) == (2, 2)
    assert shown.est_tokens_in > shown.prompt_tokens and openai_server.requests == []


# -- the CLI --------------------------------------------------------------------------------------

def fake(server, model: str = "fake-model") -> list[str]:
    return ["--provider", "openai_compatible", "--model", model, "--base-url", server.url]


@pytest.fixture
def cli(tmp_path, monkeypatch, capsys):
    """``sdstudio ...`` in-process (the subprocess path is covered once below and in test_cli.py):
    returns (exit code, stdout, stderr)."""
    import signal

    from sdstudio.cli import main

    monkeypatch.setenv("SDSTUDIO_HOME", str(tmp_path))  # main() sets it; restored after the test
    monkeypatch.delenv("SDSTUDIO_DEBUG", raising=False)
    previous = signal.getsignal(signal.SIGTERM)

    def run(*args: str, home: Path = tmp_path) -> tuple[int, str, str]:
        capsys.readouterr()
        try:
            code = main([*args, "--home", str(home)])
        finally:
            signal.signal(signal.SIGTERM, previous)
        out, err = capsys.readouterr()
        return code, out, err

    return run


def test_cli_evaluates_a_generation_job_and_prints_one_json_summary(openai_server, tmp_path):
    from sdstudio.store import Store

    store = Store.open(tmp_path)
    planted_job(store, [("Heaps", qa("What is a heap?")), ("Heaps", qa("What is a min-heap?"))])
    store.close()
    args = [sys.executable, "-m", "sdstudio.cli", "evaluate", *fake(openai_server), "--job", "1", "--json",
            "--home", str(tmp_path)]
    proc = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    shown = json.loads(proc.stdout)
    assert {"job_id", "status", "ok", "failed", "filtered", "tokens_in", "tokens_out", "cost_usd",
            "elapsed_s", "average_score"} <= set(shown)
    assert (shown["status"], shown["ok"], shown["failed"]) == ("done", 2, 0)
    with sqlite3.connect(tmp_path / "metadata.db") as conn:
        assert conn.execute("SELECT COUNT(*) FROM records WHERE job_kind = 'evaluation'").fetchone() == (2,)


def test_cli_without_json_prints_a_human_summary_with_the_average(openai_server, cli):
    assert cli("generate", *fake(openai_server), "--topics", "Heaps", "--per-topic", "2", "--json")[0] == 0
    code, out, err = cli("evaluate", *fake(openai_server), "--job", "1")
    assert code == 0 and out == "" and "evaluation job 2 done: 2 ok" in err and "average score" in err


def test_cli_judges_a_file_with_a_scale_and_a_criteria_file(openai_server, tmp_path, cli):
    data = tmp_path / "pairs.csv"
    pd.DataFrame({"q": ["Why?", "How?"], "a": ["Because.", "Like so."]}).to_csv(data, index=False)
    criteria = tmp_path / "criteria.txt"
    criteria.write_text("- Answers must be polite\n")
    openai_server.reply = judge(lambda prompt, body: 9)
    code, out, _ = cli("evaluate", *fake(openai_server), "--input", str(data), "--prompt-col", "q",
                       "--completion-col", "a", "--scale", "1-10", "--criteria-file", str(criteria), "--json")
    assert code == 0 and json.loads(out)["average_score"] == 9
    prompt = openai_server.requests[0]["messages"][-1]["content"]
    assert "- Answers must be polite" in prompt and "from 1 (worst) to 10 (best)" in prompt


def test_cli_dry_run_shows_the_judge_prompt_and_makes_no_call_and_writes_nothing(openai_server, tmp_path, cli):
    data = tmp_path / "pairs.jsonl"
    data.write_text(json.dumps({"q": "Why is the sky blue?", "a": "Rayleigh scattering."}) + "\n")
    home = tmp_path / "fresh"
    code, out, err = cli("evaluate", *fake(openai_server), "--input", str(data), "--prompt-col", "q",
                         "--completion-col", "a", "--dry-run", home=home)
    assert code == 0 and "<question>Why is the sky blue?</question>" in out and "requests" in err
    assert openai_server.requests == [] and not (home / "metadata.db").exists()
    code, _, err = cli("evaluate", *fake(openai_server), "--job", "1", "--dry-run", home=home)
    assert code == 2 and "no generation job with id 1" in err and not (home / "metadata.db").exists()


@pytest.mark.parametrize("args, message", [
    (["--job", "1", "--scale", "5-1"], "scale 5-1 is empty"),
    (["--job", "1", "--scale", "five"], "--scale 'five' is not a range"),
    (["--input", "pairs.csv", "--prompt-col", "q", "--completion-col", "nope"], "has no completion column 'nope'"),
    (["--input", "missing.csv", "--prompt-col", "q", "--completion-col", "a"], "missing.csv does not exist"),
    (["--input", "pairs.csv"], "needs --prompt-col and --completion-col"),
    ([], "nothing to judge"),
    (["--job", "7"], "no generation job with id 7"),
    (["--job", "1", "--criteria-file", "none.txt"], "cannot read criteria file"),
])
def test_cli_bad_input_exits_2_with_one_line(openai_server, tmp_path, cli, args, message):
    (tmp_path / "pairs.csv").write_text("q,a\nhi,there\n")
    args = [str(tmp_path / a) if a.endswith((".csv", ".txt")) else a for a in args]
    code, _, err = cli("evaluate", *fake(openai_server), *args)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert openai_server.requests == []


def test_cli_resume_continues_an_evaluation_and_the_example_config_runs(openai_server, cli):
    assert cli("generate", *fake(openai_server), "--topics", "Heaps", "Tries", "--per-topic", "2")[0] == 0
    openai_server.reply = judge(lambda prompt, body: 11 if "Tries" in prompt else 4)  # out of scale: failed
    code, out, _ = cli("evaluate", *fake(openai_server), "--job", "1", "--max-failed-ratio", "0.25", "--json")
    assert code == 1 and json.loads(out)["failed"] == 2
    evaluation = json.loads(out)["job_id"]
    openai_server.reply = judge(lambda prompt, body: 3)
    before = len(openai_server.requests)
    code, out, _ = cli("evaluate", *fake(openai_server), "--resume", str(evaluation), "--json")
    assert code == 0 and json.loads(out)["ok"] == 4 and len(openai_server.requests) - before == 2
    code, out, _ = cli("evaluate", "--config", str(ROOT / "examples" / "evaluate.yaml"), *fake(openai_server), "--json")
    assert code == 0 and json.loads(out)["status"] == "done"


# -- the embedded model ---------------------------------------------------------------------------

@pytest.mark.slow
def test_one_judgement_on_the_embedded_model_is_scored_in_scale_or_failed_with_a_reason(store):
    job_id, _ = planted_job(store, [("Python basics", qa("How do you reverse a list in Python?",
                                                         solution="items[::-1] or items.reverse()",
                                                         explanation="slicing makes a reversed copy"))])
    config = EvaluationJob(source_job=job_id, model=ModelSpec(parameters=ModelParameters(max_tokens=96)))
    result = EvaluationRun(config, store=store).run()
    (row,) = store.records("evaluation", result.job_id)
    shown = summary(result.job_id, store)
    if row["status"] == "ok":
        score = row["output"]["score"]
        assert isinstance(score, int) and 1 <= score <= 5 and row["output"]["justification"]
        assert shown["average_score"] == score and shown["distribution"][str(score)] == 1
    else:
        assert row["status"] == "failed" and row["error"] and row["output"] is None
        assert shown["average_score"] is None and shown["judged"] == 0 and shown["failed"] == 1
        assert sum(shown["distribution"].values()) == 0  # a failed judgement is not a 0
