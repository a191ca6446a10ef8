"""The diversity report on constructed datasets whose figures are known: distinct-n, near duplicates before and
after the filter, lengths, topic and attribute coverage, openings; in `jobs show --json`, on the job page and in
the dataset card."""
from __future__ import annotations

import json

import pytest

from sdstudio.cli import main
from sdstudio.config import ExportJob
from sdstudio.dedup import dedup_records
from sdstudio.diversity import (attribute_counts, build_report, coverage, distinct_n, job_report, length_stats,
                                near_duplicate_rate, openings)
from sdstudio.export import export_dataset
from sdstudio.store import Record

# ten distinct questions, each a different shape, so only the planted repeats are near duplicates
QUESTIONS = ["How do I reverse a linked list in place?", "What is the time complexity of heapsort?",
             "Explain how a hash map resolves collisions.", "Why are B-trees used by databases?",
             "Write a function that merges two sorted arrays.", "When should a trie beat a hash set?",
             "Describe Dijkstra's algorithm with a small example.", "How do I detect a cycle in a directed graph?",
             "Compare quicksort and mergesort on nearly sorted input.", "What does amortised O(1) append mean?"]


def test_distinct_n_counts_distinct_ngrams_over_all_ngrams_within_each_text():
    assert distinct_n(["a b c", "a b d"], 1) == pytest.approx(4 / 6)
    assert distinct_n(["a b c", "a b d"], 2) == pytest.approx(3 / 4)  # ab, bc, ab, bd: "c a" spans two texts
    assert distinct_n(["The cat", "the CAT"], 1) == pytest.approx(2 / 4)  # words are case-folded
    assert distinct_n([], 2) == 0.0 and distinct_n(["one"], 2) == 0.0


def test_near_duplicate_rate_uses_the_dedup_filters_rule():
    texts = ["The quick brown fox jumps over the lazy dog", "the quick brown fox jumps over the lazy dog!",
             QUESTIONS[0], QUESTIONS[1]]
    assert near_duplicate_rate(texts) == 0.25  # one exact duplicate (case and end punctuation) of four
    assert near_duplicate_rate(QUESTIONS) == 0.0
    assert near_duplicate_rate([]) == 0.0


def test_lengths_openings_coverage_and_attributes_have_their_known_values():
    lengths = length_stats(["one", "one two", "one two three", "one two three four", "one two three four five"],
                           bins=4)
    assert {k: lengths[k] for k in ("min", "p25", "median", "p75", "max", "mean")} == \
        {"min": 1, "p25": 2, "median": 3, "p75": 4, "max": 5, "mean": 3}
    assert [n for _, _, n in lengths["histogram"]] == [1, 1, 1, 2]  # the last bin holds its high end
    assert openings(["How do I sort?", "how do I merge", "What is X", "What is it", "What is it?", "Why"]) == [
        {"opening": "what is it", "count": 2, "share": round(2 / 6, 4)},
        {"opening": "how do i", "count": 2, "share": round(2 / 6, 4)}][::-1]  # ties: alphabetical
    assert coverage(["A", "A", "B", None], ["A", "B", "C"]) == {
        "distinct": 2, "counts": {"A": 2, "B": 1}, "requested": 3, "covered": 2, "coverage": round(2 / 3, 4),
        "missing": ["C"]}
    assert attribute_counts([{"level": "easy"}, {"level": "hard", "persona": "nurse"}, None, {"level": "easy"}]) == \
        {"level": {"easy": 2, "hard": 1}, "persona": {"nurse": 1}}


def test_the_report_separates_before_and_after_the_duplicate_filter():
    kept = QUESTIONS[:4]
    report = build_report(kept, removed=[QUESTIONS[0], QUESTIONS[1].upper()], topics=["t"] * 4)
    assert (report.items, report.items_before) == (4, 6)
    assert report.near_duplicate_rate_before == pytest.approx(2 / 6)
    assert report.near_duplicate_rate_after == 0.0


def generation_job(store, *, duplicates: int = 3) -> int:
    """Ten distinct questions over two of three requested topics, each drawn an attribute, plus ``duplicates``
    exact repeats of the first question, and one failed row (never counted)."""
    job = store.create_job("generation", use_case="code_generation", status="done", topics=["Lists", "Trees", "Graphs"])
    records = [Record("generation", job, f"k{i}", "ok", topic="Lists" if i < 6 else "Trees",
                      provenance={"attributes": {"difficulty": "easy" if i % 2 else "hard"}},
                      output={"question": q, "solution": "s", "explanation": "e"}) for i, q in enumerate(QUESTIONS)]
    records += [Record("generation", job, f"d{i}", "ok", topic="Lists",
                       output={"question": QUESTIONS[0], "solution": "s", "explanation": "e"}) for i in range(duplicates)]
    records.append(Record("generation", job, "f", "failed", topic="Graphs", error="bad JSON"))
    store.add_records(records)
    return job


def test_a_jobs_report_measures_its_prompt_field_before_and_after_dedup(store):
    job = generation_job(store)
    before = job_report(store, job)
    assert before.field == "question" and (before.items, before.items_before) == (13, 13)
    assert before.near_duplicate_rate_after == pytest.approx(3 / 13)
    dedup_records(store, "generation", job, fields=["question"])
    report = job_report(store, job)
    assert (report.items, report.items_before) == (10, 13)
    assert report.near_duplicate_rate_before == pytest.approx(3 / 13) and report.near_duplicate_rate_after == 0.0
    words = [w for q in QUESTIONS for w in q.lower().replace("'", " ").replace("?", " ").replace(".", " ")
             .replace(",", " ").replace("(", " ").replace(")", " ").replace("-", " ").split()]
    assert report.distinct_1 == pytest.approx(len(set(words)) / len(words))
    assert report.topics["covered"] == 2 and report.topics["missing"] == ["Graphs"]
    assert report.attributes == {"difficulty": {"hard": 5, "easy": 5}}


def test_jobs_show_json_the_job_page_and_the_dataset_card_carry_the_report(store, home, tmp_path, capsys):
    job = generation_job(store)
    dedup_records(store, "generation", job, fields=["question"])
    assert main(["jobs", "show", str(job), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)["diversity"]
    assert shown["items"] == 10 and shown["near_duplicate_rate_before"] == round(3 / 13, 4)
    assert shown["near_duplicate_rate_after"] == 0.0 and shown["topics"]["missing"] == ["Graphs"]

    from sdstudio.ui.job import JobApp

    page = JobApp(store=store, job_id=job)
    assert "<h3>Diversity</h3>" in page.diversity.value and "23.1% of 13 before the filter" in page.diversity.value
    assert "none for: Graphs" in page.diversity.value and "difficulty" in page.diversity.value

    out = export_dataset(ExportJob(jobs=[job], style="raw", out=str(tmp_path / "x")), store=store)
    card = (tmp_path / "x").rglob("README.md").__next__().read_text()
    assert out.rows == 10
    assert "- **Diversity** (of `question`, 10 items): distinct-1" in card
    assert "23.1% of 13 before the filter, 0.0% after" in card and "2 of 3 topics have items; none for: Graphs" in card
    assert "**Attribute `difficulty`**: hard: 5, easy: 5" in card
