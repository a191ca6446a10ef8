"""``sdstudio generate``: SFT / freeform generation from topics."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import ConfigError
from .common import (add_model_flags, apply_overrides, build_config, load_job_data, run_with_progress, show_preview)


def register(sub: argparse._SubParsersAction) -> None:
    gen = sub.add_parser("generate", help="SFT / freeform generation from topics")
    add_model_flags(gen)
    gen.add_argument("--use-case", help="a use case of templates/ (code_generation, text2sql, custom, freeform...) "
                     "or the path of a use case folder (./my_case)")
    topics = gen.add_mutually_exclusive_group()
    topics.add_argument("--topics", nargs="+", metavar="TOPIC")
    topics.add_argument("--topics-file", help="JSON list, or one topic per line")
    gen.add_argument("--per-topic", type=int, help="items per topic")
    gen.add_argument("--batch-size", type=int, help="items asked per call")
    gen.add_argument("--attribute", action="append", metavar="NAME=v1,v2,v3",
                     help="a dimension drawn per request and shown to the template (repeatable; v:2 weights a "
                     "value; NAME=@personas.txt reads one value a line); conditional ones go in --config")
    gen.add_argument("--seed", type=int, help="seed of the attribute draws (the same seed, the same draws)")
    gen.add_argument("--resume", type=int, metavar="JOB_ID", help="continue a killed or cancelled job")
    gen.add_argument("--dry-run", action="store_true", help="show the first prompt and the estimate; no call")
    gen.set_defaults(handler=run)


def job_config(args: argparse.Namespace):
    """The GenerationJob these flags (and ``--config``, or the resumed job's config) describe."""
    from ..config import GenerationJob

    data = load_job_data(args, "generation", "generation")
    if args.topics_file:
        data["topics"] = read_topics(args.topics_file)
    if args.attribute:  # flags add to (or replace by name) the config's attributes
        from ..samplers import parse_flag

        data["attributes"] = {**(data.get("attributes") or {}), **dict(parse_flag(a) for a in args.attribute)}
    for flag, key in (("topics", "topics"), ("use_case", "use_case"), ("per_topic", "num_per_topic"),
                      ("batch_size", "batch_size"), ("seed", "seed")):
        if getattr(args, flag) is not None:
            data[key] = getattr(args, flag)
    return build_config(GenerationJob, apply_overrides(data, args), args.config or "generate flags", args)


def run(args: argparse.Namespace) -> int:
    from ..workflows.sft import GenerationRun, preview

    config = job_config(args)
    if args.dry_run:
        shown = preview(config, home=args.home)
        if shown.attributes and not args.json:
            print("attributes (drawn per request):\n  " + shown.attributes.replace("\n", "\n  "), file=sys.stderr)
        return show_preview(shown, args, "first prompt", f"{shown.items} items in {shown.requests} requests")
    return run_with_progress(GenerationRun(config, home=args.home), args, config.run.max_failed_ratio)


def read_topics(path: str) -> list[str]:
    """Topics from a file: a JSON list of strings, or one topic per line (blank lines and # ignored)."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read topics file {file}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"cannot read topics file {file}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at "
                          f"offset {exc.start}); save it as UTF-8") from None
    if file.suffix.lower() == ".json" or text.lstrip().startswith("["):
        try:
            topics = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{file}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
        if not isinstance(topics, list) or not all(isinstance(t, str) for t in topics):
            raise ConfigError(f"{file}: expected a JSON list of strings")
        return topics
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]

