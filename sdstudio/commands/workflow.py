"""``sdstudio workflow``: a custom workflow (prompt steps) over the rows of a CSV/JSONL/JSON/Parquet/Excel file."""
from __future__ import annotations

import argparse
from typing import Any

from ..errors import ConfigError
from .common import (EXIT_OK, add_model_flags, apply_overrides, build_config, load_job_data, run_with_progress,
                     show_preview)


def register(sub: argparse._SubParsersAction) -> None:
    wf = sub.add_parser("workflow", help="custom workflow: prompt steps over the rows of your dataset")
    add_model_flags(wf)
    source = wf.add_mutually_exclusive_group()
    source.add_argument("--input", metavar="FILE", help="CSV, TSV, JSONL, JSON array, Parquet or Excel (.xlsx); or a "
                        "URI Spark reads (hdfs://, s3a://, file:...; docs/spark.md)")
    source.add_argument("--input-table", metavar="DB.TABLE", help="a Spark table (--limit and --sample run in Spark)")
    wf.add_argument("--columns", nargs="+", metavar="C", help="input columns to keep (default: all)")
    wf.add_argument("--limit", type=int, metavar="N", help="run N rows (the first ones, or random with --sample)")
    wf.add_argument("--sample", action="store_true", help="--limit picks random rows (the same ones for a --seed)")
    wf.add_argument("--seed", type=int, help="seed for --sample (default 42)")
    wf.add_argument("--variations", type=int, metavar="N", help="run the chain N times per row")
    wf.add_argument("--preset", action="append", metavar="NAME",
                    help="append a preset's steps (paraphrase, change_difficulty, translate, add_reasoning, "
                         "variations); repeatable")
    wf.add_argument("--set", action="append", dest="options", metavar="OPTION=VALUE", default=[],
                    help="a preset option, e.g. --set column=question --set language=German")
    wf.add_argument("--list-presets", action="store_true", help="list the presets and exit")
    wf.add_argument("--resume", type=int, metavar="JOB_ID", help="continue a killed or cancelled workflow job")
    wf.add_argument("--dry-run", action="store_true", help="show each step's first prompt and the estimate; no call")
    wf.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..workflows.custom import WorkflowRun, preview
    from ..workflows.presets import list_presets

    if args.list_presets:
        for name, description in list_presets(args.home).items():
            print(f"{name}: {description}")
        return EXIT_OK
    config = job_config(args)
    if args.dry_run:
        shown = preview(config, home=args.home)
        steps = "\n".join(f"### step {number}/{len(shown.steps)} {step.step} -> {step.output_column} "
                          f"({step.output_type}; {step.provider} {step.model_id or ''}) ~{step.prompt_tokens} "
                          f"tokens\n{step.prompt}\n" for number, step in enumerate(shown.steps, 1))
        return show_preview(shown, args, f"{len(shown.steps)} step(s)",
                            f"{shown.rows} rows x {len(shown.steps)} steps = {shown.requests} requests", prompt=steps)
    # bad input and templates fail in the constructor, before the bar shows
    return run_with_progress(WorkflowRun(config, home=args.home), args, config.run.max_failed_ratio)


def job_config(args: argparse.Namespace):
    """The WorkflowJob these flags (and ``--config``, or the resumed job's config) describe."""
    from ..config import WorkflowJob

    from ..spark_io import input_flag, start_for

    input_flag(args)
    data = load_job_data(args, "workflow", "generation")
    add_presets(data, args.preset or [], parse_options(args.options), args.home)
    for flag, key in (("input", "input_file"), ("columns", "columns"), ("limit", "limit"), ("seed", "seed"),
                      ("variations", "variations")):
        if getattr(args, flag) is not None:
            data[key] = getattr(args, flag)
    if args.sample:
        data["sample"] = True
    if not data.get("steps"):
        raise ConfigError("the workflow has no steps: give --config WF.yaml (with steps) or --preset NAME")
    start_for(apply_overrides(data, args))
    return build_config(WorkflowJob, data, args.config or "workflow flags", args)


def parse_options(pairs: list[str]) -> dict[str, str]:
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {pair!r}: write it as OPTION=VALUE, e.g. --set column=question")
        options[key.strip()] = value
    return options


def add_presets(data: dict[str, Any], names: list[str], options: dict[str, str], home: str | None) -> None:
    """Append each preset's steps to ``data``; every --set option must belong to one of the presets."""
    from ..workflows.presets import load_preset, preset_steps

    known = {name: set(load_preset(name, home).options) for name in names}
    unused = sorted(set(options) - set().union(*known.values()))
    if unused:
        raise ConfigError(f"--set {unused[0]}: no chosen preset has that option" if names
                          else "--set needs --preset NAME")
    for name in names:
        steps, fields = preset_steps(name, home=home, **{k: v for k, v in options.items() if k in known[name]})
        data["steps"] = [*data.get("steps", []), *(s.model_dump(mode="json", exclude_none=True) for s in steps)]
        data.update(fields)
