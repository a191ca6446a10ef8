"""The dataset card (README.md) of an export: Hub metadata in the YAML header, lineage in the body.

The header carries what the Hub indexes (license, task categories, size category, tags, and ``configs`` so
the viewer and ``load_dataset(repo)`` find the splits). The body says where every row came from: which
model with which parameters, which use case and prompt template, which topics, which judge and how it
scored, which filters, and the sdstudio version, so a dataset found on the Hub can be reproduced.
"""
from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import yaml

STYLE_DESCRIPTIONS = {
    "raw": "every field of each item plus its provenance: topic, judge score and justification, review verdict",
    "sft-messages": "TRL conversational SFT: `messages`, a list of {role, content} turns",
    "sft-prompt-completion": "TRL standard prompt-completion SFT: `prompt`, `completion`",
    "dpo": "TRL preference (DPO): `prompt`, `chosen`, `rejected`",
    "kto": "TRL unpaired preference (KTO): `prompt`, `completion`, `label`",
    "openai-chat": "OpenAI chat fine-tuning JSONL: `messages`, a list of {role, content} turns",
}
STYLE_TAGS = {"sft-messages": ["sft"], "sft-prompt-completion": ["sft"], "dpo": ["dpo", "preference"],
              "kto": ["kto", "preference"], "openai-chat": ["sft", "openai"], "raw": []}
_SIZES = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
          (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B")]
MAX_TOPICS_SHOWN = 50


@dataclass
class SourceLineage:
    """What the card says about one source job (a row of generation_metadata and its judge)."""

    job: dict[str, Any]
    exported: int
    evaluation: dict[str, Any] | None = None
    scores: list[float] = field(default_factory=list)  # every score of the judge run
    exported_scores: list[float] = field(default_factory=list)
    diversity: dict[str, Any] | None = None  # diversity.DiversityReport.to_json() of the job's items


def size_category(rows: int) -> str:
    for limit, label in _SIZES:
        if rows < limit:
            return label
    return "n>1B"


def build_card(*, name: str, style: str, fmt: str, columns: list[str], splits: dict[str, tuple[str, int]],
               filters: dict[str, Any], sources: list[SourceLineage], license: str, version: str) -> str:
    """README.md text. ``splits``: split name -> (file name, rows)."""
    total = sum(rows for _, rows in splits.values())
    header = {
        "license": license,
        "task_categories": ["text-generation"],
        "tags": ["synthetic", "sdstudio", *STYLE_TAGS.get(style, [])],
        "size_categories": [size_category(total)],
        "pretty_name": name,
        "configs": [{"config_name": "default",
                     "data_files": [{"split": split, "path": file} for split, (file, _) in splits.items()]}],
    }
    lines = ["---", yaml.safe_dump(header, sort_keys=False, allow_unicode=True).rstrip("\n"), "---", "",
             f"# {name}", "",
             f"Synthetic data generated and exported with sdstudio {version}.", "",
             f"- **Style**: `{style}`: {STYLE_DESCRIPTIONS[style]}",
             f"- **Format**: {fmt}",
             f"- **Columns**: {', '.join(f'`{c}`' for c in columns)}",
             f"- **Filters**: {describe_filters(filters)}", "",
             "| split | rows | file |", "|---|---|---|"]
    lines += [f"| {split} | {rows} | `{file}` |" for split, (file, rows) in splits.items()]
    lines += ["", "## Lineage", ""]
    for source in sources:
        lines += _lineage(source)
    lines += ["## Reproduce", "",
              "Each generation job's full configuration is stored in sdstudio's `metadata.db` "
              "(`sdstudio jobs show JOB_ID`); re-running it with `sdstudio generate --config` resumes or repeats it.",
              ""]
    return "\n".join(lines)


def describe_filters(filters: dict[str, Any]) -> str:
    parts = ["items that generated cleanly (status ok)"]
    if filters.get("min_score") is not None:
        parts.append(f"judge score >= {filters['min_score']:g}")
    if filters.get("reviewed_only"):
        parts.append("accepted by a reviewer")
    parts.append("reviewer-rejected items removed")
    parts.append("reviewers' edits used" if filters.get("prefer_edits") else "original items (reviewers' edits ignored)")
    if filters.get("test_fraction"):
        parts.append(f"test split {filters['test_fraction']:g} (seed {filters.get('seed')})")
    return "; ".join(parts)


def _lineage(source: SourceLineage) -> list[str]:
    job = source.job
    params = job.get("model_parameters") or {}
    shown_params = ", ".join(f"{k}={json.dumps(v)}" for k, v in params.items() if v not in (None, [], {})) or "defaults"
    topics = job.get("topics") or []
    topic_text = ", ".join(str(t) for t in topics[:MAX_TOPICS_SHOWN])
    if len(topics) > MAX_TOPICS_SHOWN:
        topic_text += f", … and {len(topics) - MAX_TOPICS_SHOWN} more"
    lines = [f"### Generation job {job['id']}", "",
             f"- **Generating model**: `{job.get('model_id') or 'unknown'}` via {job.get('inference_type') or 'unknown'}",
             f"- **Model parameters**: {shown_params}",
             f"- **Technique / use case**: {job.get('technique') or 'sft'} / {job.get('use_case') or 'custom'}",
             f"- **Topics** ({len(topics)}): {topic_text or 'none'}",
             f"- **Rows**: {job.get('requested') or 0} requested, {job.get('ok') or 0} ok, {job.get('failed') or 0} "
             f"failed, {job.get('filtered') or 0} filtered as duplicates or invalid; {source.exported} exported",
             f"- **Created**: {job.get('created_at')} (status {job.get('status')})"]
    lines.append(_judge(source))
    lines += _diversity(source.diversity)
    template = job.get("prompt_template")
    if template:
        fence = "`" * max(3, _longest_backtick_run(template) + 1)
        lines += ["", "<details><summary>Prompt template</summary>", "", f"{fence}jinja", template.rstrip("\n"),
                  fence, "", "</details>"]
    return [*lines, ""]


def _diversity(report: dict[str, Any] | None) -> list[str]:
    """How varied the job's items are (diversity.py): distinct-n, near duplicates, lengths, coverage, openings."""
    if not report:
        return []
    what = f"`{report['field']}`" if report.get("field") else "the whole item"
    lines = [f"- **Diversity** (of {what}, {report['items']} items{', a sample' if report.get('sampled') else ''}): "
             f"distinct-1 {report['distinct_1']:.2f}, distinct-2 {report['distinct_2']:.2f}; near duplicates "
             f"(similarity >= {report['threshold']:g}) {report['near_duplicate_rate_before']:.1%} of "
             f"{report['items_before']} before the filter, {report['near_duplicate_rate_after']:.1%} after"]
    lengths = report.get("lengths") or {}
    if lengths:
        lines.append(f"- **Length** ({lengths['unit']}): min {lengths['min']}, median {lengths['median']:g}, "
                     f"mean {lengths['mean']:g}, max {lengths['max']}")
    topics = report.get("topics") or {}
    if topics.get("requested"):
        missing = ", ".join(str(t) for t in topics.get("missing", [])[:MAX_TOPICS_SHOWN])
        lines.append(f"- **Topic coverage**: {topics['covered']} of {topics['requested']} topics have items"
                     + (f"; none for: {missing}" if missing else ""))
    for name, counts in (report.get("attributes") or {}).items():
        spread = ", ".join(f"{value}: {n}" for value, n in counts.items())
        lines.append(f"- **Attribute `{name}`**: {spread}")
    if report.get("openings"):
        shown = ", ".join(f"\"{o['opening']}\" ({o['count']})" for o in report["openings"][:5])
        lines.append(f"- **Most repeated openings**: {shown}")
    return lines


def _judge(source: SourceLineage) -> str:
    evaluation = source.evaluation
    if evaluation is None:
        return "- **Judge**: not evaluated"
    low, high = evaluation.get("scale_min"), evaluation.get("scale_max")
    scale = f"scale {low}-{high}; " if low is not None and high is not None else ""
    text = (f"- **Judge**: evaluation job {evaluation['id']} with `{evaluation.get('model_id') or 'unknown'}`; "
            f"{scale}{_scores(source.scores)} over all judged rows")
    if source.exported_scores:
        text += f"; exported rows: {_scores(source.exported_scores)}"
    return text


def _scores(scores: list[float]) -> str:
    if not scores:
        return "no scores"
    counts = Counter(scores)
    spread = ", ".join(f"{s:g}: {counts[s]}" for s in sorted(counts, reverse=True))
    return f"average {sum(scores) / len(scores):.2f} from {len(scores)} scores ({spread})"


def _longest_backtick_run(text: str) -> int:
    return max((len(m) for m in re.findall(r"`+", text)), default=0)
