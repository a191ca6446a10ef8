"""Limits and previews read only what they need, on every input format that can be streamed; a header naming a
column twice is one line, not pandas' silent `question.1`.

Before: `workflow --limit 5 --dry-run` on a million-row file peaked at 860 MB (CSV), 1,027 MB (JSONL) and 409 MB
(Parquet); `evaluate --input` had no --limit and its dry run took 1.3 GB and 50 s on a loaded machine.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from sdstudio.datasets import DatasetError, read_dataset, read_selection, select_rows
from tests.reliability.forked import Outcome, Zygote

ROWS = 1_000_000
BUDGET_MB = 200
MODEL = ["--provider", "openai_compatible", "--model", "m", "--base-url", "http://127.0.0.1:9/v1"]


def question(i: int) -> str:
    return f"What is item {i} about heaps and tries?"


def answer(i: int) -> str:
    return f"It is the answer number {i} for the test"


def write_big(folder: Path) -> dict[str, Path]:
    """A million rows as CSV, JSONL and Parquet (~90, ~115 and ~10 MB), written in a few seconds."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    paths = {kind: folder / f"big.{kind}" for kind in ("csv", "jsonl", "parquet")}
    block = 50_000
    with open(paths["csv"], "w") as csv, open(paths["jsonl"], "w") as jsonl:
        csv.write("question,answer\n")
        for start in range(0, ROWS, block):
            numbers = range(start, start + block)
            csv.write("".join(f"{question(i)},{answer(i)}\n" for i in numbers))
            jsonl.write("".join(f'{{"question": "{question(i)}", "answer": "{answer(i)}"}}\n' for i in numbers))
    pq.write_table(pa.table({"question": [question(i) for i in range(ROWS)],
                             "answer": [answer(i) for i in range(ROWS)]}), paths["parquet"])
    return paths


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[tuple[str, str], Outcome]:
    folder = tmp_path_factory.mktemp("big-inputs")
    paths = write_big(folder)
    home = ["--home", str(folder / "home")]
    commands = {
        "workflow_limit": lambda p: ["workflow", "--input", str(p), "--preset", "paraphrase", "--set",
                                     "column=question", "--limit", "5", "--dry-run", "--json"],
        "evaluate_limit": lambda p: ["evaluate", "--input", str(p), "--prompt-col", "question", "--completion-col",
                                     "answer", "--limit", "5", "--dry-run", "--json"],
        "evaluate_all": lambda p: ["evaluate", "--input", str(p), "--prompt-col", "question", "--completion-col",
                                   "answer", "--dry-run", "--json"],
    }
    results = {}
    with Zygote(["pandas", "pyarrow.parquet", "sdstudio.workflows.custom_plan", "sdstudio.workflows.evaluate",
                 "sdstudio.tokens"]) as zygote:
        for kind, path in paths.items():
            for name, argv in commands.items():
                if name == "evaluate_all" and kind != "csv":
                    continue  # one full walk is enough to show the estimate streams (and each costs seconds)
                results[(name, kind)] = zygote.run([*argv(path), *MODEL, *home], folder / f"{name}-{kind}", timeout=120)
    return results


@pytest.mark.slow
def test_streaming_figures(runs):
    print()
    for (name, kind), o in sorted(runs.items()):
        print(f"FIGURES streaming: {name} {kind} ({ROWS:,} rows): peak RSS {o.peak_mb:.0f} MB, {o.seconds:.1f} s")


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["csv", "jsonl", "parquet"])
@pytest.mark.parametrize("name", ["workflow_limit", "evaluate_limit"])
def test_limit_5_on_a_million_rows_reads_only_what_it_needs(runs, name, kind):
    outcome = runs[(name, kind)]
    assert outcome.code == 0, outcome.stderr[-2000:]
    shown = json.loads(outcome.stdout)
    assert "question" in json.dumps(shown) and (name != "evaluate_limit" or shown["rows"] == 5)
    assert outcome.peak_mb < BUDGET_MB, f"peak RSS {outcome.peak_mb:.0f} MB"


@pytest.mark.slow
def test_an_evaluate_dry_run_over_a_million_rows_streams_its_estimate(runs):
    outcome = runs[("evaluate_all", "csv")]
    assert outcome.code == 0, outcome.stderr[-2000:]
    shown = json.loads(outcome.stdout)
    assert shown["rows"] == ROWS and shown["requests"] == ROWS and "item 0 about heaps" in shown["prompt"]
    assert outcome.peak_mb < BUDGET_MB, f"peak RSS {outcome.peak_mb:.0f} MB"


# -- in-process: the same rows as reading everything, and the duplicate-column refusal ------------------------

def write_rows(path: Path, count: int) -> Path:
    path.write_text("question,answer\n" + "".join(f"{question(i)},{answer(i)}\n" for i in range(count)))
    return path


@pytest.mark.parametrize("limit, sample", [(7, False), (7, True), (25_000, True), (40_000, True), (None, False)])
def test_a_streamed_selection_is_the_rows_reading_everything_would_select(tmp_path, limit, sample):
    """The first N rows, or the very N rows pandas' sample(random_state=seed) drew from the whole file (so a
    sampled job started before streaming resumes onto the same rows), over several chunks."""
    path = write_rows(tmp_path / "rows.csv", 30_000)
    whole = select_rows(read_dataset(path), limit=limit, sample=sample, seed=7)
    columns, streamed = read_selection(path, limit=limit, sample=sample, seed=7)
    assert columns == ["question", "answer"]
    assert streamed.index.tolist() == whole.index.tolist()
    assert streamed.equals(whole)


def test_a_bad_byte_far_into_a_file_is_reported_at_its_offset(tmp_path):
    """Decoding streams in blocks; the offset is still the byte's offset in the file."""
    path = tmp_path / "late.csv"
    good = "question\n" + ("x" * 99 + "\n") * 40_000  # 4 MB of good rows first
    path.write_bytes(good.encode() + b"caf\xe9\n")
    with pytest.raises(DatasetError) as caught:
        read_dataset(path)
    assert f"byte 0xe9 at offset {len(good) + 3}" in str(caught.value)
    assert len(read_dataset(path, limit=1)) == 1  # a limited read never reaches it


def duplicate_files(folder: Path) -> dict[str, Path]:
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = {"csv": folder / "dup.csv", "tsv": folder / "dup.tsv", "gz": folder / "dup.csv.gz",
             "xlsx": folder / "dup.xlsx", "parquet": folder / "dup.parquet"}
    files["csv"].write_text("question,answer,question\nq1,a1,q2\n")
    files["tsv"].write_text("question\tanswer\tquestion\nq1\ta1\tq2\n")
    import gzip

    files["gz"].write_bytes(gzip.compress(b"question,answer,question\nq1,a1,q2\n"))
    pd.DataFrame([["q1", "a1", "q2"]], columns=["question", "answer", "question"]).to_excel(files["xlsx"], index=False)
    pq.write_table(pa.Table.from_arrays([pa.array(["q1"]), pa.array(["a1"]), pa.array(["q2"])],
                                        names=["question", "answer", "question"]), files["parquet"])
    return files


@pytest.mark.parametrize("kind", ["csv", "tsv", "gz", "xlsx", "parquet"])
def test_a_header_naming_a_column_twice_is_refused_in_one_line(tmp_path, kind):
    path = duplicate_files(tmp_path)[kind]
    with pytest.raises(DatasetError) as caught:
        read_dataset(path)
    message = str(caught.value)
    assert "names a column more than once: 'question' (columns 1, 3)" in message and "\n" not in message


def test_the_judge_and_alignment_readers_refuse_duplicate_columns_too(tmp_path):
    from sdstudio.workflows.candidates import prompts_from_file
    from sdstudio.workflows.evaluate_inputs import read_table

    path = duplicate_files(tmp_path)["csv"]
    for read in (lambda: read_table(path), lambda: prompts_from_file(str(path), "question")):
        with pytest.raises(DatasetError, match="names a column more than once"):
            read()


def test_an_evaluation_without_a_limit_keeps_the_identity_it_had_before_limit_existed():
    """No limit is no key: the config hash of every evaluation judged before --limit is unchanged, so it resumes."""
    from sdstudio.config import EvaluationJob

    job = EvaluationJob(input_file="pairs.csv", prompt_column="q", completion_column="a")
    assert "limit" not in job.model_dump(mode="json")
    assert EvaluationJob(**{**job.model_dump(), "limit": 5}).model_dump(mode="json")["limit"] == 5
