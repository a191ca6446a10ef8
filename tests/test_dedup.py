"""Exact and near-duplicate filtering: find_duplicates on plain texts, dedup_records on a real store."""
from __future__ import annotations

import random
import re

import pytest

import sdstudio.dedup as dedup_module
import sdstudio.minhash as minhash
from sdstudio.dedup import (
    DedupReport,
    Duplicate,
    JobDedup,
    dedup_records,
    find_duplicates,
    normalize,
)
from sdstudio.errors import ConfigError, StoreError
from sdstudio.minhash import minhash_signatures, shingle_hashes
from sdstudio.store import Record

LONG = ("The quick brown fox jumps over the lazy dog while the farmer watches from the old wooden "
        "porch and the sun sets slowly behind the distant hills of the quiet green valley today")


def one_word_changed(text: str, position: int = 10, word: str = "cat") -> str:
    words = text.split()
    words[position] = word
    return " ".join(words)


def real_jaccard(a: str, b: str) -> float:
    """Reference: Jaccard of the character 5-gram sets of the normalised texts, no hashing."""
    grams = [{t[i:i + 5] for i in range(len(t) - 4)} for t in (normalize(a), normalize(b))]
    return len(grams[0] & grams[1]) / len(grams[0] | grams[1])


def random_texts(rng: random.Random, count: int, words_per_text: int) -> list[str]:
    vocabulary = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 9)))
                  for _ in range(4000)]
    return [" ".join(rng.choice(vocabulary) for _ in range(words_per_text)) for _ in range(count)]


# -- normalisation and exact duplicates -------------------------------------------------------------

def test_normalize_casefolds_collapses_whitespace_and_strips_edge_punctuation():
    assert normalize("  «Hello,\n\tWORLD»!!  ") == "hello, world"


def test_case_whitespace_and_edge_punctuation_variants_are_exact_duplicates():
    texts = ["What is a JOIN?", "  what IS a\n join ", "WHAT IS A JOIN!!", "Straße", "STRASSE"]
    assert find_duplicates(texts) == [
        Duplicate(1, 0, "exact", 1.0), Duplicate(2, 0, "exact", 1.0), Duplicate(4, 3, "exact", 1.0)]


def test_inner_punctuation_differences_are_not_exact_duplicates():
    duplicates = find_duplicates(["SELECT a FROM t WHERE x > 1", "SELECT a FROM t WHERE x < 1"], threshold=1.0)
    assert duplicates == []


def test_empty_texts_are_exact_duplicates_of_each_other():
    assert find_duplicates(["", "  ", "x"]) == [Duplicate(1, 0, "exact", 1.0)]


# -- near duplicates --------------------------------------------------------------------------------

def test_one_word_changed_in_a_30_word_text_is_a_near_duplicate():
    changed = one_word_changed(LONG)
    assert len(LONG.split()) >= 30
    [duplicate] = find_duplicates([LONG, changed])
    assert (duplicate.index, duplicate.of, duplicate.kind) == (1, 0, "near")
    assert 0.85 <= duplicate.similarity < 1.0


def test_near_similarity_is_the_real_jaccard_of_the_shingle_sets():
    changed = one_word_changed(LONG)
    [duplicate] = find_duplicates([LONG, changed])
    assert duplicate.similarity == pytest.approx(real_jaccard(LONG, changed))


def test_pair_just_below_the_threshold_is_kept():
    changed = one_word_changed(LONG)
    similarity = real_jaccard(LONG, changed)
    assert find_duplicates([LONG, changed], threshold=similarity - 0.005) != []
    assert find_duplicates([LONG, changed], threshold=similarity + 0.005) == []


def test_clearly_different_texts_are_all_kept():
    texts = ["What is the capital of France?", "What is the capital of Spain?",
             "SELECT name FROM customers WHERE country = 'FR'", "SELECT name FROM products WHERE price > 10",
             "Explain how a hash join works.", "Explain how a merge join works in detail.",
             *random_texts(random.Random(3), 200, 20)]
    assert find_duplicates(texts) == []


def test_first_occurrence_wins_and_of_names_the_kept_text():
    changed = one_word_changed(LONG)
    texts = ["unrelated first text about databases", changed, LONG, LONG.upper()]
    assert [(d.index, d.of, d.kind) for d in find_duplicates(texts)] == [(2, 1, "near"), (3, 1, "near")]


def test_near_duplicate_of_a_dropped_text_is_compared_with_kept_texts_only():
    first = LONG
    second = one_word_changed(first, 10, "cat")
    third = one_word_changed(one_word_changed(second, 20, "moon"), 5, "ox")
    assert real_jaccard(second, third) >= 0.85 > real_jaccard(first, third)
    assert [(d.index, d.of) for d in find_duplicates([first, second, third])] == [(1, 0)]


def test_most_similar_earlier_text_is_named_when_several_match():
    far = one_word_changed(one_word_changed(LONG, 5, "ox"), 20, "moon")
    near = one_word_changed(LONG, 10, "cat")
    assert real_jaccard(LONG, near) > real_jaccard(LONG, far) >= 0.8 > real_jaccard(far, near)
    assert [(d.index, d.of) for d in find_duplicates([far, near, LONG], threshold=0.8)] == [(2, 1)]


def test_threshold_one_removes_exact_duplicates_only():
    texts = [LONG, one_word_changed(LONG), LONG.upper()]
    assert find_duplicates(texts, threshold=1.0) == [Duplicate(2, 0, "exact", 1.0)]


def test_lower_threshold_removes_looser_duplicates():
    looser = one_word_changed(one_word_changed(one_word_changed(LONG, 3, "ox"), 12, "moon"), 25, "sea")
    assert find_duplicates([LONG, looser]) == []
    assert [d.kind for d in find_duplicates([LONG, looser], threshold=0.6)] == ["near"]


def test_results_are_deterministic():
    rng = random.Random(11)
    texts = random_texts(rng, 300, 30)
    texts += [one_word_changed(t, 4, "zebra") for t in texts[:50]]
    assert find_duplicates(texts) == find_duplicates(list(texts))


@pytest.mark.parametrize("threshold", [0, -0.1, 1.5, float("nan"), "0.9", True, None])
def test_bad_threshold_is_a_config_error(threshold):
    with pytest.raises(ConfigError, match="threshold must be a number in \\(0, 1\\]"):
        find_duplicates(["a", "b"], threshold)


def test_planted_duplicates_among_5000_texts_are_found_exactly():
    rng = random.Random(5)
    texts = random_texts(rng, 4700, 40)
    expected = set()
    for original in rng.sample(range(4700), 300):
        if original % 2:
            texts.append("  " + texts[original].upper() + " !")
            expected.add((len(texts) - 1, original, "exact"))
        else:
            texts.append(one_word_changed(texts[original], rng.randrange(1, 39), "planted"))
            expected.add((len(texts) - 1, original, "near"))
    found = {(d.index, d.of, d.kind) for d in find_duplicates(texts)}
    assert found == expected


def test_planted_duplicates_are_found_exactly_across_merges_of_the_lsh_index(monkeypatch):
    """Small blocks and frequent merges of the recent band keys into the sorted arrays decide what one block does."""
    rng = random.Random(7)
    texts = random_texts(rng, 900, 30)
    for original in rng.sample(range(900), 120):
        texts.append(one_word_changed(texts[original], rng.randrange(1, 29), "planted"))
    whole = [(d.index, d.of, d.kind, d.similarity) for d in find_duplicates(texts)]
    monkeypatch.setattr(dedup_module, "_BLOCK", 25)
    monkeypatch.setattr(minhash, "_MERGE_AT", 40)
    merged = [(d.index, d.of, d.kind, d.similarity) for d in find_duplicates(texts)]
    assert merged == whole and len(whole) == 120


# -- records in the store ---------------------------------------------------------------------------

def add_outputs(store, job: int, outputs: list, status: str = "ok") -> list[int]:
    start = len(list(store.records("generation", job)))
    store.add_records([Record(job_kind="generation", job_id=job, item_key=f"item-{start + i}", status=status,
                              output=output) for i, output in enumerate(outputs)])
    return [r["id"] for r in store.records("generation", job)][start:]


def statuses(store, job: int) -> list[tuple[str, str | None]]:
    return [(r["status"], r["error"]) for r in store.records("generation", job)]


def qa(question: str, answer: str = "An answer.") -> dict:
    return {"question": question, "answer": answer}


def test_dedup_records_filters_later_duplicates_with_the_reason(store):
    job = store.create_job("generation")
    ids = add_outputs(store, job, [qa(LONG), qa("Other question?"), qa("  " + LONG.upper().replace(" ", "  ")),
                                   qa(one_word_changed(LONG))])
    report = dedup_records(store, "generation", job)
    assert report == DedupReport(checked=4, exact=1, near=1) and report.removed == 2
    rows = statuses(store, job)
    assert rows[:3] == [("ok", None), ("ok", None), ("filtered", f"duplicate of record #{ids[0]} (exact)")]
    assert rows[3][0] == "filtered"
    assert re.fullmatch(rf"duplicate of record #{ids[0]} \(near, similarity 0\.\d\d\)", rows[3][1])


def test_dedup_records_twice_removes_nothing_the_second_time(store):
    job = store.create_job("generation")
    add_outputs(store, job, [qa(LONG), qa(LONG), qa(one_word_changed(LONG)), qa("Other question?")])
    dedup_records(store, "generation", job)
    after_first = statuses(store, job)
    report = dedup_records(store, "generation", job)
    assert report == DedupReport(checked=2, exact=0, near=0)
    assert statuses(store, job) == after_first


def test_dedup_records_leaves_failed_and_filtered_records_alone(store):
    job = store.create_job("generation")
    add_outputs(store, job, [qa(LONG)], status="filtered")
    store.set_record_status([r["id"] for r in store.records("generation", job)], "filtered", "judge score 1")
    add_outputs(store, job, [qa(LONG)], status="failed")
    add_outputs(store, job, [qa(LONG)])
    report = dedup_records(store, "generation", job)
    assert report.removed == 0
    assert statuses(store, job) == [("filtered", "judge score 1"), ("failed", None), ("ok", None)]


def test_dedup_records_compares_only_the_given_fields(store):
    job = store.create_job("generation")
    add_outputs(store, job, [qa("How many orders?", "SELECT COUNT(*) FROM orders"),
                             qa("How many orders?", "SELECT COUNT(id) FROM orders AS o")])
    assert dedup_records(store, "generation", job).removed == 0
    assert dedup_records(store, "generation", job, fields=["question"]).exact == 1


def test_dedup_records_compares_non_string_values_too(store):
    job = store.create_job("generation")
    add_outputs(store, job, [{"messages": [{"role": "user", "content": "Tell me about joins"}]},
                             {"messages": [{"role": "user", "content": "Write a haiku on the sea"}]}])
    assert dedup_records(store, "generation", job).removed == 0


def test_dedup_records_compares_non_dict_outputs(store):
    job = store.create_job("generation")
    add_outputs(store, job, ["A plain text answer.", "a plain TEXT answer", ["a", "list"], ["a", "list"]])
    assert dedup_records(store, "generation", job).exact == 2


def test_dedup_records_updates_the_job_counts(store):
    job = store.create_job("generation")
    add_outputs(store, job, [qa(LONG), qa(LONG), qa("Other question?")])
    dedup_records(store, "generation", job)
    assert (store.get_job("generation", job)["ok"], store.get_job("generation", job)["filtered"]) == (2, 1)


def test_dedup_records_with_a_field_no_record_has_is_a_config_error(store):
    job = store.create_job("generation")
    add_outputs(store, job, [qa("First?"), qa("Second?")])
    with pytest.raises(ConfigError, match="no record of generation job .* has the dedup field.* questoin.*"
                                          "answer, question"):
        dedup_records(store, "generation", job, fields=["questoin"])
    assert [s for s, _ in statuses(store, job)] == ["ok", "ok"]


def test_dedup_records_of_an_unknown_job_is_a_store_error(store):
    with pytest.raises(StoreError, match="no generation job with id 999"):
        dedup_records(store, "generation", 999)


# -- the same results, computed faster ----------------------------------------------------------------

def test_minhash_signatures_are_datasketchs_bit_for_bit():
    import datasketch  # the dev extra installs it: the reference, not a dependency of the package

    texts = [normalize(t) for t in random_texts(random.Random(3), 200, 12)] + ["abc", "a", LONG]
    grams = shingle_hashes(texts)
    for text_grams, signature in zip(grams, minhash_signatures(grams)):
        reference = datasketch.MinHash(num_perm=128, seed=1, hashfunc=int)
        reference.update_batch(text_grams.tolist())
        assert reference.hashvalues.tolist() == signature.tolist()


def test_job_dedup_run_as_rows_arrive_decides_what_one_pass_decides(store):
    rng = random.Random(11)
    base = random_texts(rng, 60, 25)
    texts = [rng.choice([t, t.upper(), one_word_changed(t, 3, "zzz"), random_texts(rng, 1, 25)[0]])
             for t in base for _ in range(3)]
    once, growing = store.create_job("generation"), store.create_job("generation")
    add_outputs(store, once, [qa(t) for t in texts])
    dedup_records(store, "generation", once)
    dedup = JobDedup(store, "generation", growing)
    for low in range(0, len(texts), 17):
        add_outputs(store, growing, [qa(t) for t in texts[low:low + 17]])
        dedup.run()
    assert [s for s, _ in statuses(store, growing)] == [s for s, _ in statuses(store, once)]
    assert "filtered" in [s for s, _ in statuses(store, once)]
    report = dedup.run()
    assert report.checked == len(texts) and report.removed == [s for s, _ in statuses(store, once)].count("filtered")


def test_job_dedup_starts_over_when_an_earlier_row_turns_ok(store):
    job = store.create_job("generation")
    add_outputs(store, job, [qa(LONG)], status="failed")  # waiting for a later step (a grounding check)
    add_outputs(store, job, [qa("Other question?")])
    dedup = JobDedup(store, "generation", job)
    dedup.run()
    add_outputs(store, job, [qa(LONG)])
    store.set_record_status([store.records("generation", job, status="failed").__next__()["id"]], "ok")
    dedup.run()  # the first row, now ok, comes first: the later copy is its duplicate
    first = next(store.records("generation", job))
    assert statuses(store, job) == [("ok", None), ("ok", None), ("filtered", f"duplicate of record #{first['id']} (exact)")]
