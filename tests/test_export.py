"""Export: trainer-ready files in every style, filters, lineage, and uploads to a real loopback Hub."""
from __future__ import annotations

import hashlib
import json
import os
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sdstudio.config import ExportJob
from sdstudio.errors import ConfigError
from sdstudio.export import ExportUploadError, atomic_write, export_dataset
from sdstudio.store import Record
from tests.fakes.hub_server import FakeHubServer

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "hf_test_write_token_0123456789"
TRL_COLUMNS = {"sft-messages": ["messages"], "sft-prompt-completion": ["prompt", "completion"],
               "dpo": ["prompt", "chosen", "rejected"], "kto": ["prompt", "completion", "label"],
               "openai-chat": ["messages"]}


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch, tmp_path):
    """Nothing in these tests may leave 127.0.0.1: no telemetry, no Hub, no dataset downloads."""
    real_connect = socket.socket.connect

    def connect(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in ("127.0.0.1", "::1", "localhost"):
            raise OSError(f"test tried to reach {address[0]} outside loopback")
        return real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)


@pytest.fixture
def hub():
    with FakeHubServer(tokens={TOKEN: "alice"}) as server:
        yield server


def sft_job(store, n: int = 10, failed: int = 0, use_case: str = "code_generation") -> int:
    job = store.create_job("generation", use_case=use_case, model_id="fake-model", inference_type="openai_compatible",
                           status="done", technique="sft", requested=n + failed, topics=["Heaps", "Tries"],
                           model_parameters={"temperature": 0.7, "max_tokens": 512},
                           prompt_template="Write {{ count }} items about {{ topic }}.")
    store.add_records([Record("generation", job, f"k{i}", "ok", topic=["Heaps", "Tries"][i % 2],
                              output={"question": f"How do {i}?", "solution": f"Like {i}."}) for i in range(n)]
                      + [Record("generation", job, f"bad{i}", "failed", error="invalid") for i in range(failed)])
    store.refresh_counts("generation", job)
    return job


def alignment_job(store, style: str, n: int = 6) -> int:
    job = store.create_job("generation", technique=style, model_id="fake-model", status="done")
    if style == "dpo":
        outputs = [{"prompt": f"p{i}", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(n)]
    else:
        outputs = [{"prompt": f"p{i}", "completion": f"c{i}", "label": i % 2 == 0} for i in range(n)]
    store.add_records([Record("generation", job, f"a{i}", "ok", topic="t", output=o) for i, o in enumerate(outputs)])
    return job


def judge(store, job: int, scores: dict[int, int | None], status: str = "done", model: str = "fake-judge") -> int:
    """An evaluation of ``job`` in the evaluate workflow's record format (score per generation record id)."""
    ev = store.create_job("evaluation", source_generation_id=job, model_id=model, status=status, scale_min=1,
                          scale_max=5)
    store.add_records([Record("evaluation", ev, f"e{rid}", "ok" if score is not None else "failed",
                              output=None if score is None else {"score": score, "justification": f"because {score}"},
                              provenance={"source_record_id": rid, "source_job_id": job})
                       for rid, score in scores.items()])
    return ev


def record_ids(store, job: int) -> list[int]:
    return [r["id"] for r in store.records("generation", job, status="ok")]


def load(paths: list[str], fmt: str, cache: Path):
    import datasets

    datasets.config.HF_HUB_OFFLINE = True  # local files only; the socket guard backs this up
    files = {Path(p).stem: p for p in paths if not p.endswith("README.md")}
    return datasets.load_dataset("json" if fmt == "jsonl" else fmt, data_files=files, cache_dir=str(cache))


def header(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n", 2)[1])


# -- files and styles ------------------------------------------------------------------------------

@pytest.mark.parametrize("style, fmt", [(s, f) for s in TRL_COLUMNS for f in ("jsonl", "parquet")
                                        if (s, f) != ("openai-chat", "parquet")])
def test_every_trl_style_loads_with_datasets_with_exactly_its_columns(store, tmp_path, style, fmt):
    job = alignment_job(store, style, n=6) if style in ("dpo", "kto") else sft_job(store, n=6)
    result = export_dataset(ExportJob(jobs=[job], style=style, format=fmt, test_fraction=0.34), store=store)
    data = load(result.paths, fmt, tmp_path / "cache")
    assert sorted(data) == ["test", "train"]
    assert {split: data[split].column_names for split in data} == {"train": TRL_COLUMNS[style],
                                                                    "test": TRL_COLUMNS[style]}
    assert data["train"].num_rows + data["test"].num_rows == 6 == result.rows
    first = data["train"][0]
    if style in ("sft-messages", "openai-chat"):
        assert [m["role"] for m in first["messages"]] == ["user", "assistant"]
        assert first["messages"][0]["content"].startswith("How do")
    if style == "kto":
        assert isinstance(first["label"], bool)


@pytest.mark.parametrize("style, answers", [("dpo", ("chosen", "rejected")), ("kto", ("completion",))])
@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_dpo_and_kto_have_trls_conversational_form_on_request(store, tmp_path, style, answers, fmt):
    job = alignment_job(store, style, n=4)
    result = export_dataset(ExportJob(jobs=[job], style=style, format=fmt, conversational=True,
                                      system_prompt="Be brief."), store=store)
    data = load(result.paths, fmt, tmp_path / "cache")["train"]
    assert data.column_names == TRL_COLUMNS[style] and data.num_rows == 4
    first = data[0]
    assert first["prompt"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "p0"}]
    for answer in answers:
        assert [m["role"] for m in first[answer]] == ["assistant"] and first[answer][0]["content"]
    if style == "kto":
        assert isinstance(first["label"], bool)


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_raw_keeps_items_topic_provenance_score_and_review(store, tmp_path, fmt):
    job = sft_job(store, n=4)
    ids = record_ids(store, job)
    judge(store, job, {ids[0]: 5, ids[1]: 3})
    store.add_review(ids[1], "rita", "accept")
    result = export_dataset(ExportJob(jobs=[job], style="raw", format=fmt), store=store)
    rows = load(result.paths, fmt, tmp_path / "cache")["train"]
    assert rows.column_names == ["question", "solution", "record_id", "job_id", "topic", "score", "justification",
                                 "review_verdict", "edited", "provenance"]
    assert rows.num_rows == 4
    assert rows[0]["score"] == 5 and rows[0]["justification"] == "because 5" and rows[0]["topic"] == "Heaps"
    assert rows[1]["review_verdict"] == "accept" and rows[2]["score"] is None


def test_csv_holds_the_same_rows_with_nested_columns_as_json_text(store):
    import pandas as pd

    job = sft_job(store, n=3)
    result = export_dataset(ExportJob(jobs=[job], style="sft-messages", format="csv"), store=store)
    frame = pd.read_csv(result.paths[0])
    assert list(frame.columns) == ["messages"] and len(frame) == 3
    assert json.loads(frame["messages"][0])[1] == {"role": "assistant", "content": "Like 0."}


def test_openai_chat_puts_the_system_prompt_first_and_is_jsonl_only(store):
    job = sft_job(store, n=2)
    result = export_dataset(ExportJob(jobs=[job], style="openai-chat", system_prompt="You write code."), store=store)
    first = json.loads(Path(result.paths[0]).read_text().splitlines()[0])
    assert first == {"messages": [{"role": "system", "content": "You write code."},
                                  {"role": "user", "content": "How do 0?"},
                                  {"role": "assistant", "content": "Like 0."}]}
    with pytest.raises(ConfigError, match="openai-chat is JSONL"):
        export_dataset(ExportJob(jobs=[job], style="openai-chat", format="parquet"), store=store)


@pytest.mark.parametrize("style, job_kind, holds", [
    ("dpo", "sft", "holds code_generation SFT items (question -> solution)"),
    ("kto", "dpo", "holds DPO preference pairs"),
    ("sft-messages", "kto", "holds KTO rows"),
])
def test_a_style_that_does_not_fit_the_job_is_a_one_line_error_and_writes_nothing(store, home, style, job_kind, holds):
    job = sft_job(store) if job_kind == "sft" else alignment_job(store, job_kind)
    with pytest.raises(ConfigError) as err:
        export_dataset(ExportJob(jobs=[job], style=style), store=store)
    message = str(err.value)
    assert f"style {style} needs" in message and holds in message and "\n" not in message
    assert not any((home / "exports").iterdir())
    assert store.jobs("export").empty


def test_freeform_rows_fit_only_raw(store):
    job = store.create_job("generation", use_case="freeform", technique="freeform", status="done")
    store.add_records([Record("generation", job, "f1", "ok", output={"product": "Kettle", "price_usd": 34.99})])
    with pytest.raises(ConfigError, match="columns price_usd, product and no prompt/completion pair; styles that fit "
                                          "it: raw"):
        export_dataset(ExportJob(jobs=[job], style="sft-prompt-completion"), store=store)
    assert export_dataset(ExportJob(jobs=[job], style="raw"), store=store).rows == 1


def test_the_split_is_fixed_by_the_seed_and_covers_every_row(store):
    job = sft_job(store, n=20)

    def split(seed: int, name: str) -> tuple[list, list]:
        result = export_dataset(ExportJob(jobs=[job], style="sft-prompt-completion", test_fraction=0.25, seed=seed,
                                  name=name), store=store)
        train, test = ([json.loads(line)["prompt"] for line in Path(p).read_text().splitlines()]
                       for p in result.paths[:2])
        return train, test

    train, test = split(7, "a")
    assert len(test) == 5 and len(train) == 15 and not set(train) & set(test)
    assert split(7, "b") == (train, test)
    assert split(8, "c")[1] != test


def test_a_re_export_without_split_is_a_new_version_and_the_split_export_stays(store, home):
    job = sft_job(store, n=6)
    first = export_dataset(ExportJob(jobs=[job], style="sft-messages", test_fraction=0.5), store=store)
    second = export_dataset(ExportJob(jobs=[job], style="sft-messages"), store=store)
    folder = home / "exports" / f"job-{job}-sft-messages"
    assert (first.directory, first.version, second.directory, second.version) == (
        str(folder / "v1"), 1, str(folder / "v2"), 2)
    assert sorted(p.name for p in folder.iterdir()) == ["v1", "v2"]
    assert sorted(p.name for p in (folder / "v1").iterdir()) == ["README.md", "test.jsonl", "train.jsonl"]
    assert sorted(p.name for p in (folder / "v2").iterdir()) == ["README.md", "train.jsonl"]


def test_a_failed_write_leaves_the_previous_file_whole_and_no_temp_file(tmp_path):
    target = tmp_path / "train.jsonl"
    target.write_text("old\n")

    def half_then_crash(tmp: Path) -> None:
        tmp.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(target, half_then_crash)
    assert target.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["train.jsonl"]


def test_out_writes_to_the_given_directory(store, tmp_path):
    job = sft_job(store, n=2)
    result = export_dataset(ExportJob(jobs=[job], style="sft-messages", out=str(tmp_path / "mine")), store=store)
    assert result.directory == str(tmp_path / "mine") and (tmp_path / "mine" / "train.jsonl").is_file()


def test_an_out_path_that_is_a_file_is_a_one_line_error(store, tmp_path):
    (tmp_path / "taken").write_text("")
    with pytest.raises(ConfigError, match="cannot write the export to .*taken"):
        export_dataset(ExportJob(jobs=[sft_job(store, n=2)], out=str(tmp_path / "taken")), store=store)


# -- filters ---------------------------------------------------------------------------------------

def test_only_ok_rows_are_exported_by_default(store):
    job = sft_job(store, n=5, failed=3)
    result = export_dataset(ExportJob(jobs=[job], style="sft-messages"), store=store)
    assert result.rows == 5 and result.filters["dropped"]["not_ok"] == 3


def test_min_score_uses_the_newest_finished_judge_run_and_drops_unscored_rows(store):
    job = sft_job(store, n=5)
    ids = record_ids(store, job)
    judge(store, job, {rid: 1 for rid in ids})  # older run: everything bad
    judge(store, job, {ids[0]: 5, ids[1]: 4, ids[2]: 3, ids[3]: None})  # newest finished run; ids[4] unjudged
    judge(store, job, {rid: 5 for rid in ids}, status="running")  # still running: ignored
    result = export_dataset(ExportJob(jobs=[job], style="raw", min_score=4), store=store)
    rows = [json.loads(line) for line in Path(result.paths[0]).read_text().splitlines()]
    assert [(r["record_id"], r["score"]) for r in rows] == [(ids[0], 5), (ids[1], 4)]
    assert result.filters["dropped"] == {"not_ok": 0, "rejected": 0, "not_accepted": 0, "unscored": 2,
                                         "below_min_score": 1}


def test_min_score_without_a_finished_evaluation_says_to_run_one(store):
    job = sft_job(store, n=2)
    with pytest.raises(ConfigError, match=f"needs a finished evaluation of generation job {job}; run `sdstudio "
                                          f"evaluate --job {job}`"):
        export_dataset(ExportJob(jobs=[job], min_score=3), store=store)


def test_reviews_drop_rejected_rows_and_reviewed_only_keeps_accepted_ones(store):
    job = sft_job(store, n=4)
    ids = record_ids(store, job)
    store.add_review(ids[0], "rita", "accept")
    store.add_review(ids[1], "rita", "accept")
    store.add_review(ids[1], "sam", "reject")  # the newest verdict counts
    assert export_dataset(ExportJob(jobs=[job], style="sft-messages"), store=store).rows == 3
    only = export_dataset(ExportJob(jobs=[job], style="sft-prompt-completion", reviewed_only=True), store=store)
    assert only.rows == 1 and json.loads(Path(only.paths[0]).read_text())["prompt"] == "How do 0?"


def test_reviewers_edits_are_used_unless_prefer_edits_is_off(store):
    job = sft_job(store, n=2)
    store.add_review(record_ids(store, job)[0], "rita", "accept", edited_output={"solution": "Fixed."})
    edited = export_dataset(ExportJob(jobs=[job], style="sft-prompt-completion", name="e"), store=store)
    original = export_dataset(ExportJob(jobs=[job], style="sft-prompt-completion", prefer_edits=False, name="o"), store=store)
    assert json.loads(Path(edited.paths[0]).read_text().splitlines()[0]) == {"prompt": "How do 0?",
                                                                             "completion": "Fixed."}
    assert json.loads(Path(original.paths[0]).read_text().splitlines()[0])["completion"] == "Like 0."


def test_filters_that_leave_nothing_are_an_error_naming_what_dropped(store):
    job = sft_job(store, n=2)
    with pytest.raises(ConfigError, match="every row was filtered out \\(2 not accepted\\)"):
        export_dataset(ExportJob(jobs=[job], reviewed_only=True), store=store)


def test_several_jobs_export_together(store):
    first, second = sft_job(store, n=2), sft_job(store, n=3)
    result = export_dataset(ExportJob(jobs=[first, second], style="raw"), store=store)
    assert result.rows == 5 and Path(result.directory).parent.name == f"job-{first}-{second}-raw"


# -- lineage and metadata --------------------------------------------------------------------------

def test_export_metadata_row_records_what_was_written(store, home):
    job = sft_job(store, n=6, failed=1)
    result = export_dataset(ExportJob(jobs=[job], style="sft-messages", format="parquet", test_fraction=0.5), store=store)
    row = store.get_job("export", result.export_id)
    directory = home / "exports" / f"job-{job}-sft-messages" / "v1"
    assert {k: row[k] for k in ("status", "destination", "format", "style", "path", "repo_id", "row_count",
                                "source_job_ids", "error")} == {
        "status": "done", "destination": "files", "format": "parquet", "style": "sft-messages",
        "path": str(directory), "repo_id": None, "row_count": 6, "source_job_ids": [job], "error": None}
    assert row["file_hashes"] == {name: hashlib.sha256((directory / name).read_bytes()).hexdigest()
                                  for name in ("train.parquet", "test.parquet", "README.md")}
    assert [(f["name"], f["split"], f["rows"], f["bytes"]) for f in row["files"]] == [
        ("train.parquet", "train", 3, (directory / "train.parquet").stat().st_size),
        ("test.parquet", "test", 3, (directory / "test.parquet").stat().st_size),
        ("README.md", None, None, (directory / "README.md").stat().st_size)]
    assert {f["name"]: f["sha256"] for f in row["files"]} == row["file_hashes"]
    assert row["filters"]["dropped"]["not_ok"] == 1 and row["filters"]["test_fraction"] == 0.5
    assert row["config"]["jobs"] == [job] and row["config"]["style"] == "sft-messages"


def test_the_card_carries_hub_metadata_and_lineage(store, home):
    import sdstudio

    job = sft_job(store, n=5)
    ids = record_ids(store, job)
    judge(store, job, {ids[0]: 5, ids[1]: 4, ids[2]: 2})
    result = export_dataset(ExportJob(jobs=[job], style="sft-messages", test_fraction=0.2, license="apache-2.0"), store=store)
    card = Path(result.paths[-1]).read_text()
    meta = header(card)
    assert meta["license"] == "apache-2.0" and meta["task_categories"] == ["text-generation"]
    assert meta["size_categories"] == ["n<1K"]
    assert meta["configs"] == [{"config_name": "default", "data_files": [{"split": "train", "path": "train.jsonl"},
                                                                          {"split": "test", "path": "test.jsonl"}]}]
    for text in ("`fake-model` via openai_compatible", "temperature=0.7, max_tokens=512", "sft / code_generation",
                 "Topics** (2): Heaps, Tries", "Write {{ count }} items about {{ topic }}.", "with `fake-judge`",
                 "average 3.67 from 3 scores (5: 1, 4: 1, 2: 1)", "| train | 4 |", "| test | 1 |",
                 f"sdstudio {sdstudio.__version__}", "5 ok, 0 failed"):
        assert text in card, text


# -- Hugging Face Hub ------------------------------------------------------------------------------

def hub_export(store, hub, job: int, **overrides) -> ExportJob:
    settings = {"style": "sft-messages", "hf_repo": "alice/code-sft", "hf_endpoint": hub.url, "test_fraction": 0.25}
    return ExportJob(jobs=[job], **{**settings, **overrides})


def test_upload_commits_the_data_and_the_card_to_a_private_dataset_repo(store, hub, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    job = sft_job(store, n=8)
    judge(store, job, {rid: 4 for rid in record_ids(store, job)})
    result = export_dataset(hub_export(store, hub, job), store=store)
    repo = hub.repo("alice/code-sft")
    assert repo.private and sorted(repo.files) == ["README.md", "test.jsonl", "train.jsonl"]
    for path in result.paths:
        assert repo.files[Path(path).name] == Path(path).read_bytes()
    assert result.revision == repo.sha and result.to_json()["repo_id"] == "alice/code-sft"
    assert len(repo.commits) == 1 and "8 rows" in repo.commits[0]["summary"]
    card = repo.text("README.md")
    assert header(card)["configs"][0]["data_files"][0] == {"split": "train", "path": "train.jsonl"}
    assert "`fake-model` via openai_compatible" in card and "average 4.00 from 8 scores" in card
    row = store.get_job("export", result.export_id)
    assert (row["destination"], row["repo_id"], row["revision"], row["status"]) == (
        "huggingface", "alice/code-sft", repo.sha, "done")
    assert set(hub.authorizations) == {f"Bearer {TOKEN}"}
    assert TOKEN.encode() not in Path(store.path).read_bytes()  # never stored


def test_a_re_export_to_the_same_repo_adds_a_commit(store, hub, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    job = sft_job(store, n=4)
    export_dataset(hub_export(store, hub, job), store=store)
    second = export_dataset(hub_export(store, hub, job, style="sft-prompt-completion", format="parquet"), store=store)
    repo = hub.repo("alice/code-sft")
    assert second.revision == repo.sha and len(repo.commits) == 2 and "train.parquet" in repo.files
    assert header(repo.text("README.md"))["configs"][0]["data_files"][0]["path"] == "train.parquet"


def test_the_endpoint_comes_from_hf_endpoint_when_no_option_is_given(store, hub, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    job = sft_job(store, n=2)
    export_dataset(ExportJob(jobs=[job], hf_repo="alice/from-env", private=False), store=store)
    assert not hub.repo("alice/from-env").private


def test_a_bad_token_is_a_clear_error_and_the_local_files_stay(store, hub, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_wrong_secret_value")
    job = sft_job(store, n=4)
    with pytest.raises(ExportUploadError) as err:
        export_dataset(hub_export(store, hub, job), store=store)
    message = str(err.value)
    assert "rejected the token in HF_TOKEN (401 Unauthorized)" in message and "\n" not in message
    assert "hf_wrong_secret_value" not in message
    assert all(Path(p).is_file() for p in err.value.result.paths) and "the exported files stay in" in message
    row = store.get_job("export", err.value.result.export_id)
    assert row["status"] == "failed" and "401" in row["error"] and row["path"] == err.value.result.directory
    assert hub.repos == {}


def test_a_repo_of_another_type_is_refused_before_anything_is_sent(store, hub, monkeypatch, home):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    job = sft_job(store, n=2)
    for repo in (f"{hub.url}/spaces/alice/demo", "models/alice/demo", f"{hub.url}/alice/demo"):
        with pytest.raises(ConfigError, match="names a (space|model) repo; export uploads a dataset repo"):
            export_dataset(hub_export(store, hub, job, hf_repo=repo), store=store)
    assert hub.requests == [] and not any((home / "exports").iterdir())


def test_a_model_repo_of_the_same_name_is_left_alone(store, hub, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    model = hub.add_repo("alice/code-sft", "model")
    model.files["config.json"] = b"{}"
    export_dataset(hub_export(store, hub, sft_job(store, n=2)), store=store)
    assert model.files == {"config.json": b"{}"} and "train.jsonl" in hub.repo("alice/code-sft", "dataset").files


def test_no_write_access_to_the_namespace_is_a_clear_error(store, hub, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    with pytest.raises(ExportUploadError, match="may not write to bob/data .*403 Forbidden.*your own namespace"):
        export_dataset(hub_export(store, hub, sft_job(store, n=2), hf_repo="bob/data"), store=store)


def test_a_server_failure_mid_upload_commits_nothing_keeps_the_files_and_can_be_retried(store, hub, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    job = sft_job(store, n=4)
    hub.fail["commit"] = 500
    with pytest.raises(ExportUploadError) as err:
        export_dataset(hub_export(store, hub, job), store=store)
    message = str(err.value)
    assert "HTTP 500" in message and "nothing was committed" in message and "\n" not in message
    assert hub.repo("alice/code-sft").commits == [] and all(Path(p).is_file() for p in err.value.result.paths)
    assert ("POST", "/api/datasets/alice/code-sft/preupload/main") in hub.requests  # it failed mid-way
    retried = export_dataset(hub_export(store, hub, job), store=store)
    assert retried.revision == hub.repo("alice/code-sft").sha
    statuses = [r["status"] for r in (store.get_job("export", i) for i in (err.value.result.export_id,
                                                                           retried.export_id))]
    assert statuses == ["failed", "done"]


def test_without_hf_token_the_upload_fails_before_writing_anything(store, hub, home):
    with pytest.raises(ConfigError, match="needs a token with write access in the HF_TOKEN"):
        export_dataset(hub_export(store, hub, sft_job(store, n=2)), store=store)
    assert hub.requests == [] and not any((home / "exports").iterdir())


def test_an_unreachable_hub_is_a_clear_error(store, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = ExportJob(jobs=[sft_job(store, n=2)], hf_repo="alice/x", hf_endpoint=f"http://127.0.0.1:{port}")
    with pytest.raises(ExportUploadError, match="cannot reach the Hub at http://127.0.0.1:.*check the endpoint"):
        export_dataset(config, store=store)


# -- CLI -------------------------------------------------------------------------------------------

def cli(*args: str, home: Path, env: dict[str, str] | None = None, exit_code: int = 0) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HF_ENDPOINT", "SDSTUDIO_DEBUG")}
    environ.update(HF_HUB_DISABLE_TELEMETRY="1", HF_HOME=str(home / "hf"), **(env or {}))
    proc = subprocess.run([sys.executable, "-m", "sdstudio.cli", "export", *args, "--home", str(home)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120, env=environ)
    assert proc.returncode == exit_code, proc.stderr
    return proc


def test_cli_exports_and_uploads_and_prints_one_json_object(store, hub, home):
    job = sft_job(store, n=8)
    out = cli("--job", str(job), "--style", "sft-prompt-completion", "--format", "parquet", "--test-fraction", "0.25",
              "--hf-repo", "alice/cli-data", "--hf-endpoint", hub.url, "--json", home=home, env={"HF_TOKEN": TOKEN})
    summary = json.loads(out.stdout)
    assert summary["status"] == "done" and summary["rows"] == 8 and summary["splits"] == {"train": 6, "test": 2}
    assert summary["repo_id"] == "alice/cli-data" and summary["revision"] == hub.repo("alice/cli-data").sha
    assert [Path(p).name for p in summary["paths"]] == ["train.parquet", "test.parquet", "README.md"]
    with sqlite3.connect(home / "metadata.db") as conn:
        assert conn.execute("SELECT destination, style, row_count FROM export_metadata").fetchall() == [
            ("huggingface", "sft-prompt-completion", 8)]


def test_cli_runs_the_shipped_example_config(store, home):
    job = sft_job(store, n=10)
    assert job == 1  # examples/export.yaml exports job 1
    out = cli("--config", str(ROOT / "examples" / "export.yaml"), "--json", home=home)
    summary = json.loads(out.stdout)
    assert summary["status"] == "done" and summary["rows"] == 10 and "repo_id" not in summary
    assert out.stderr == ""


def test_cli_errors_exit_2_with_one_line(store, hub, home):
    job = sft_job(store, n=2)
    out = cli("--job", str(job), "--style", "dpo", home=home, exit_code=2)
    assert out.stderr.startswith("sdstudio: error: style dpo needs") and len(out.stderr.splitlines()) == 1
    out = cli("--job", "99", home=home, exit_code=2)
    assert "no generation job with id 99" in out.stderr and len(out.stderr.splitlines()) == 1
    out = cli("--job", str(job), "--hf-repo", "alice/x", "--hf-endpoint", hub.url, "--json", home=home,
              env={"HF_TOKEN": "hf_bad"}, exit_code=2)
    assert json.loads(out.stdout)["status"] == "failed" and "401" in out.stderr
    assert len(out.stderr.splitlines()) == 1 and "hf_bad" not in out.stderr + out.stdout
