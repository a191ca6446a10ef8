"""``sdstudio generate``: SFT / freeform generation from topics."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import ConfigError
from .common import EXIT_OK, ProgressBar, add_model_flags, apply_overrides, build_config, load_job_data, report


def register(sub: argparse._SubParsersAction) -> None:
    gen = sub.add_parser("generate", help="SFT / freeform generation from topics")
    add_model_flags(gen)
    gen.add_argument("--use-case", help="a folder of templates/ (code_generation, text2sql, custom, freeform...)")
    topics = gen.add_mutually_exclusive_group()
    topics.add_argument("--topics", nargs="+", metavar="TOPIC")
    topics.add_argument("--topics-file", help="JSON list, or one topic per line")
    gen.add_argument("--per-topic", type=int, help="items per topic")
    gen.add_argument("--batch-size", type=int, help="items asked per call")
    gen.add_argument("--resume", type=int, metavar="JOB_ID", help="continue a killed or cancelled job")
    gen.add_argument("--dry-run", action="store_true", help="show the first prompt and the estimate; no call")
    gen.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..config import GenerationJob
    from ..workflows.sft import GenerationRun, preview

    data = load_job_data(args, "generation")
    if args.resume is not None and not args.config:
        from ..store import Store

        data = Store.open(args.home).get_job("generation", args.resume)["config"]
    if args.topics_file:
        data["topics"] = read_topics(args.topics_file)
    for flag, key in (("topics", "topics"), ("use_case", "use_case"), ("per_topic", "num_per_topic"),
                      ("batch_size", "batch_size")):
        if getattr(args, flag) is not None:
            data[key] = getattr(args, flag)
    config = build_config(GenerationJob, apply_overrides(data, args), args.config or "generate flags")
    if args.dry_run:
        shown = preview(config, home=args.home)
        if args.json:
            print(json.dumps(shown.to_json(), ensure_ascii=False))
        else:
            print(shown.prompt)
            approx = "" if shown.exact_tokens else "~"
            cost = f"${shown.est_cost_usd:.4f}" if shown.price_known else "unknown (no price for this model)"
            print(f"\n--- first prompt: {approx}{shown.prompt_tokens} tokens; job: {shown.items} items in "
                  f"{shown.requests} requests, ~{shown.est_tokens_in} tokens in, ~{shown.est_tokens_out} out, "
                  f"cost {cost}", file=sys.stderr)
        return EXIT_OK
    bar = ProgressBar(not args.json)
    try:
        result = GenerationRun(config, home=args.home).run(resume=args.resume, on_progress=bar)
    finally:
        bar.close()
    return report(result, args, config.run.max_failed_ratio)


def read_topics(path: str) -> list[str]:
    """Topics from a file: a JSON list of strings, or one topic per line (blank lines and # ignored)."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read topics file {file}: {exc.strerror or exc}") from None
    if file.suffix.lower() == ".json" or text.lstrip().startswith("["):
        try:
            topics = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{file}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
        if not isinstance(topics, list) or not all(isinstance(t, str) for t in topics):
            raise ConfigError(f"{file}: expected a JSON list of strings")
        return topics
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]

