"""Export jobs' records as trainer-ready files (JSONL, CSV, Parquet) and, optionally, a Hugging Face dataset.

Rows flow: records of the source generation jobs (status ok) -> filters (judge score, reviewer verdicts,
reviewers' edits) -> a style that fixes the columns -> an optional seeded train/test split -> files staged
and published into a new ``SDSTUDIO_HOME/exports/<name>/v<N>/`` (or the ``out`` folder, under the rules in
``export_paths``) with a README.md dataset card -> the Hub. No export replaces or deletes a file it did not
write, so every earlier export's files stay as its row recorded them.

Styles use exactly the column names TRL documents, so ``load_dataset(...)`` output goes straight into a
trainer: ``sft-messages`` (``messages``), ``sft-prompt-completion`` (``prompt``, ``completion``), ``dpo``
(``prompt``, ``chosen``, ``rejected``), ``kto`` (``prompt``, ``completion``, ``label``); ``openai-chat`` is
OpenAI's fine-tuning JSONL; ``raw`` keeps every field plus provenance, score and review verdict.

Every export writes one ``export_metadata`` row (failed uploads too, with the error) listing each file it
wrote with its sha256, size and rows, so any dataset on disk or on the Hub can be traced back to its jobs,
filters and bytes. Where files go and how they are written: ``export_paths`` and ``export_files``.
"""
from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import ExportJob
from .datacard import SourceLineage, build_card
from .errors import ConfigError
from .export_messages import (add_reasoning, check_reasoning_style, conversation_messages, conversational_form,
                              is_conversation, without_reasoning)
from .export_files import (WrittenFile, atomic_write, atomic_write_text, columns_of, describe_file, sha256_file,
                           write_rows)
from .export_paths import Destination, discard, open_staging, plan, publish
from .home import init_home
from .hub import HubError, hub_token, parse_repo_id, resolve_endpoint, upload
from .spark_output import job_records
from .store import Store

__all__ = ["ExportResult", "ExportUploadError", "STYLES", "atomic_write", "atomic_write_text", "export_dataset",
           "sha256_file"]

STYLE_COLUMNS: dict[str, tuple[str, ...]] = {
    "sft-messages": ("messages",),
    "sft-prompt-completion": ("prompt", "completion"),
    "dpo": ("prompt", "chosen", "rejected"),
    "kto": ("prompt", "completion", "label"),
    "openai-chat": ("messages",),
}
STYLES = ("raw", *STYLE_COLUMNS)
EXTENSIONS = {"jsonl": "jsonl", "csv": "csv", "parquet": "parquet"}
# Row shapes a record's item can have, and the styles each one fits.
SHAPE_STYLES = {
    "prompt-completion": ("raw", "sft-messages", "sft-prompt-completion", "openai-chat"),
    "preference": ("raw", "dpo"),
    "unpaired": ("raw", "kto"),
    "columns": ("raw",),
    "conversation": ("raw", "sft-messages", "openai-chat"),  # a whole chat (workflows.fields' messages)
}
STYLE_NEEDS = {"sft-messages": "prompt-completion", "sft-prompt-completion": "prompt-completion",
               "openai-chat": "prompt-completion", "dpo": "preference", "kto": "unpaired"}
RAW_META = ("record_id", "job_id", "topic", "score", "justification", "review_verdict", "edited", "provenance")


@dataclass
class ExportResult:
    """What an export did; ``--json`` prints ``to_json()``."""

    export_id: int
    status: str
    style: str
    format: str
    rows: int
    splits: dict[str, int]
    directory: str
    paths: list[str]
    file_hashes: dict[str, str]
    filters: dict[str, Any]
    files: list[WrittenFile] = field(default_factory=list)
    version: int | None = None  # N of exports/<name>/v<N>/; None for an --out folder
    repo_id: str | None = None
    revision: str | None = None
    url: str | None = None
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        data = {"export_id": self.export_id, "status": self.status, "rows": self.rows, "splits": self.splits,
                "style": self.style, "format": self.format, "directory": self.directory, "paths": self.paths}
        if self.version is not None:
            data["version"] = self.version
        if self.repo_id:
            data.update(repo_id=self.repo_id, revision=self.revision, url=self.url)
        if self.notes:
            data["notes"] = self.notes
        return data


class ExportUploadError(HubError):
    """The files were written and recorded, but the upload failed; carries what was written."""

    def __init__(self, message: str, result: ExportResult):
        super().__init__(message)
        self.result = result


@dataclass
class Source:
    """One source generation job with what the filters need: its use case's fields, judge and reviews."""

    job: dict[str, Any]
    prompt_field: str | None
    completion_field: str | None
    messages_field: str | None  # the item key holding a whole chat (conversation jobs), else None
    evaluation: dict[str, Any] | None
    scores: dict[int, tuple[Any, Any]]  # generation record id -> (score, justification)
    reviews: dict[int, dict[str, Any]]
    exported_ids: list[int] = field(default_factory=list)

    @property
    def id(self) -> int:
        return int(self.job["id"])


# -- public API ----------------------------------------------------------------------------------

def export_dataset(config: ExportJob, *, home: str | Path | None = None, store: Store | None = None) -> ExportResult:
    """Run an export: write the files (and card), upload them if ``hf_repo`` is set, record the row.

    Raises ``ConfigError`` for anything wrong with the request (before writing a file) and
    ``ExportUploadError`` when the Hub upload fails (the files are written and stay; the row says failed).
    """
    if config.style == "openai-chat" and config.format != "jsonl":
        raise ConfigError("style openai-chat is JSONL by definition (OpenAI's fine-tuning upload); use format jsonl")
    check_reasoning_style(config.style, config.with_reasoning)
    repo_id = endpoint = token = None
    if config.hf_repo:  # fail before writing anything when the upload cannot work
        repo_id = parse_repo_id(config.hf_repo)
        endpoint = resolve_endpoint(config.hf_endpoint)
        token = hub_token()
    store = store or Store.open(home)
    home = init_home(home if home is not None else Path(store.path).parent)  # the store's home, whatever the environment
    name = config.name or default_name(config)
    data_names = [f"{split}.{EXTENSIONS[config.format]}" for split in (("train", "test") if config.test_fraction
                                                                       else ("train",))]
    destination = plan(out=config.out, name=name, home=home, data=data_names, overwrite=config.overwrite,
                       store=store)  # refusals come before any row is read or any file written
    sources = [load_source(store, job_id, home) for job_id in dict.fromkeys(config.jobs)]
    rows, dropped = collect_rows(store, sources, config)
    shaped = [shape_row(row, config.style, config.system_prompt, config.conversational, config.with_reasoning)
              for row in rows]
    splits = split_rows(shaped, config.test_fraction, config.seed)
    filters = {"status": "ok", "min_score": config.min_score, "reviewed_only": config.reviewed_only,
               "prefer_edits": config.prefer_edits, "drop_rejected": True, "test_fraction": config.test_fraction,
               "seed": config.seed, "dropped": dropped, "with_reasoning": config.with_reasoning}
    card = build_card(name=name, style=config.style, fmt=config.format, columns=columns_of(shaped),
                      splits={s: (f, len(r)) for (s, r), f in zip(splits.items(), data_names)}, filters=filters,
                      sources=[lineage(s, store, home) for s in sources], license=config.license,
                      version=_version())
    written = write_files(destination, splits, data_names, config.format, card)
    directory = destination.directory
    assert directory is not None
    hashes = {f.name: f.sha256 for f in written}
    result = ExportResult(export_id=0, status="done", style=config.style, format=config.format, rows=len(shaped),
                          splits={s: len(r) for s, r in splits.items()}, directory=str(directory),
                          paths=[str(directory / f.name) for f in written], file_hashes=hashes, filters=filters,
                          files=written, version=destination.version, notes=destination.notes)
    row = {"source_job_ids": [s.id for s in sources], "destination": "huggingface" if repo_id else "files",
           "format": config.format, "style": config.style, "path": str(directory), "repo_id": repo_id,
           "row_count": len(shaped), "file_hashes": hashes, "files": [f.to_json() for f in written],
           "filters": filters, "config": config.model_dump(mode="json")}
    if repo_id:
        jobs = ", ".join(str(s.id) for s in sources)
        try:
            in_repo = {f.name: ("README.md" if f.name == destination.card else f.name) for f in written}
            commit = upload(directory, in_repo, repo_id=repo_id, endpoint=endpoint, token=token,
                            private=config.private, message=f"sdstudio export: {len(shaped)} rows, style {config.style}",
                            description=f"Exported by sdstudio {_version()} from generation job(s) {jobs}.")
        except HubError as exc:
            message = f"{exc}; the exported files stay in {directory}"
            result.status, result.repo_id = "failed", repo_id
            result.export_id = store.create_job("export", status="failed", error=message, **row)
            raise ExportUploadError(message, result) from None
        result.repo_id, result.revision, result.url = repo_id, commit.revision, commit.url
        row["revision"] = commit.revision
    result.export_id = store.create_job("export", status="done", **row)
    return result


def write_files(destination: Destination, splits: dict[str, list[dict[str, Any]]], data_names: list[str], fmt: str,
                card: str) -> list[WrittenFile]:
    """Write the data files and the card into a private staging folder, hash them, and publish them at the
    destination. A failure (or Ctrl-C) before publishing removes the staging folder and leaves the destination
    as it was; the hashes are taken in staging, from the very bytes that are published."""
    try:
        staging = open_staging(destination)
    except OSError as exc:
        raise ConfigError(f"cannot write the export to {destination.root}: {exc.strerror or exc}; "
                          "choose another --out") from None
    try:
        written = []
        for (split, rows), name in zip(splits.items(), data_names):
            write_rows(staging / name, rows, fmt)
            written.append(describe_file(staging / name, rows=len(rows), split=split))
        (staging / destination.card).write_text(card, encoding="utf-8")
        written.append(describe_file(staging / destination.card, rows=None))
        replaced = publish(destination, staging)
    except OSError as exc:
        discard(staging)
        raise ConfigError(f"cannot write the export to {destination.root}: {exc.strerror or exc}; "
                          "choose another --out") from None
    except BaseException:
        discard(staging)
        raise
    return [dataclasses.replace(f, replaced=replaced.get(f.name)) for f in written]


def default_name(config: ExportJob) -> str:
    return f"job-{'-'.join(str(j) for j in dict.fromkeys(config.jobs))}-{config.style}"


# -- sources and filters ---------------------------------------------------------------------------

def load_source(store: Store, job_id: int, home: str | Path | None = None) -> Source:
    """A generation job, its use case's prompt/completion fields, newest finished judge run and reviews."""
    from .workflows.fields import job_fields

    job = store.get_job("generation", job_id)
    fields = job_fields(store, job_id, home)  # what its workflow says the prompt and completion are
    prompt_field, completion_field = fields.prompt, fields.completion
    evaluation = store.newest_done_evaluation(job_id)
    scores = store.judge_scores(evaluation["id"]) if evaluation is not None else {}
    return Source(job=job, prompt_field=prompt_field, completion_field=completion_field,
                  messages_field=fields.messages, evaluation=evaluation, scores=scores,
                  reviews=store.latest_reviews("generation", job_id))


def collect_rows(store: Store, sources: Iterable[Source], config: ExportJob) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The kept rows as dicts (item, shape, metadata) and how many each filter dropped."""
    dropped = {"not_ok": 0, "rejected": 0, "not_accepted": 0, "unscored": 0, "below_min_score": 0}
    rows: list[dict[str, Any]] = []
    for source in sources:
        if config.min_score is not None and source.evaluation is None:
            raise ConfigError(f"min_score {config.min_score:g} needs a finished evaluation of generation job "
                              f"{source.id}; run `sdstudio evaluate --job {source.id}` first, or drop min_score")
        counts = store.count_records("generation", source.id)
        dropped["not_ok"] += counts["failed"] + counts["filtered"]
        for record in job_records(store, "generation", source.id, "ok"):  # its Parquet when it has one
            review = source.reviews.get(record["id"]) or {}
            verdict = review.get("verdict")
            if verdict == "reject":
                dropped["rejected"] += 1
                continue
            # an edit is an accept (reviews from before edits carried a verdict have none of their own)
            accepted = verdict == "accept" or (verdict is None and review.get("edited_output") is not None)
            if config.reviewed_only and not accepted:
                dropped["not_accepted"] += 1
                continue
            score, why = source.scores.get(record["id"], (None, None))
            if config.min_score is not None:
                if score is None:
                    dropped["unscored"] += 1
                    continue
                if float(score) < config.min_score:
                    dropped["below_min_score"] += 1
                    continue
            item, edited = record["output"], False
            edit = review.get("edited_output")
            if config.prefer_edits and edit is not None:
                item = {**item, **edit} if isinstance(item, dict) and isinstance(edit, dict) else edit
                edited = True
            if not isinstance(item, dict):
                item = {"value": item}
            shape = shape_of(item, source)
            if config.style not in SHAPE_STYLES[shape]:
                raise ConfigError(style_mismatch(config.style, shape, item, source))
            source.exported_ids.append(record["id"])
            rows.append({"item": item, "shape": shape, "source": source, "record_id": record["id"],
                         "job_id": source.id, "topic": record.get("topic"), "provenance": record.get("provenance"),
                         "score": score, "justification": why, "review_verdict": verdict, "edited": edited,
                         "reasoning": record.get("reasoning")})
    if not rows:
        what = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in dropped.items() if n) or "the jobs have no ok rows"
        raise ConfigError(f"nothing to export from job(s) {', '.join(str(s.id) for s in sources)}: every row was "
                          f"filtered out ({what}); loosen the filters or check `sdstudio jobs show ID`")
    return rows, dropped


def shape_of(item: dict[str, Any], source: Source) -> str:
    if is_conversation(item, source.messages_field):
        return "conversation"
    keys = set(item)
    if {"prompt", "chosen", "rejected"} <= keys:
        return "preference"
    if {"prompt", "completion", "label"} <= keys:
        return "unpaired"
    if source.prompt_field and source.completion_field and {source.prompt_field, source.completion_field} <= keys:
        return "prompt-completion"
    if {"prompt", "completion"} <= keys:
        return "prompt-completion"
    return "columns"


def style_mismatch(style: str, shape: str, item: dict[str, Any], source: Source) -> str:
    needs = {"prompt-completion": "prompt/completion pairs", "preference": "preference pairs (prompt, chosen, rejected)",
             "unpaired": "labelled completions (prompt, completion, label)"}[STYLE_NEEDS[style]]
    use_case = source.job.get("use_case") or "custom"
    holds = {"prompt-completion": f"{use_case} SFT items ({source.prompt_field or 'prompt'} -> "
                                  f"{source.completion_field or 'completion'})",
             "preference": "DPO preference pairs (prompt, chosen, rejected)",
             "unpaired": "KTO rows (prompt, completion, label)",
             "conversation": "multi-turn conversations (messages)",
             "columns": f"{use_case} rows with columns {', '.join(sorted(item))} and no prompt/completion pair"}[shape]
    return (f"style {style} needs {needs}, but generation job {source.id} holds {holds}; "
            f"styles that fit it: {', '.join(SHAPE_STYLES[shape])}")


# -- styles ----------------------------------------------------------------------------------------

def shape_row(row: dict[str, Any], style: str, system_prompt: str | None = None,
              conversational: bool = False, with_reasoning: bool = False) -> dict[str, Any]:
    """One exported row in ``style``'s exact columns (dpo/kto: strings, or TRL's conversational form); the
    model's reasoning only ``with_reasoning`` (export_messages.py says where it goes)."""
    item, source = row["item"], row["source"]
    if row["shape"] == "conversation" and style != "raw":
        return {"messages": conversation_messages(item, source.messages_field, system_prompt, row["provenance"],
                                                  with_reasoning)}
    if style == "raw":
        out = dict(item)
        if row["shape"] == "conversation":
            out[source.messages_field] = conversation_messages(item, source.messages_field, None, row["provenance"],
                                                               with_reasoning)
        for key in RAW_META:  # an item field of the same name keeps its name; ours gets a prefix
            value = row[key] if key != "provenance" or with_reasoning else without_reasoning(row[key])
            out[f"sdstudio_{key}" if key in item else key] = value
        return add_reasoning(out, row, style) if with_reasoning and row["shape"] != "conversation" else out
    if row["shape"] in ("preference", "unpaired"):
        prompt, completion = item["prompt"], item.get("completion")
    else:
        prompt = item.get(source.prompt_field) if source.prompt_field in item else item["prompt"]
        completion = item.get(source.completion_field) if source.completion_field in item else item["completion"]
    if style in ("sft-messages", "openai-chat"):
        messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
        messages += [{"role": "user", "content": _text(prompt)}, {"role": "assistant", "content": _text(completion)}]
        return add_reasoning({"messages": messages}, row, style) if with_reasoning else {"messages": messages}
    if style == "sft-prompt-completion":
        out = {"prompt": _text(prompt), "completion": _text(completion)}
        return add_reasoning(out, row, style) if with_reasoning else out
    if style == "dpo":
        row_out = {"prompt": _text(prompt), "chosen": _text(item["chosen"]), "rejected": _text(item["rejected"])}
        return conversational_form(row_out, ("chosen", "rejected"), system_prompt) if conversational else row_out
    row_out = {"prompt": _text(prompt), "completion": _text(completion), "label": _label(item["label"])}
    return conversational_form(row_out, ("completion",), system_prompt) if conversational else row_out


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _label(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes", "desirable", "good")
    return bool(value)


def split_rows(rows: list[dict[str, Any]], test_fraction: float | None, seed: int) -> dict[str, list[dict[str, Any]]]:
    """``train`` only, or ``train`` and ``test`` drawn with a fixed seed (each keeps the original order)."""
    if not test_fraction:
        return {"train": rows}
    n_test = max(1, round(len(rows) * test_fraction))
    if n_test >= len(rows):
        raise ConfigError(f"test_fraction {test_fraction:g} of {len(rows)} row(s) leaves no training rows; "
                          "export more rows or drop test_fraction")
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    test = set(order[:n_test])
    return {"train": [r for i, r in enumerate(rows) if i not in test],
            "test": [r for i, r in enumerate(rows) if i in test]}


# -- lineage -------------------------------------------------------------------------------------

def lineage(source: Source, store: Store | None = None, home: str | Path | None = None) -> SourceLineage:
    """What the card says about one source job; with the store, its diversity report too (diversity.py)."""
    exported = set(source.exported_ids)
    scores = [float(s) for s, _ in source.scores.values() if isinstance(s, (int, float))]
    kept = [float(s) for rid, (s, _) in source.scores.items() if rid in exported and isinstance(s, (int, float))]
    report = None
    if store is not None:
        from .diversity import job_report

        found = job_report(store, source.id, home)
        report = found.to_json() if found is not None else None
    return SourceLineage(job=source.job, exported=len(exported), evaluation=source.evaluation, scores=scores,
                         exported_scores=kept, diversity=report)


def _version() -> str:
    from . import __version__

    return __version__
