"""``sdstudio evaluate``: LLM-as-judge over a generation job or a prompt/completion file."""
from __future__ import annotations

import argparse
import re
from pathlib import Path

from ..errors import ConfigError
from .common import (add_model_flags, apply_overrides, build_config, load_job_data, run_with_progress, show_preview)


def register(sub: argparse._SubParsersAction) -> None:
    ev = sub.add_parser("evaluate", help="LLM-as-judge: score a generation job or a prompt/completion file")
    add_model_flags(ev)
    source = ev.add_mutually_exclusive_group()
    source.add_argument("--job", type=int, metavar="JOB_ID", help="the generation job to judge")
    source.add_argument("--input", metavar="FILE", help="CSV, JSONL or Parquet of prompt/completion pairs; or a URI "
                        "Spark reads (hdfs://, s3a://, file:...; docs/spark.md)")
    source.add_argument("--input-table", metavar="DB.TABLE", help="a Spark table of prompt/completion pairs")
    ev.add_argument("--prompt-col", metavar="C", help="--input: the prompt column")
    ev.add_argument("--completion-col", metavar="C", help="--input: the completion column")
    ev.add_argument("--topic-col", metavar="C", help="--input: a topic column (per-topic statistics)")
    ev.add_argument("--use-case", help="whose judge template and default criteria to use")
    ev.add_argument("--criteria-file", metavar="F", help="judge criteria, as text")
    ev.add_argument("--scale", metavar="LOW-HIGH", help="integer score range, e.g. 1-5 or 1-10")
    ev.add_argument("--second-model", metavar="M", help="a second judge model: agreement figures")
    ev.add_argument("--second-provider", metavar="P", help="the second judge's provider (default: --provider)")
    ev.add_argument("--second-base-url", metavar="URL")
    ev.add_argument("--limit", type=int, metavar="N", help="judge only the first N rows (--input) or records (--job); "
                    "only those are read")
    ev.add_argument("--resume", type=int, metavar="JOB_ID", help="continue a killed or cancelled evaluation")
    ev.add_argument("--dry-run", action="store_true", help="show the first judge prompt and the estimate; no call")
    ev.set_defaults(handler=run)


def job_config(args: argparse.Namespace):
    """The EvaluationJob these flags (and ``--config``, or the resumed job's config) describe."""
    from ..config import EvaluationJob

    from ..spark_io import input_flag, start_for

    input_flag(args)
    data = load_job_data(args, "evaluation", "evaluation")
    if args.job is not None:
        data["source_job"] = args.job
        data.pop("input_file", None)
    if args.input is not None:
        data["input_file"] = args.input
        data.pop("source_job", None)
    for flag, key in (("prompt_col", "prompt_column"), ("completion_col", "completion_column"),
                      ("topic_col", "topic_column"), ("use_case", "use_case"), ("limit", "limit")):
        if getattr(args, flag) is not None:
            data[key] = getattr(args, flag)
    if data.get("source_job") is None and data.get("input_file") is None:
        raise ConfigError("nothing to judge: give --job JOB_ID, or --input FILE with --prompt-col and --completion-col")
    if data.get("input_file") is not None and not (data.get("prompt_column") and data.get("completion_column")):
        raise ConfigError(f"--input {data['input_file']} needs --prompt-col and --completion-col")
    if args.criteria_file:
        data["criteria"] = read_criteria(args.criteria_file)
    if args.scale:
        data["scale"] = parse_scale(args.scale)
    apply_overrides(data, args)
    start_for(data)
    if args.second_model or args.second_provider or args.second_base_url:
        from ..providers import DEFAULT_PROVIDER

        second = dict(data.get("second_judge") or {})
        second.setdefault("provider", data["model"].get("provider", DEFAULT_PROVIDER))
        for flag, key in (("second_provider", "provider"), ("second_model", "model"),
                          ("second_base_url", "base_url")):
            if getattr(args, flag) is not None:
                second[key] = getattr(args, flag)
        if "base_url" not in second and second["provider"] == data["model"].get("provider") \
                and data["model"].get("base_url"):
            second["base_url"] = data["model"]["base_url"]  # same provider, same server: another model on it
        data["second_judge"] = second
    return build_config(EvaluationJob, data, args.config or "evaluate flags", args)


def run(args: argparse.Namespace) -> int:
    from ..workflows.evaluate import EvaluationRun, preview

    config = job_config(args)
    if args.dry_run:
        shown = preview(config, home=args.home)
        return show_preview(shown, args, "first judge prompt", f"{shown.rows} rows in {shown.requests} requests")
    # bad sources and templates fail in the constructor, before the bar shows
    return run_with_progress(EvaluationRun(config, home=args.home), args, config.run.max_failed_ratio)


def parse_scale(text: str) -> list[int]:
    """``1-5``, ``1..10``, ``0:100`` or ``1,5`` -> [low, high]; the config checks low < high."""
    match = re.fullmatch(r"\s*(-?\d+)\s*(?:-|\.\.|:|,|to)\s*(-?\d+)\s*", text)
    if not match:
        raise ConfigError(f"--scale {text!r} is not a range; write it as LOW-HIGH, e.g. 1-5 or 1-10")
    return [int(match.group(1)), int(match.group(2))]


def read_criteria(path: str) -> str:
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read criteria file {file}: {getattr(exc, 'strerror', None) or exc}") from None
    if not text:
        raise ConfigError(f"criteria file {file} is empty")
    return text
