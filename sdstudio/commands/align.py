"""``sdstudio align``: DPO preference pairs or KTO labelled completions, K judged candidates per prompt."""
from __future__ import annotations

import argparse
from typing import Any

from ..errors import ConfigError
from .common import (add_model_flags, apply_overrides, build_config, load_job_data, run_with_progress, show_preview)


def register(sub: argparse._SubParsersAction) -> None:
    al = sub.add_parser("align", help="DPO pairs / KTO labelled completions: K candidates per prompt, judge-ranked")
    add_model_flags(al)
    source = al.add_mutually_exclusive_group()
    source.add_argument("--job", type=int, metavar="JOB_ID", help="a generation job whose items hold the prompts")
    source.add_argument("--input", metavar="FILE", help="CSV, JSONL or Parquet with a prompt column; or a URI Spark "
                        "reads (hdfs://, s3a://, file:...; docs/spark.md)")
    source.add_argument("--input-table", metavar="DB.TABLE", help="a Spark table with a prompt column")
    source.add_argument("--topics", nargs="+", metavar="TOPIC", help="write prompts for these topics first")
    source.add_argument("--topics-file", help="--topics from a file: JSON list, or one topic per line")
    al.add_argument("--prompt-col", metavar="C", help="--input: the prompt column; --job: the item field")
    al.add_argument("--use-case", help="topics: the use case that writes the prompts (default: alignment)")
    al.add_argument("--per-topic", type=int, metavar="N", help="topics: prompts per topic")
    al.add_argument("--limit", type=int, metavar="N", help="at most N prompts (the first ones)")
    al.add_argument("--method", choices=("dpo", "kto"), help="dpo (default): pairs; kto: labelled completions")
    al.add_argument("-k", "--candidates", type=int, metavar="K", help="candidates per prompt (default 4)")
    al.add_argument("--temperatures", type=float, nargs="+", metavar="X", help="candidate temperatures, in turn")
    al.add_argument("--candidate-models", nargs="+", metavar="M",
                    help="models answering in turn (same provider and endpoint as --model)")
    al.add_argument("--system-prompt", help="sent before every prompt when candidates are written")
    al.add_argument("--judge-model", metavar="M", help="the judge (default: --model at temperature 0)")
    al.add_argument("--judge-provider", metavar="P", help="the judge's provider (default: --provider)")
    al.add_argument("--judge-base-url", metavar="URL")
    al.add_argument("--criteria-file", metavar="F", help="judge criteria, as text")
    al.add_argument("--scale", metavar="LOW-HIGH", help="integer score range (default 1-5)")
    al.add_argument("--min-margin", type=float, metavar="X", help="dpo: drop pairs whose score gap is smaller")
    al.add_argument("--desirable-at", type=int, metavar="S", help="kto: label true at score >= S")
    al.add_argument("--undesirable-at", type=int, metavar="S", help="kto: label false at score <= S")
    al.add_argument("--rebalance", type=float, metavar="RATIO",
                    help="kto: down-sample the larger label to at most RATIO:1 (fixed --seed)")
    al.add_argument("--seed", type=int)
    al.add_argument("--resume", type=int, metavar="JOB_ID", help="continue a killed or cancelled alignment job")
    al.add_argument("--dry-run", action="store_true", help="show the first request and the estimate; no call")
    al.set_defaults(handler=run)


def config_data(args: argparse.Namespace) -> dict[str, Any]:
    """The config file (or the resumed job's config) with the flags applied."""
    from .evaluate import parse_scale, read_criteria
    from .generate import read_topics

    from ..spark_io import input_flag, start_for

    input_flag(args)
    data = load_job_data(args, "alignment", "generation")
    topics = read_topics(args.topics_file) if args.topics_file else args.topics
    chosen = {"source_job": args.job, "input_file": args.input, "topics": topics}
    picked = next((key for key, value in chosen.items() if value is not None), None)
    if picked is not None:
        for key in chosen:
            data.pop(key, None)
        data[picked] = chosen[picked]
    for flag, key in (("prompt_col", "prompt_column"), ("use_case", "use_case"), ("per_topic", "prompts_per_topic"),
                      ("limit", "limit"), ("method", "method"), ("candidates", "candidates"),
                      ("temperatures", "temperatures"), ("system_prompt", "system_prompt"),
                      ("min_margin", "min_margin"), ("desirable_at", "desirable_at"),
                      ("undesirable_at", "undesirable_at"), ("rebalance", "rebalance"), ("seed", "seed")):
        if getattr(args, flag) is not None:
            data[key] = getattr(args, flag)
    if data.get("input_file") is not None and not data.get("prompt_column"):
        raise ConfigError(f"--input {data['input_file']} needs --prompt-col (the column holding the prompts)")
    if args.criteria_file:
        data["criteria"] = read_criteria(args.criteria_file)
    if args.scale:
        data["scale"] = parse_scale(args.scale)
    apply_overrides(data, args)
    start_for(data)
    model = data["model"]
    if args.candidate_models:
        data["candidate_models"] = [{**model, "model": name} for name in args.candidate_models]
    if args.judge_model or args.judge_provider or args.judge_base_url:
        from ..providers import DEFAULT_PROVIDER

        judge = dict(data.get("judge") or {})
        judge.setdefault("provider", model.get("provider", DEFAULT_PROVIDER))
        for flag, key in (("judge_provider", "provider"), ("judge_model", "model"), ("judge_base_url", "base_url")):
            if getattr(args, flag) is not None:
                judge[key] = getattr(args, flag)
        if judge["provider"] == model.get("provider"):  # same provider: the same server and key, another model
            for key in ("base_url", "region", "api_key_env"):
                if key not in judge and model.get(key):
                    judge[key] = model[key]
        data["judge"] = judge
    return data


def job_config(args: argparse.Namespace):
    """The AlignmentJob these flags (and ``--config``, or the resumed job's config) describe."""
    from ..config import AlignmentJob

    return build_config(AlignmentJob, config_data(args), args.config or "align flags", args)


def run(args: argparse.Namespace) -> int:
    from ..workflows.alignment import AlignmentRun, preview

    config = job_config(args)
    if args.dry_run:
        shown = preview(config, home=args.home)
        return show_preview(shown, args, f"first {shown.first_stage} request",
                            f"{shown.prompts} prompts x {shown.candidates} candidates, {shown.requests} requests "
                            "with judging")
    # bad sources, models and templates fail in the constructor, before the bar shows
    return run_with_progress(AlignmentRun(config, home=args.home), args, config.run.max_failed_ratio)
