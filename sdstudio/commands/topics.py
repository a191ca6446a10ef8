"""``sdstudio topics``: the model proposes topics for a use case (categories, then topics), near-duplicates
removed; printed as a topics file to edit and pass to ``generate --topics-file``."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .common import EXIT_OK, add_output_flags, apply_overrides, build_config


def add_suggestion_model_flags(parser: argparse.ArgumentParser) -> None:
    """The model flags of a one-request suggestion (no job, so no run settings)."""
    from ..providers import DEFAULT_PROVIDER, provider_names

    parser.add_argument("--provider", help=f"{' | '.join(provider_names())} (default {DEFAULT_PROVIDER})")
    parser.add_argument("--model", help="model id (or a .gguf path for the local provider)")
    parser.add_argument("--base-url", help="endpoint of an OpenAI-compatible or CAII server")
    parser.add_argument("--region", help="AWS region for Bedrock")
    parser.add_argument("--api-key-env", help="NAME of the environment variable holding the key")
    parser.add_argument("--temperature", type=float)
    parser.add_argument("--max-tokens", type=int, help="of the reply (default 2048)")
    parser.add_argument("--dry-run", action="store_true", help="print the prompt; no call")
    add_output_flags(parser)


def suggestion_model(args: argparse.Namespace) -> Any:
    """The ModelSpec the flags describe (a suggestion's reply is long: max_tokens 2048 unless given)."""
    from ..config import ModelSpec

    data = apply_overrides({}, args)["model"]
    data.setdefault("parameters", {}).setdefault("max_tokens", 2048)
    return build_config(ModelSpec, data, f"{args.command} flags")


def register(sub: argparse._SubParsersAction) -> None:
    topics = sub.add_parser("topics", help="the model proposes topics for a use case (a taxonomy), to edit")
    topics.add_argument("--use-case", default="code_generation", help="a use case of templates/ or a folder's path")
    topics.add_argument("--count", type=int, default=20, help="topics to propose (default 20)")
    topics.add_argument("--categories", type=int, help="categories to split them into (default about √count)")
    topics.add_argument("--from-examples", metavar="FILE",
                        help="rows of your own (CSV, JSONL, JSON, Excel, Parquet) shown instead of the use case's examples")
    topics.add_argument("--output", metavar="FILE", help="also write the topics file here")
    add_suggestion_model_flags(topics)
    topics.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from ..topics import example_rows, suggest_topics, taxonomy_prompt
    from ..usecases import load_use_case

    model = suggestion_model(args)
    if args.dry_run:
        case = load_use_case(args.use_case, args.home)
        rows = example_rows(args.from_examples, args.home) if args.from_examples else list(case.examples)
        prompt = taxonomy_prompt(case, args.count, rows, categories=args.categories)
        print(json.dumps({"prompt": prompt}, ensure_ascii=False) if args.json else prompt)
        return EXIT_OK
    taxonomy = suggest_topics(args.use_case, args.count, model, home=args.home, examples_file=args.from_examples,
                              categories=args.categories)
    if args.output:
        Path(args.output).expanduser().write_text(taxonomy.as_text() + "\n", encoding="utf-8")
    print(json.dumps(taxonomy.to_json(), ensure_ascii=False) if args.json else taxonomy.as_text())
    if not args.json:
        print(f"sdstudio: {len(taxonomy.topics)} topics in {len(taxonomy.categories)} categories, "
              f"{len(taxonomy.removed)} near-duplicates removed; {taxonomy.requests} request(s), "
              f"{taxonomy.tokens_in}+{taxonomy.tokens_out} tokens. Edit them, then: sdstudio generate "
              f"--use-case {args.use_case} --topics-file {args.output or 'topics.txt'}", file=sys.stderr)
    return EXIT_OK
